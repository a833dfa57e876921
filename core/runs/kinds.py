"""Run kinds, by name: what a run of each kind executes (``core.runs`` imports no challenge).

A task is ``fn(ctx: TaskContext) -> dict | None``: it reads ``ctx.config``, reports through
``ctx.progress``, writes its artifacts (``core.runs.artifacts``) into ``ctx.dir`` and returns a
small summary (stored in the index). The worker marks the run done only after the task has returned.
``kind`` is a name in :data:`KINDS` or ``"package.module:function"``. When the function has a
``config`` attribute (a class with ``from_dict(config).checked().to_dict()``), configs are checked
before a run is queued.
"""

from __future__ import annotations

import contextlib
import importlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from core.runs.store import Run, RunStore
from core.util.errors import UserError
from core.util.progress import Progress

KINDS: dict[str, str] = {
    "extract": "core.algonauts2023.pipeline:extract_task",
    "fit": "core.algonauts2023.pipeline:fit_task",
    "pipeline": "core.algonauts2023.pipeline:pipeline_task",
    "pipeline2021": "core.algonauts2021.pipeline:run_task",
    "search": "core.search.study:search_task",
    "train": "core.training.trainer:train_task",
}
ALIASES = {"core.pipeline2021:run_task": "pipeline2021"}  # kinds stored by earlier versions


@dataclass
class TaskContext:
    """Everything a task may use: its run, the store, progress and step timings."""

    run: Run
    store: RunStore
    progress: Progress
    timings: dict[str, float]

    @property
    def dir(self) -> Path:
        return self.run.dir

    @property
    def config(self) -> dict:
        return self.run.config

    def log(self, message: str) -> None:
        self.store.append_log(self.run.id, message)

    def timed(self, step: str) -> contextlib.AbstractContextManager[None]:
        return timed(self.timings, step, self.log)


@contextlib.contextmanager
def timed(timings: dict[str, float], step: str, log: Callable[[str], None] | None = None) -> Iterator[None]:
    """Time a step into ``timings[step]`` (seconds, accumulated over repeats) and log it."""
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds = time.perf_counter() - start
        timings[step] = round(timings.get(step, 0.0) + seconds, 3)
        if log is not None:
            log(f"{step}: {seconds:.1f} s")



Task = Callable[[TaskContext], "dict | None"]


def _target(kind: str) -> Task:
    target = KINDS.get(ALIASES.get(kind, kind), kind)
    if ":" not in target:
        raise UserError(f"unknown run kind '{kind}' (known: {', '.join(KINDS)}, or module:function)")
    module, _, name = target.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"unknown run kind '{kind}' ({exc})") from None
    if not callable(fn):
        raise UserError(f"run kind '{kind}': {target} is not callable")
    return fn


def resolve_task(kind: str) -> Task:
    """The function that executes runs of ``kind`` (a name in :data:`KINDS`, or ``module:function``)."""
    return _target(kind)


def check_config(kind: str, config: dict) -> dict:
    """``config`` validated and normalised for ``kind`` (``UserError`` naming what is wrong)."""
    cls = getattr(_target(kind), "config", None)
    return config if cls is None else cls.from_dict(config).checked().to_dict()
