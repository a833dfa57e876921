"""Shared fixtures: a hand-built minimal dataset, a generated demo dataset, a running dashboard."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
# A test concern: subprocesses the tests start (CLI runs, run-store workers, Ray workers) import
# ``core`` (and the ``tests`` tasks) from the tree under test, not from wherever the package is
# installed (another worktree's editable install, say). The product's workers rely on the install.
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
REALDATA = ROOT.parent / "shared" / "realdata"


def page_file(title: str) -> str:
    """The absolute path of the dashboard page titled ``title`` (as ``AppTest.from_file`` takes it)."""
    from ui.home import page_file as relative

    return str(ROOT / relative(title))


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def make_tiny_dataset(root: Path, subjects=(1,), n_train=6, n_test=2, n_lh=30, n_rh=40, seed=0) -> Path:
    """Write a minimal but complete Algonauts 2023 layout by hand (independent of the demo generator)."""
    rng = np.random.default_rng(seed)
    for s in subjects:
        d = root / f"subj{s:02d}"
        (d / "training_split" / "training_fmri").mkdir(parents=True)
        (d / "training_split" / "training_images").mkdir()
        (d / "test_split" / "test_images").mkdir(parents=True)
        (d / "roi_masks").mkdir()
        for i in range(n_train):
            Image.new("RGB", (16, 16), (i * 20 % 255, 0, 0)).save(
                d / "training_split" / "training_images" / f"train-{i + 1:04d}_nsd-{100 + i:05d}.png"
            )
        for i in range(n_test):
            Image.new("RGB", (16, 16), (0, i * 20, 0)).save(
                d / "test_split" / "test_images" / f"test-{i + 1:04d}_nsd-{500 + i:05d}.png"
            )
        for hemi, n in (("lh", n_lh), ("rh", n_rh)):
            np.save(d / "training_split" / "training_fmri" / f"{hemi}_training_fmri.npy",
                    rng.standard_normal((n_train, n)).astype(np.float32))
            mask = np.zeros(163842, dtype=np.float32)
            idx = np.sort(rng.choice(10242, n, replace=False))
            mask[idx] = 1
            np.save(d / "roi_masks" / f"{hemi}.all-vertices_fsaverage_space.npy", mask)
            labels = np.zeros(n, dtype=np.float32)
            labels[:5] = 1  # V1v
            labels[5:9] = 7  # hV4
            np.save(d / "roi_masks" / f"{hemi}.prf-visualrois_challenge_space.npy", labels)
            fs = np.zeros(163842, dtype=np.float32)
            fs[idx] = labels
            np.save(d / "roi_masks" / f"{hemi}.prf-visualrois_fsaverage_space.npy", fs)
        names = ["Unknown", "V1v", "V1d", "V2v", "V2d", "V3v", "V3d", "hV4"]
        np.save(d / "roi_masks" / "mapping_prf-visualrois.npy", dict(enumerate(names)))
    return root


def write_pngs(folder: Path, n: int, seed: int = 0, size: int = 425, mode: str = "RGB", noise: float = 0.0):
    """``n`` smooth procedural PNGs (plus Gaussian pixel noise of SD ``noise``) in ``mode``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for i in range(n):
        a, b, c = rng.uniform(0.5, 6, 3)
        img = np.stack([np.sin(a * 6 * xx + b), np.cos(c * 6 * yy), np.sin(a * xx * yy * 9)], -1)
        img = (img + 1) * 127.5 + (rng.normal(0, noise, img.shape) if noise else 0)
        p = folder / f"img-{i:04d}.png"
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).convert(mode).save(p)
        out.append(p)
    return out


@pytest.fixture(autouse=True)
def _pytest_main_module():
    """``AppTest`` leaves the last script it ran as ``sys.modules["__main__"]``, and a process started by
    the ``spawn`` method (the search's local workers) runs ``__main__`` again: every worker would run a
    page, generating the demo. Each test gets pytest's ``__main__`` back."""
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main


@pytest.fixture
def tiny_dataset(tmp_path) -> Path:
    return make_tiny_dataset(tmp_path / "data")


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """A small demo dataset generated once per test session (same generator as the product's demo)."""
    from core.algonauts2023.demo import generate_demo

    return generate_demo(tmp_path_factory.mktemp("demo") / "data", subjects=(1, 2), n_train=120, n_test=12, seed=0)


@pytest.fixture(scope="session")
def demo2021_root(tmp_path_factory) -> Path:
    """A small Algonauts 2021 video demo, generated once per test session."""
    from core.algonauts2021.demo import DemoConfig, generate_demo2021

    config = DemoConfig(subjects=(1, 2), n_train=40, n_test=8, n_reps=3, size=64, fps=10, seconds=1.0, seed=0)
    return generate_demo2021(tmp_path_factory.mktemp("demo2021") / "data", config)


FAST = dict(model="mobilenet_v2", weights="imagenet-offline", resolution=64, n_components=20, device="cpu")
# (subject, layer), oldest first: subj01 has two layers to compare, subj02 one run
RUNS = ((1, "features.3"), (1, "features.6"), (2, "features.6"))


@pytest.fixture(scope="session")
def finished_workspace(tmp_path_factory, demo_root) -> Path:
    """A run store with three done ridge fits on the demo, executed in this process as a worker would."""
    ws = tmp_path_factory.mktemp("finished-runs")
    from core.runs import workers
    from core.algonauts2023 import pipeline
    from core.runs import kinds
    from core.runs.store import RunStore

    store, cache = RunStore(ws), str(ws / "features")
    pipeline.extract(pipeline.FeatureConfig(data=str(demo_root), subjects=[1, 2], layers=["features.3", "features.6"],
                                      cache_dir=cache, **FAST))  # fmt: skip
    for subject, layer in RUNS:
        config = pipeline.EncodingConfig(data=str(demo_root), subjects=[subject], layers=[layer], cache_dir=cache, **FAST)
        run = store.create("fit", kinds.check_config("fit", config.to_dict()))
        assert workers.execute(store, run.id) == "done", store.read_log(run.id)
    return ws


@pytest.fixture
def finished_env(finished_workspace, demo_root, monkeypatch, tmp_path):
    """The dashboard sees the demo, the finished workspace and a fresh cache; returns the workspace's run store."""
    from core.runs.store import RunStore

    monkeypatch.setenv("BES_DATA_DIR", str(demo_root))
    monkeypatch.setenv("BES_WORKSPACE", str(finished_workspace))
    monkeypatch.setenv("BES_CACHE_DIR", str(tmp_path / "cache"))
    return RunStore(finished_workspace)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def dashboard_workspace(tmp_path_factory) -> Path:
    """The (initially empty) run store of the ``dashboard`` server."""
    return tmp_path_factory.mktemp("workspace")


@pytest.fixture(scope="session")
def dashboard(demo_root, demo2021_root, dashboard_workspace, tmp_path_factory):
    """``streamlit run app.py`` on the demo dataset; yields its base URL and stops it afterwards."""
    port = _free_port()
    env = dict(os.environ, BES_DATA_DIR=str(demo_root), BES_CACHE_DIR=str(tmp_path_factory.mktemp("cache")),
               BES_WORKSPACE=str(dashboard_workspace), BES_DATA2021_DIR=str(demo2021_root))
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                out = proc.stdout.read().decode() if proc.stdout else ""
                raise RuntimeError(f"streamlit did not start:\n{out[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def browser():
    """Headless Debian Chromium through Playwright, with software WebGL (see shared/browser-testing.md)."""
    missing = None
    try:
        import playwright.sync_api as playwright
    except ImportError:
        missing = "the playwright package is not installed (pip install -r requirements-dev.txt)"
    if not os.path.exists(CHROMIUM):
        missing = "Debian chromium is not installed (apt-get install chromium)"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests must run in CI: {missing}")
        pytest.skip(missing)
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-background-networking", "--disable-gpu",
                  "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist",
                  "--disable-dev-shm-usage", "--no-first-run", "--disable-component-update", "--disable-sync"],
        )
        yield b
        b.close()


@pytest.fixture
def page(browser, tmp_path):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    yield pg
    context.close()


def wait_for_app(page, timeout_ms: int = 60_000) -> None:
    """Wait until Streamlit has drawn the page and finished running its script."""
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout_ms)
    page.wait_for_selector('[data-testid="stSidebar"]', timeout=timeout_ms)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout_ms
    )
