"""The run store: statuses, filters, restart, concurrent writers from several processes."""

from __future__ import annotations

import gc
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.util.errors import UserError
from core.runs.store import RunStore, default_workspace

ROOT = Path(__file__).resolve().parents[1]


def test_lifecycle_and_final_status_is_final(tmp_path):
    store = RunStore(tmp_path / "ws")
    run = store.create("fit", {"subjects": [1], "model": "mobilenet_v2", "layers": ["features.3"], "estimator": "ridge"},
                       label="first")
    assert run.status == "queued" and run.dir.is_dir() and (run.dir / "config.json").is_file()
    assert store.claim(run.id, 1234) and not store.claim(run.id, 1234)
    assert store.beat(run.id, 0.5, "half way", {"extract": 1.5})
    got = store.get(run.id)
    assert (got.status, got.progress, got.message, got.timings, got.pid) == ("running", 0.5, "half way",
                                                                             {"extract": 1.5}, 1234)
    assert store.finish(run.id, "done", summary={"lh_median_r": 0.3})
    assert not store.finish(run.id, "failed", error="late")  # a finished run never changes again
    assert not store.beat(run.id, 0.9, "late", {})
    assert store.cancel(run.id) is None
    done = store.get(run.id)
    assert (done.status, done.progress, done.summary, done.error) == ("done", 1.0, {"lh_median_r": 0.3}, None)
    assert done.seconds is not None and done.seconds >= 0


def test_cancel_queued_run_cannot_start(tmp_path):
    store = RunStore(tmp_path)
    run = store.create("fit", {})
    before = store.cancel(run.id)
    assert before is not None and before.status == "queued"
    assert store.get(run.id).status == "cancelled" and not store.claim(run.id, 1)


def test_filters_and_restart(tmp_path):
    store = RunStore(tmp_path)
    a = store.create("fit", {"subjects": [1], "model": "alexnet", "layers": ["features.2"], "estimator": "ridge"})
    b = store.create("fit", {"subjects": [2], "model": "mobilenet_v2", "layers": ["features.3"], "estimator": "ols"},
                     label="baseline", group="grid-x")
    c = store.create("extract", {"model": "mobilenet_v2", "layers": ["features.3", "features.6"]})
    store.finish(a.id, "failed", error="boom")
    again = RunStore(tmp_path)  # a restarted dashboard
    assert [r.id for r in again.list()] == [c.id, b.id, a.id]
    assert [r.id for r in again.list(status="failed")] == [a.id]
    assert [r.id for r in again.list(status=["queued"], kind="fit")] == [b.id]
    assert [r.id for r in again.list(subject=2)] == [b.id]
    assert [r.id for r in again.list(model="mobilenet_v2", estimator="ols")] == [b.id]
    assert [r.id for r in again.list(group="grid-x")] == [b.id]
    assert [r.id for r in again.list(search="basel")] == [b.id]
    assert [r.id for r in again.list(limit=1, offset=1)] == [b.id]
    assert again.get(a.id).error == "boom"
    with pytest.raises(UserError, match="unknown run status 'finished'"):
        again.list(status="finished")
    with pytest.raises(UserError, match="no run with id 'nope'"):
        again.get("nope")


def test_delete_only_finished(tmp_path):
    store = RunStore(tmp_path)
    run = store.create("fit", {})
    with pytest.raises(UserError, match="still active"):
        store.delete(run.id)
    store.finish(run.id, "cancelled")
    store.delete(run.id)
    assert store.list() == [] and not run.dir.exists()


def test_log_append_and_tail(tmp_path):
    store = RunStore(tmp_path)
    run = store.create("fit", {})
    store.append_log(run.id, "one")
    store.append_log(run.id, "two\n")
    assert store.read_log(run.id).splitlines()[1].endswith(" two")
    assert store.read_log(run.id, max_chars=4) == "two\n"


def test_workspace_default_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("BES_WORKSPACE", str(tmp_path / "elsewhere"))
    assert default_workspace() == tmp_path / "elsewhere"
    assert RunStore().workspace == tmp_path / "elsewhere"


def test_listing_hundreds_is_instant(tmp_path):
    store = RunStore(tmp_path)
    with sqlite3.connect(store.db_path) as db:  # bulk rows, as after months of use
        db.executemany(
            "INSERT INTO runs (id, kind, status, config, subject, model, created) VALUES (?, 'fit', ?, ?, ?, ?, ?)",
            [(f"r{i:04d}", ("done", "failed")[i % 2], '{"subjects": [1], "model": "alexnet"}', i % 8 + 1, "alexnet",
              time.time() + i) for i in range(2000)],
        )
    gc.collect()  # time the store, not a full collection of the whole test session's heap
    gc.disable()
    try:
        start = time.perf_counter()
        runs = store.list()
        done = store.list(status="done", subject=3)
        elapsed = time.perf_counter() - start
    finally:
        gc.enable()
    # 0.09 s on a quiet machine; late in the full suite, beside other work, it has taken 0.8-1.0 s: this guards
    # against a listing that scales badly (a query per run, a file read per run), not a timing target
    assert elapsed < 2.0
    assert len(runs) == 2000 and runs[0].id == "r1999" and len(done) == 250


def _writer(workspace: str, n: int) -> None:
    store = RunStore(workspace)
    for i in range(n):
        run = store.create("fit", {"subjects": [1]})
        assert store.claim(run.id, i)
        for step in range(10):
            assert store.beat(run.id, step / 10, f"step {step}", {"step": step})
            store.append_log(run.id, f"step {step}")
        store.list(status="running")
        assert store.finish(run.id, "done", summary={"i": i})


def test_concurrent_writers_from_several_processes(tmp_path):
    code = f"from tests.test_runstore import _writer; _writer({str(tmp_path)!r}, 6)"
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT) for _ in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    store = RunStore(tmp_path)
    runs = store.list()
    assert len(runs) == 24 and {r.status for r in runs} == {"done"}
    assert all(store.read_log(r.id).count("step") == 10 for r in runs)
    with sqlite3.connect(store.db_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
