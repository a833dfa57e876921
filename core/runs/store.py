"""The run store: one directory per run under a workspace, indexed in an embedded SQLite database.

::

    WORKSPACE/runs.sqlite          the index (WAL mode): id, kind, status, progress, config, ...
    WORKSPACE/runs/<id>/config.json  the run's full config (written when it is created)
    WORKSPACE/runs/<id>/log.txt      its log (appended by the worker; crashes land here too)
    WORKSPACE/runs/<id>/...          its artifacts, each written atomically

A run moves ``queued -> running -> done | failed | cancelled``; a queued run may also be
cancelled or failed directly. Every status change is one conditional ``UPDATE`` (a finished
run is never changed again), so any number of processes may write at once: each call opens its
own short-lived connection with a busy timeout and holds no transaction open.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from core.util.errors import UserError
from core.util.fileio import write_json
from core.util.paths import cache_dir

STATUSES = ("queued", "running", "done", "failed", "cancelled")
ACTIVE = ("queued", "running")
HOST = socket.gethostname()
DB_NAME = "runs.sqlite"
BUSY_TIMEOUT_S = 30.0
_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    label TEXT NOT NULL DEFAULT '',
    grp TEXT,
    status TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    error TEXT,
    config TEXT NOT NULL,
    summary TEXT,
    timings TEXT NOT NULL DEFAULT '{}',
    subject INTEGER,
    model TEXT,
    layer TEXT,
    estimator TEXT,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    heartbeat REAL,
    pid INTEGER,
    host TEXT
);
CREATE INDEX IF NOT EXISTS runs_created ON runs(created);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status);
CREATE INDEX IF NOT EXISTS runs_grp ON runs(grp);
CREATE INDEX IF NOT EXISTS runs_subject ON runs(subject);
CREATE INDEX IF NOT EXISTS runs_model ON runs(model);
"""


def default_workspace() -> Path:
    """``$BES_WORKSPACE`` if set, else ``<cache dir>/workspace``."""
    env = os.environ.get("BES_WORKSPACE")
    return Path(env).expanduser() if env else cache_dir() / "workspace"


@dataclass(frozen=True)
class Run:
    """One row of the index (a snapshot: read it again to see later changes)."""

    id: str
    kind: str
    status: str
    config: dict
    dir: Path
    label: str = ""
    group: str | None = None
    progress: float = 0.0
    message: str = ""
    error: str | None = None
    summary: dict | None = None
    timings: dict = field(default_factory=dict)
    created: float = 0.0
    started: float | None = None
    finished: float | None = None
    heartbeat: float | None = None
    pid: int | None = None
    host: str | None = None

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def seconds(self) -> float | None:
        """Wall time from start to finish (or to now while running)."""
        if self.started is None:
            return None
        return (self.finished or time.time()) - self.started


def new_run_id() -> str:
    """Sortable by creation time and unique across processes: ``20250101-120000-3fa9c2d1``."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}"


def _index_columns(config: dict) -> dict[str, Any]:
    """Config fields copied into indexed columns for filtering."""
    layers = config.get("layers")
    subjects = config.get("subjects") or []
    return {
        "subject": subjects[0] if len(subjects) == 1 and isinstance(subjects[0], int) else None,
        "model": config.get("model"),
        "layer": ",".join(map(str, layers)) if isinstance(layers, list) and layers else None,
        "estimator": config.get("estimator"),
    }


class RunStore:
    """Runs of one workspace. Cheap to create; safe to use from several threads and processes."""

    def __init__(self, workspace: str | os.PathLike | None = None):
        self.workspace = Path(workspace).expanduser() if workspace is not None else default_workspace()
        self.runs_dir = self.workspace / "runs"
        self.db_path = self.workspace / DB_NAME
        try:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            with self._connect() as db:
                if db.execute("PRAGMA user_version").fetchone()[0] != _SCHEMA_VERSION:
                    db.execute("PRAGMA journal_mode=WAL")
                    db.executescript(_SCHEMA)
                    db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        except (OSError, sqlite3.DatabaseError) as exc:
            raise UserError(f"{self.db_path}: cannot open the run store ({exc})") from None

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA synchronous=NORMAL")
            yield db
        finally:
            db.close()

    def _update(self, sql: str, params: Sequence[Any]) -> int:
        with self._connect() as db:
            return db.execute(sql, params).rowcount

    # -- creating and reading -------------------------------------------------------------
    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    def create(self, kind: str, config: dict, *, label: str = "", group: str | None = None) -> Run:
        """A new queued run: its directory with ``config.json``, then its index row."""
        run_id = new_run_id()
        config = json.loads(json.dumps(config, default=str))  # plain JSON types only
        write_json(self.run_dir(run_id) / "config.json", {"id": run_id, "kind": kind, "config": config})
        cols = _index_columns(config)
        with self._connect() as db:
            db.execute(
                "INSERT INTO runs (id, kind, label, grp, status, config, subject, model, layer, estimator, created)"
                " VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?)",
                (run_id, kind, label, group, json.dumps(config), cols["subject"], cols["model"], cols["layer"],
                 cols["estimator"], time.time()),
            )
        return self.get(run_id)

    def get(self, run_id: str) -> Run:
        with self._connect() as db:
            row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise UserError(f"{self.db_path}: no run with id '{run_id}'")
        return self._run(row)

    def list(
        self,
        *,
        status: str | Sequence[str] | None = None,
        kind: str | None = None,
        group: str | None = None,
        subject: int | None = None,
        model: str | None = None,
        estimator: str | None = None,
        search: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Run]:
        """Runs matching every given filter, newest first (``search``: substring of id or label)."""
        where, params = [], []
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            unknown = sorted(set(statuses) - set(STATUSES))
            if unknown:
                raise UserError(f"unknown run status '{unknown[0]}' (use one of: {', '.join(STATUSES)})")
            where.append(f"status IN ({','.join('?' * len(statuses))})")
            params += statuses
        for column, value in (("kind", kind), ("grp", group), ("subject", subject), ("model", model),
                              ("estimator", estimator)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if search:
            where.append("(id LIKE ? OR label LIKE ?)")
            params += [f"%{search}%"] * 2
        sql = "SELECT * FROM runs" + (f" WHERE {' AND '.join(where)}" if where else "")
        sql += " ORDER BY created DESC, id DESC LIMIT ? OFFSET ?"
        params += [-1 if limit is None else int(limit), int(offset)]
        with self._connect() as db:
            rows = db.execute(sql, params).fetchall()
        return [self._run(r) for r in rows]

    def _run(self, row: sqlite3.Row) -> Run:
        return Run(
            id=row["id"], kind=row["kind"], status=row["status"], config=json.loads(row["config"]),
            dir=self.run_dir(row["id"]), label=row["label"], group=row["grp"], progress=row["progress"],
            message=row["message"], error=row["error"],
            summary=json.loads(row["summary"]) if row["summary"] else None, timings=json.loads(row["timings"]),
            created=row["created"], started=row["started"], finished=row["finished"], heartbeat=row["heartbeat"],
            pid=row["pid"], host=row["host"],
        )

    # -- status changes -------------------------------------------------------------------
    def assign(self, run_id: str, pid: int) -> bool:
        """Record the process (on this host) responsible for a queued run until it starts."""
        return self._update("UPDATE runs SET pid = ?, host = ? WHERE id = ? AND status = 'queued'",
                            (pid, HOST, run_id)) == 1

    def claim(self, run_id: str, pid: int) -> bool:
        """``queued -> running`` for the worker ``pid`` on this host; False if it is not queued."""
        now = time.time()
        return self._update(
            "UPDATE runs SET status = 'running', pid = ?, host = ?, started = ?, heartbeat = ?,"
            " message = 'started' WHERE id = ? AND status = 'queued'",
            (pid, HOST, now, now, run_id),
        ) == 1

    def beat(self, run_id: str, progress: float, message: str, timings: dict) -> bool:
        """Heartbeat with the latest progress; False once the run is no longer running (cancelled)."""
        return self._update(
            "UPDATE runs SET heartbeat = ?, progress = ?, message = ?, timings = ?"
            " WHERE id = ? AND status = 'running'",
            (time.time(), progress, message, json.dumps(timings), run_id),
        ) == 1

    def finish(self, run_id: str, status: str, *, error: str | None = None, summary: dict | None = None,
               timings: dict | None = None) -> bool:
        """End an active run as ``done``, ``failed`` or ``cancelled``; False if it had already ended."""
        if status not in ("done", "failed", "cancelled"):
            raise ValueError(f"finish: not a final status: {status}")
        sets = "status = ?, error = ?, finished = ?, summary = COALESCE(?, summary), timings = COALESCE(?, timings)"
        if status == "done":
            sets += ", progress = 1, message = 'done'"
        return self._update(
            f"UPDATE runs SET {sets} WHERE id = ? AND status IN ('queued', 'running')",
            (status, error, time.time(), json.dumps(summary) if summary is not None else None,
             json.dumps(timings) if timings is not None else None, run_id),
        ) == 1

    def cancel(self, run_id: str) -> Run | None:
        """Mark an active run cancelled; returns it as it was before (None if it was not active)."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
                if row is None:
                    raise UserError(f"{self.db_path}: no run with id '{run_id}'")
                if row["status"] not in ACTIVE:
                    return None
                db.execute("UPDATE runs SET status = 'cancelled', finished = ?, message = 'cancelled' WHERE id = ?",
                           (time.time(), run_id))
            finally:
                db.execute("COMMIT")
        return self._run(row)

    def delete(self, run_id: str) -> None:
        """Remove a finished run: its index row, then its directory."""
        if self.get(run_id).active:
            raise UserError(f"run {run_id} is still active: cancel it before deleting it")
        self._update("DELETE FROM runs WHERE id = ?", (run_id,))
        shutil.rmtree(self.run_dir(run_id), ignore_errors=True)

    # -- logs -----------------------------------------------------------------------------
    def log_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "log.txt"

    def append_log(self, run_id: str, message: str) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message.rstrip()}\n"
        with open(self.log_path(run_id), "a", encoding="utf-8") as fh:
            fh.write(line)

    def read_log(self, run_id: str, max_chars: int | None = None) -> str:
        """The run's log (its last ``max_chars`` characters if given)."""
        try:
            text = self.log_path(run_id).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return text[-max_chars:] if max_chars else text
