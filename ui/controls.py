"""Widgets shared by pages: colour controls, backbone pickers, the run scores table."""

from __future__ import annotations

import streamlit as st

from core.features import backbones

from core.viz import plotting
from core.util.errors import UserError

RANGES = ("symmetric", "positive")


def colour_controls(default_cmap: str, default_range: str, key: str) -> dict:
    """Colour map, range and threshold pickers; returns the matching ``plot_surface_map`` keywords."""
    c1, c2, c3 = st.columns(3)
    cmap = c1.selectbox("Colour map", plotting.COLORMAPS, index=plotting.COLORMAPS.index(default_cmap), key=f"{key}_cmap")
    rng = c2.radio("Range", RANGES, index=RANGES.index(default_range), horizontal=True, key=f"{key}_range",
                   help="symmetric: -m..m around 0; positive: 0..max")  # fmt: skip
    thr = c3.number_input("Threshold: hide |value| below", min_value=0.0, value=0.0, step=0.1, key=f"{key}_threshold")
    return dict(cmap=cmap, symmetric=rng == "symmetric", threshold=float(thr) or None)


def map_colour_controls(vmap, key: str) -> dict:
    """:func:`colour_controls` for a stored :class:`core.viz.surfaces.VertexMap`: defaults from its kind, and
    its suggested ``vmin`` (positive range only) and ``vmax``."""
    kind = vmap.kind if vmap.kind in RANGES else "positive"
    opts = colour_controls("hot" if kind == "positive" else "cold_hot", kind, key)
    if not opts["symmetric"] and vmap.vmin is not None:
        opts["vmin"] = vmap.vmin
    if vmap.vmax is not None:
        opts["vmax"] = vmap.vmax
    return opts


@st.cache_data(show_spinner="Listing the model's layers…")
def layer_choices(model: str, weights: str) -> list[str]:
    return backbones.list_layers(model, weights)


def backbone_controls(key: str, columns, model_help: str, layers_help: str) -> tuple[str, str, list[str]]:
    """Model, weights and layers pickers (model and weights in the two given columns); stops the page
    with the error when the model's layers cannot be listed. Returns ``(model, weights, layers)``."""
    c_model, c_weights = columns
    model = c_model.selectbox("Model", backbones.FEATURED_MODELS, index=backbones.FEATURED_MODELS.index("mobilenet_v2"),
                              key=f"{key}_model", help=model_help)  # fmt: skip
    described = {o.spec: o.label + ("" if o.available_offline else ", needs a download once")
                 for o in backbones.weights_options(model)}  # fmt: skip
    described = {backbones.default_weights(model): "torchvision's recommended weights", **described}
    offline = {o.spec for o in backbones.weights_options(model) if o.available_offline}
    weights = c_weights.selectbox(
        "Weights", list(described), key=f"{key}_weights_{model}",
        format_func=lambda w: w if w in offline or w == "DEFAULT" else f"{w} (download)",
        help="  \n".join(f"**{w}**: {text}" for w, text in described.items()),
    )  # fmt: skip
    try:
        layers_all = layer_choices(model, weights)
    except UserError as exc:
        st.error(str(exc))
        st.stop()
    suggested = [n for n in backbones.SUGGESTED_LAYERS.get(model, []) if n in layers_all]
    show_all = st.checkbox("List every sub-layer", key=f"{key}_all_layers",
                           help="Otherwise only the top-level blocks and the suggested layers are listed.")  # fmt: skip
    layer_options = layers_all if show_all else [n for n in layers_all if n.count(".") <= 1 or n in suggested]
    layers = st.multiselect("Layers", layer_options, default=suggested[1:2] or layer_options[:1],
                            key=f"{key}_layers_{model}", help=layers_help)  # fmt: skip
    return model, weights, layers


def run_scores_table(summary, scores: dict[str, str], key: str) -> None:
    """A table of runs: ``run``, the score columns (``{column: printf format}``), then each run's settings."""
    st.dataframe(summary, hide_index=True, key=key, placeholder="—",
                 column_order=["run", *scores, "model", "weights", "layers", "estimator", "label"],
                 column_config={"run": st.column_config.TextColumn(width="medium"),
                                **{c: st.column_config.NumberColumn(format=f, width="small") for c, f in scores.items()}})
