"""Search benchmark (run by hand): score vs banded ridge, search overhead, SIGKILL and resume.

    python benchmarks/bench_search.py --data DEMO [--trials 30] [--scope hemisphere] [--jobs 2] \\
        [--work DIR] [--kill-trials 6]

On the demo (``python -m core demo``), MobileNetV2 ``features.6 features.10 features.17``:

1. ``pipeline --estimator banded`` on the three layers (PCA-100 each): its noise-normalised score
   on the pipeline's seeded 10% held-out images.
2. ``search`` with ``--trials`` per scope: each scope's chosen configuration is refit on the same
   90% of the training images and scored on the same held-out 10% (the search itself saw all training
   images, through K-fold CV: the configurations were selected with those rows in, the fits were not).
3. Overhead: ``1 - sum(trial fit seconds) / (jobs x search wall time)`` (the search phase), and the same
   against the command's whole wall time (extraction from a warm cache, studies, assembly, zip).
4. SIGKILL: a search is started, killed (its whole process group) after ``--kill-trials`` finished
   trials, and run again; reports trials finished before the kill that survived, trials lost (the ones
   running at the kill) and that the rerun completes the budget.

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


def holdout_score(data: str, out: Path, scope: str, n_components: int, pool_size: int = 0,
                  folds_seed: int = 0) -> float:
    """The search's chosen configurations refit on the pipeline's 90% and scored on its held-out 10%."""
    from core.algonauts2023.dataset import HEMIS, open_dataset
    from core.encoding.metrics import noise_normalized_score, pearson_r
    from core.encoding.splits import holdout_split
    from core.runs import artifacts
    from core.search import space, study

    metrics = artifacts.read_metrics(out / "subj01")
    cfg = study.SearchConfig(data=data, subjects=[1], model="mobilenet_v2", weights="imagenet-offline",
                             layers=LAYERS, device="cpu", scope=scope, n_components=n_components,
                             pool_size=pool_size).checked()
    subject = open_dataset(data, [1]).subject(1)
    fit, val = holdout_split(subject.n_train, 0.1, folds_seed)
    bank = space.Bank.open(study.bank_sources(cfg, study.layout_of(data, [1]), subject))
    rs, ncs = [], []
    for hemi in HEMIS:
        Y = np.asarray(subject.fmri(hemi), dtype=np.float32)
        r = np.full(Y.shape[1], np.nan)
        scopes = {f"subj01/{s.name}": s for s in study.scopes(subject, cfg.scope) if s.part == hemi}
        for name in sorted((n for n in metrics["search"] if n in scopes), key=lambda n: -int(scopes[n].mask.sum())):
            params, mask = metrics["search"][name]["params"], scopes[name].mask
            X = bank.design(params, "train")
            est = space.estimator(params, X, len(fit), cfg.backend, cfg.seed).fit(space.rows(X, fit), Y[fit][:, mask])
            r[mask] = pearson_r(Y[val][:, mask], est.predict(space.rows(X, val)))
        rs.append(r)
        ncs.append(subject.noise_ceiling(hemi))
    return noise_normalized_score(np.nan_to_num(np.concatenate(rs)), np.concatenate(ncs))


def overhead(out: Path, jobs: int) -> dict:
    from core.runs import artifacts

    rows = artifacts.read_trials(out)
    fit = sum(r["fit_seconds"] or 0.0 for r in rows)
    sec = artifacts.read_metrics(out)["seconds"]
    return {"trials": len(rows), "states": {s: sum(r["state"] == s for r in rows) for s in {r["state"] for r in rows}},
            "fit_seconds": round(fit, 1), "search_wall": sec["search"], "total_wall": sec["total"],
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
    ap.add_argument("--scope", default="hemisphere")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_search"))
    ap.add_argument("--kill-trials", type=int, default=6)
    ap.add_argument("--n-components", type=int, default=1000, help="the search's PCA size (trials use its first k)")
    ap.add_argument("--timeout", type=float, default=None, help="the search's time limit (s)")
    ap.add_argument("--pool-size", type=int, default=7, help="the search's pooling candidate (0: none; default 7)")
    ap.add_argument("--estimators", nargs="+", default=None, help="the search's estimators (default: all)")
    ap.add_argument("--skip", nargs="*", default=[], choices=("banded", "search", "kill"))
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    report: dict = {"uptime_before": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}
    if "banded" not in a.skip:
        out = a.work / "banded"
        wall = _run(["pipeline", "--data", a.data, *COMMON, "--layers", *LAYERS, "--estimator", "banded",
                     "--out", str(out)])
        report["banded"] = {"noise_normalized": json.loads((out / "metrics.json").read_text())["subj01"]["noise_normalized"],
                            "seconds": round(wall, 1)}
    if "search" not in a.skip:
        out = a.work / f"search_{a.scope}_{a.trials}_{'-'.join(a.estimators or ['all'])}_pool{a.pool_size}"
        wall = _run(["search", "--data", a.data, *COMMON, "--layers", *LAYERS, "--trials", str(a.trials),
                     "--scope", a.scope, "--jobs", str(a.jobs), "--out", str(out), "--n-components", str(a.n_components),
                     "--pool-size", str(a.pool_size), *(["--estimators", *a.estimators] if a.estimators else []),
                     *(["--timeout", str(a.timeout)] if a.timeout else [])])
        from core.runs import artifacts

        summary = artifacts.read_metrics(out)["subj01"]
        report["search"] = {"cv_noise_normalized": summary["noise_normalized"], "seconds": round(wall, 1),
                            "holdout_noise_normalized": round(holdout_score(a.data, out, a.scope, a.n_components, a.pool_size), 3),
                            "chosen": summary["scopes"], **overhead(out, a.jobs)}
        if "banded" in report:
            report["gain_points"] = round(report["search"]["holdout_noise_normalized"]
                                          - report["banded"]["noise_normalized"], 3)
    if "kill" not in a.skip:
        report["sigkill"] = kill_and_resume(a.data, a.work, a.jobs, a.kill_trials)
    report["uptime_after"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
