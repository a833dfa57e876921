"""``python -m core runs list|show|cancel``: the runs of a workspace (the dashboard's run store)."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict

from core.runs import workers
from core.runs.store import STATUSES, Run, RunStore


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="list, show or cancel runs of the run store")
    p.add_argument("--workspace", help="workspace directory (default: $BES_WORKSPACE or <cache>/workspace)")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = actions.add_parser("list", help="runs, newest first")
    ls.add_argument("--status", nargs="+", choices=STATUSES, help="only runs with these statuses")
    ls.add_argument("--kind", help="only runs of this kind (extract, fit, pipeline)")
    ls.add_argument("--subject", type=int, help="only runs of this subject")
    ls.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    ls.add_argument("--json", action="store_true", help="print machine-readable JSON")
    show = actions.add_parser("show", help="one run: config, status, summary and log")
    show.add_argument("run_id")
    show.add_argument("--json", action="store_true", help="print machine-readable JSON")
    cancel = actions.add_parser("cancel", help="cancel queued or running runs")
    cancel.add_argument("run_ids", nargs="+")
    p.set_defaults(func=run)


def _as_json(run: Run) -> dict:
    d = asdict(run)
    d["dir"] = str(run.dir)
    return d


def _line(run: Run) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(run.created))
    state = f"{run.status} {run.progress:4.0%}" if run.status == "running" else run.status
    values = [run.config.get(k) for k in ("subjects", "model", "layers", "estimator")]
    what = " ".join(",".join(map(str, v)) if isinstance(v, list) else str(v) for v in values if v)
    note = run.error if run.status == "failed" else run.message if run.status == "running" else ""
    return f"{run.id}  {when}  {run.kind:<8} {state:<13} {what}  {note}".rstrip()


def run(args: argparse.Namespace) -> int:
    store = RunStore(args.workspace)
    if args.action == "list":
        runs = workers.list_runs(store, status=args.status, kind=args.kind, subject=args.subject, limit=args.limit)
        print(json.dumps([_as_json(r) for r in runs], indent=2) if args.json else "\n".join(map(_line, runs)))
    elif args.action == "show":
        r = workers.get_run(store, args.run_id)
        if args.json:
            print(json.dumps(_as_json(r), indent=2))
        else:
            print(_line(r))
            print(f"dir: {r.dir}\nconfig: {json.dumps(r.config)}\ntimings: {json.dumps(r.timings)}")
            if r.summary:
                print(f"summary: {json.dumps(r.summary)}")
            print(store.read_log(r.id, max_chars=4000), end="")
    else:
        for run_id in args.run_ids:
            print(f"{run_id}: {'cancelled' if workers.cancel(store, run_id) else 'not active, left as is'}")
    return 0
