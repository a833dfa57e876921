"""``python -m core worker``: execute one run, or dispatch a grid (started by ``core.runs.workers``, not by hand)."""

from __future__ import annotations

import argparse

from core.runs import workers as jobs
from core.runs.store import RunStore


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="execute a queued run or grid of the run store (used by the dashboard)")
    p.add_argument("--workspace", required=True, help="workspace directory of the run store")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", help="id of the queued run to execute in this process")
    which.add_argument("--group", help="grid id: execute its queued runs")
    p.add_argument("--workers", type=int, default=1, help="grid: worker processes at a time (default 1)")
    p.add_argument("--ray-address", help="grid: submit the runs as tasks to this Ray cluster")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    store = RunStore(args.workspace)
    if args.run:
        return 0 if jobs.execute(store, args.run) == "done" else 1
    jobs.dispatch(store, args.group, args.workers, args.ray_address)
    return 0
