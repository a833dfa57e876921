"""The search: one Optuna study per scope, run by parallel workers, assembled into a result folder.

``run_search(cfg, out)`` extracts each layer once (one large PCA per layer, optionally pooling),
creates or reopens one study per scope in ``out/study.db`` (Optuna RDB storage on SQLite), runs
``cfg.jobs`` worker processes that share it (Ray tasks when ``$BES_RAY_ADDRESS`` is set), then
refits the configurations the vertices chose on all training images (each vertex averages, among the
``top_trials`` best trials of every scope holding it, the ``average_trials`` with the best CV r on it)
and writes the subject's results, ``trials.csv``, the submission zip and ``metrics.json`` through
:mod:`core.runs.artifacts`.

Resuming: trials are stored as they finish, so running the same search again on the same ``out``
continues where it stopped; trials that were running when a search was killed are marked failed
and redone. Scopes: every hemisphere as a whole (always: vertices outside every ROI take it), plus
every ROI (``roi``) or every ROI class (``class``).
On an Algonauts 2021 (videos) dataset the scopes are the mini-track ROIs and the whole brain, the
frames per clip are searched too, and the result is the 2021 pipeline's (``mini_track.zip``,
``full_track.zip``); see :mod:`core.search.layouts`.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import sqlite3
import threading
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Self

import numpy as np

from core.algonauts2021.dataset import TRACKS as TRACKS_2021, TrackSubject
from core.algonauts2021.pipeline import check_request
from core.algonauts2023.pipeline import FeatureConfig, write_summary
from core.encoding.fitting import PartResult, SubjectResult
from core.encoding.metrics import part_metrics, pearson_r
from core.encoding.splits import kfold_splits
from core.runs import artifacts
from core.runs.kinds import TaskContext, timed
from core.search import space
from core.search.layouts import Layout, Layout2021, Layout2023, Scope, layout_of
from core.util.errors import UserError
from core.util.progress import Progress, report, scaled

SCOPES = ("roi", "class", "hemisphere")
SAMPLERS = ("tpe", "gp")
FINISHED = ("COMPLETE", "PRUNED")
# settings that change what a trial means: a folder's study only continues under the same ones
_IDENTITY = ("model", "weights", "layers", "resolution", "n_components", "pool_size", "seed", "scope",
             "estimators", "folds", "frames")


@dataclass
class SearchConfig(FeatureConfig):
    """A search run: the layers to extract once, the scopes, the space and the budget.

    ``n_components``: size of the one PCA per layer whose first ``k`` columns the trials use
    (clipped to the training images - 1); ``pool_size`` > 0 adds ``k x k`` pooling as a candidate, and
    (``pool_size`` > 1) every layer's global average as optional bands of the kernel trials.
    ``frames``: candidate frames per clip (Algonauts 2021 videos only; each is extracted once).
    ``top_trials``: how many of each scope's best trials a vertex chooses from (those of every scope
    holding it), by its own CV r; ``average_trials``: how many of those it takes, averaging their
    predictions (on the 2,000-image demo 5 did best: +0.15 points held-out over 1; 7 and 10 less).
    Both only change the assembly: a finished search can be assembled again with other values.
    """

    n_components: int = 1000
    pool_size: int = 7  # pooled 7 x 7 layers with the kernel estimator did best on the demo
    trials: int = 30  # per scope
    scope: str = "roi"
    timeout: float | None = None  # seconds for the whole search; None: until every scope has its trials
    jobs: int = 1
    estimators: list[str] = field(default_factory=lambda: list(space.ESTIMATORS))
    folds: int = 5
    sampler: str = "tpe"
    frames: list[int] = field(default_factory=lambda: [4, 8, 16])
    top_trials: int = 5
    average_trials: int = 5

    def checked(self) -> Self:
        if self.scope not in SCOPES:
            raise UserError(f"unknown scope '{self.scope}' (use one of: {', '.join(SCOPES)})")
        if self.sampler not in SAMPLERS:
            raise UserError(f"unknown sampler '{self.sampler}' (use one of: {', '.join(SAMPLERS)})")
        if self.trials < 1:
            raise UserError(f"--trials must be at least 1, got {self.trials}")
        if not 1 <= self.top_trials <= 100:
            raise UserError(f"--top-trials must be between 1 and 100, got {self.top_trials}")
        if not 1 <= self.average_trials <= 100:
            raise UserError(f"--average-trials must be between 1 and 100, got {self.average_trials}")
        if self.jobs < 1:
            raise UserError(f"--jobs must be at least 1, got {self.jobs}")
        if self.timeout is not None and not self.timeout > 0:
            raise UserError(f"--timeout must be a positive number of seconds, got {self.timeout}")
        if not 2 <= self.folds <= 20:
            raise UserError(f"folds must be between 2 and 20, got {self.folds}")
        if self.pool_size < 0 or self.pool_size > 64:
            raise UserError(f"pool size must be between 0 (no pooling) and 64, got {self.pool_size}")
        unknown = [e for e in self.estimators if e not in space.ESTIMATORS]
        if unknown or not self.estimators:
            raise UserError(f"unknown estimator '{(unknown or [''])[0]}' (use: {', '.join(space.ESTIMATORS)})")
        estimators = list(dict.fromkeys(self.estimators))
        if len(self.layers) < 2 and "banded" in estimators:
            estimators.remove("banded")
            if not estimators:
                raise UserError("the banded estimator needs at least two layers (one band each)")
        if not self.subjects:
            raise UserError("no subjects chosen")
        layout = layout_of(self.data, self.subjects)
        if self.scope not in layout.scope_kinds:
            raise UserError(f"scope '{self.scope}' does not apply to an {layout.name} dataset (use: "
                            f"{', '.join(layout.scope_kinds)})")
        n_train = min(layout.n_train(s) for s in self.subjects)
        if n_train < 2 * self.folds:
            raise UserError(f"a subject has {n_train} training stimuli: too few for {self.folds}-fold CV")
        cfg = replace(self, reduction="pca", n_components=int(min(self.n_components, n_train - 1)),
                      estimators=estimators)
        if isinstance(layout, Layout2023):
            return FeatureConfig.checked(cfg)
        frames = sorted({int(f) for f in self.frames})
        if not frames:
            raise UserError("no frame counts to search (--frames)")
        ds = layout.dataset  # the 2021 pipeline's checks (tracks' data, layers, PCA size), each frame count
        extraction = [check_request(ds, list(TRACKS_2021), "ridge", cfg.extraction(), f, 0.1) for f in frames][0]
        if self.device == "cuda":
            from core.features.extraction import pick_device

            pick_device("cuda")
        from core.features.backbones import resolve_weights

        return replace(cfg, data=str(ds.root.resolve()), subjects=list(ds.subjects), model=extraction.model,
                       weights=resolve_weights(extraction.model, extraction.weights).spec, layers=extraction.layers,
                       resolution=extraction.resolution, frames=frames)

    @property
    def backend(self) -> str:
        return {None: "auto", "cpu": "numpy", "cuda": "torch_cuda"}[self.device]

    def identity(self) -> dict:
        d = self.to_dict()
        return {k: d[k] for k in _IDENTITY}


# -- scopes -----------------------------------------------------------------------------------------
def scopes(subject, kind: str) -> list[Scope]:
    """The scopes of a subject (2023 ``Subject`` or 2021 ``TrackSubject``), part-wide ones first."""
    return (Layout2021 if isinstance(subject, TrackSubject) else Layout2023).scopes(subject, kind)


def study_name(subject, scope: Scope) -> str:
    return f"{subject.name}/{scope.name}"


# -- Optuna plumbing ----------------------------------------------------------------------------------
def storage(url: str):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 300}})


def _sampler(cfg: SearchConfig, worker: int):
    import optuna

    startup = min(10, max(3, cfg.trials // 3))
    seed = cfg.seed * 1000 + worker
    if cfg.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True, group=True,
                                      constant_liar=True)


def _pruner():
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)


def needed(subject, scope: Scope) -> bool:
    """Whether the assembly needs a finished trial of ``scope``: a part-wide scope, or any 2021 scope
    (a 2023 ROI or class without one falls back to its hemisphere's)."""
    return scope.name == scope.part or isinstance(subject, TrackSubject)


def time_share(deadline: float | None, subjects_left: int, now: float) -> float | None:
    """When the next subject's trials stop: the time left split evenly over the subjects still to search
    (what one leaves unused goes to the next), so that a time limit leaves every subject with trials."""
    return None if deadline is None else now + max(0.0, deadline - now) / subjects_left


def _n_finished(study) -> int:
    import optuna

    states = tuple(getattr(optuna.trial.TrialState, s) for s in FINISHED)
    return len(study.get_trials(deepcopy=False, states=states))


def prepare_studies(url: str, names: list[str], cfg: SearchConfig) -> None:
    """Create or reopen every study; refuse another search's folder; fail trials a killed search left running."""
    import optuna

    db = Path(url.removeprefix("sqlite:///"))
    with sqlite3.connect(db) as con:  # WAL: readers (the dashboard) never block the workers
        con.execute("PRAGMA journal_mode=WAL")
    st = storage(url)
    identity = cfg.identity()
    for name in names:
        study = optuna.create_study(study_name=name, storage=st, direction="maximize", load_if_exists=True)
        stored = study.user_attrs.get("identity")
        if stored is None:
            study.set_user_attr("identity", identity)
        elif stored != identity:
            diff = next(k for k in identity if stored.get(k) != identity[k])
            raise UserError(f"{db.parent}: holds a search with another {diff} ({stored.get(diff)!r}); "
                            "use another --out, or the same settings to resume")
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            st.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)


# -- the worker -------------------------------------------------------------------------------------------
def work(spec: dict) -> int:
    """One worker: one trial at a time, round-robin over the scopes still short of ``trials`` finished ones.

    Round-robin (from a different scope per worker) keeps every scope moving, so that a time limit
    leaves each scope with trials; after the deadline a scope the assembly needs (:func:`needed`) still
    gets trials until one has completed, so that a time-limited search always assembles. A plain
    function of a dict, so that it runs in a local process or as a Ray task. A local worker
    (``spec["parent"]``: the search's pid) whose search was killed stops after its trial. Returns the
    number of trials it ran.
    """
    import optuna
    from threadpoolctl import threadpool_limits

    cfg = SearchConfig.from_dict(spec["config"])
    subject = layout_of(cfg.data, [spec["subject"]]).subject(spec["subject"])
    bank = space.Bank.open(spec["bank"])
    st = storage(spec["storage"])
    splits = kfold_splits(subject.n_train, cfg.folds, cfg.seed)
    deadline = spec.get("deadline")
    fmri = {p: np.asarray(subject.responses(p), dtype=np.float32) for p in subject.parts}
    ceilings = {p: subject.noise_ceiling(p) for p in subject.parts}
    todo = scopes(subject, cfg.scope)
    shift = spec["worker"] % len(todo)
    todo = todo[shift:] + todo[:shift]
    studies = {sc.name: optuna.load_study(study_name=study_name(subject, sc), storage=st,
                                          sampler=_sampler(cfg, spec["worker"]), pruner=_pruner()) for sc in todo}
    bases = {sc.name: {} for sc in todo}  # each scope's response components per fold (reduced-rank trials)
    ran = 0

    def orphaned() -> bool:  # a local worker whose search was killed stops after its trial
        return _gone(spec.get("parent"))

    def wanted(scope: Scope) -> bool:
        study = studies[scope.name]
        if _n_finished(study) >= cfg.trials:
            return False
        return deadline is None or time.time() < deadline or (needed(subject, scope) and _best(study) is None)

    def objective(trial, scope: Scope):
        params = space.suggest(trial, bank, cfg.estimators, int(scope.mask.sum()))
        trial.set_user_attr("params", params)
        clock = {"fit": 0.0}
        nc = ceilings[scope.part]

        def after_fold(k: int, value: float) -> None:
            trial.report(value, k)
            if trial.should_prune():
                trial.set_user_attr("fit_seconds", round(clock["fit"], 4))
                raise optuna.TrialPruned()

        Y = np.ascontiguousarray(fmri[scope.part][:, scope.mask])
        res = space.cross_validate(params, bank, Y, splits, None if nc is None else nc[scope.mask], cfg.backend,
                                   cfg.seed, after_fold, clock, bases[scope.name])
        trial.set_user_attr("fit_seconds", round(res.fit_seconds, 4))
        artifacts.write_trial_arrays(spec["out"], study_name(subject, scope), trial.number, res.r, res.alphas)
        return res.score

    with threadpool_limits(spec.get("threads") or None):
        while todo and not orphaned():
            for scope in list(todo):
                if orphaned():
                    break
                if not wanted(scope):
                    todo.remove(scope)
                    continue
                studies[scope.name].optimize(lambda trial: objective(trial, scope), n_trials=1, gc_after_trial=False)
                ran += 1
    return ran


def _gone(parent: int | None) -> bool:
    """Whether this local worker process's search (pid ``parent``; None: not a local worker) is gone."""
    return parent is not None and os.getppid() != parent


def _local_work(spec: dict) -> int:
    """:func:`work` in a local worker process, which ends once its search is gone: the pool's queue would
    otherwise keep it waiting for the next task for ever."""
    ran = work(spec)
    if _gone(spec["parent"]):
        os._exit(0)
    return ran


def _run_workers(specs: list[dict], poll: Callable[[], None]) -> None:
    """Run ``work(spec)`` for every spec in parallel: local processes, or Ray tasks with ``$BES_RAY_ADDRESS``."""
    address = os.environ.get("BES_RAY_ADDRESS")
    if address:
        _run_ray(specs, poll, address)
        return
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=len(specs), mp_context=ctx) as pool:
        futures = [pool.submit(_local_work, {**s, "parent": os.getpid()}) for s in specs]
        pending = set(futures)
        while pending:
            done, pending = cf.wait(pending, timeout=1.0)
            poll()
            for f in done:
                f.result()  # a worker's error stops the search with its message


def _run_ray(specs: list[dict], poll: Callable[[], None], address: str) -> None:
    try:
        import ray
    except ImportError:
        raise UserError("BES_RAY_ADDRESS is set but ray is not installed (pip install ray)") from None
    root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH")
    kwargs = {"num_cpus": len(specs)} if address == "local" else {}
    ray.init(address=address, log_to_driver=False, ignore_reinit_error=True,
             runtime_env={"env_vars": {"PYTHONPATH": f"{root}{os.pathsep}{path}" if path else root}}, **kwargs)
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(work)
        pending = [task.remote(s) for s in specs]
        while pending:
            done, pending = ray.wait(pending, num_returns=len(pending), timeout=1.0)
            poll()
            ray.get(done)
    finally:
        ray.shutdown()


# -- assembling the result --------------------------------------------------------------------------------------
def _best(study):
    return next(iter(_top(study, 1)), None)


def _top(study, k: int) -> list:
    """The ``k`` best completed trials, best first."""
    import optuna

    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return sorted(done, key=lambda t: -t.value)[:k]


@dataclass
class Member:
    """A trial in a part's result: its scope, the scope's vertices (``cols``, positions within the scope)
    that take it, the weight of its prediction in each (``share``: 1 / the trials the vertex averages),
    and its CV r and (kernel trials) alphas on every vertex of its scope."""

    trial: Any
    scope: Scope
    cols: np.ndarray
    share: np.ndarray
    r: np.ndarray
    alphas: np.ndarray | None

    @property
    def params(self) -> dict:
        return self.trial.user_attrs["params"]


def members(cfg: SearchConfig, studies: list[tuple[Scope, Any]], out: Path, bank: space.Bank, Y: np.ndarray,
            splits: list, noise_ceiling: np.ndarray | None) -> list[Member]:
    """Which trials each vertex of a part (the columns of ``Y``) takes: among the ``cfg.top_trials`` best
    trials of every scope holding it (``studies``: the part's scopes and their studies), the
    ``cfg.average_trials`` with the best CV r on it (ties: the larger scope, then the better trial), whose
    predictions it averages. All were scored on the same folds. Members come grouped by scope, larger
    scopes first.

    Each trial's r comes from its stored arrays (its CV is run again when they are missing or damaged).
    A vertex's own ROI's trials fit its ROI; its hemisphere's fit reduced-rank targets with the whole
    hemisphere's components: the choice takes whichever serve the vertex."""
    found = []
    for sc, study in sorted(studies, key=lambda s: -int(s[0].mask.sum())):
        where = np.flatnonzero(sc.mask)
        Ys, bases = None, {}  # the scope's responses and their folds' components, for CVs run again
        for t in _top(study, cfg.top_trials):
            arrays = artifacts.read_trial_arrays(out, study.study_name, t.number, where.size)
            if arrays is None:
                Ys = np.ascontiguousarray(Y[:, where]) if Ys is None else Ys
                nc = None if noise_ceiling is None else noise_ceiling[where]
                cv = space.cross_validate(t.user_attrs["params"], bank, Ys, splits, nc, cfg.backend, cfg.seed,
                                          bases=bases)
                arrays = cv.r, cv.alphas
            found.append((sc, t, *arrays))
    if not found:
        return []
    key = np.full((len(found), Y.shape[1]), -np.inf)  # -inf: not in the candidate's scope
    for i, (sc, _, r, _) in enumerate(found):
        key[i, sc.mask] = np.nan_to_num(r, nan=-1e30)  # a vertex without r still takes its first candidates
    top = np.argsort(-key, axis=0, kind="stable")[: cfg.average_trials]
    top = np.where(np.take_along_axis(key, top, 0) > -np.inf, top, -1)
    count = (top >= 0).sum(0)
    out_members = []
    for i, (sc, t, r, alphas) in enumerate(found):
        where = np.flatnonzero(sc.mask)
        cols = np.flatnonzero((top[:, where] == i).any(0))
        if cols.size:
            out_members.append(Member(t, sc, cols, 1.0 / count[where[cols]], r, alphas))
    return out_members


def taken(used: list[Member]) -> np.ndarray:
    """The part's vertices (column indices) that some member of ``used`` serves."""
    return np.unique(np.concatenate([np.flatnonzero(m.scope.mask)[m.cols] for m in used]))


def by_scope(used: list[Member], Y: np.ndarray) -> Iterator[tuple[Member, np.ndarray, np.ndarray, dict]]:
    """Each member of ``used`` (grouped by scope, as :func:`members` returns them) with its scope's vertices,
    their responses (the columns of ``Y``) and a cache of their components: the members of one scope share
    one copy of each (:func:`space.train_targets`)."""
    scope = None
    for m in used:
        if m.scope is not scope:
            scope, where = m.scope, np.flatnonzero(m.scope.mask)
            Ys, bases = np.ascontiguousarray(Y[:, where]), {}
        yield m, where, Ys, bases


def assemble_part(cfg: SearchConfig, subject, bank: space.Bank, out: Path, part: str,
                  progress: Progress | None = None) -> tuple[PartResult, dict]:
    """One part's result: each vertex's trials (:func:`members`) refit on all training images (each on its whole
    scope, as in its CV: PLS couples the vertices) and their test predictions averaged. A vertex's CV r: its
    trial's, or, where some vertex averages several, that of the average of its trials' out-of-fold predictions
    (each trial's CV run again, kernel trials keeping the alphas their CV chose). Also returns what each of the
    part's scopes chose (``metrics.json``'s ``search``)."""
    import optuna

    st = storage(artifacts.study_storage(out))
    splits = kfold_splits(subject.n_train, cfg.folds, cfg.seed)
    Y_all = np.asarray(subject.responses(part), dtype=np.float32)
    n_v = Y_all.shape[1]
    val_r = np.full(n_v, np.nan, np.float32)
    pred = np.zeros((subject.n_test, n_v), np.float32)
    nc_all = subject.noise_ceiling(part)
    studies, bests = [], {}
    for sc in [s for s in scopes(subject, cfg.scope) if s.part == part]:
        study = optuna.load_study(study_name=study_name(subject, sc), storage=st)
        bests[sc.name] = _best(study)
        if bests[sc.name] is not None:
            studies.append((sc, study))
        elif needed(subject, sc):
            raise UserError(f"{subject.name} {sc.name}: no trial of this scope finished "
                            "(raise --timeout or --trials)")
    used = members(cfg, studies, out, bank, Y_all, splits, nc_all)
    oof = np.zeros_like(Y_all) if any(m.share.min() < 1 for m in used) else None
    for j, (m, where, Y, bases) in enumerate(by_scope(used, Y_all)):
        cols = where[m.cols]
        pred[:, cols] += m.share * space.final_predictions(m.params, bank, Y, m.alphas, cfg.backend, cfg.seed,
                                                           bases, m.cols)
        if oof is None:
            val_r[cols] = m.r[m.cols]
        else:
            oof[:, cols] += m.share * space.out_of_fold(m.params, bank, Y, splits, m.alphas, cfg.backend,
                                                        cfg.seed, bases, m.cols)
        report(progress, (j + 1) / len(used), f"{part}: refit {m.scope.name}")
    if oof is not None:  # as cross_validate scores: the mean over the folds of each fold's r
        covered = taken(used)
        val_r[covered] = np.mean([np.nan_to_num(pearson_r(Y_all[va][:, covered], oof[va][:, covered]))
                                  for _, va in splits], axis=0)
    chosen = {}
    for sc, study in studies:
        best = bests[sc.name]
        params = best.user_attrs["params"]
        chosen[study_name(subject, sc)] = {
            "scope": sc.name, "hemi": part, "n_vertices": int(sc.mask.sum()), "params": params,
            "label": space.describe(params), "cv_score": float(best.value), "trial": int(best.number),
            "n_trials": len(study.get_trials(deepcopy=False)),
            "members": [{"trial": int(m.trial.number), "label": space.describe(m.params),
                         "cv_score": float(m.trial.value), "n_vertices": int(m.cols.size)}
                        for m in used if m.scope.name == sc.name],
        }
    metrics = part_metrics(val_r, subject.roi_masks(part), nc_all)
    metrics["scopes_used"] = sorted(chosen)
    return PartResult(part, val_r, pred, metrics), chosen


def _end_with(parent: int) -> None:
    """A worker process's initializer: the process ends itself once ``parent`` (the search) is gone. A killed
    search's assembly worker would otherwise block for ever sending its large result to a pipe no one reads."""
    def watch() -> None:
        while not _gone(parent):
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _assemble_worker(spec: dict) -> tuple[PartResult, dict]:
    """:func:`assemble_part` in a worker process (a plain function of a dict, as :func:`work`)."""
    from threadpoolctl import threadpool_limits

    cfg = SearchConfig.from_dict(spec["config"])
    subject = layout_of(cfg.data, [spec["subject"]]).subject(spec["subject"])
    with threadpool_limits(spec["threads"]):
        return assemble_part(cfg, subject, space.Bank.open(spec["bank"]), Path(spec["out"]), spec["part"])


def assemble(cfg: SearchConfig, number: int, subject, bank_paths: dict[str, dict[str, str]], out: Path,
             progress: Progress | None = None) -> SubjectResult:
    """Every part's result (:func:`assemble_part`) and subject ``number``'s summary. With ``cfg.jobs`` > 1 the
    parts (hemispheres, tracks) are assembled in parallel local processes, each opening the bank itself."""
    parts = list(subject.parts)
    jobs = min(cfg.jobs, len(parts))
    done: dict[str, tuple[PartResult, dict]] = {}
    if jobs > 1:
        threads = max(1, (os.cpu_count() or 1) // jobs)
        specs = {p: {"config": cfg.to_dict(), "subject": number, "bank": bank_paths,
                     "out": str(out), "part": p, "threads": threads} for p in parts}
        with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                                    initializer=_end_with, initargs=(os.getpid(),)) as pool:
            futures = {pool.submit(_assemble_worker, spec): p for p, spec in specs.items()}
            for k, f in enumerate(cf.as_completed(futures)):
                done[futures[f]] = f.result()
                report(progress, (k + 1) / len(parts), f"{futures[f]}: assembled")
    else:
        bank = space.Bank.open(bank_paths)
        for i, p in enumerate(parts):
            done[p] = assemble_part(cfg, subject, bank, out, p, scaled(progress, i / len(parts), (i + 1) / len(parts)))
    results = {p: done[p][0] for p in parts}
    chosen = {k: v for p in parts for k, v in done[p][1].items()}
    info = {
        "subject": subject.name, "data": str(subject.root),
        "estimator": {"kind": "search", "scope": cfg.scope, "estimators": cfg.estimators,
                      "top_trials": cfg.top_trials, "average_trials": cfg.average_trials},
        "features": [{"name": f"{cfg.model}:{layer}", "n_features": n, "source": src}
                     for (src, layer), n in space.Bank.widths(bank_paths).items()],
        "validation": {"kind": "kfold", "n_folds": cfg.folds, "seed": cfg.seed, "n_train": int(subject.n_train),
                       "note": "CV r of each vertex's average of its chosen trials (chosen on the same folds)"},
        "hemispheres": {h: r.metrics for h, r in results.items()},
        "search": chosen,
        "n_test": int(subject.n_test),
    }
    return SubjectResult(subject.name, results, info)


def best_by_scope(subject, kind: str, url: str) -> list[tuple[Scope, dict | None, int]]:
    """Every scope, largest first, with its best finished configuration so far (None) and its trial count."""
    import optuna

    st = storage(url)
    known = {s.study_name for s in optuna.get_all_study_summaries(st, include_best_trial=False)}
    out = []
    for sc in sorted(scopes(subject, kind), key=lambda s: (s.part, -int(s.mask.sum()))):
        name = study_name(subject, sc)
        if name not in known:
            out.append((sc, None, 0))
            continue
        study = optuna.load_study(study_name=name, storage=st)
        best = _best(study)
        params = None if best is None else {**best.user_attrs["params"], "cv_score": float(best.value)}
        out.append((sc, params, _n_finished(study)))
    return out


def winning_layers(subject, kind: str, url: str) -> dict[str, tuple[np.ndarray, list[str]]]:
    """Per part (hemisphere): the layer each vertex's scope chose (an index into the labels; -1: none yet)."""
    labels: list[str] = []
    out = {}
    chosen = best_by_scope(subject, kind, url)
    for hemi in subject.parts:
        code = np.full(next(sc.mask.size for sc, _, _ in chosen if sc.part == hemi), -1, np.int32)
        for sc, params, _ in chosen:  # largest first: smaller scopes overwrite
            if sc.part != hemi or params is None:
                continue
            layer = params.get("layer", "all layers (banded)")
            if params["estimator"] == "kernel":  # the layer with the largest kernel weight
                layer = f"{params['layers'][int(np.argmax(params['kernel_weights']))]} (kernel mix)"
            if layer not in labels:
                labels.append(layer)
            code[sc.mask] = labels.index(layer)
        out[hemi] = (code, labels)
    return out


def trial_rows(url: str) -> list[dict]:
    """Every trial of every study in the storage: subject, scope, parameters, CV score, state, start, seconds."""
    import optuna

    st = storage(url)
    rows = []
    for summary in optuna.get_all_study_summaries(st, include_best_trial=False):
        subject, _, scope = summary.study_name.partition("/")
        study = optuna.load_study(study_name=summary.study_name, storage=st)
        for t in study.get_trials(deepcopy=False):
            params = t.user_attrs.get("params", t.params)
            rows.append({
                "subject": subject, "scope": scope, "trial": t.number, "state": t.state.name,
                "cv_score": t.value, "folds": len(t.intermediate_values),
                "started": None if t.datetime_start is None else t.datetime_start.isoformat(timespec="seconds"),
                "seconds": None if t.duration is None else round(t.duration.total_seconds(), 4),
                "fit_seconds": t.user_attrs.get("fit_seconds"),
                **{k: params.get(k) for k in ("estimator", "layer", "reduction", "n_components", "pls_components",
                                              "alpha", "l1_ratio", "frames", "response_rank", "global_bands")},
                "kernel_weights": " ".join(f"{w:.4g}" for w in params.get("kernel_weights") or []) or None,
            })
    return rows


# -- the whole search -------------------------------------------------------------------------------------------
def bank_sources(cfg: SearchConfig, layout: Layout, subject, progress=None, log=None,
                 timings: dict | None = None) -> dict[str, dict[str, str]]:
    """The feature entries a search's trials draw on (extracted once; cached), per source and layer."""
    return layout.extract(cfg, subject, progress, log, {} if timings is None else timings)


def run_search(cfg: SearchConfig, out: Path, *, progress: Progress | None = None,
               log: Callable[[str], None] | None = None, timings: dict[str, float] | None = None) -> dict:
    """Search, assemble and write every subject (see the module docstring); returns the summary.

    Local workers are ``spawn``ed processes, which run the caller's ``__main__`` module again: a script
    calling this keeps its work under ``if __name__ == "__main__":``."""
    timings = {} if timings is None else timings
    start = time.perf_counter()
    deadline = None if cfg.timeout is None else time.time() + cfg.timeout
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    url = artifacts.study_storage(out)
    layout = layout_of(cfg.data, cfg.subjects)
    state = layout.begin()
    metrics: dict = {}
    n = len(cfg.subjects)
    threads = max(1, (os.cpu_count() or 1) // cfg.jobs)
    for i, s in enumerate(cfg.subjects):
        subject = layout.subject(s)
        step = scaled(progress, i / n, (i + 1) / n)
        bank_paths = bank_sources(cfg, layout, subject, scaled(step, 0.0, 0.1), log, timings)
        names = [study_name(subject, sc) for sc in scopes(subject, cfg.scope)]
        prepare_studies(url, names, cfg)
        total = cfg.trials * len(names)

        def poll() -> None:
            import optuna

            st = storage(url)
            done = sum(min(cfg.trials, _n_finished(optuna.load_study(study_name=nm, storage=st))) for nm in names)
            report(scaled(step, 0.1, 0.9), done / total, f"{subject.name}: {done}/{total} trials")

        share = time_share(deadline, n - i, time.time())
        specs = [{"config": cfg.to_dict(), "subject": s, "bank": bank_paths, "storage": url, "out": str(out),
                  "worker": w, "deadline": share, "threads": threads} for w in range(cfg.jobs)]
        with timed(timings, "search", log):
            _run_workers(specs, poll)
        poll()
        with timed(timings, "assemble", log):
            result = assemble(cfg, s, subject, bank_paths, out, scaled(step, 0.9, 1.0))
        metrics[subject.name] = layout.write_subject(out, result, subject, state)
        metrics[subject.name]["scopes"] = {k: v["label"] for k, v in result.info["search"].items()}
        if log is not None:
            log(f"{subject.name}: noise-normalised {metrics[subject.name]['noise_normalized']}")
    artifacts.write_trials(out, trial_rows(url))
    with timed(timings, "submission", log):
        metrics.update(layout.write_submissions(out, cfg, state))
    return write_summary(out, metrics, timings, start, progress)


def search_task(ctx: TaskContext) -> dict:
    """The ``search`` run kind."""
    return run_search(SearchConfig.from_dict(ctx.config), ctx.dir, progress=ctx.progress, log=ctx.log,
                      timings=ctx.timings)


search_task.config = SearchConfig
