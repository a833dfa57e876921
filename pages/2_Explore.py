"""Explore page: a subject's responses, ROIs and stored per-vertex maps on fsaverage surfaces.

Thin layer: meshes, mapping and figures come from ``core.viz.surfaces`` and ``core.viz.plotting``.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

import core.algonauts2023.compare  # noqa: F401  (registers the accuracy maps of finished runs)
from core.viz import plotting
from core.viz import surfaces
from core.algonauts2023.dataset import HEMI_NAMES, HEMIS, ROI_CLASSES
from core.util.errors import UserError
from ui.controls import colour_controls, map_colour_controls
from ui.state import sidebar

st.set_page_config(page_title="Explore · Brain Encoding Studio", page_icon="🧠", layout="wide")
sel = sidebar()
subj = sel.subject

st.title("Explore")

MODES = ("Response to an image", "ROIs", "Per-vertex map")
WHOLE_CLASS = "(whole class)"
VIEW_HELP = "Camera preset; drag to rotate, scroll to zoom, double-click to reset."

mode = st.radio("Show", MODES, horizontal=True, key="explore_mode")

# -- surface controls ----------------------------------------------------------------------------
c_mesh, c_view, c_hemis, c_res = st.columns(4)
mesh = c_mesh.selectbox("Mesh", surfaces.MESHES, key="explore_mesh",
                        help="flat: nilearn's 2-D flat map (fsaverage5, or the full mesh when its flat files exist).")  # fmt: skip
view = c_view.selectbox("View", plotting.VIEWS[:4], index=3, key="explore_view", disabled=mesh == "flat", help=VIEW_HELP)
both = c_hemis.radio(
    "Hemispheres",
    ("selected", "both"),
    key="explore_hemis",
    horizontal=True,
    format_func=lambda o: f"{HEMI_NAMES[sel.hemi]} (sidebar)" if o == "selected" else "both, side by side",
) == "both"  # fmt: skip
resolution = c_res.selectbox(
    "Resolution",
    surfaces.RESOLUTIONS,
    key="explore_resolution",
    help="auto: the full fsaverage (163,842 vertices) when it is on disk, else fsaverage5 (10,242, bundled).",
)
with st.expander("Full fsaverage"):
    fs_dir = st.text_input(
        "Directory with nilearn's full fsaverage files (optional)",
        key="explore_fsaverage_dir",
        help=f"Overrides ${surfaces.FSAVERAGE_DIR_ENV}. Files such as pial_left.gii.gz, infl_left.gii.gz, sulc_left.gii.gz.",
    ).strip() or None
    status = surfaces.fsaverage_status(fs_dir)
    st.caption(status.message)
    full_detail = st.checkbox(
        "Send the full mesh to the browser (163,842 vertices; slower). Otherwise it is decimated to 40,962.",
        key="explore_full_detail",
    )

hemis = list(HEMIS) if both else [sel.hemi]
try:
    surfs = {
        h: surfaces.display_surface(mesh, h, resolution, "full" if full_detail else "decimated", fs_dir) for h in hemis
    }
except UserError as exc:
    st.error(str(exc))
    st.stop()


def on_surface(values_by_hemi: dict) -> dict:
    """Challenge-space vectors -> per-vertex arrays on the displayed meshes."""
    return {
        h: None if v is None else surfaces.to_surface(v, subj.fsaverage_mask(h), surfs[h].n_vertices)
        for h, v in values_by_hemi.items()
    }


def show(fig_values: dict, width_share: float = 1.0, **kwargs) -> None:
    """Draw the figure; ``width_share`` is the share of the page's width it gets (camera fit hint)."""
    height = 440 if both else 520
    aspect = width_share * 1000 / height  # the main area is about 1000 px wide on a laptop screen
    fig = plotting.plot_surface_map(surfs, on_surface(fig_values), view=view, height=height, aspect=aspect, **kwargs)
    st.plotly_chart(fig, theme=None, config={"displaylogo": False, "scrollZoom": True}, key="explore_figure")
    st.caption(" · ".join(f"{HEMI_NAMES[h]}: {s.label}" for h, s in surfs.items()))


# -- what to show ----------------------------------------------------------------------------------
if mode == MODES[0]:
    n = subj.n_train
    st.session_state.setdefault("explore_image", 1)
    if st.session_state["explore_image"] > n:
        st.session_state["explore_image"] = 1
    c_img, c_brain = st.columns([1, 4])
    with c_img:
        number = int(st.number_input(f"Training image (1–{n})", 1, n, key="explore_image"))
        path = subj.train_images[number - 1]
        st.image(str(path), caption=path.name, width="stretch")
    with c_brain:
        opts = colour_controls("cold_hot", "symmetric", "explore_resp")
        values = {h: np.asarray(subj.fmri(h)[number - 1], dtype=np.float32) for h in hemis}
        show(values, 0.8, colorbar_title="response (z)", title=f"{subj.name}: response to training image {number}", **opts)

elif mode == MODES[1]:
    classes = subj.roi_classes()
    if not classes:
        st.info(f"{subj.name} has no ROI files (roi_masks/mapping_<class>.npy).")
        show({h: None for h in hemis})
    else:
        if st.session_state.get("explore_roi_class") not in classes:
            st.session_state.pop("explore_roi_class", None)  # another subject without that class
        c1, c2 = st.columns(2)
        cls = c1.selectbox("ROI class", classes, key="explore_roi_class")
        roi = c2.selectbox("ROI", (WHOLE_CLASS, *ROI_CLASSES.get(cls, ())), key=f"explore_roi_{cls}",
                           help="Every ROI of the class is listed; not every ROI exists in every subject and hemisphere.")  # fmt: skip
        overlays, names = surfaces.roi_overlays(subj, hemis, cls, None if roi == WHOLE_CLASS else roi)
        for ov in overlays.values():
            if ov.message:
                st.warning(ov.message)
        values = {h: ov.values for h, ov in overlays.items()}
        title = f"{subj.name}: {cls}" if roi == WHOLE_CLASS else f"{subj.name}: {roi} ({cls})"
        if names:
            show(values, labels={i + 1: r for i, r in enumerate(names)}, title=title)
        else:
            show({h: None for h in hemis}, title=title)

else:
    maps_by_hemi = {h: surfaces.vertex_maps(subj, h) for h in hemis}
    names = [m for m in maps_by_hemi[hemis[0]] if all(m in maps_by_hemi[h] for h in hemis)]
    if not names:
        st.info(
            f"No per-vertex maps are stored for {subj.name} "
            f"({' and '.join(HEMI_NAMES[h] for h in hemis)} hemisphere): the noise ceiling files "
            "(noise_ceiling/subjXX/{lh,rh}.npy) are absent and no encoding run has been evaluated yet."
        )
        show({h: None for h in hemis})
    else:
        if st.session_state.get("explore_map") not in names:
            st.session_state.pop("explore_map", None)
        name = st.selectbox("Map", names, key="explore_map")
        first = maps_by_hemi[hemis[0]][name]
        if first.description:
            st.caption(first.description)
        opts = map_colour_controls(first, f"explore_map_{name}")
        unit = f" ({first.unit})" if first.unit else ""
        show({h: maps_by_hemi[h][name].values for h in hemis}, colorbar_title=f"{name}{unit}",
             title=f"{subj.name}: {name}", **opts)  # fmt: skip

st.markdown("The same maps as a flat map or a shareable 3-D viewer: the [Flatmaps](Flatmaps) page.")
