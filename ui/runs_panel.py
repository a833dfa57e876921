"""The runs panel shared by the Runs and Videos pages: launch a run of a registered kind, follow the list
(status, progress, scores), read one run's details, cancel it, read its log.

A run kind plugs in with a :class:`RunKindView` (its short label, launch form, score columns and result
view), registered by one line in ``ui.run_kinds.RUN_KINDS``; this module knows no kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Mapping, Sequence

import pandas as pd
import streamlit as st

from core.runs import workers
from core.runs.store import STATUSES, Run, RunStore
from core.util.errors import UserError

POLL_ACTIVE_S = 1.5  # list refresh while runs are active
POLL_IDLE_S = 5.0  # ... and otherwise (runs launched elsewhere show up)
LIST_LIMIT = 200
MAX_BARS = 10
LOG_CHARS = 20_000
DEVICES = {"auto": None, "cpu": "cpu", "cuda": "cuda"}


@dataclass(frozen=True)
class Launch:
    """What a launch form asks for: the run kind and one config per run (several: a grid)."""

    kind: str
    configs: list[dict]
    grid: bool = False
    max_workers: int = 1  # grids: local worker processes (a Ray cluster comes from $BES_RAY_ADDRESS only)


@dataclass(frozen=True)
class RunKindView:
    """How the dashboard shows one run kind.

    ``form(key)`` draws the kind's settings (widget keys prefixed ``key``) and returns a :class:`Launch`, or
    None after saying what is missing; ``columns(run)`` the kind's columns of the runs table (scores first);
    ``details(run)`` the result view of a finished run under *Run details*.
    """

    label: str
    help: str
    form: Callable[[str], Launch | None] | None = None
    columns: Callable[[Run], dict] = field(default=lambda run: {})
    details: Callable[[Run], None] | None = None
    live: bool = False  # show ``details`` while the run is active too (a search's best-so-far, a training curve)


def open_store() -> RunStore:
    """The run store (``BES_WORKSPACE``), or the page stops with the one-line error."""
    try:
        store = RunStore()
    except UserError as exc:
        st.error(str(exc))
        st.stop()
    st.caption(f"Run store: `{store.workspace}` (set `BES_WORKSPACE` to use another). "
               "Runs keep going when the page closes.")  # fmt: skip
    return store


def launch_form(store: RunStore, kinds: Mapping[str, RunKindView], key: str) -> list[Run]:
    """A Kind picker (when there are several kinds with a form), the kind's form, a label and the Launch
    button; returns the runs launched by this rerun."""
    offered = {k: v for k, v in kinds.items() if v.form is not None}
    kind = next(iter(offered))
    if len(offered) > 1:
        kind = st.selectbox("Kind", list(offered), key=f"{key}_kind", format_func=lambda k: offered[k].label,
                            help=" · ".join(f"**{v.label}**: {v.help}" for v in offered.values()))  # fmt: skip
    launch = offered[kind].form(key)
    label = st.text_input("Label (optional)", key=f"{key}_label", help="Shown in the run list; searchable.")
    if not st.button("Launch", type="primary", disabled=launch is None, key=f"{key}_launch"):
        return []
    try:
        with st.spinner("Checking the settings and starting the worker…"):
            if launch.grid:
                launched = workers.launch_grid(store, launch.kind, launch.configs, label=label,
                                               max_workers=launch.max_workers)
            else:
                launched = [workers.launch(store, launch.kind, c, label=label) for c in launch.configs]
    except UserError as exc:
        st.error(str(exc))
        return []
    ids = ", ".join(r.id for r in launched[:5]) + (" …" if len(launched) > 5 else "")
    n = len(launched)
    st.success(f"Launched {n} run{'s' if n != 1 else ''}: {ids}. Follow {'it' if n == 1 else 'them'} below.")
    return launched


def progress_text(run: Run) -> str:
    message = f": {run.message}" if run.message and run.message != run.status else ""
    return f"{run.status}{message} ({run.progress:.0%})"


def _bar(container, run: Run, text: str) -> None:
    container.progress(min(1.0, max(0.0, run.progress)), text=text)


def runs_frame(runs: Sequence[Run], kinds: Mapping[str, RunKindView]) -> pd.DataFrame:
    """The runs table: id, status, progress, each kind's own columns (scores first), then the settings."""
    none = RunKindView("", "")
    rows = [{"run": r.id, "status": r.status, "progress": r.progress, **kinds.get(r.kind, none).columns(r),
             "model": r.config.get("model"), "layers": "+".join(r.config.get("layers") or []),
             "estimator": r.config.get("estimator"), "label": r.label, "kind": kinds.get(r.kind, none).label or r.kind,
             "seconds": None if r.seconds is None else round(r.seconds, 1),
             "created": datetime.fromtimestamp(r.created), "message": r.error if r.error else r.message}
            for r in runs]  # fmt: skip
    return pd.DataFrame(rows)


def _column_config(frame: pd.DataFrame) -> dict:
    config = {
        "run": st.column_config.TextColumn(width="small"),
        "status": st.column_config.TextColumn(width="small"),
        "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0, format="percent",
                                                    width="small"),
        "created": st.column_config.DatetimeColumn(format="MM-DD HH:mm", width="small"),
        "seconds": st.column_config.NumberColumn("s", width="small", help="Run time in seconds"),
        "message": st.column_config.TextColumn(width="medium"),
    }  # fmt: skip
    for c in frame.columns:
        if c.endswith("median r") or c.endswith("score"):
            config[c] = st.column_config.NumberColumn(format="%.3f", width="small")
    return config


def _state(runs: Sequence[Run]) -> tuple[bool, int]:
    return any(r.active for r in runs), sum(r.status == "done" for r in runs)


def runs_panel(store: RunStore, key: str, kinds: Mapping[str, RunKindView], *,
               list_runs: Callable[..., list[Run]] | None = None, details: bool = True, filters: bool = True,
               select: Sequence[Run] = (), empty: str = "No runs yet: launch one above.") -> None:
    """The live run list (a fragment polling the store): progress bars of active runs with a Cancel button
    each, the table, and (``details``) one run's status, cancel buttons, error, log, config and results.

    ``list_runs(**filters)``: the runs to show (default: every run of the store); ``select``: runs just
    launched (the details show the first).
    """
    list_runs = list_runs or (lambda **f: workers.list_runs(store, **f))
    if select:
        st.session_state[f"{key}_detail"] = select[0].id
    at_start = _state(list_runs(limit=LIST_LIMIT))

    @st.fragment(run_every=POLL_ACTIVE_S if at_start[0] else POLL_IDLE_S)
    def panel() -> None:
        if _state(list_runs(limit=LIST_LIMIT)) != at_start:
            st.rerun()  # runs started or ended: redraw the page (results, polling interval)
        statuses, search = [], ""
        if filters:
            f1, f2 = st.columns([2, 1])
            statuses = f1.multiselect("Status", STATUSES, key=f"{key}_status_filter", placeholder="all statuses")
            search = f2.text_input("Search id or label", key=f"{key}_search").strip()
        runs = list_runs(status=statuses or None, search=search or None, limit=LIST_LIMIT)
        if not runs:
            st.info(empty if not (statuses or search) else "No run matches the filters.")
            return
        for run in [r for r in runs if r.active][:MAX_BARS]:
            p1, p2 = st.columns([8, 1], vertical_alignment="bottom")
            _bar(p1, run, f"`{run.id}` {kinds[run.kind].label if run.kind in kinds else run.kind} — {progress_text(run)}")
            p2.button("Cancel", key=f"{key}_cancel_{run.id}", on_click=workers.cancel, args=(store, run.id))
        frame = runs_frame(runs, kinds)
        st.dataframe(frame, hide_index=True, key=f"{key}_table", column_config=_column_config(frame), placeholder="—")
        if details:
            _details(store, key, runs, kinds)
        else:
            failed = [r for r in runs if r.status == "failed"][:1]
            if failed:
                st.caption(f"Latest failure, {failed[0].id}: {failed[0].error}. Its log is on the Runs page.")

    panel()


def _details(store: RunStore, key: str, runs: list[Run], kinds: Mapping[str, RunKindView]) -> None:
    """One run of ``runs`` (the same read as the list above, so both show the same progress)."""
    st.subheader("Run details")
    by_id = {r.id: r for r in runs}
    if st.session_state.get(f"{key}_detail") not in by_id:
        st.session_state[f"{key}_detail"] = runs[0].id
    run_id = st.selectbox("Run", list(by_id), key=f"{key}_detail",
                          format_func=lambda i: f"{i} · {by_id[i].kind}" + (f" “{by_id[i].label}”" if by_id[i].label else ""))
    run = by_id[run_id]
    parts = [run.status, run.message if run.message != run.status else "", f"{run.seconds:.1f} s" if run.seconds else ""]
    st.markdown("**Status:** " + " · ".join(p for p in parts if p))
    if run.active:
        _bar(st, run, progress_text(run))
        b1, b2, _ = st.columns([1, 1, 3])
        b1.button("Cancel run", key=f"{key}_cancel", on_click=workers.cancel, args=(store, run.id))
        if run.group:
            b2.button("Cancel the whole grid", key=f"{key}_cancel_grid", on_click=workers.cancel_group,
                      args=(store, run.group))  # fmt: skip
    if run.error:
        st.error(f"{run.status}: {run.error}")
    view = kinds.get(run.kind)
    if view is not None and view.details is not None and (run.status == "done" or (view.live and run.active)):
        view.details(run)
    log, config, results = st.tabs(["Log", "Config", "Results"])
    log.code(store.read_log(run.id, LOG_CHARS) or "(no log yet)", language=None)
    config.json(run.config)
    results.json({"summary": run.summary, "timings": run.timings, "group": run.group, "directory": str(run.dir)})
