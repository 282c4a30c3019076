"""The catalog: ``.cas/state/runs.sqlite``, an index of run records for ``cas runs``.

It holds derived data only: one row per record in the store (its summary as JSON), rebuilt from
the records when missing or behind (:meth:`Catalog.sync` adds every record the store holds that
it lacks, e.g. after ``cas fetch`` or a repro in another worktree), plus one *live* row per run
still going. A live row whose process is gone is a run that was killed: shown as ``killed``.
WAL mode and a busy timeout let runs that finish at once each commit their row.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cas import hashing
from cas.errors import CorruptObjectError, StorageError, UsageError
from cas.runs import record as rec
from cas.store.local import pid_alive

if TYPE_CHECKING:
    from cas.repo import Repo

SCHEMA = 2
_CREATE = """
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY,      -- the record id, or 'live-<uuid>' while the run goes on
    name TEXT,
    started TEXT NOT NULL,
    status TEXT NOT NULL,
    pid INTEGER,
    host TEXT,
    summary TEXT NOT NULL      -- JSON: what 'cas runs --json' prints for the run
);
CREATE TABLE IF NOT EXISTS folders (  -- runs/<2>/ folders indexed, at this mtime
    name TEXT PRIMARY KEY,
    mtime_ns INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_name ON runs(name, started);
CREATE INDEX IF NOT EXISTS runs_started ON runs(started);
"""


def summary(run_id: str | None, record: dict[str, Any]) -> dict[str, Any]:
    """The fields ``cas runs`` shows: small, so 10,000 runs list fast."""
    return {
        "id": run_id,
        "name": record.get("name"),
        "status": record.get("status"),
        "started": record.get("started"),
        "ended": record.get("ended"),
        "duration": record.get("duration"),
        "fingerprint": record.get("fingerprint"),
        "metrics": record.get("metrics", {}),
        "reproduces": record.get("reproduces"),
        "reused": record.get("reused"),
        "outputs": [o["path"] for o in record.get("outputs", [])],
    }


class Catalog:
    def __init__(self, repo: Repo) -> None:
        self.repo = repo
        self.path: Path = repo.cas_dir / "state" / "runs.sqlite"
        self.problems: list[str] = []  # records sync() refused, for the caller to show
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            # Derived data: no fsync (closing the last connection checkpoints the WAL, which
            # with fsync cost ~0.1 s per 'cas run'); a catalog lost to a power cut is rebuilt.
            self.db.execute("PRAGMA synchronous=OFF")
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA):  # another cas wrote it: it is derived, rebuild it
                self.db.executescript("DROP TABLE IF EXISTS runs; DROP TABLE IF EXISTS folders;")
            self.db.executescript(_CREATE)
            self.db.execute(f"PRAGMA user_version={SCHEMA}")
        except sqlite3.DatabaseError as err:
            raise StorageError(
                f"the run catalog {self.path} cannot be opened ({err}); delete it, "
                "'cas runs' rebuilds it from the records"
            ) from err

    def close(self) -> None:
        self.db.close()

    # -- writes --------------------------------------------------------------------------------
    def begin(self, record: dict[str, Any]) -> str:
        """A live row for a run that starts now; returns its key."""
        key = f"live-{uuid.uuid4().hex}"
        self._put(key, {**summary(None, record), "status": "running"}, os.getpid(), record)
        return key

    def finish(self, key: str | None, run_id: str, record: dict[str, Any]) -> None:
        """Replace a live row (if any) by the finished record's row, in one transaction."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            if key:
                self.db.execute("DELETE FROM runs WHERE key = ?", (key,))
            self._insert(run_id, summary(run_id, record), None, record)

    def _put(self, key: str, row: dict[str, Any], pid: int | None, record: dict) -> None:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self._insert(key, row, pid, record)

    def _insert(self, key: str, row: dict[str, Any], pid: int | None, record: dict) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO runs (key, name, started, status, pid, host, summary) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                key,
                row["name"],
                row["started"] or "",
                row["status"],
                pid,
                record.get("host"),
                json.dumps(row, sort_keys=True),
            ),
        )

    def sync(self) -> int:
        """Index every record in the store the catalog lacks; returns how many. Only the
        ``runs/<2>/`` folders whose mtime changed since they were last indexed are listed
        (a record is a new name in its folder), so 10,000 indexed runs cost 256 stats. An mtime
        younger than a second is not trusted (a coarse clock may not tick for the next write)."""
        import time

        from cas.state import trustworthy

        base = self.repo.local.path(rec.RUNS)
        try:
            folders = {e.name: e.stat().st_mtime_ns for e in os.scandir(base) if e.is_dir()}
        except FileNotFoundError:
            return 0
        seen = dict(self.db.execute("SELECT name, mtime_ns FROM folders"))
        changed = [name for name, mtime in folders.items() if seen.get(name) != mtime]
        if not changed:
            return 0
        known = {k for (k,) in self.db.execute("SELECT key FROM runs WHERE key NOT LIKE 'live-%'")}
        now = time.time_ns()
        new = []
        for name in changed:
            for entry in os.scandir(base / name):
                if hashing.is_hex_id(entry.name) and entry.name not in known:
                    new.append(entry.name)
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            for run_id in new:
                try:
                    record = rec.get(self.repo.local, run_id)
                except CorruptObjectError as err:  # one bad record must not hide the others
                    self.problems.append(str(err))
                    continue
                self._insert(run_id, summary(run_id, record), None, record)
            for name in changed:
                if trustworthy(folders[name], now - 1_000_000_000):
                    self.db.execute(
                        "INSERT OR REPLACE INTO folders VALUES (?, ?)", (name, folders[name])
                    )
        return len(new)

    # -- reads ---------------------------------------------------------------------------------
    def rows(self) -> list[dict[str, Any]]:
        """Every run, oldest first; a live row whose process is gone is ``killed``."""
        return [json.loads(text) for text in self.rows_json()]

    def rows_json(self) -> list[str]:
        """:meth:`rows` as the JSON text of each (stored so: 10,000 runs list without being
        parsed and re-encoded); only live rows are decoded, to tell a killed run."""
        import socket

        here = socket.gethostname()
        out = []
        for text, pid, host in self.db.execute(
            "SELECT summary, pid, host FROM runs ORDER BY started, key"
        ):
            if pid is not None and host == here and not pid_alive(pid):
                text = json.dumps({**json.loads(text), "status": "killed"}, sort_keys=True)
            out.append(text)
        return out

    def resolve(self, ref: str) -> str:
        """A run id from an id, a unique prefix of one, or a name: its latest run that is not a
        repro's rerun (which keeps the name), so a nightly ``cas repro baseline`` keeps checking
        the baseline."""
        rows = self.db.execute(
            "SELECT key FROM runs WHERE key NOT LIKE 'live-%' AND name = ? "
            "AND json_extract(summary, '$.reproduces') IS NULL "
            "ORDER BY started DESC, key LIMIT 1",
            (ref,),
        ).fetchall()
        if rows:
            return rows[0][0]
        if len(ref) >= 4 and all(c in "0123456789abcdef" for c in ref):
            found = [
                k
                for (k,) in self.db.execute(
                    "SELECT key FROM runs WHERE key >= ? AND key < ? LIMIT 2", (ref, ref + "g")
                )
            ]
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise UsageError(f"run prefix {ref!r} is ambiguous; give more characters")
        raise UsageError(f"no run named {ref!r} and no run id starting with it; see 'cas runs'")

    def successful(self, inputs: str) -> list[str]:
        """Ids of succeeded runs with this ``inputs`` fingerprint, newest first."""
        out = []
        for key, summ in self.db.execute(
            "SELECT key, summary FROM runs WHERE status = 'succeeded' ORDER BY started DESC"
        ):
            if json.loads(summ)["fingerprint"]["inputs"] == inputs:
                out.append(key)
        return out


def open_synced(repo: Repo) -> Catalog:
    catalog = Catalog(repo)
    catalog.sync()
    return catalog
