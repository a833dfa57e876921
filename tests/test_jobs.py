"""Detached workers: done, failed, cancelled, killed mid-run (SIGKILL), restart, local grids."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.runs import workers as jobs
from core.cli import main
from core.util.errors import UserError
from core.util.fileio import write_json
from core.runs.store import RunStore

SLEEP = "tests.test_jobs:sleep_task"
ROOT = Path(__file__).resolve().parents[1]


def sleep_task(ctx) -> dict:
    """Test-only run kind: ``steps`` progress reports ``sleep`` seconds apart, then one artifact."""
    steps, pause = int(ctx.config.get("steps", 2)), float(ctx.config.get("sleep", 0.05))
    with ctx.timed("sleep"):
        for i in range(steps):
            ctx.progress(i / steps, f"step {i + 1}/{steps}")
            time.sleep(pause)
    if ctx.config.get("fail"):
        raise UserError("the test task was asked to fail")
    write_json(ctx.dir / "result.json", {"steps": steps})
    return {"steps": steps}


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def wait_final(store: RunStore, run_id: str, timeout: float = 30.0):
    return wait_for(lambda: (r := jobs.get_run(store, run_id)).status not in ("queued", "running") and r,
                    timeout, f"run {run_id} to finish")


def wait_running(store: RunStore, run_id: str):
    return wait_for(lambda: (r := store.get(run_id)).status == "running" and r.progress > 0 and r,
                    what=f"run {run_id} to report progress")


def assert_intact(store: RunStore) -> None:
    with sqlite3.connect(store.db_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_run_in_detached_worker_is_done_with_artifacts(tmp_path):
    store = RunStore(tmp_path)
    run = jobs.launch(store, SLEEP, {"steps": 3})
    assert run.status == "queued" and run.pid
    done = wait_final(store, run.id)
    assert done.status == "done", store.read_log(run.id)
    assert done.summary == {"steps": 3} and done.progress == 1.0 and "sleep" in done.timings
    assert (done.dir / "result.json").is_file()
    assert "running tests.test_jobs:sleep_task" in store.read_log(run.id)


def test_run_outlives_the_process_that_launched_it(tmp_path):
    """A dashboard that exits (or reloads) leaves its runs going; a new store finds them."""
    code = ("import sys; from core.runs import workers as jobs; from core.runs.store import RunStore; "
            f"print(jobs.launch(RunStore(sys.argv[1]), {SLEEP!r}, {{'steps': 10, 'sleep': 0.1}}).id)")
    launcher = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                              cwd=ROOT, check=True)
    run_id = launcher.stdout.strip()
    assert wait_final(RunStore(tmp_path), run_id).status == "done"


def test_failing_task_is_failed_with_its_error(tmp_path):
    store = RunStore(tmp_path)
    run = wait_final(store, jobs.launch(store, SLEEP, {"steps": 1, "fail": True}).id)
    assert run.status == "failed" and run.error == "the test task was asked to fail"
    assert not (run.dir / "result.json").exists()


def test_unknown_kind_is_refused_before_anything_is_queued(tmp_path):
    store = RunStore(tmp_path)
    with pytest.raises(UserError, match="unknown run kind 'nope'"):
        jobs.launch(store, "nope", {})
    assert store.list() == []


def test_sigkill_mid_run_marks_failed_and_store_stays_intact(tmp_path):
    store = RunStore(tmp_path)
    run = jobs.launch(store, SLEEP, {"steps": 200, "sleep": 0.05})
    running = wait_running(store, run.id)
    os.kill(running.pid, signal.SIGKILL)
    failed = wait_final(store, run.id, timeout=10)
    assert failed.status == "failed" and failed.error == jobs.WORKER_DIED
    assert not (failed.dir / "result.json").exists()
    assert_intact(store)
    restarted = RunStore(tmp_path)  # the store keeps working, and a restart still sees the run
    assert restarted.get(run.id).status == "failed"
    assert wait_final(restarted, jobs.launch(restarted, SLEEP, {"steps": 1}).id).status == "done"


def test_cancel_stops_the_worker(tmp_path):
    store = RunStore(tmp_path)
    run = jobs.launch(store, SLEEP, {"steps": 200, "sleep": 0.05})
    running = wait_running(store, run.id)
    assert jobs.cancel(store, run.id)
    wait_for(lambda: not jobs.pid_alive(running.pid), 10, "the worker to exit")
    final = store.get(run.id)
    assert final.status == "cancelled" and not (final.dir / "result.json").exists()
    assert not jobs.cancel(store, run.id)
    assert "cancelled" in store.read_log(run.id)


def test_heartbeat_notices_cancellation_without_a_signal(tmp_path):
    """As on another host (a Ray node): only the index says cancelled; the worker stops itself."""
    store = RunStore(tmp_path)
    run = jobs.launch(store, SLEEP, {"steps": 200, "sleep": 0.05})
    running = wait_running(store, run.id)
    store.cancel(run.id)
    wait_for(lambda: not jobs.pid_alive(running.pid), 10, "the worker to notice the cancellation")
    assert store.get(run.id).status == "cancelled"


def test_reconciler_fails_stale_and_never_started_runs(tmp_path):
    store = RunStore(tmp_path)
    never = store.create(SLEEP, {})
    stale = store.create(SLEEP, {})
    store.claim(stale.id, os.getpid())  # alive process, but no heartbeat for too long
    with sqlite3.connect(store.db_path) as db:
        db.execute("UPDATE runs SET created = created - 600, heartbeat = heartbeat - 600")
    fresh = store.create(SLEEP, {})  # within its start grace period
    reused = store.create(SLEEP, {})
    store.claim(reused.id, os.getpid())  # fresh heartbeat, but that pid is not its worker (pid reuse)
    assert sorted(jobs.reconcile(store)) == sorted([never.id, stale.id, reused.id])
    assert [r.status for r in jobs.list_runs(store)] == ["failed", "queued", "failed", "failed"]
    assert store.get(fresh.id).status == "queued"


def test_local_grid_runs_one_at_a_time(tmp_path):
    store = RunStore(tmp_path)
    runs = jobs.launch_grid(store, SLEEP, [{"steps": 2, "i": i} for i in range(3)], label="grid")
    assert len({r.group for r in runs}) == 1 and all(r.pid for r in runs)
    final = [wait_final(store, r.id) for r in runs]
    assert [r.status for r in final] == ["done"] * 3
    spans = sorted((r.started, r.finished) for r in final)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))  # max_workers=1: no overlap
    assert [r.config["i"] for r in sorted(final, key=lambda r: r.started)] == [0, 1, 2]


def test_cancel_group(tmp_path):
    store = RunStore(tmp_path)
    runs = jobs.launch_grid(store, SLEEP, [{"steps": 200, "sleep": 0.05}] * 3, max_workers=2)
    wait_running(store, runs[0].id)
    assert sorted(jobs.cancel_group(store, runs[0].group)) == sorted(r.id for r in runs)
    assert [wait_final(store, r.id).status for r in runs] == ["cancelled"] * 3


def test_runs_command(tmp_path, capsys):
    store = RunStore(tmp_path)
    done = wait_final(store, jobs.launch(store, SLEEP, {"steps": 1}, label="cli").id)
    queued = store.create(SLEEP, {})
    assert main(["runs", "--workspace", str(tmp_path), "list", "--status", "done"]) == 0
    out = capsys.readouterr().out
    assert done.id in out and queued.id not in out
    assert main(["runs", "--workspace", str(tmp_path), "show", done.id]) == 0
    assert "running tests.test_jobs:sleep_task" in capsys.readouterr().out
    assert main(["runs", "--workspace", str(tmp_path), "cancel", queued.id, done.id]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{queued.id}: cancelled", f"{done.id}: not active, left as is"]
    assert main(["runs", "--workspace", str(tmp_path), "show", "nope"]) == 2


def test_grid_skips_cancelled_runs_and_a_killed_dispatcher_fails_the_rest(tmp_path):
    store = RunStore(tmp_path)
    runs = jobs.launch_grid(store, SLEEP, [{"steps": 200, "sleep": 0.05}, {"steps": 1}, {"steps": 1}])
    dispatcher = runs[1].pid
    wait_running(store, runs[0].id)
    assert jobs.cancel(store, runs[1].id)
    os.kill(dispatcher, signal.SIGKILL)
    wait_for(lambda: not jobs.pid_alive(dispatcher), 10, "the dispatcher to die")
    assert jobs.get_run(store, runs[2].id).status == "failed"
    assert store.get(runs[2].id).error == jobs.WORKER_DIED
    assert store.get(runs[1].id).status == "cancelled"
    assert store.get(runs[0].id).status == "running"  # its own worker carries on
    jobs.cancel(store, runs[0].id)
    assert wait_final(store, runs[0].id).status == "cancelled"


def test_a_failing_dispatcher_fails_its_queued_runs_with_the_reason(tmp_path, monkeypatch):
    store = RunStore(tmp_path)
    runs = [store.create(SLEEP, {}, group="grid-x") for _ in range(2)]

    def broken(*args):
        raise UserError("cannot reach the Ray cluster at 10.0.0.1:6379")

    monkeypatch.setattr(jobs, "dispatch_ray", broken)
    with pytest.raises(UserError):
        jobs.dispatch(store, "grid-x", ray_address="10.0.0.1:6379")
    assert {store.get(r.id).error for r in runs} == {
        "the grid dispatcher failed: cannot reach the Ray cluster at 10.0.0.1:6379"}
