"""Benchmark: surface figures for the Explore page (build time, payload size, browser render time).

    python benchmarks/bench_surface_plot.py [--fsaverage-dir DIR] [--no-browser] [--repeat 5]
                                            [--screenshots OUT_DIR] [--json OUT.json]

For each case (fsaverage5 one / both hemispheres, full fsaverage decimated to 40,962 vertices, full
fsaverage at 163,842 vertices) it reports:

* ``load``: first ``load_surface`` (+ decimation) in this process, and a cached call;
* ``build``: ``to_surface`` + ``plot_surface_map`` (median of ``--repeat``);
* ``json``: ``plotly.io.to_json`` (what ``st.plotly_chart`` does) and the payload in bytes;
* ``render``: in headless Chromium (software WebGL, as in the tests): ``JSON.parse`` +
  ``Plotly.newPlot`` until two animation frames have passed (first draw), and ``Plotly.react``
  with new values (what a change of selection costs in the browser).

The map is synthetic but placed like real data: the visual-cortex vertices of the NSD paper's
``highlevelvisual`` labels (shared/realdata, when present; else the first posterior vertices), with a
smooth pattern of values. The full fsaverage comes from ``--fsaverage-dir`` or ``$BES_FSAVERAGE_DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.viz import plotting  # noqa: E402

from core.viz import surfaces

REAL_LABELS = ROOT.parent / "shared" / "realdata" / "cvnlab+nsddatapaper" / "mainfigures" / "SCIENCE.RSA"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_ARGS = [
    "--no-sandbox", "--disable-background-networking", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
    "--ignore-gpu-blocklist", "--disable-dev-shm-usage", "--no-first-run",
]  # fmt: skip


def visual_mask(hemi: str) -> np.ndarray:
    """A realistic challenge-space mask (bool, 163,842): NSD high-level visual labels, or a fallback."""
    path = REAL_LABELS / f"{hemi}.highlevelvisual.mgz"
    if path.is_file():
        import nibabel as nib

        return np.asarray(nib.load(str(path)).dataobj).reshape(-1) > 0
    coords = surfaces.load_surface("sphere", hemi, "fsaverage5").coords
    mask = np.zeros(surfaces.N_FSAVERAGE, dtype=bool)
    mask[: surfaces.N_FSAVERAGE5] = coords[:, 1] < -40
    return mask


def synthetic_values(mask: np.ndarray, seed: int) -> np.ndarray:
    """A smooth signed pattern over the challenge vertices (one value each)."""
    idx = np.flatnonzero(mask)
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, 3)
    x = idx.astype(np.float64)
    return (np.sin(x / 5000 + phase[0]) + 0.6 * np.sin(x / 900 + phase[1]) + 0.2 * rng.standard_normal(idx.size)).astype(
        np.float32
    )


def timed(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def build_case(hemis, mesh, resolution, detail, fsaverage_dir, seed):
    t0 = time.perf_counter()
    surfs = {h: surfaces.display_surface(mesh, h, resolution, detail, fsaverage_dir) for h in hemis}
    load_s = time.perf_counter() - t0
    masks = {h: visual_mask(h) for h in hemis}
    values = {h: synthetic_values(masks[h], seed) for h in hemis}

    def build():
        data = {h: surfaces.to_surface(values[h], masks[h], surfs[h].n_vertices) for h in hemis}
        return plotting.plot_surface_map(surfs, data, cmap="cold_hot", threshold=0.3, view="lateral")

    return surfs, load_s, build


class Browser:
    """Headless Chromium with plotly.js loaded once, rendering figures from JSON."""

    def __init__(self, screenshots: Path | None):
        from playwright.sync_api import sync_playwright
        from plotly.offline import get_plotlyjs

        self._pw = sync_playwright().start()
        self._browser = self._pw.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        self.page = self._browser.new_page(viewport={"width": 1200, "height": 600})
        self.page.set_content(
            "<html><body style='margin:0'><div id='fig' style='width:1200px;height:480px'></div>"
            f"<script>{get_plotlyjs()}</script></body></html>"
        )
        self.screenshots = screenshots

    def render(self, fig_json: str, update_json: str, name: str) -> tuple[float, float, bool]:
        js = """
        async ([spec, update]) => {
          const frames = () => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
          const div = document.getElementById('fig');
          Plotly.purge(div);
          await frames();
          let t0 = performance.now();
          const fig = JSON.parse(spec);
          await Plotly.newPlot(div, fig.data, fig.layout, {displaylogo: false});
          await frames();
          const first = performance.now() - t0;
          t0 = performance.now();
          const upd = JSON.parse(update);
          await Plotly.react(div, upd.data, upd.layout, {displaylogo: false});
          await frames();
          const react = performance.now() - t0;
          const canvas = div.querySelector('canvas');
          return [first, react, !!canvas];
        }"""
        first, react, has_canvas = self.page.evaluate(js, [fig_json, update_json])
        if self.screenshots:
            self.screenshots.mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(self.screenshots / f"{name}.png"))
        return first / 1000, react / 1000, has_canvas

    def close(self):
        self._browser.close()
        self._pw.stop()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fsaverage-dir", default=os.environ.get(surfaces.FSAVERAGE_DIR_ENV))
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--screenshots", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    full = surfaces.find_full_fsaverage(args.fsaverage_dir)
    cases = [
        ("fsaverage5, one hemisphere", ("lh",), "fsaverage5", "decimated"),
        ("fsaverage5, both hemispheres", ("lh", "rh"), "fsaverage5", "decimated"),
    ]
    if full is not None:
        cases += [
            ("fsaverage decimated (40,962), one hemisphere", ("lh",), "fsaverage", "decimated"),
            ("fsaverage decimated (40,962), both hemispheres", ("lh", "rh"), "fsaverage", "decimated"),
            ("fsaverage full (163,842), one hemisphere", ("lh",), "fsaverage", "full"),
            ("fsaverage full (163,842), both hemispheres", ("lh", "rh"), "fsaverage", "full"),
        ]
    else:
        print(f"(full fsaverage skipped: {surfaces.fsaverage_status(args.fsaverage_dir).message})")

    browser = None
    if not args.no_browser:
        try:
            browser = Browser(args.screenshots)
        except Exception as exc:  # no playwright / chromium: report the Python side only
            print(f"(browser timings skipped: {type(exc).__name__}: {exc})")

    import plotly.io as pio

    rows = []
    for name, hemis, res, detail in cases:
        surfs, load_s, build = build_case(hemis, "inflated", res, detail, args.fsaverage_dir, seed=0)
        cached_s, _ = timed(lambda: [surfaces.display_surface("inflated", h, res, detail, args.fsaverage_dir) for h in hemis], 3)
        build_s, fig = timed(build, args.repeat)
        json_s, spec = timed(lambda: pio.to_json(fig, validate=False), args.repeat)
        _, _, build2 = build_case(hemis, "inflated", res, detail, args.fsaverage_dir, seed=1)
        update = pio.to_json(build2(), validate=False)
        row = dict(
            case=name,
            vertices=sum(s.n_vertices for s in surfs.values()),
            faces=sum(s.n_faces for s in surfs.values()),
            load_first_s=round(load_s, 4),
            load_cached_s=round(cached_s, 5),
            build_s=round(build_s, 4),
            json_s=round(json_s, 4),
            payload_bytes=len(spec.encode()),
        )
        if browser is not None:
            slug = name.split(",")[0].split(" (")[0].replace(" ", "_") + f"_{len(hemis)}h"
            firsts, reacts = [], []
            for _ in range(max(1, min(args.repeat, 3))):
                first, react, has_canvas = browser.render(spec, update, slug)
                firsts.append(first)
                reacts.append(react)
            row.update(render_first_s=round(statistics.median(firsts), 3), render_update_s=round(statistics.median(reacts), 3),
                       canvas=has_canvas)  # fmt: skip
        rows.append(row)
        print(json.dumps(row))
    if browser is not None:
        browser.close()

    print()
    cols = ["case", "vertices", "faces", "payload_bytes", "build_s", "json_s", "render_first_s", "render_update_s"]
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(str(r.get(c, "-")) for c in cols))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
