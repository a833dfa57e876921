"""The map picker shared by the Explore and Flatmaps pages: what to show on the cortex (a response to an
image, ROIs, or a stored per-vertex map) and how to colour it; plus the one-line explanations of the ROI
classes of the challenge."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import streamlit as st

from core.algonauts2023.dataset import HEMI_NAMES, ROI_CLASSES
from core.viz import surfaces
from ui.controls import colour_controls, map_colour_controls

MODES = ("Response to an image", "ROIs", "Per-vertex map")
WHOLE_CLASS = "(whole class)"
ROI_PAGE = "http://algonauts.csail.mit.edu/challenge.html"
ROI_CLASS_HELP = {
    "prf-visualrois": "early visual areas V1–hV4 (v: ventral, d: dorsal half), mapped by population receptive fields",
    "floc-bodies": "body-selective regions, found with a functional localizer (fLoc)",
    "floc-faces": "face-selective regions, found with a functional localizer (fLoc)",
    "floc-places": "place-selective regions, found with a functional localizer (fLoc)",
    "floc-words": "word-selective regions, found with a functional localizer (fLoc)",
    "streams": "anatomical streams of visual cortex: early, then ventral, lateral and parietal pathways",
}


def roi_class_help(classes: Sequence[str] | None = None) -> str:
    """Markdown: one line per ROI class (``classes``: those present) and the challenge's ROI description."""
    lines = [f"**{c}**: {ROI_CLASS_HELP[c]}" for c in (classes or ROI_CLASS_HELP) if c in ROI_CLASS_HELP]
    return "  \n".join([*lines, f"[The challenge's ROI description]({ROI_PAGE}) (Algonauts 2023 data)."])


@dataclass
class MapChoice:
    """The picked map: challenge-space values per hemisphere (None: the bare cortex), what it is, and the
    plotting keywords (colours, colour bar title, ROI labels). ``empty``: nothing to show (said on the page);
    ``area``: where the figure goes (beside the stimulus image for a response)."""

    values: dict[str, np.ndarray | None]
    what: str
    style: dict = field(default_factory=dict)
    empty: bool = False
    area: object = st
    roi: tuple[str, str | None] | None = None


def _keep_option(key: str, options: Sequence) -> None:
    if st.session_state.get(key) not in options:
        st.session_state.pop(key, None)  # another subject without that choice


def pick_map(subj, hemis: Sequence[str], key: str, *, with_image: bool = False,
             on_roi_change: Callable[..., None] | None = None, on_roi_args: tuple = ()) -> MapChoice:
    """Draw the picker (widget keys prefixed ``key``); ``with_image``: the stimulus beside the figure's area;
    ``on_roi_change(*on_roi_args)``: called when the ROI class or ROI changes (e.g. to turn the camera)."""
    mode = st.radio("Show", MODES, horizontal=True, key=f"{key}_mode")
    bare = {h: None for h in hemis}
    if mode == MODES[0]:
        n = subj.n_train
        st.session_state.setdefault(f"{key}_image", 1)
        if st.session_state[f"{key}_image"] > n:
            st.session_state[f"{key}_image"] = 1
        area = st
        if with_image:
            c_img, area = st.columns([1, 4])
        with c_img if with_image else st.container():
            number = int(st.number_input(f"Training image (1–{n})", 1, n, key=f"{key}_image"))
            if with_image:
                path: Path = subj.train_images[number - 1]
                st.image(str(path), caption=path.name, width="stretch")
        with area if with_image else st.container():
            opts = colour_controls("cold_hot", "symmetric", f"{key}_resp")
        values = {h: np.asarray(subj.fmri(h)[number - 1], dtype=np.float32) for h in hemis}
        return MapChoice(values, f"response to training image {number}", {**opts, "colorbar_title": "response (z)"},
                         area=area)  # fmt: skip
    if mode == MODES[1]:
        classes = subj.roi_classes()
        if not classes:
            st.info(f"{subj.name} has no ROI files (roi_masks/mapping_<class>.npy).")
            return MapChoice(bare, "ROIs", empty=True)
        _keep_option(f"{key}_roi_class", classes)
        c1, c2 = st.columns(2)
        cls = c1.selectbox("ROI class", classes, key=f"{key}_roi_class", on_change=on_roi_change, args=on_roi_args,
                           help=roi_class_help(classes))  # fmt: skip
        roi = c2.selectbox("ROI", (WHOLE_CLASS, *ROI_CLASSES.get(cls, ())), key=f"{key}_roi_{cls}",
                           on_change=on_roi_change, args=on_roi_args,
                           help="Every ROI of the class is listed; not every ROI exists in every subject and hemisphere.")  # fmt: skip
        if cls in ROI_CLASS_HELP:
            st.caption(f"**{cls}**: {ROI_CLASS_HELP[cls]} ([ROI description]({ROI_PAGE})).")
        overlays, names = surfaces.roi_overlays(subj, hemis, cls, None if roi == WHOLE_CLASS else roi)
        for ov in overlays.values():
            if ov.message:
                st.warning(ov.message)
        what = cls if roi == WHOLE_CLASS else f"{roi} ({cls})"
        style = {"labels": {i + 1: r for i, r in enumerate(names)}} if names else {}
        values = {h: ov.values for h, ov in overlays.items()} if names else bare
        return MapChoice(values, what, style, roi=(cls, None if roi == WHOLE_CLASS else roi))
    maps = {h: surfaces.vertex_maps(subj, h) for h in hemis}
    names = [m for m in maps[hemis[0]] if all(m in maps[h] for h in hemis)]
    if not names:
        st.info(f"No per-vertex maps are stored for {subj.name} ({' and '.join(HEMI_NAMES[h] for h in hemis)} "
                "hemisphere): the noise ceiling files (noise_ceiling/subjXX/{lh,rh}.npy) are absent and no encoding "
                "run has been evaluated yet.")  # fmt: skip
        return MapChoice(bare, "Per-vertex map", empty=True)
    _keep_option(f"{key}_map", names)
    name = st.selectbox("Map", names, key=f"{key}_map")
    first = maps[hemis[0]][name]
    if first.description:
        st.caption(first.description)
    style = map_colour_controls(first, f"{key}_map_{name}")
    style["colorbar_title"] = f"{name} ({first.unit})" if first.unit else name
    return MapChoice({h: maps[h][name].values for h in hemis}, name, style)
