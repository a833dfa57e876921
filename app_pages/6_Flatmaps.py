"""Flatmaps page: any per-vertex map as a flat map (PNG download) and as a shareable WebGL viewer (zip).

Thin layer over ``core.viz.flatmaps``: pycortex's fsaverage subject when it is in pycortex's filestore,
nilearn's bundled fsaverage5 flat mesh otherwise; the WebGL viewer needs pycortex's fsaverage. What to show
comes from the shared map picker (``ui.map_picker``).
"""

from __future__ import annotations

import re

import streamlit as st

from core.algonauts2023.dataset import HEMIS
from core.util.errors import UserError
from core.viz import flatmaps, surfaces
from ui.figures import figure_slot
from ui.map_picker import pick_map, roi_class_help
from ui.state import sidebar

st.set_page_config(page_title="Flatmaps · Brain Encoding Studio", page_icon="🧠", layout="wide")
sel = sidebar()
subj = sel.subject

st.title("Flat maps")
NO_BORDERS = "(none)"

# -- pycortex: one short note, collapsed -----------------------------------------------------------
no_pycortex = flatmaps.pycortex_unavailable_reason()
no_fsaverage = no_pycortex or flatmaps.subject_unavailable_reason(flatmaps.FSAVERAGE)
with st.expander("pycortex: " + ("not installed" if no_pycortex else "no fsaverage subject, drawn by nilearn"
                                 if no_fsaverage else "ready"), expanded=False):  # fmt: skip
    if no_pycortex:
        st.warning(no_pycortex)
    elif no_fsaverage:
        st.info(f"pycortex's fsaverage subject is not in its filestore {flatmaps.pycortex_filestore()}: flat maps "
                "use nilearn's fsaverage5 until it is downloaded (about 100 MB, once).")  # fmt: skip
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
choice = pick_map(subj, HEMIS, "flat")
if choice.empty:
    st.stop()
values, style = choice.values, choice.style
c_borders, c_names = st.columns(2)
border_classes = subj.roi_classes()
default = border_classes.index("prf-visualrois") + 1 if "prf-visualrois" in border_classes else 0
border_class = c_borders.selectbox("ROI borders", (NO_BORDERS, *border_classes), index=default, key="flat_borders",
                                   help="Outlines of the subject's ROIs, drawn from its ROI masks.  \n"
                                        + roi_class_help(border_classes))  # fmt: skip
rois = roi_names = None
if border_class != NO_BORDERS:
    border_ov, border_names = surfaces.roi_overlays(subj, HEMIS, border_class)
    rois = {h: ov.values for h, ov in border_ov.items()}
    if c_names.checkbox("Name the ROIs", value=True, key="flat_roi_names"):
        roi_names = {i + 1: r for i, r in enumerate(border_names)}


# -- flat map ----------------------------------------------------------------------------------------
@st.cache_data(show_spinner=False, max_entries=16)
def render(backend: str, values: dict, masks: dict, rois: dict | None, **kwargs) -> bytes:
    return flatmaps.flatmap_png(values, masks=masks, rois=rois, backend=backend, **kwargs)


title = f"{subj.name}: {choice.what}"
slug = re.sub(r"[^A-Za-z0-9]+", "_", f"{subj.name} {choice.what}").strip("_").lower()
slot = figure_slot(420, "Drawing the flat map…")
try:
    png = render(backend, values, masks, rois, roi_names=roi_names, title=title, **style)
except UserError as exc:
    slot.error(str(exc))
    st.stop()
slot.image(png, width="stretch")
st.caption(
    "Drawn by pycortex (quickflat) on its fsaverage subject (163,842 vertices per hemisphere)."
    if backend == "pycortex"
    else "Drawn from nilearn's fsaverage5 flat mesh (10,242 vertices per hemisphere; challenge vertices beyond "
    "them are not shown)."
)
st.download_button("Download PNG", png, file_name=f"{slug}_flatmap.png", mime="image/png", on_click="ignore",
                   key="flat_png")  # fmt: skip

# -- WebGL viewer ------------------------------------------------------------------------------------
st.subheader("Shareable 3-D viewer")
if no_fsaverage:
    st.info("The pycortex WebGL viewer is unavailable: "
            + (no_pycortex if no_pycortex else "it needs pycortex's fsaverage subject (see *pycortex* above)."))
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
