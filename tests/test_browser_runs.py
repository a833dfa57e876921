"""End to end in headless Chromium: launch a small run from the Runs page by clicking, wait until it is
done, find its bars on the Compare page, then build its submission. The dashboard runs on the demo
with a temporary run store (``BES_WORKSPACE``)."""

from __future__ import annotations

import time

import pytest

from core.runs.store import RunStore
from tests.conftest import wait_for_app

pytestmark = pytest.mark.browser

TIMEOUT = 90_000
RUN_TIMEOUT = 180_000  # the run: worker start, extraction and fit on a busy machine
BAR_PLOTS = ("() => [...document.querySelectorAll('.js-plotly-plot')]"
             ".filter(d => (d.data || []).some(t => t.type === 'bar'))")


def no_exception(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0
    assert page.locator('[data-testid="stAlertContentError"]').count() == 0


def wait_text(page, text: str, timeout: int = TIMEOUT) -> None:
    page.wait_for_function("(t) => document.body.innerText.includes(t)", arg=text, timeout=timeout)


def test_launch_from_runs_page_then_compare_and_submit(dashboard, dashboard_workspace, page, tmp_path):
    url, workspace = dashboard, dashboard_workspace
    page.set_viewport_size({"width": 1400, "height": 2200})  # Streamlit scrolls inside the app: tall viewport
    page.goto(f"{url}/Runs")
    wait_for_app(page, TIMEOUT)
    wait_text(page, "No runs yet")
    no_exception(page)
    page.screenshot(path=str(tmp_path / "runs_empty.png"), full_page=True)

    t0 = time.perf_counter()
    page.get_by_role("button", name="Launch").click()
    wait_text(page, "Launched 1 run")
    [run] = RunStore(workspace).list()
    page.wait_for_selector('[data-testid="stProgress"]', timeout=TIMEOUT)  # live progress while it runs
    page.wait_for_function("() => /Status: (running|done)/.test(document.body.innerText)", timeout=RUN_TIMEOUT)
    page.screenshot(path=str(tmp_path / "runs_running.png"), full_page=True)
    wait_text(page, "Status: done", RUN_TIMEOUT)
    print(f"\nrun {run.id}: done {time.perf_counter() - t0:.1f} s after the click")
    no_exception(page)
    assert RunStore(workspace).get(run.id).status == "done"
    page.wait_for_timeout(500)
    page.screenshot(path=str(tmp_path / "runs_done.png"), full_page=True)

    page.set_viewport_size({"width": 1400, "height": 3400})
    page.goto(f"{url}/Compare")
    wait_for_app(page, TIMEOUT)
    page.wait_for_function(f"() => ({BAR_PLOTS})().length > 0", timeout=TIMEOUT)
    no_exception(page)
    names = page.evaluate(f"() => ({BAR_PLOTS})()[0].data.map(t => t.name)")
    assert set(names) == {f"mobilenet_v2 features.6 ridge ({run.id[-4:]})"}
    page.wait_for_function(
        "() => document.querySelectorAll('.js-plotly-plot .barlayer .bars path').length > 10", timeout=TIMEOUT
    )  # the bars are drawn (SVG)
    page.wait_for_selector('[data-testid="stPlotlyChart"] canvas', timeout=TIMEOUT)  # the accuracy on the cortex
    page.wait_for_timeout(1000)
    page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)

    page.set_viewport_size({"width": 1400, "height": 1400})
    page.goto(f"{url}/Submission")
    wait_for_app(page, TIMEOUT)
    page.get_by_role("button", name="Build and validate the submission").click()
    page.wait_for_selector('[data-testid="stDownloadButton"]', timeout=TIMEOUT)
    wait_text(page, "Valid: 1 subject x 2 hemispheres")
    no_exception(page)
    page.screenshot(path=str(tmp_path / "submission.png"), full_page=True)
    print(f"screenshots in {tmp_path}")
