"""Flatmaps page: any per-vertex map as a flat map (PNG download) and as a shareable WebGL viewer (zip).

Thin layer over ``core.viz.flatmaps``: pycortex's fsaverage subject when it is in pycortex's filestore,
nilearn's bundled fsaverage5 flat mesh otherwise; the WebGL viewer needs pycortex's fsaverage.
"""

from __future__ import annotations

import re

import numpy as np
import streamlit as st

from core.viz import flatmaps

from core.viz import surfaces
from core.algonauts2023.dataset import HEMIS, ROI_CLASSES
from core.util.errors import UserError
from ui.controls import colour_controls, map_colour_controls
from ui.state import sidebar

st.set_page_config(page_title="Flatmaps · Brain Encoding Studio", page_icon="🧠", layout="wide")
sel = sidebar()
subj = sel.subject

st.title("Flat maps")

MODES = ("Response to an image", "ROIs", "Per-vertex map")
WHOLE_CLASS = "(whole class)"
NO_BORDERS = "(none)"

# -- pycortex ----------------------------------------------------------------------------------------
no_pycortex = flatmaps.pycortex_unavailable_reason()
no_fsaverage = no_pycortex or flatmaps.subject_unavailable_reason(flatmaps.FSAVERAGE)
with st.expander("pycortex", expanded=no_fsaverage is not None):
    if no_pycortex:
        st.warning(no_pycortex)
    elif no_fsaverage:
        st.info(no_fsaverage)
        if st.button("Download pycortex's fsaverage subject", key="flat_download"):
            with st.spinner("Downloading pycortex's fsaverage subject…"):
                ok, message = flatmaps.download_fsaverage()
            if ok:
                st.success(message)
                st.rerun()
            st.error(message)
    else:
        st.caption(f"pycortex {flatmaps.import_cortex().__version__}: fsaverage subject in {flatmaps.pycortex_filestore()}")
backend = "nilearn" if no_fsaverage else "pycortex"
masks = {h: subj.fsaverage_mask(h) for h in HEMIS}


# -- what to show ------------------------------------------------------------------------------------
mode = st.radio("Show", MODES, horizontal=True, key="flat_mode")
style: dict = {}
if mode == MODES[0]:
    n = subj.n_train
    number = int(st.number_input(f"Training image (1–{n})", 1, n, value=1, key="flat_image"))
    values = {h: np.asarray(subj.fmri(h)[number - 1], dtype=np.float32) for h in HEMIS}
    what = f"response to training image {number}"
    style = dict(colour_controls("cold_hot", "symmetric", "flat_resp"), colorbar_title="response (z)")
elif mode == MODES[1]:
    classes = subj.roi_classes()
    if not classes:
        st.info(f"{subj.name} has no ROI files (roi_masks/mapping_<class>.npy).")
        st.stop()
    c1, c2 = st.columns(2)
    cls = c1.selectbox("ROI class", classes, key="flat_roi_class")
    roi = c2.selectbox("ROI", (WHOLE_CLASS, *ROI_CLASSES.get(cls, ())), key=f"flat_roi_{cls}")
    overlays, names = surfaces.roi_overlays(subj, HEMIS, cls, None if roi == WHOLE_CLASS else roi)
    for ov in overlays.values():
        if ov.message:
            st.warning(ov.message)
    values = {h: ov.values for h, ov in overlays.items()}
    what = cls if roi == WHOLE_CLASS else f"{roi} ({cls})"
    style = dict(labels={i + 1: r for i, r in enumerate(names)}) if names else {}
else:
    maps = {h: surfaces.vertex_maps(subj, h) for h in HEMIS}
    names = [m for m in maps["lh"] if m in maps["rh"]]
    if not names:
        st.info(f"No per-vertex maps are stored for {subj.name}: the noise ceiling files "
                "(noise_ceiling/subjXX/{lh,rh}.npy) are absent and no encoding run has been evaluated yet.")  # fmt: skip
        st.stop()
    name = st.selectbox("Map", names, key="flat_map")
    first = maps["lh"][name]
    if first.description:
        st.caption(first.description)
    style = map_colour_controls(first, f"flat_map_{name}")
    style["colorbar_title"] = f"{name} ({first.unit})" if first.unit else name
    values = {h: maps[h][name].values for h in HEMIS}
    what = name

c_borders, c_names = st.columns(2)
border_classes = subj.roi_classes()
default = border_classes.index("prf-visualrois") + 1 if "prf-visualrois" in border_classes else 0
border_class = c_borders.selectbox("ROI borders", (NO_BORDERS, *border_classes), index=default, key="flat_borders",
                                   help="Outlines of the subject's ROIs, drawn from its ROI masks.")  # fmt: skip
rois = roi_names = None
if border_class != NO_BORDERS:
    border_ov, border_names = surfaces.roi_overlays(subj, HEMIS, border_class)
    rois = {h: ov.values for h, ov in border_ov.items()}
    if c_names.checkbox("Name the ROIs", value=True, key="flat_roi_names"):
        roi_names = {i + 1: r for i, r in enumerate(border_names)}


# -- flat map ----------------------------------------------------------------------------------------
@st.cache_data(show_spinner="Drawing the flat map…", max_entries=16)
def render(backend: str, values: dict, masks: dict, rois: dict | None, **kwargs) -> bytes:
    return flatmaps.flatmap_png(values, masks=masks, rois=rois, backend=backend, **kwargs)


title = f"{subj.name}: {what}"
slug = re.sub(r"[^A-Za-z0-9]+", "_", f"{subj.name} {what}").strip("_").lower()
try:
    png = render(backend, values, masks, rois, roi_names=roi_names, title=title, **style)
except UserError as exc:
    st.error(str(exc))
    st.stop()
st.image(png, width="stretch")
st.caption(
    "Drawn by pycortex (quickflat) on its fsaverage subject (163,842 vertices per hemisphere)."
    if backend == "pycortex"
    else "Drawn from nilearn's fsaverage5 flat mesh (10,242 vertices per hemisphere; challenge vertices beyond "
    "them are not shown). With pycortex's fsaverage subject (see *pycortex* above) it is drawn by pycortex at full resolution."
)
st.download_button("Download PNG", png, file_name=f"{slug}_flatmap.png", mime="image/png", on_click="ignore",
                   key="flat_png")  # fmt: skip

# -- WebGL viewer ------------------------------------------------------------------------------------
st.subheader("Shareable 3-D viewer")
if no_fsaverage:
    st.info(f"The pycortex WebGL viewer is unavailable: {no_fsaverage}")
else:
    st.caption("A pycortex WebGL viewer in one HTML file (zipped, about 10 MB) that opens in any browser, "
               "offline, without a server. The first export builds pycortex's mesh cache (about half a minute).")  # fmt: skip
    viewer_style = (
        dict(cmap=flatmaps.VIEWER_ROI_CMAP, symmetric=False, vmin=0.5, vmax=len(style["labels"]) + 0.5)
        if "labels" in style
        else {k: style[k] for k in ("cmap", "symmetric", "vmin", "vmax", "threshold") if k in style}
    )
    key = (subj.name, title, repr(sorted(viewer_style.items())), border_class)
    if st.button("Build the WebGL viewer", key="flat_build_viewer"):
        try:
            with st.spinner("Exporting the pycortex WebGL viewer…"):
                zipped = flatmaps.static_viewer_zip(values, masks=masks, rois=rois, name=title, title=title, **viewer_style)
            st.session_state["flat_viewer"] = (key, zipped)
        except UserError as exc:
            st.error(str(exc))
    built = st.session_state.get("flat_viewer")
    if built and built[0] == key:
        st.download_button("Download the viewer (zip)", built[1], file_name=f"{slug}_webgl.zip",
                           mime="application/zip", on_click="ignore", key="flat_viewer_zip")  # fmt: skip
