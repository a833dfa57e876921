"""Dataset page: the same summary as ``python -m core info`` plus a few stimulus images."""

import pandas as pd
import streamlit as st

from core.algonauts2023.dataset import HEMI_NAMES, HEMIS
from ui.map_picker import roi_class_help
from ui.state import sidebar

st.set_page_config(page_title="Dataset · Brain Encoding Studio", page_icon="🧠", layout="wide")
sel = sidebar()
ds, subj = sel.dataset, sel.subject

st.title("Dataset")
st.caption(f"`{ds.root}`")

rows = [s.summary() for s in ds]
st.dataframe(
    pd.DataFrame(
        {
            "subject": [r["subject"] for r in rows],
            "training images": [r["n_train"] for r in rows],
            "test images": [r["n_test"] for r in rows],
            "lh vertices": [r["n_vertices"]["lh"] for r in rows],
            "rh vertices": [r["n_vertices"]["rh"] for r in rows],
            "noise ceiling": ["yes" if r["noise_ceiling"] else "no" for r in rows],
        }
    ),
    hide_index=True,
)

st.subheader(f"ROIs present in {subj.name}")
cols = st.columns(2)
for col, hemi in zip(cols, HEMIS):
    with col:
        st.markdown(f"**{HEMI_NAMES[hemi]} hemisphere** ({subj.n_vertices[hemi]} vertices)")
        rois = subj.rois(hemi)
        if not rois:
            st.info("No ROI files for this hemisphere.")
        for cls, names in rois.items():
            st.markdown(f"- `{cls}`: {', '.join(names)}")
st.caption(roi_class_help(sorted({c for h in HEMIS for c in subj.rois(h)})))

st.subheader(f"Stimulus images of {subj.name}")
split = st.radio("Split", ["training", "test"], horizontal=True, key="split")
images = subj.train_images if split == "training" else subj.test_images
start = st.number_input(f"First image (1–{len(images)})", 1, max(1, len(images)), 1, step=8)
shown = images[int(start) - 1 : int(start) - 1 + 8]
for col, path in zip(st.columns(4) + st.columns(4), shown):
    col.image(str(path), caption=path.name, width="stretch")
