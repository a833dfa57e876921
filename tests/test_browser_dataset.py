"""End to end in headless Chromium: the dashboard serves the demo dataset and the Dataset page draws."""

from __future__ import annotations

import pytest

from tests.conftest import wait_for_app

pytestmark = pytest.mark.browser


def test_dataset_page_in_browser(dashboard, page, tmp_path):
    """Also the navigation at a page's URL: in the suite this is the dashboard's first visit, which Streamlit
    opened as an old-style multipage app (an "app" entry, no Home) while the pages lived in ``pages/``."""
    page.goto(f"{dashboard}/Dataset")
    wait_for_app(page)
    nav = page.locator('[data-testid="stSidebarNav"]').inner_text().split()
    assert "Home" in nav[:2] and "app" not in nav
    page.wait_for_selector('[data-testid="stDataFrame"]', timeout=60_000)
    page.wait_for_selector('[data-testid="stImage"] img', timeout=60_000)
    page.screenshot(path=str(tmp_path / "dataset.png"), full_page=True)
    assert page.locator('[data-testid="stException"]').count() == 0
    assert page.locator('[data-testid="stImage"] img').count() == 8
    body = page.inner_text("body")
    assert "ROIs present in subj01" in body
    assert "prf-visualrois" in body
    # images are really served and decoded by the browser
    widths = page.eval_on_selector_all('[data-testid="stImage"] img', "els => els.map(e => e.naturalWidth)")
    assert all(w > 0 for w in widths)
