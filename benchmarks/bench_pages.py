"""Benchmark: every dashboard page on the demo, warm, in headless Chromium with software WebGL.

    python benchmarks/bench_pages.py [--repeat 3] [--screenshots OUT_DIR] [--json OUT.json]

Per page it reports (medians over ``--repeat`` warm visits, after one warm-up visit):

* ``script``: the server's script time, a warm ``AppTest`` run of the page in this process (caches filled);
* ``placeholder``: from navigation until the first figure's area is visible (a figure placeholder with a
  spinner, or the figure itself), for pages with figures;
* ``content``: from navigation until the page's main content is drawn: the 3-D brain's WebGL canvas
  painted (Plotly's ``plotly_afterplot`` plus two animation frames), the charts, tables or images.

Both are measured twice: ``load``, the page opened at its URL (a new browser tab's session: the app's
bundle parsed again, a new server session), and ``click``, the page reached from another one through the
sidebar's navigation in the same session, as a user moves between pages once the dashboard is open.

Goal (issue #15): ``content`` <= 2 s for pages without a 3-D brain, <= 4 s with one. Setup (not timed): the
demo dataset and the video demo in a temporary folder, and one finished fit and one finished video run in
a temporary run store, so that Compare, Submission and Videos show results. ``uptime`` is printed: the
machine's load matters on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ui.home import page_file  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-background-networking", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
        "--ignore-gpu-blocklist", "--disable-dev-shm-usage", "--no-first-run"]
FAST = dict(model="mobilenet_v2", weights="imagenet-offline", resolution=64, n_components=20, device="cpu")

# page: (file, URL path, JS condition for "main content drawn", has a 3-D brain)
PLOTS_DRAWN = ("(n) => { const p = [...document.querySelectorAll('.js-plotly-plot')];"
               " return p.length >= n && p.every(d => d._fullLayout && d.__bes_drawn); }")
PAGES = {
    "Home": ("app.py", "", "() => document.querySelectorAll('[data-testid=\"stPageLink\"]').length >= 10", False),
    "Dataset": (page_file("Dataset"), "Dataset",
                "() => { const i = [...document.querySelectorAll('[data-testid=\"stImage\"] img')];"
                " return i.length === 8 && i.every(e => e.complete && e.naturalWidth > 0); }", False),
    "Explore": (page_file("Explore"), "Explore", "1", True),
    "Runs": (page_file("Runs"), "Runs", "() => !!document.querySelector('[data-testid=\"stDataFrame\"] canvas')", False),
    "Compare": (page_file("Compare"), "Compare", "4", True),
    "Submission": (page_file("Submission"), "Submission",
                   "() => document.body.innerText.includes('Build and validate the submission')"
                   " && document.body.innerText.includes('is valid')", False),
    "Flatmaps": (page_file("Flatmaps"), "Flatmaps",
                 "() => { const i = [...document.querySelectorAll('[data-testid=\"stImage\"] img')];"
                 " return i.length === 1 && i[0].complete && i[0].naturalWidth > 0; }", False),
    "Videos": (page_file("Videos"), "Videos",
               "() => { const i = [...document.querySelectorAll('[data-testid=\"stImage\"] img')];"
               " return i.length >= 4 && i.every(e => e.complete && e.naturalWidth > 0)"
               " && document.querySelectorAll('.js-plotly-plot .barlayer path').length > 0; }", False),
}
FIGURES = ("Dataset", "Explore", "Compare", "Flatmaps", "Videos")  # pages with figures (placeholder timed)
FIGURE_AREA = ("() => [...document.querySelectorAll('[data-testid=\"bes-figure-slot\"], [data-testid=\"stPlotlyChart\"],"
               " [data-testid=\"stImage\"]')].some(e => e.getBoundingClientRect().height > 50)")
# mark each Plotly figure once it has drawn (plotly_afterplot) and two more frames have passed
MARK_DRAWN = """
new MutationObserver(() => {
  for (const d of document.querySelectorAll('.js-plotly-plot')) {
    if (d.__bes_hooked || !d.on) continue;
    d.__bes_hooked = true;
    const mark = () => requestAnimationFrame(() => requestAnimationFrame(() => { d.__bes_drawn = true; }));
    if (d._fullLayout && d.querySelector('.main-svg')) mark();
    d.on('plotly_afterplot', mark);
  }
}).observe(document, {subtree: true, childList: true});
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup(tmp: Path) -> dict[str, str]:
    """Demo data, video demo and a run store with one finished fit and one finished video run."""
    from core.algonauts2021.demo import ensure_demo2021
    from core.algonauts2021.pipeline import TASK_KIND, Pipeline2021Config
    from core.algonauts2023 import pipeline
    from core.algonauts2023.demo import ensure_demo
    from core.runs import kinds, workers
    from core.runs.store import RunStore

    env = {"BES_CACHE_DIR": str(tmp / "cache"), "BES_WORKSPACE": str(tmp / "workspace")}
    os.environ.update(env)
    data = ensure_demo(tmp / "demo")
    videos = ensure_demo2021(tmp / "demo2021")
    store = RunStore(tmp / "workspace")
    fit = pipeline.EncodingConfig(data=str(data), subjects=[1], layers=["features.6"], **FAST).to_dict()
    video = Pipeline2021Config(data_dir=str(videos), layers=["features.6"], n_frames=2, **FAST).to_dict()
    for kind, config in (("fit", fit), (TASK_KIND, video)):
        run = store.create(kind, kinds.check_config(kind, config))
        assert workers.execute(store, run.id) == "done", store.read_log(run.id)
    return {**env, "BES_DATA_DIR": str(data), "BES_DATA2021_DIR": str(videos)}


def script_times(repeat: int) -> dict[str, float]:
    """Warm AppTest run time of each page, rerun in one session as the server reruns it (the first run fills
    the caches and is not counted)."""
    from streamlit.testing.v1 import AppTest

    out = {}
    for name, (path, *_rest) in PAGES.items():
        runs = []
        at = AppTest.from_file(str(ROOT / path), default_timeout=300)  # one session: Streamlit's start-up scan once
        for i in range(repeat + 1):
            t0 = time.perf_counter()
            at.run()
            runs.append(time.perf_counter() - t0)
            assert not at.exception, f"{name}: {at.exception}"
        out[name] = statistics.median(runs[1:])
    return out


def _visit(page, go, name: str, drawn: str) -> tuple[float | None, float]:
    """Times of one visit: (placeholder, content) seconds from ``go()`` (navigation) on."""
    condition = drawn if drawn.startswith("(") else f"() => ({PLOTS_DRAWN})({drawn})"
    t0 = time.perf_counter()
    go()
    t_placeholder = None
    if name in FIGURES:
        page.wait_for_function(FIGURE_AREA, timeout=120_000, polling=20)
        t_placeholder = time.perf_counter() - t0
    page.wait_for_function(condition, timeout=120_000, polling=20)
    return t_placeholder, time.perf_counter() - t0


def _click_to(page, title: str):
    """Navigation through the sidebar's link named ``title``."""
    link = page.locator('[data-testid="stSidebarNav"] a').filter(has_text=re.compile(rf"{title}\s*$"))
    return lambda: link.first.click()


def browser_times(url: str, repeat: int, shots: Path | None) -> dict[str, dict]:
    from playwright.sync_api import sync_playwright

    out = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.add_init_script(MARK_DRAWN)
        page = context.new_page()
        for name, (_, path, drawn, brain) in PAGES.items():
            times = {"load": [], "click": []}
            # from a page that shares none of the target's content, so that no stale element counts
            source = "Submission" if name == "Home" else "Home"
            src_drawn = PAGES[source][2]
            for i in range(repeat + 1):  # the first visit warms the server's and the browser's caches
                load = _visit(page, lambda: page.goto(f"{url}/{path}"), name, drawn)
                _visit(page, _click_to(page, source), source, src_drawn)
                click = _visit(page, _click_to(page, name), name, drawn)
                if i:
                    times["load"].append(load)
                    times["click"].append(click)
            if shots:
                page.wait_for_timeout(500)
                page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
            out[name] = {"brain": brain, "goal_s": 4.0 if brain else 2.0}
            for how, visits in times.items():
                out[name][f"{how}_placeholder_s"] = statistics.median(v[0] for v in visits) if name in FIGURES else None
                out[name][f"{how}_content_s"] = statistics.median(v[1] for v in visits)
        browser.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--screenshots", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.screenshots:
        args.screenshots.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-pages-") as tmp:
        t0 = time.perf_counter()
        env = setup(Path(tmp))
        print(f"setup (demo data, two finished runs): {time.perf_counter() - t0:.0f} s", flush=True)
        port = _free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port),
             "--server.address", "127.0.0.1"], cwd=ROOT, env={**os.environ, **env},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(120):
                try:
                    urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)
                    break
                except OSError:
                    time.sleep(0.5)
            print("load before:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(), flush=True)
            browser = browser_times(url, args.repeat, args.screenshots)
        finally:
            server.terminate()
            server.wait(timeout=20)
        scripts = script_times(args.repeat)
        load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"load after: {load}")
    print(f"{'page':<11}{'script s':>9}  {'load: placeholder':>17}{'content':>9}  {'click: placeholder':>18}{'content':>9}"
          f"{'goal':>6}  ok (click)")
    for name, b in browser.items():
        shown = {k: "—" if b[k] is None else f"{b[k]:.2f}" for k in ("load_placeholder_s", "click_placeholder_s")}
        ok = "yes" if b["click_content_s"] <= b["goal_s"] else "NO"
        print(f"{name:<11}{scripts[name]:>9.2f}  {shown['load_placeholder_s']:>17}{b['load_content_s']:>9.2f}  "
              f"{shown['click_placeholder_s']:>18}{b['click_content_s']:>9.2f}{b['goal_s']:>6.0f}  {ok}")
    if args.json:
        args.json.write_text(json.dumps({"load": load, "pages": {n: {**b, "script_s": scripts[n]} for n, b in browser.items()}},
                                        indent=2))


if __name__ == "__main__":
    main()
