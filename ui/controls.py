"""Widgets shared by the map pages (Explore, Flatmaps)."""

from __future__ import annotations

import streamlit as st

from core import plotting

RANGES = ("symmetric", "positive")


def colour_controls(default_cmap: str, default_range: str, key: str) -> dict:
    """Colour map, range and threshold pickers; returns the matching ``plot_surface_map`` keywords."""
    c1, c2, c3 = st.columns(3)
    cmap = c1.selectbox("Colour map", plotting.COLORMAPS, index=plotting.COLORMAPS.index(default_cmap), key=f"{key}_cmap")
    rng = c2.radio("Range", RANGES, index=RANGES.index(default_range), horizontal=True, key=f"{key}_range",
                   help="symmetric: -m..m around 0; positive: 0..max")  # fmt: skip
    thr = c3.number_input("Threshold: hide |value| below", min_value=0.0, value=0.0, step=0.1, key=f"{key}_threshold")
    return dict(cmap=cmap, symmetric=rng == "symmetric", threshold=float(thr) or None)
