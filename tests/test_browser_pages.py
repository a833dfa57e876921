"""End to end in headless Chromium: every page draws at its URL, the navigation names the main page Home,
and no page logs an error in the browser console (also not after pointing the sidebar at a missing folder)."""

from __future__ import annotations

import re

import pytest

from tests.conftest import wait_for_app

pytestmark = pytest.mark.browser

TIMEOUT = 90_000
PAGES = {"": "Brain Encoding Studio", "Dataset": "Dataset", "Explore": "Explore", "Runs": "Runs",
         "Compare": "Compare runs", "Submission": "Submission", "Flatmaps": "Flat maps", "Videos": "Videos"}


# Streamlit's own frontend, loaded at a page's URL (/Dataset), first probes that URL as the server's base
# (/Dataset/_stcore/health, /Dataset/_stcore/host-config; 404), then the root. Only these two are let through.
STREAMLIT_BASE_PROBES = re.compile(r"/[A-Za-z]+/_stcore/(health|host-config)$")


def console_errors(page) -> list[str]:
    """A list that fills with the page's console errors and uncaught exceptions from now on (but for
    Streamlit's base URL probes)."""
    errors: list[str] = []

    def record(message) -> None:
        if message.type == "error" and not STREAMLIT_BASE_PROBES.search(message.location.get("url", "")):
            errors.append(f"{page.url}: {message.text} {message.location}")

    page.on("console", record)
    page.on("pageerror", lambda exc: errors.append(f"{page.url}: {exc}"))
    return errors


def test_every_page_draws_at_its_url_without_console_errors(dashboard, page, tmp_path):
    errors = console_errors(page)
    for path, title in PAGES.items():
        page.goto(f"{dashboard}/{path}")
        wait_for_app(page, TIMEOUT)
        page.wait_for_function("(t) => [...document.querySelectorAll('h1')].some(h => h.innerText.includes(t))",
                               arg=title, timeout=TIMEOUT)  # fmt: skip
        page.wait_for_timeout(1500)  # figures, images and late requests
        assert page.url.rstrip("/") == f"{dashboard}/{path}".rstrip("/")
        assert page.locator('[data-testid="stException"]').count() == 0, path
        page.screenshot(path=str(tmp_path / f"{path or 'Home'}.png"), full_page=True)
    nav = page.locator('[data-testid="stSidebarNav"]').inner_text().split()
    assert "Home" in nav[:2] and "app" not in nav  # the first entry (after its icon)
    assert errors == [], "\n".join(errors)
    print(f"screenshots in {tmp_path}")


def test_a_missing_data_folder_is_one_error_and_no_failed_request(dashboard, page, tmp_path, demo_root):
    errors = console_errors(page)
    page.goto(f"{dashboard}/Dataset")
    wait_for_app(page, TIMEOUT)
    page.wait_for_selector('[data-testid="stImage"] img', timeout=TIMEOUT)
    box = page.get_by_role("textbox", name="Data directory")
    box.fill(str(demo_root / "nowhere"))  # inside a folder the dashboard may open (BES_DATA_ROOTS), but missing
    box.press("Enter")
    page.wait_for_function("() => document.body.innerText.includes('data directory not found')", timeout=TIMEOUT)
    page.wait_for_timeout(2000)
    page.screenshot(path=str(tmp_path / "missing.png"), full_page=True)
    assert page.locator('[data-testid="stAlertContentError"]').count() == 1
    assert errors == []
