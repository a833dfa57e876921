"""Search benchmark (run by hand): score vs banded ridge, search overhead, SIGKILL and resume.

    python benchmarks/bench_search.py --data DEMO [--trials 30] [--scope class] [--jobs 2] \\
        [--estimators kernel] [--pool-size 7] [--work DIR] [--kill-trials 6]

On the demo (``python -m core demo``), MobileNetV2 ``features.6 features.10 features.17``:

1. ``pipeline --estimator banded`` on the three layers (PCA-100 each): its noise-normalised score
   on the pipeline's seeded 10% held-out images.
2. ``search`` with ``--trials`` per scope (by default what won on the demo: the multiple-kernel
   estimator on whole layers, full PCA or 7 x 7 pooling, one study per ROI class): the trials each
   vertex chose from are refit on the same 90% of the training images and scored on the same held-out
   10%. Each vertex chooses by CV on the 90% alone (:func:`holdout_r`); which trials are a scope's
   best comes from the search, which saw every training image through K-fold CV (the configurations
   were selected with those rows in, the fits were not).
3. Overhead: ``1 - sum(trial fit seconds) / (jobs x search wall time)`` (the search phase), and the same
   against the command's whole wall time (extraction from a warm cache, studies, assembly, zip).
4. SIGKILL: a search is started, killed (its whole process group) after ``--kill-trials`` finished
   trials, and run again; reports trials finished before the kill that survived, trials lost (the ones
   running at the kill) and that the rerun completes the budget.

On an Algonauts 2021 dataset (``python -m core demo2021``; detected from its folders) it compares
instead, on the pipeline's held-out 10% of the clips and every subject: the devkit-2021 recipe
(``pipeline --frames 16 --reduction pca --n-components 100 --estimator ols``, each layer alone)
against ``search --frames ...`` (scopes: the mini-track ROIs and the whole brain), as the mini
track's mean r (mean over ROIs of the ROI's mean r)::

    python benchmarks/bench_search.py --data DEMO2021 --trials 30 --resolution 128 \\
        --estimators ridge kernel pls [--frames 4 8 16]

Prints one JSON object; machine load (``uptime``) is included.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LAYERS = ["features.6", "features.10", "features.17"]
COMMON = ["--subjects", "1", "--model", "mobilenet_v2", "--weights", "imagenet-offline", "--device", "cpu", "--quiet"]


def _run(args: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, check=True)
    return time.perf_counter() - t0


def holdout_r(cfg, out: Path, number: int, folds_seed: int = 0) -> tuple[object, dict[str, np.ndarray]]:
    """The search's result refit on the pipeline's 90% and scored on its held-out 10%: the subject and its r
    per part (hemisphere, track).

    Each vertex chooses among the same trials as the search's assembly (``study.members``, with the run's
    ``top_trials`` and ``average_trials``), but by their CV r on the 90% alone (their CV run again on those
    rows: the stored r saw the held-out rows), so that the held-out rows choose nothing per vertex, and
    averages its trials' predictions. (Which trials are a scope's best still comes from the search, which
    saw every training image.)"""
    import tempfile
    from dataclasses import replace

    import optuna

    from core.encoding.metrics import pearson_r
    from core.encoding.splits import holdout_split, kfold_splits
    from core.runs import artifacts
    from core.search import space, study

    layout = study.layout_of(cfg.data, [number])
    subject = layout.subject(number)
    metrics = artifacts.read_metrics(out / subject.name)
    cfg = replace(cfg, top_trials=metrics["estimator"].get("top_trials", 1),
                  average_trials=metrics["estimator"].get("average_trials", 1))
    fit, val = holdout_split(subject.n_train, 0.1, folds_seed)
    splits = [(fit[tr], fit[va]) for tr, va in kfold_splits(len(fit), cfg.folds, cfg.seed)]
    bank = space.Bank.open(study.bank_sources(cfg, layout, subject))
    st = study.storage(artifacts.study_storage(out))
    out_r = {}
    with tempfile.TemporaryDirectory() as scratch:  # no stored trial arrays: members() runs each CV on the 90%
        for part in subject.parts:
            Y = np.asarray(subject.responses(part), dtype=np.float32)
            pred = np.zeros((len(val), Y.shape[1]), np.float32)
            studies = [(s, optuna.load_study(study_name=study.study_name(subject, s), storage=st))
                       for s in study.scopes(subject, cfg.scope)
                       if s.part == part and study.study_name(subject, s) in metrics["search"]]
            used = study.members(cfg, studies, Path(scratch), bank, Y, splits, subject.noise_ceiling(part))
            for m, where, Ym, bases in study.by_scope(used, Y):
                X = bank.design(m.params, "train")
                est = space.estimator(m.params, X, len(fit), cfg.backend, cfg.seed).fit(
                    space.rows(X, fit), space.train_targets(m.params, Ym, fit, bases))
                pred[:, where[m.cols]] += m.share * est.predict(space.rows(X, val))[:, m.cols]
            covered = study.taken(used)
            out_r[part] = np.full(Y.shape[1], np.nan)
            out_r[part][covered] = pearson_r(Y[val][:, covered], pred[:, covered])
    return subject, out_r


def holdout_score(data: str, out: Path, scope: str, n_components: int, pool_size: int = 0) -> float:
    """2023: the noise-normalised score of :func:`holdout_r` (subject 1)."""
    from core.encoding.metrics import noise_normalized_score
    from core.search import study

    cfg = study.SearchConfig(data=data, subjects=[1], model="mobilenet_v2", weights="imagenet-offline",
                             layers=LAYERS, device="cpu", scope=scope, n_components=n_components,
                             pool_size=pool_size).checked()
    subject, rs = holdout_r(cfg, out, 1)
    r = np.concatenate([rs[h] for h in subject.parts])
    nc = np.concatenate([subject.noise_ceiling(h) for h in subject.parts])
    return noise_normalized_score(np.nan_to_num(r), nc)


def mini_track_mean_r(subject, r: np.ndarray) -> float:
    """The mean over the mini-track ROIs of each ROI's mean r (the 2021 mini track's averaging)."""
    return float(np.mean([np.nanmean(v) for v in subject.split("mini_track", r).values()]))


def bench_2021(a) -> dict:
    """Devkit-2021 recipe (``--frames 16``, PCA-100, OLS, one layer; each layer) vs the search, on the
    pipeline's held-out 10% of the clips, every subject of ``--data``."""
    from core.algonauts2021.dataset import open_dataset2021
    from core.algonauts2021.pipeline import run_pipeline_2021
    from core.runs import artifacts
    from core.search import study

    ds = open_dataset2021(a.data)
    subjects = [str(s) for s in ds.subjects]
    common = ["--subjects", *subjects, "--model", "mobilenet_v2", "--weights", "imagenet-offline", "--device", "cpu",
              "--quiet", "--resolution", str(a.resolution)]
    views = {s: study.layout_of(a.data, [s]).subject(s) for s in ds.subjects}
    report: dict = {"devkit": {}}
    for layer in LAYERS:  # in this process: the CLI keeps only the zips and the summary, not the subjects' r
        out = a.work / f"devkit2021_{layer}"
        t0 = time.perf_counter()
        run_pipeline_2021(a.data, None, "mobilenet_v2", "imagenet-offline", [layer], out, device="cpu",
                          estimator="ols", n_frames=16, resolution=a.resolution, n_components=100)
        wall = time.perf_counter() - t0
        per = {views[s].name: mini_track_mean_r(views[s], artifacts.read_part(out / views[s].name, "mini_track", "val_r"))
               for s in ds.subjects}
        report["devkit"][layer] = {"mini_mean_r": round(float(np.mean(list(per.values()))), 4), "per_subject": per,
                                   "seconds": round(wall, 1)}
    out = a.work / f"search2021_{a.trials}_{'-'.join(a.estimators or ['all'])}"
    since = time.time()
    wall = _run(["search", "--data", a.data, *common, "--layers", *LAYERS, "--trials", str(a.trials),
                 "--jobs", str(a.jobs), "--out", str(out), "--frames", *map(str, a.frames),
                 *(["--estimators", *a.estimators] if a.estimators else []),
                 *(["--timeout", str(a.timeout)] if a.timeout else [])])
    cfg = study.SearchConfig(data=a.data, subjects=list(ds.subjects), model="mobilenet_v2",
                             weights="imagenet-offline", layers=LAYERS, device="cpu", resolution=a.resolution,
                             frames=list(a.frames)).checked()
    per = {}
    for s in ds.subjects:
        subject, rs = holdout_r(cfg, out, s)
        per[subject.name] = mini_track_mean_r(subject, rs["mini_track"])
    best = max(v["mini_mean_r"] for v in report["devkit"].values())
    report["search"] = {"mini_mean_r": round(float(np.mean(list(per.values()))), 4), "per_subject": per,
                        "seconds": round(wall, 1), **overhead(out, a.jobs, since)}
    report["gain_vs_best_devkit_layer"] = round(report["search"]["mini_mean_r"] - best, 4)
    return report


def overhead(out: Path, jobs: int, since: float) -> dict:
    """Trial fit time against the command's wall time, over the trials this command started (``since``: its
    start, epoch seconds; a resumed study also holds the trials of earlier runs)."""
    from datetime import datetime

    from core.runs import artifacts

    rows = [r for r in artifacts.read_trials(out)
            if r.get("started") and datetime.fromisoformat(r["started"]).timestamp() >= since - 1]
    fit = sum(r["fit_seconds"] or 0.0 for r in rows)
    sec = artifacts.read_metrics(out)["seconds"]
    return {"trials": len(rows), "states": {s: sum(r["state"] == s for r in rows) for s in {r["state"] for r in rows}},
            "fit_seconds": round(fit, 1), "search_wall": sec["search"], "assemble_wall": sec["assemble"],
            "total_wall": sec["total"],
            "overhead_search_phase": round(1 - fit / (jobs * sec["search"]), 3),
            "overhead_whole_command": round(1 - fit / (jobs * sec["total"]), 3)}


def kill_and_resume(data: str, work: Path, jobs: int, kill_after: int) -> dict:
    import optuna

    from core.runs import artifacts
    from core.search import study

    out = work / "killed"
    args = [sys.executable, "-m", "core", "search", "--data", data, *COMMON, "--layers", *LAYERS, "--trials",
            str(2 * kill_after), "--scope", "hemisphere", "--n-components", "100", "--estimators", "ridge", "pls",
            "--jobs", str(jobs), "--out", str(out)]
    proc = subprocess.Popen(args, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL)
    url = artifacts.study_storage(out)

    def states():
        st = study.storage(url)
        found = {}
        for s in optuna.get_all_study_summaries(st):
            for t in optuna.load_study(study_name=s.study_name, storage=st).get_trials(deepcopy=False):
                found[(s.study_name, t.number)] = (t.state.name, t.value)
        return found

    while True:
        time.sleep(1.0)
        if (out / "study.db").exists():
            try:
                now = states()
            except Exception:  # the study is being created
                continue
            if sum(v[0] in ("COMPLETE", "PRUNED") for v in now.values()) >= kill_after:
                break
        if proc.poll() is not None:
            raise SystemExit("the search finished before it could be killed: raise --kill-trials")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = states()
    finished_before = {k: v for k, v in before.items() if v[0] in ("COMPLETE", "PRUNED")}
    running_at_kill = [k for k, v in before.items() if v[0] == "RUNNING"]
    t0 = time.perf_counter()
    subprocess.run(args, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    after = states()
    kept = sum(after.get(k) == v for k, v in finished_before.items())
    return {"finished_before_kill": len(finished_before), "kept_after_rerun": kept,
            "running_at_kill": len(running_at_kill),
            "lost": sum(after.get(k, ("?",))[0] == "FAIL" for k in running_at_kill),
            "rerun_seconds": round(time.perf_counter() - t0, 1),
            "finished_after_rerun": sum(v[0] in ("COMPLETE", "PRUNED") for v in after.values())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--scope", default="class")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_search"))
    ap.add_argument("--kill-trials", type=int, default=6)
    ap.add_argument("--n-components", type=int, default=1000, help="the search's PCA size (trials use its first k)")
    ap.add_argument("--timeout", type=float, default=None, help="the search's time limit (s)")
    ap.add_argument("--pool-size", type=int, default=7, help="the search's pooling candidate (0: none; default 7)")
    ap.add_argument("--estimators", nargs="+", default=["kernel"], help="the search's estimators (default: kernel)")
    ap.add_argument("--skip", nargs="*", default=[], choices=("banded", "search", "kill"))
    ap.add_argument("--frames", type=int, nargs="+", default=[4, 8, 16], help="2021 videos: the search's frame counts")
    ap.add_argument("--resolution", type=int, default=224, help="2021 videos: frame side for both (default 224)")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    report: dict = {"uptime_before": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}
    from core.algonauts2021.dataset import is_2021_layout

    if is_2021_layout(a.data):
        report.update(bench_2021(a))
        report["uptime_after"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        print(json.dumps(report, indent=2))
        return
    if "banded" not in a.skip:
        out = a.work / "banded"
        wall = _run(["pipeline", "--data", a.data, *COMMON, "--layers", *LAYERS, "--estimator", "banded",
                     "--out", str(out)])
        report["banded"] = {"noise_normalized": json.loads((out / "metrics.json").read_text())["subj01"]["noise_normalized"],
                            "seconds": round(wall, 1)}
    if "search" not in a.skip:
        out = a.work / f"search_{a.scope}_{a.trials}_{'-'.join(a.estimators or ['all'])}_pool{a.pool_size}"
        since = time.time()
        wall = _run(["search", "--data", a.data, *COMMON, "--layers", *LAYERS, "--trials", str(a.trials),
                     "--scope", a.scope, "--jobs", str(a.jobs), "--out", str(out), "--n-components", str(a.n_components),
                     "--pool-size", str(a.pool_size), *(["--estimators", *a.estimators] if a.estimators else []),
                     *(["--timeout", str(a.timeout)] if a.timeout else [])])
        from core.runs import artifacts

        summary = artifacts.read_metrics(out)["subj01"]
        report["search"] = {"cv_noise_normalized": summary["noise_normalized"], "seconds": round(wall, 1),
                            "holdout_noise_normalized": round(holdout_score(a.data, out, a.scope, a.n_components, a.pool_size), 3),
                            "chosen": summary["scopes"], **overhead(out, a.jobs, since)}
        if "banded" in report:
            report["gain_points"] = round(report["search"]["holdout_noise_normalized"]
                                          - report["banded"]["noise_normalized"], 3)
    if "kill" not in a.skip:
        report["sigkill"] = kill_and_resume(a.data, a.work, a.jobs, a.kill_trials)
    report["uptime_after"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
