"""A grid fanned out over a Ray cluster (a local Ray instance started by the test) into the same store."""

from __future__ import annotations

import pytest

from core.runs import workers
from core.runs.store import RunStore
from tests.test_jobs import SLEEP, wait_final, wait_running

ray = pytest.importorskip("ray", reason="ray is not installed (python -m pip install ray==2.60.0)")


@pytest.fixture(scope="module")
def ray_address():
    ctx = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ctx.address_info["gcs_address"]
    finally:
        ray.shutdown()


def test_grid_over_ray_writes_to_the_same_store(tmp_path, ray_address):
    store = RunStore(tmp_path)
    configs = [{"steps": 2, "i": 0}, {"steps": 2, "i": 1, "fail": True}, {"steps": 400, "sleep": 0.05}]
    runs = workers.launch_grid(store, SLEEP, configs, ray_address=ray_address)
    wait_running(store, runs[2].id)
    assert workers.cancel(store, runs[2].id)
    final = [wait_final(store, r.id, timeout=60) for r in runs]
    assert [r.status for r in final] == ["done", "failed", "cancelled"], store.read_log(runs[0].id)
    assert final[0].summary == {"steps": 2} and (final[0].dir / "result.json").is_file()
    assert final[1].error == "the test task was asked to fail"
    assert "Connecting to existing Ray cluster" in (store.workspace / "dispatch" / f"{runs[0].group}.log").read_text()
