"""End to end in headless Chromium: the Explore page draws the brain surface (WebGL) and follows the
controls. Runs against ``streamlit run app.py`` on the generated demo (fixtures in conftest)."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest

from tests.conftest import wait_for_app

pytestmark = pytest.mark.browser

PLOT = '[data-testid="stPlotlyChart"] .js-plotly-plot'
TIMEOUT = 90_000


def open_explore(dashboard, page):
    page.set_viewport_size({"width": 1400, "height": 1500})  # Streamlit scrolls inside the app: tall viewport
    page.goto(f"{dashboard}/Explore")
    wait_for_app(page, TIMEOUT)
    page.wait_for_selector(f"{PLOT} canvas", timeout=TIMEOUT)
    settle(page)


def settle(page):
    """Wait for the script run to finish and Plotly to draw the scene."""
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=TIMEOUT)
    page.wait_for_function(
        "(sel) => { const d = document.querySelector(sel); return d && d._fullLayout && d._fullLayout.scene"
        " && d._fullLayout.scene._scene && d.querySelector('canvas'); }",
        arg=PLOT,
        timeout=TIMEOUT,
    )
    page.wait_for_timeout(400)  # two animation frames and then some, for the WebGL draw


def plot_pixels(page) -> np.ndarray:
    """RGB pixels of the figure's 3-D scenes as the browser drew them (colour bar and titles cut off)."""
    from PIL import Image

    plot = page.locator(PLOT).first
    png = plot.screenshot()
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    area = page.evaluate(
        "(sel) => { const s = document.querySelector(sel)._fullLayout._size; return [s.l, s.t, s.w, s.h]; }", PLOT
    )
    l, t, w, h = (int(round(x)) for x in area)
    scale = img.shape[1] / plot.bounding_box()["width"]  # device pixels per CSS pixel
    return img[int(t * scale) : int((t + h) * scale), int(l * scale) : int((l + w) * scale)]


def brain_stats(px: np.ndarray) -> tuple[float, float, float]:
    """Shares of the scenes' pixels that are: drawn (not the white page), cortex gray, strongly coloured."""
    spread = px.max(axis=2) - px.min(axis=2)
    drawn = px.min(axis=2) < 235
    gray = drawn & (spread < 12) & (px[..., 0] > 60)  # the sulc-shaded cortex
    colour = spread > 80  # data colours
    return float(drawn.mean()), float(gray.mean()), float(colour.mean())


def no_exception(page):
    assert page.locator('[data-testid="stException"]').count() == 0
    assert page.locator('[data-testid="stAlertContentError"]').count() == 0


def plot_title(page) -> str:
    return page.locator(f"{PLOT} .gtitle").first.text_content()


def test_explore_renders_the_surface_and_follows_selections(dashboard, page, tmp_path, request):
    shots = tmp_path
    open_explore(dashboard, page)
    no_exception(page)
    # the figure is a WebGL scene that really drew: a canvas with a WebGL context, a gray cortex, data colours
    assert page.locator(f"{PLOT} canvas").count() >= 1
    has_gl = page.evaluate(
        "(sel) => [...document.querySelectorAll(sel + ' canvas')].some(c => !!(c.getContext('webgl2') || c.getContext('webgl')))",
        PLOT,
    )
    assert has_gl
    px = plot_pixels(page)
    from PIL import Image

    Image.fromarray(px.astype(np.uint8)).save(shots / "explore_scene_crop.png")
    drawn, gray, colour = brain_stats(px)
    assert drawn > 0.08, f"nothing drawn in the 3-D scene ({drawn:.3f})"
    assert gray > 0.005, f"no cortex drawn (gray share {gray:.3f})"
    assert colour > 0.01, f"no data drawn on the cortex (coloured share {colour:.4f})"
    assert plot_title(page) == "subj01: response to training image 1"
    assert page.locator('[data-testid="stImage"] img').count() == 1
    page.screenshot(path=str(shots / "explore_response.png"), full_page=True)

    # a new image: the figure follows; time from the change to the new surface drawn
    box = page.get_by_label("Training image (1–120)")
    box.fill("2")
    t0 = time.perf_counter()
    box.press("Enter")
    page.wait_for_function(
        "([sel, want]) => { const t = document.querySelector(sel + ' .gtitle'); return t && t.textContent === want; }",
        arg=[PLOT, "subj01: response to training image 2"],
        timeout=TIMEOUT,
    )
    elapsed = time.perf_counter() - t0
    settle(page)
    no_exception(page)
    print(f"\nExplore: new image drawn {elapsed:.2f}s after the change (fsaverage5, one hemisphere)")
    request.node.user_properties.append(("update_seconds", elapsed))
    assert elapsed < 3.0, f"the surface took {elapsed:.2f}s to follow a change of image"
    assert brain_stats(plot_pixels(page))[0] > 0.08

    # both hemispheres side by side: two WebGL scenes
    page.get_by_text("both, side by side", exact=True).click()
    page.wait_for_function(
        "(sel) => { const d = document.querySelector(sel); return d && d._fullLayout && d._fullLayout.scene2; }",
        arg=PLOT,
        timeout=TIMEOUT,
    )
    settle(page)
    no_exception(page)
    drawn2, gray2, _ = brain_stats(plot_pixels(page))
    assert drawn2 > 0.08 and gray2 > 0.005
    page.screenshot(path=str(shots / "explore_both.png"), full_page=True)

    # a whole ROI class, highlighted with a legend-like colour bar
    page.get_by_text("ROIs", exact=True).click()
    page.wait_for_function(
        "(sel) => { const t = document.querySelector(sel + ' .gtitle'); return t && t.textContent === 'subj01: prf-visualrois'; }",
        arg=PLOT,
        timeout=TIMEOUT,
    )
    settle(page)
    no_exception(page)
    _, _, colour = brain_stats(plot_pixels(page))
    assert colour > 0.01
    assert "V1v" in page.locator(f"{PLOT} .colorbar").first.text_content()
    page.screenshot(path=str(shots / "explore_rois.png"), full_page=True)

    # the stored noise ceiling
    page.get_by_text("Per-vertex map", exact=True).click()
    page.wait_for_function(
        "(sel) => { const t = document.querySelector(sel + ' .gtitle'); return t && t.textContent === 'subj01: Noise ceiling'; }",
        arg=PLOT,
        timeout=TIMEOUT,
    )
    settle(page)
    no_exception(page)
    assert brain_stats(plot_pixels(page))[2] > 0.01
    page.screenshot(path=str(shots / "explore_noise_ceiling.png"), full_page=True)
    print(f"screenshots in {shots}")
