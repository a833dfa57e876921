"""Running runs outside the caller: detached worker processes, cancellation, liveness, grids.

* ``launch`` starts ``python -m core worker --workspace W --run ID`` in its own session (it keeps
  going when the dashboard reloads or exits); ``cancel`` marks the run cancelled and sends SIGTERM
  to its process group. A worker also notices a cancellation through its heartbeat (every
  ``HEARTBEAT_S``), so runs on other hosts (Ray) stop too.
* ``reconcile`` (called by ``list_runs`` and ``get_run``) marks active runs whose process is gone,
  or whose heartbeat stopped, as failed with ``WORKER_DIED``.
* ``launch_grid`` queues many runs under one group id and starts one detached dispatcher
  (``python -m core worker --group G``) that executes them with at most ``max_workers`` worker
  processes at a time, or submits each as a Ray task when a Ray address is configured
  (argument, or ``$BES_RAY_ADDRESS``); either way every run writes to the same store.

Workers import the installed package (``pip install -e .``; on a Ray cluster, on every node):
they run ``python -P -m core``, so a ``core`` folder in the working directory cannot stand in
for it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Iterator, Sequence

from core.util.atomicdir import pid_exists
from core.util.errors import UserError
from core.runs.store import ACTIVE, HOST, Run, RunStore, new_run_id
from core.runs.kinds import TaskContext, check_config, resolve_task

HEARTBEAT_S = 2.0
STALE_S = 60.0  # a running run without a heartbeat for this long is considered dead
START_GRACE_S = 60.0  # a queued run without a responsible process for this long never started
PROGRESS_WRITE_S = 0.5
WORKER_DIED = "worker process exited unexpectedly"
_children: dict[int, subprocess.Popen] = {}  # processes started by this process, to reap them


class Terminated(Exception):
    """Raised in a worker on SIGTERM (a cancellation, or the system stopping it)."""


# -- processes ----------------------------------------------------------------------------
def _worker_command(workspace: Path, *args: str) -> list[str]:
    """This interpreter running the installed ``core`` (``-P``: not one found in the working directory)."""
    return [sys.executable, "-P", "-m", "core", "worker", "--workspace", str(workspace), *args]


def _spawn(command: list[str], log: Path) -> subprocess.Popen:
    """Start ``command`` detached (own session, no stdin), its output appended to ``log``."""
    for pid, child in list(_children.items()):
        if child.poll() is not None:
            _children.pop(pid, None)  # reaped
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    _children[proc.pid] = proc
    return proc


def pid_alive(pid: int, *, markers: Sequence[str] = ()) -> bool:
    """Whether process ``pid`` on this host exists and is not a zombie.

    With ``markers``, its command line must also hold one of them (a reused pid does not).
    """
    child = _children.get(pid)
    if child is not None:
        return child.poll() is None
    if not pid_exists(pid):
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return True
    args = cmdline.split("\0")
    return stat.rsplit(")", 1)[-1].split()[0] != "Z" and (not markers or any(m in args for m in markers))


def _owner_alive(run: Run) -> bool:
    """Whether the process responsible for ``run`` on this host (its worker, or its grid's dispatcher) lives."""
    return pid_alive(run.pid, markers=[m for m in (run.id, run.group) if m])


# -- launching ------------------------------------------------------------------------------
def launch(store: RunStore, kind: str, config: dict, *, label: str = "") -> Run:
    """Check ``config``, queue a run and start its detached worker; returns the run (queued)."""
    run = store.create(kind, check_config(kind, config), label=label)
    try:
        proc = _spawn(_worker_command(store.workspace, "--run", run.id), store.log_path(run.id))
    except OSError as exc:
        store.finish(run.id, "failed", error=f"cannot start the worker process ({exc})")
        raise UserError(f"cannot start a worker process for run {run.id}: {exc}") from None
    store.assign(run.id, proc.pid)
    return store.get(run.id)


def resolve_ray_address(ray_address: str | None) -> str | None:
    """The Ray cluster to use: the argument, else ``$BES_RAY_ADDRESS``, else none (run locally)."""
    return ray_address or os.environ.get("BES_RAY_ADDRESS") or None


def launch_grid(store: RunStore, kind: str, configs: Sequence[dict], *, label: str = "", max_workers: int = 1,
                ray_address: str | None = None) -> list[Run]:
    """Check the configs, queue one run each under a new group id, start the dispatcher that executes them."""
    if not configs:
        raise UserError("the grid is empty: choose at least one subject, model, layer and estimator")
    if max_workers < 1:
        raise UserError(f"max_workers must be at least 1 (got {max_workers})")
    configs = [check_config(kind, c) for c in configs]
    group = f"grid-{new_run_id()}"
    runs = [store.create(kind, c, label=label, group=group) for c in configs]
    args = ["--group", group, "--workers", str(max_workers)]
    address = resolve_ray_address(ray_address)
    if address:
        args += ["--ray-address", address]
    log = store.workspace / "dispatch" / f"{group}.log"
    try:
        proc = _spawn(_worker_command(store.workspace, *args), log)
    except OSError as exc:
        for r in runs:
            store.finish(r.id, "failed", error=f"cannot start the dispatcher process ({exc})")
        raise UserError(f"cannot start a dispatcher process for {group}: {exc}") from None
    for r in runs:
        store.assign(r.id, proc.pid)
    return [store.get(r.id) for r in runs]


# -- cancelling and liveness ----------------------------------------------------------------
def cancel(store: RunStore, run_id: str) -> bool:
    """Cancel an active run (a running one gets SIGTERM at once); False if it had already ended."""
    before = store.cancel(run_id)
    if before is None:
        return False
    store.append_log(run_id, "cancelled")
    if before.status == "running" and before.host == HOST and before.pid and _owner_alive(before):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(before.pid, signal.SIGTERM)  # workers lead their own process group
    return True


def cancel_group(store: RunStore, group: str) -> list[str]:
    """Cancel every active run of a grid; returns the ids cancelled."""
    return [r.id for r in reversed(store.list(group=group, status=ACTIVE)) if cancel(store, r.id)]


def _is_dead(run: Run, now: float) -> bool:
    if run.pid is None:
        return now - run.created > START_GRACE_S
    if run.host == HOST and not _owner_alive(run):
        return True
    return run.status == "running" and now - (run.heartbeat or run.started or run.created) > STALE_S


def reconcile(store: RunStore, runs: Sequence[Run] | None = None) -> list[str]:
    """Mark active runs whose worker died as failed; returns their ids."""
    now = time.time()
    dead = []
    for run in runs if runs is not None else store.list(status=ACTIVE):
        if run.active and _is_dead(run, now) and store.finish(run.id, "failed", error=WORKER_DIED):
            store.append_log(run.id, f"failed: {WORKER_DIED}")
            dead.append(run.id)
    return dead


def list_runs(store: RunStore, **filters) -> list[Run]:
    """``RunStore.list`` after reconciling, so a dead run never shows as running."""
    reconcile(store)
    return store.list(**filters)


def get_run(store: RunStore, run_id: str) -> Run:
    run = store.get(run_id)
    if run.active and reconcile(store, [run]):
        run = store.get(run_id)
    return run


# -- executing (inside the worker) ------------------------------------------------------------
class _Reporter:
    """The run's progress callback and heartbeat: throttled writes, cancellation noticed."""

    def __init__(self, store: RunStore, run_id: str, signal_self: bool):
        self.store, self.run_id, self.signal_self = store, run_id, signal_self
        self.cancelled = False
        self.fraction, self.message = 0.0, "started"
        self.timings: dict[str, float] = {}
        self._last_write = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat_loop, name=f"heartbeat-{run_id}", daemon=True)

    def __call__(self, fraction: float, message: str = "") -> None:
        if self.cancelled:
            raise Terminated("cancelled")
        self.fraction, self.message = float(fraction), message or self.message
        if time.monotonic() - self._last_write >= PROGRESS_WRITE_S:
            self.write()

    def write(self) -> bool:
        with self._lock:
            self._last_write = time.monotonic()
            try:
                return self.store.beat(self.run_id, self.fraction, self.message, dict(self.timings))
            except sqlite3.OperationalError:
                return True  # the index is busy beyond the timeout: try again at the next beat

    def _beat_loop(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            if not self.write():  # cancelled (or failed by a reconciler): stop the work
                self.cancelled = True
                if self.signal_self:
                    os.kill(os.getpid(), signal.SIGTERM)
                return

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        self._thread.start()
        try:
            yield
        finally:
            self._stop.set()
            self._thread.join()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _raise_terminated(signum, frame) -> None:
    raise Terminated("terminated by SIGTERM")


def execute(store: RunStore, run_id: str) -> str:
    """Run a queued run in this process (what the worker does); returns its final status.

    The run is marked done only after its task returned, i.e. after all its artifacts are
    written. A cancellation or a failure leaves it cancelled or failed with its error.
    """
    if not store.claim(run_id, os.getpid()):
        return store.get(run_id).status
    run = store.get(run_id)
    main = threading.current_thread() is threading.main_thread()
    reporter = _Reporter(store, run_id, signal_self=main)
    ctx = TaskContext(run=run, store=store, progress=reporter, timings=reporter.timings)
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if main else None
    ctx.log(f"running {run.kind} on {HOST} (pid {os.getpid()})")
    try:
        with reporter.running():
            summary = resolve_task(run.kind)(ctx)
        if store.finish(run_id, "done", summary=summary, timings=reporter.timings):
            ctx.log("done")
    except BaseException as exc:  # noqa: BLE001 - every way out must leave a final status
        error = _one_line(exc)
        if not isinstance(exc, UserError) and str(exc).strip():
            error = f"{type(exc).__name__}: {error}"
        if not isinstance(exc, (UserError, Terminated)):
            ctx.log(traceback.format_exc())
        if store.finish(run_id, "failed", error=error, timings=reporter.timings):
            ctx.log(f"failed: {error}")
        if not isinstance(exc, Exception):
            raise
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
    return store.get(run_id).status


# -- grids (inside the dispatcher) ----------------------------------------------------------
def _reap(store: RunStore, run_id: str, returncode: int) -> None:
    """After a worker exited: a run it left active is failed (it crashed before finishing)."""
    error = f"{WORKER_DIED} (exit code {returncode})"
    if store.finish(run_id, "failed", error=error):
        store.append_log(run_id, f"failed: {error}")


def dispatch(store: RunStore, group: str, max_workers: int = 1, ray_address: str | None = None) -> None:
    """Execute a grid (what the dispatcher process does); if that fails, its queued runs fail with the reason."""
    try:
        if ray_address:
            dispatch_ray(store, group, ray_address)
        else:
            dispatch_local(store, group, max_workers)
    except Exception as exc:
        reason = _one_line(exc)
        for run in store.list(group=group, status="queued"):
            if store.finish(run.id, "failed", error=f"the grid dispatcher failed: {reason}"):
                store.append_log(run.id, f"failed: the grid dispatcher failed: {reason}")
        raise


def dispatch_local(store: RunStore, group: str, max_workers: int = 1) -> None:
    """Execute the queued runs of ``group``, each in its own worker, at most ``max_workers`` at once."""
    running: dict[str, subprocess.Popen] = {}
    while True:
        for run_id, proc in list(running.items()):
            if proc.poll() is not None:
                del running[run_id]
                _reap(store, run_id, proc.returncode)
        waiting = [r.id for r in reversed(store.list(group=group, status="queued")) if r.id not in running]
        if not waiting and not running:
            return
        for run_id in waiting[: max_workers - len(running)]:
            proc = _spawn(_worker_command(store.workspace, "--run", run_id), store.log_path(run_id))
            store.assign(run_id, proc.pid)
            running[run_id] = proc
        time.sleep(0.2)


def run_worker_process(workspace: str, run_id: str) -> int:
    """Execute one run in a worker process of its own and wait for it (what a Ray task does)."""
    proc = _spawn(_worker_command(Path(workspace), "--run", run_id), RunStore(workspace).log_path(run_id))
    return proc.wait()


def dispatch_ray(store: RunStore, group: str, address: str) -> None:
    """Submit every queued run of ``group`` as a Ray task on the cluster at ``address``; wait for all."""
    try:
        import ray
    except ImportError:
        raise UserError("a Ray address is configured but ray is not installed (pip install ray)") from None
    ray.init(address=address, log_to_driver=False)
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(run_worker_process)
        pending = {task.remote(str(store.workspace), r.id): r.id
                   for r in reversed(store.list(group=group, status="queued"))}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            run_id = pending.pop(ready[0])
            try:
                returncode = ray.get(ready[0])
            except ray.exceptions.RayError as exc:
                store.finish(run_id, "failed", error=f"Ray task failed: {str(exc).splitlines()[0]}")
                continue
            _reap(store, run_id, returncode)
    finally:
        ray.shutdown()
