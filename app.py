"""Brain Encoding Studio dashboard: ``streamlit run app.py``. The pages live in ``pages/``."""

import streamlit as st

from ui.state import sidebar

st.set_page_config(page_title="Brain Encoding Studio", page_icon="🧠", layout="wide")
sel = sidebar()

st.title("Brain Encoding Studio")
st.markdown(
    f"""
Build, judge and submit **fMRI encoding models**: predict a person's brain responses to images from
the features of a deep neural network, on the Natural Scenes Dataset in the Algonauts 2023 layout.

Current data: `{sel.dataset.root}` — {len(sel.dataset.subjects)} subject(s).

**Tour**
1. **Dataset** — subjects, image and vertex counts, ROIs per hemisphere, stimulus images.
2. **Explore** — responses, ROIs and per-vertex maps (noise ceiling, encoding accuracy) on fsaverage.
3. **Runs** — launch feature extraction and encoding fits in the background and follow them.
4. **Compare** — per-ROI accuracy of runs side by side.
5. **Submission** — build and download the challenge submission zip.
6. **Flatmaps** — any map as a flat map (pycortex or nilearn) and a shareable WebGL viewer.
7. **Videos** — the Algonauts 2021 video challenge: data, runs, ROI bars, glass brains, submissions.

Everything here is also available without the dashboard: `python -m core --help`.
"""
)
