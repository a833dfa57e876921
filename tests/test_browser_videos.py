"""End to end in headless Chromium: the Videos page on the video demo, chosen by typing its folder into the
page's data-directory input (the ``dashboard`` server sets no ``BES_DATA2021_DIR``)."""

from __future__ import annotations

import pytest

from tests.conftest import wait_for_app

pytestmark = pytest.mark.browser

TIMEOUT = 90_000


def wait_text(page, text: str, timeout: int = TIMEOUT) -> None:
    page.wait_for_function("(t) => document.body.innerText.includes(t)", arg=text, timeout=timeout)


def test_videos_page_summary_clips_and_volume(dashboard, demo2021_root, page, tmp_path):
    page.set_viewport_size({"width": 1400, "height": 3000})  # Streamlit scrolls inside the app: tall viewport
    page.goto(f"{dashboard}/Videos")
    field = page.locator('[data-testid="stSidebar"] input[aria-label="Video data directory"]')
    field.wait_for(timeout=TIMEOUT)
    field.fill(str(demo2021_root))  # instead of the default demo (generated on first use)
    field.press("Enter")
    wait_text(page, "40 + 8")  # the summary of this demo: 40 training + 8 test clips
    page.wait_for_function(  # the noise ceiling's glass brain and slices, drawn and loaded
        "() => [...document.querySelectorAll('[data-testid=\"stImage\"] img')]"
        ".filter(i => i.complete && i.naturalWidth > 500).length >= 2", timeout=TIMEOUT)
    wait_for_app(page, TIMEOUT)
    wait_text(page, "No 2021 run on this data directory yet")
    assert page.locator('[data-testid="stException"]').count() == 0
    assert page.locator('[data-testid="stAlertContentError"]').count() == 0
    assert page.locator("video").count() == 3
    assert "sub01: noise ceiling in the brain" in page.inner_text("body")
    page.screenshot(path=str(tmp_path / "videos.png"), full_page=True)
    print(f"\nscreenshot: {tmp_path / 'videos.png'}")
