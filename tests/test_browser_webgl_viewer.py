"""End to end in headless Chromium: the pycortex WebGL viewer exported by ``static_viewer_zip`` (on the
S1 subject bundled with pycortex) draws the brain, served over HTTP and opened straight from disk."""

from __future__ import annotations

import functools
import http.server
import io
import threading
import zipfile

import numpy as np
import pytest
from PIL import Image

from core.viz import flatmaps
from tests.pycortex_store import s1_filestore, use_filestore
from tests.test_flatmaps import s1_maps

pytestmark = pytest.mark.browser

TIMEOUT_S = 90


@pytest.fixture(scope="module")
def viewer_dir(request, tmp_path_factory):
    """The exported viewer, unzipped."""
    with use_filestore(s1_filestore(request, tmp_path_factory)) as cortex:
        values, rois = s1_maps(cortex)
        zipped = flatmaps.static_viewer_zip(values, rois=rois, subject="S1", name="S1 test map", title="S1 test map")
    out = tmp_path_factory.mktemp("viewer")
    with zipfile.ZipFile(io.BytesIO(zipped)) as zf:
        assert sorted(zf.namelist()) == ["README.txt", "index.html"]  # one self-contained page
        zf.extractall(out)
    return out


@pytest.fixture(scope="module")
def served(viewer_dir):
    """A local ``http.server`` on 127.0.0.1 serving the viewer; yields its base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(viewer_dir))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join()


def wait_for_brain(page) -> np.ndarray:
    """Wait until the viewer has loaded its surfaces and data and the canvas shows them; returns its pixels (RGB)."""
    page.wait_for_selector("canvas#brain", timeout=TIMEOUT_S * 1000)
    assert page.evaluate("() => !!document.querySelector('canvas#brain').getContext('webgl')")
    page.wait_for_function(
        "() => window.subjects && Object.values(subjects).every(s => s.loaded && s.loaded.state() === 'resolved')",
        timeout=TIMEOUT_S * 1000,
    )
    for _ in range(10):  # a software-rendered frame of the 300,000-vertex S1 takes seconds here
        px = np.asarray(Image.open(io.BytesIO(page.locator("canvas#brain").screenshot())).convert("RGB")).astype(int)
        if ((px.max(axis=2) - px.min(axis=2)) > 80).mean() > 0.02:  # data colours on the surface
            return px
        page.wait_for_timeout(500)
    raise AssertionError("the viewer's canvas never showed the coloured brain")


@pytest.mark.parametrize("how", ["http", "file"])
def test_static_viewer_draws_the_brain(browser, viewer_dir, served, how, tmp_path):
    context = browser.new_context(viewport={"width": 960, "height": 640})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{served}/index.html" if how == "http" else (viewer_dir / "index.html").as_uri())
    px = wait_for_brain(page)
    drawn = (px.max(axis=2) > 40).mean()  # the page is black around the brain
    warm = ((px[..., 0] - px[..., 2] > 80)).mean()
    cold = ((px[..., 2] - px[..., 0] > 80)).mean()
    assert drawn > 0.05, f"little drawn on the canvas ({drawn:.3f})"
    assert warm > 0.005 and cold > 0.005, (warm, cold)  # the left hemisphere's positive and right's negative values
    assert page.title() == "S1 test map"
    assert errors == []
    page.screenshot(path=str(tmp_path / f"webgl_viewer_{how}.png"))
    print(f"\nscreenshot: {tmp_path / f'webgl_viewer_{how}.png'}")
    context.close()
