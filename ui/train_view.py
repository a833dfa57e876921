"""The ``train`` run kind in the runs panel (``ui.runs_panel``): a launch form (subjects, trunk, layers,
epochs, fine-tuning, ridge head) and, for a train run, its live loss and validation curves plus "resume" for a
cancelled or failed one.

Everything here works through ``core``: configs are :class:`core.training.trainer.TrainConfig`, runs
go through ``core.runs.workers``, the curve is read with ``core.runs.artifacts``.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.features import backbones
from core.runs import artifacts
from core.runs import workers as jobs
from core.runs.store import Run
from core.training.trainer import TrainConfig
from core.util.errors import UserError
from ui.controls import layer_choices
from ui.runs_panel import DEVICES, Launch, open_store
from ui.state import chosen_dataset

KIND = "train"
TRUNK_HELP = ("A torchvision name (mobilenet_v2, resnet50), timm:<name> (timm:eva02_base_patch14_224.mim_in22k, "
              "timm:vit_base_patch14_dinov2) or open_clip:<name> (open_clip:ViT-B-16).")


HELP = "a multi-subject encoder trained on a trunk's features (shared readout, group-PCA embedding)"


def form(key: str) -> Launch | None:
    """The settings of a train run on the sidebar's dataset (every subject by default)."""
    key = f"{key}_train"  # the other kinds' forms use the same prefix
    ds = chosen_dataset()
    c1, c2, c3 = st.columns(3)
    subjects = c1.multiselect("Subjects", ds.subjects, default=list(ds.subjects), key=f"{key}_subjects",
                              format_func=lambda n: f"subj{n:02d}")
    model = c2.text_input("Trunk", "mobilenet_v2", key=f"{key}_model", help=TRUNK_HELP).strip()
    weights = c3.text_input("Weights", "", key=f"{key}_weights", placeholder=_default_weights(model),
                            help="Empty: the trunk's default (the offline ImageNet bundle for mobilenet_v2). "
                                 "A pretrained tag, a local file, or random.").strip() or None
    try:
        layers_all = layer_choices(backbones.check_model(model), weights or backbones.default_weights(model))
    except UserError as exc:
        st.error(str(exc))
        return None
    suggested = {**backbones.SUGGESTED_LAYERS, **backbones.trunks.SUGGESTED_LAYERS}.get(model, [])
    default = [n for n in ("features.6", "features.10", "features.17") if n in layers_all] or \
        [n for n in suggested if n in layers_all][-3:] or layers_all[-1:]
    layers = st.multiselect("Tapped layers (readouts averaged)", layers_all, default=default,
                            key=f"{key}_layers_{model}")
    d1, d2, d3, d4, d5 = st.columns(5)
    epochs = d1.number_input("Epochs (phase 1)", 1, 1000, TrainConfig.epochs, key=f"{key}_epochs",
                             help="At most; early stopping on the validation score.")
    blocks = d2.number_input("Fine-tune last N blocks", 0, 100, 0, key=f"{key}_finetune_blocks",
                             help="0: the trunk stays frozen. N > 0 adds phase 2 (end to end).")
    ft_epochs = d3.number_input("Epochs (phase 2)", 0, 100, 3, key=f"{key}_finetune_epochs", disabled=not blocks)
    resolution = d4.number_input("Resolution (px)", 32, 1024, 224, step=16, key=f"{key}_resolution")
    device = d5.selectbox("Device", list(DEVICES), key=f"{key}_device")
    ridge_head = st.checkbox("Ridge head", TrainConfig.ridge_head, key=f"{key}_ridge_head",
                             help="After training, blend a per-vertex RidgeCV on the trained latents (alphas "
                                  "chosen on the training rows) into the predictions.")
    if not (subjects and layers):
        st.caption("Choose at least one subject and one layer.")
        return None
    config = TrainConfig(data=str(ds.root), subjects=list(subjects), model=model, weights=weights,
                         layers=list(layers), epochs=int(epochs), finetune_blocks=int(blocks),
                         finetune_epochs=int(ft_epochs), resolution=int(resolution), device=DEVICES[device],
                         ridge_head=bool(ridge_head))
    return Launch(KIND, [config.to_dict()])


def _default_weights(model: str) -> str:
    try:
        return backbones.default_weights(backbones.check_model(model))
    except UserError:
        return ""


def curve_frame(run: Run) -> pd.DataFrame:
    """The run's training curve so far: one row per epoch (``step`` counts epochs over both phases)."""
    curve = artifacts.read_training_curve(run.dir)
    frame = pd.DataFrame([{**{k: c[k] for k in ("phase", "epoch", "train_loss", "val_score")},
                           "val_metric": c.get("val_metric", "mean r")} for c in curve],
                         columns=["phase", "epoch", "train_loss", "val_score", "val_metric"])
    frame.insert(0, "step", range(1, len(frame) + 1))
    return frame


def details(run: Run) -> None:
    """Under a train run's details: live curves, and resume for a cancelled / failed run with a checkpoint."""
    frame = curve_frame(run)
    if frame.empty:
        st.caption("The curves appear after the first epoch.")
    else:
        c1, c2 = st.columns(2)
        c1.markdown("**Training loss** (MSE, standardised responses)")
        c1.line_chart(frame, x="step", y="train_loss", height=220)
        c2.markdown(f"**Validation score** ({frame['val_metric'].iloc[-1]}, mean over subjects)")
        c2.line_chart(frame, x="step", y="val_score", height=220)
        best = frame.loc[frame["val_score"].idxmax()]
        st.caption(f"{len(frame)} epochs so far; best: phase {int(best['phase'])} epoch {int(best['epoch'])} "
                   f"(val {best['val_score']:.4f})")
    if run.status in ("cancelled", "failed") and artifacts.has_checkpoint(run.dir):
        if st.button("Resume from its checkpoint", key="train_resume"):
            try:
                new = jobs.launch(open_store(), KIND, {**run.config, "resume_from": str(run.dir)},
                                  label=run.label or f"resume {run.id}")
            except UserError as exc:
                st.error(str(exc))
            else:
                st.success(f"Resumed as run {new.id}: pick it in the run list.")
