"""Explore page: a subject's responses, ROIs and stored per-vertex maps on fsaverage surfaces.

Thin layer: meshes, mapping and figures come from ``core.viz.surfaces`` and ``core.viz.plotting``; what to
show from the shared map picker (``ui.map_picker``).
"""

from __future__ import annotations

import streamlit as st

import core.algonauts2023.compare  # noqa: F401  (registers the accuracy maps of finished runs)
from core.algonauts2023.dataset import HEMI_NAMES, HEMIS
from core.util.errors import UserError
from core.viz import plotting, surfaces
from ui.figures import figure_slot, placeholder_style
from ui.map_picker import WHOLE_CLASS, pick_map
from ui.state import sidebar

st.set_page_config(page_title="Explore · Brain Encoding Studio", page_icon="🧠", layout="wide")
sel = sidebar()
subj = sel.subject
placeholder_style()
st.title("Explore")

VIEW_HELP = "Camera preset; drag to rotate, scroll to zoom, double-click to reset. Picking an ROI turns it to face the ROI."


def face_roi(subject, hemis: list[str]) -> None:
    """On a new ROI (class): turn the camera to the preset that faces it, and say so."""
    cls = st.session_state.get("explore_roi_class")
    roi = st.session_state.get(f"explore_roi_{cls}", WHOLE_CLASS)
    overlays, _ = surfaces.roi_overlays(subject, hemis, cls, None if roi == WHOLE_CLASS else roi)
    surfs = {h: surfaces.load_surface("inflated", h, "fsaverage5") for h in hemis}
    values = {h: None if ov.values is None else surfaces.to_surface(ov.values, subject.fsaverage_mask(h), surfs[h].n_vertices)
              for h, ov in overlays.items()}  # fmt: skip
    view = plotting.facing_view(surfs, values, plotting.VIEWS[:4])
    if view is not None:
        st.session_state["explore_view"] = view
        st.session_state["explore_view_note"] = f"View: {view}, the preset that faces {cls if roi == WHOLE_CLASS else roi}."


# -- surface controls ----------------------------------------------------------------------------
c_mesh, c_view, c_hemis, c_res = st.columns(4)
mesh = c_mesh.selectbox("Mesh", surfaces.MESHES, key="explore_mesh",
                        help="flat: nilearn's 2-D flat map (fsaverage5, or the full mesh when its flat files exist).")  # fmt: skip
view = c_view.selectbox("View", plotting.VIEWS[:4], index=3, key="explore_view", disabled=mesh == "flat", help=VIEW_HELP)
both = c_hemis.radio("Hemispheres", ("selected", "both"), key="explore_hemis", horizontal=True,
                     format_func=lambda o: f"{HEMI_NAMES[sel.hemi]} (sidebar)" if o == "selected" else "both, side by side",
                     ) == "both"  # fmt: skip
resolution = c_res.selectbox("Resolution", surfaces.RESOLUTIONS, key="explore_resolution",
                             help="auto: the full fsaverage (163,842 vertices) when it is on disk, else fsaverage5 (10,242, bundled).")  # fmt: skip
with st.expander("Full fsaverage"):
    fs_dir = st.text_input("Directory with nilearn's full fsaverage files (optional)", key="explore_fsaverage_dir",
                           help=f"Overrides ${surfaces.FSAVERAGE_DIR_ENV}. Files such as pial_left.gii.gz, infl_left.gii.gz, sulc_left.gii.gz.",
                           ).strip() or None  # fmt: skip
    st.caption(surfaces.fsaverage_status(fs_dir).message)
    full_detail = st.checkbox("Send the full mesh to the browser (163,842 vertices; slower). Otherwise it is decimated "
                              "to 40,962.", key="explore_full_detail")  # fmt: skip

hemis = list(HEMIS) if both else [sel.hemi]
try:
    surfs = {h: surfaces.display_surface(mesh, h, resolution, "full" if full_detail else "decimated", fs_dir) for h in hemis}
except UserError as exc:
    st.error(str(exc))
    st.stop()

# -- what to show ----------------------------------------------------------------------------------
choice = pick_map(subj, hemis, "explore", with_image=True, on_roi_change=face_roi, on_roi_args=(subj, hemis))
height = 500 if both else 620
slot = figure_slot(height, "Drawing the brain…", choice.area)
if choice.roi and mesh != "flat" and st.session_state.get("explore_view_note"):
    choice.area.caption(st.session_state["explore_view_note"])
aspect = (0.8 if choice.area is not st else 1.0) * 1000 / height  # the main area is about 1000 px wide on a laptop
values = {h: None if v is None else surfaces.to_surface(v, subj.fsaverage_mask(h), surfs[h].n_vertices)
          for h, v in choice.values.items()}  # fmt: skip
fig = plotting.plot_surface_map(surfs, values, view=view, height=height, aspect=aspect,
                                title=f"{subj.name}: {choice.what}", **choice.style)  # fmt: skip
slot.plotly_chart(fig, theme=None, config={"displaylogo": False, "scrollZoom": True}, key="explore_figure")
choice.area.caption(" · ".join(f"{HEMI_NAMES[h]}: {s.label}" for h, s in surfs.items()))
st.markdown("The same maps as a flat map or a shareable 3-D viewer: the [Flatmaps](Flatmaps) page.")
