"""Plotly charts of tidy result tables (data in, figure out), shared by both challenges' pages.

* ``roi_bar_chart``: per-ROI median r as grouped bars, one colour per run, one panel per hemisphere
  (or any column, or a single panel).
* ``layer_heatmap`` (with ``best_rows``): which layer predicts which ROI best.
* ``chart_config``: the ``st.plotly_chart`` config whose camera button saves PNG or SVG.
"""

from __future__ import annotations

import math
from typing import Mapping

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.viz import plotting


def chart_config(filename: str, fmt: str = "png") -> dict:
    """``st.plotly_chart`` config whose camera button downloads the chart as ``fmt`` (png or svg)."""
    options = {"format": fmt, "filename": filename, "scale": 2 if fmt == "png" else 1}
    return {"displaylogo": False, "toImageButtonOptions": options}


def _color(i: int) -> str:
    return plotting.CATEGORY_COLORS[i % len(plotting.CATEGORY_COLORS)]


def roi_bar_chart(table: pd.DataFrame, title: str | None = None, height: int = 620, *, facet: str | None = "hemi",
                  facets: Mapping[str, str] | None = None, count: str = "n_vertices",
                  unit: str = "vertices") -> go.Figure:
    """Grouped bars of per-ROI median r, one colour per run: left hemisphere above, right below.

    More generally one panel per value of the column ``facet`` (``facets``: value -> panel title,
    default the hemispheres), or a single panel with ``facet=None`` (e.g. ``roi_table_2021``'s
    ROIs, with ``count="n_voxels", unit="voxels"``); ``count`` is shown on hover.
    """
    rois = list(dict.fromkeys(table["roi"]))
    runs = list(dict.fromkeys(table["run"]))
    if facet is None:
        panels: dict = {None: None}
    else:
        panels = dict(facets) if facets is not None else dict(plotting.HEMI_TITLES)
    fig = make_subplots(rows=len(panels), cols=1, shared_xaxes=True, vertical_spacing=0.09,
                        subplot_titles=None if facet is None else list(panels.values()))  # fmt: skip
    for row, key in enumerate(panels, start=1):
        rows = table if facet is None else table[table[facet] == key]
        for i, run in enumerate(runs):
            part = rows[rows["run"] == run].set_index("roi").reindex(rois)
            fig.add_trace(
                go.Bar(
                    x=rois, y=part["median_r"].to_numpy(dtype=float), name=run, legendgroup=run,
                    showlegend=row == 1, marker_color=_color(i), customdata=part[count].fillna(0).astype(int),
                    hovertemplate=f"%{{x}}: median r %{{y:.3f}} (%{{customdata}} {unit})<extra>" + run + "</extra>",
                ),
                row=row, col=1,
            )  # fmt: skip
        fig.update_yaxes(title_text="median r", zeroline=True, zerolinecolor="#888", row=row, col=1)
    fig.update_xaxes(categoryorder="array", categoryarray=rois, tickangle=-45)
    fig.update_layout(
        barmode="group", height=height, title=dict(text=title, x=0.5, xanchor="center") if title else None,
        legend=dict(orientation="h", yanchor="top", y=-0.2, xanchor="left", x=0, title_text="runs: "),
        margin=dict(l=60, r=20, t=70 if title else 30, b=20), plot_bgcolor="white", paper_bgcolor="white",
    )  # fmt: skip
    fig.update_yaxes(gridcolor="#e5e5e5")
    return fig


def best_rows(matrix: pd.DataFrame) -> pd.Series:
    """The row label with the highest value in each column (NaN-only columns left out)."""
    return matrix.dropna(axis=1, how="all").idxmax(axis=0)


def layer_heatmap(matrix: pd.DataFrame, title: str | None = None, colorbar_title: str = "median r") -> go.Figure:
    """A ``layer_roi_matrix`` as a heat map: layers left to right, ROIs top to bottom, each ROI's best
    layer starred."""
    z = matrix.to_numpy(dtype=float).T
    best = best_rows(matrix)
    text = [[("" if math.isnan(v) else f"{'★ ' if best.get(roi) == layer else ''}{v:.2f}")
             for layer, v in zip(matrix.index, values)] for roi, values in zip(matrix.columns, z)]  # fmt: skip
    fig = go.Figure(
        go.Heatmap(
            z=z, x=list(matrix.index), y=list(matrix.columns), text=text, texttemplate="%{text}",
            colorscale="Viridis", colorbar=dict(title=dict(text=colorbar_title, side="right")), xgap=1, ygap=1,
            hovertemplate="%{x} → %{y}: %{z:.3f}<extra></extra>",
        )
    )  # fmt: skip
    fig.update_layout(
        height=max(300, 110 + 24 * len(matrix.columns)),
        title=dict(text=title, x=0.5, xanchor="center") if title else None,
        margin=dict(l=20, r=20, t=50 if title else 20, b=40), plot_bgcolor="white", paper_bgcolor="white",
    )  # fmt: skip
    fig.update_xaxes(type="category", title_text="layers")
    fig.update_yaxes(autorange="reversed", type="category", automargin=True)
    return fig
