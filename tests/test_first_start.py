"""First start: the demo is generated once, in a background job shared by every session."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.algonauts2023 import demo

from core.util import paths
from tests.conftest import ROOT
from ui import state

CALLS: list[str] = []


def slow_generator(path: Path, progress) -> None:
    """A stand-in generator for the job mechanics: records its call, reports progress, takes a moment."""
    CALLS.append(str(path))
    progress(0.5, "half way")
    time.sleep(0.5)
    path.mkdir(parents=True)


def failing_generator(path: Path, progress) -> None:
    raise OSError(f"{path}: disk full")


def _wait(job: dict, timeout: float = 10.0) -> None:
    t0 = time.monotonic()
    while not job["done"]:
        assert time.monotonic() - t0 < timeout, "job did not finish"
        time.sleep(0.05)


def test_one_job_serves_every_session_and_runs_once(tmp_path):
    state._demo_job.clear()
    CALLS.clear()
    target = tmp_path / "demo"
    first = state._demo_job(str(target), f"{__name__}.slow_generator")
    second = state._demo_job(str(target), f"{__name__}.slow_generator")  # another session, a page change
    assert first is second
    _wait(first)
    assert CALLS == [str(target)] and target.is_dir() and first["error"] is None
    assert first["fraction"] == 0.5 and first["message"] == "half way"


def test_a_failed_job_reports_its_error(tmp_path):
    state._demo_job.clear()
    job = state._demo_job(str(tmp_path / "x"), f"{__name__}.failing_generator")
    _wait(job)
    assert job["error"] == f"{tmp_path / 'x'}: disk full"


@pytest.mark.slow
def test_first_start_generates_the_demo_and_opens_it(tmp_path, monkeypatch):
    """No data folder set, an empty cache: the home page creates the real demo, then shows it."""
    monkeypatch.delenv("BES_DATA_DIR", raising=False)
    monkeypatch.setenv("BES_CACHE_DIR", str(tmp_path / "cache"))
    state._demo_job.clear()
    assert not demo.is_demo(paths.demo_dir())
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300).run()
    assert not at.exception
    assert demo.is_demo(paths.demo_dir())
    assert at.sidebar.selectbox[0].options == ["subj01", "subj02"]
    assert any("embedded demo" in c.value for c in at.sidebar.caption)
