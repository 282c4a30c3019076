"""Query snapshots: freeze a query's result as an immutable, timestamped Parquet file.

``snapshots/NAME/`` is an append-only dataset: every run adds ``<UTC timestamp>.parquet`` plus a
``<same stem>.json`` sidecar recording how it was made, and never touches earlier files. The
folder is then versioned like any other data (``Repo.add``), so ``git commit`` pins it.

Four properties drive the design:

* **Bounded memory.** The driver's record batches stream into the Parquet writer; at most about
  two row groups of rows are held at once, whatever the size of the result.
* **Determinism.** The same rows in the same order give byte-identical Parquet, so an unchanged
  table gives the same content hash (and the store deduplicates it). Writer options are pinned,
  nothing time-dependent goes into the file, metadata that varies by driver is dropped, and the
  stream is re-chunked into row groups that end where the rows say (``cas.rowgroups``), because
  pyarrow's output depends on how a table is chunked, and drivers chunk as they please.
* **Deduplication.** A snapshot of a table that changed a little costs about what changed in the
  store: row groups end where the rows say, and a cut marker before every column chunk makes
  the store's chunks start where column chunks start (``cas.rowgroups``).
* **All or nothing.** Files are written under ``.cas/tmp/`` and published by hard-linking into
  ``snapshots/NAME/`` (sidecar first, then Parquet), which never replaces an existing file; any
  failure or interruption before that leaves the snapshots folder untouched.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import secrets
import socket
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import blake3
import pyarrow as pa
import pyarrow.parquet as pq

import cas
from cas.errors import CasError, StorageError, UsageError
from cas.rowgroups import Limits, groups, write_aligned
from cas.sources import (
    Connection,
    ResultStream,
    SchemaRestart,
    connect,
    one_line,
    parse_source,
)
from cas.store.local import pid_alive, storage_error

if TYPE_CHECKING:
    from cas.repo import Repo

SNAPSHOTS_DIR = "snapshots"
META_FORMAT = "cas-snapshot-meta"
#: 3: content-defined row groups laid out with a cut marker before every column chunk
#: (cas.rowgroups). 2: the same groups without markers. 1: fixed groups of ``row_group_rows``.
META_VERSION = 3
#: Sidecar versions this code reads: an older snapshot keeps its bytes and stays listed.
META_VERSIONS = (1, 2, 3)

#: Average rows per Parquet row group; a group holds a quarter to four times this, ending where a
#: row's hash says so (cas.rowgroups). Part of the output's identity: changing it changes the
#: bytes. A change costs about the groups it falls in plus the footer after it; 4,096 had the
#: lowest costs of 2,048-8,192 measured (bench/bench_snapshot.py: docs/snapshots.md,
#: "Deduplication"): smaller groups grow the footer, larger ones cost more per change.
ROW_GROUP_ROWS = 4096
#: Rows fetched per driver round trip (SQLite, DuckDB). Does not affect the output.
DEFAULT_BATCH_ROWS = 65_536

#: Every writer option that can change the bytes, pinned (pyarrow's defaults may move).
PARQUET_OPTIONS: dict[str, Any] = {
    "version": "2.6",
    # zstd 1: measured 1.4x faster to write than level 3 for 2.5% larger files.
    "compression": "zstd",
    "compression_level": 1,
    # No dictionary encoding: under zstd it rarely shrinks files and is slow on high-cardinality
    # columns, where it builds a dictionary and then falls back (measured: 1.7x slower, larger).
    "use_dictionary": False,
    "data_page_size": 1024 * 1024,
    "data_page_version": "1.0",
    "write_batch_size": 1024,
    "write_statistics": True,
    "use_byte_stream_split": False,
    "use_compliant_nested_type": True,
    "use_deprecated_int96_timestamps": False,
    "store_schema": True,
    # decimal(p<=18) as INT32/INT64, the physical type the Parquet spec recommends: smaller and
    # faster than fixed-length byte arrays, and every current reader understands it.
    "store_decimal_as_integer": True,
    "write_page_index": False,
    "write_page_checksum": False,
    "use_content_defined_chunking": False,
}

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_STAMP_FORMAT = "%Y-%m-%dT%H-%M-%SZ"
#: A second snapshot in the same second gets ``_001``...: ``_`` sorts after ``.`` so file names
#: still sort in creation order; three digits keep that true up to 999 per second.
_MAX_SAME_SECOND = 999
_HASH_CHUNK = 8 * 1024 * 1024
#: Temp names carry host and pid, so a later run can tell a dead run's leftovers (same host,
#: pid gone) from a live run's, even when .cas/ is on a filesystem shared between machines.
_HOST = re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname())[:64] or "host"
_TMP_RE = re.compile(
    r"^snapshot-(?P<host>\w+)-(?P<pid>\d+)-[0-9a-f]+\.(parquet|json)\.tmp(\.raw)?$"
)

_SQL_NOISE = re.compile(
    r"""
      --[^\n]*                                  # line comment
    | /\*.*?\*/                                 # block comment
    | '(?:[^']|'')*'                            # string literal
    | "(?:[^"]|"")*"                            # quoted identifier
    | `[^`]*`                                   # MySQL/SQLite identifier
    | \$(?P<tag>[A-Za-z_][A-Za-z_0-9]*)?\$.*?\$(?P=tag)?\$   # PostgreSQL dollar quoting
    """,
    re.DOTALL | re.VERBOSE,
)
_ORDER_BY = re.compile(r"\border\s+by\b", re.IGNORECASE)


class UnorderedQueryWarning(UserWarning):
    """Raised (as a warning) for a query without ORDER BY: its hash may change for no reason."""


@dataclass(frozen=True)
class SnapshotInfo:
    """One snapshot: its files and the sidecar's content (see docs/snapshots.md)."""

    name: str
    path: Path
    meta_path: Path
    created_at: datetime
    rows: int
    bytes: int
    content_hash: str
    query: str | None = None
    source: str | None = None
    schema: list[dict[str, Any]] = field(default_factory=list)
    driver: dict[str, str] = field(default_factory=dict)
    server_version: str | None = None
    cas_version: str | None = None
    finished_at: datetime | None = None
    parquet: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    has_metadata: bool = True
    #: The sidecar's version: an older snapshot is listed as what it is, not as the current one.
    version: int = META_VERSION

    def to_meta(self) -> dict[str, Any]:
        """The sidecar document (format ``cas-snapshot-meta``, version 3)."""
        return {
            "format": META_FORMAT,
            "version": self.version,
            "name": self.name,
            "file": self.path.name,
            "created_at": _iso(self.created_at),
            "finished_at": _iso(self.finished_at) if self.finished_at else None,
            "query": self.query,
            "source": self.source,
            "rows": self.rows,
            "bytes": self.bytes,
            "content_hash": self.content_hash,
            "schema": self.schema,
            "driver": self.driver,
            "server_version": self.server_version,
            "cas_version": self.cas_version,
            "parquet": self.parquet,
            "warnings": self.warnings,
        }

    def to_json(self, root: Path | None = None) -> dict[str, Any]:
        """The sidecar plus where the files are (relative to ``root`` when given), for --json."""
        doc = self.to_meta()
        doc["path"] = _display(self.path, root)
        doc["meta_path"] = _display(self.meta_path, root) if self.has_metadata else None
        return doc

    @classmethod
    def from_meta(cls, doc: dict[str, Any], parquet_path: Path) -> SnapshotInfo:
        """Read a sidecar (version 1, 2 or 3); unknown extra keys are ignored so a version can
        grow compatibly."""
        if doc.get("format") != META_FORMAT or doc.get("version") not in META_VERSIONS:
            raise ValueError(f"not a {META_FORMAT} document of version {META_VERSIONS}")
        return cls(
            name=str(doc["name"]),
            path=parquet_path,
            meta_path=parquet_path.with_suffix(".json"),
            created_at=_parse_iso(doc["created_at"]),
            finished_at=_parse_iso(doc["finished_at"]) if doc.get("finished_at") else None,
            rows=int(doc["rows"]),
            bytes=int(doc["bytes"]),
            content_hash=str(doc["content_hash"]),
            query=doc.get("query"),
            source=doc.get("source"),
            schema=list(doc.get("schema") or []),
            driver=dict(doc.get("driver") or {}),
            server_version=doc.get("server_version"),
            cas_version=doc.get("cas_version"),
            parquet=dict(doc.get("parquet") or {}),
            warnings=list(doc.get("warnings") or []),
            version=int(doc["version"]),
        )


# --------------------------------------------------------------------------------------------
# Public API


def snapshot_query(
    repo: Repo,
    query: str,
    source: str,
    name: str,
    *,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    row_group_rows: int = ROW_GROUP_ROWS,
) -> SnapshotInfo:
    """Write a snapshot into ``repo`` and version ``snapshots/NAME`` (stage its pointer).

    If versioning fails the snapshot file stays: it is complete and may have taken an hour to
    compute; the error says how to add it by hand.
    """
    root = Path(repo.root)
    info = write_snapshot(
        query,
        source,
        name,
        root=root,
        tmp_dir=root / ".cas" / "tmp",
        batch_rows=batch_rows,
        row_group_rows=row_group_rows,
    )
    folder = root / SNAPSHOTS_DIR / name
    try:
        repo.add([folder])
    except CasError as err:
        err.args = (
            f"{err} (the snapshot {_display(info.path, root)} was written but not versioned; "
            f"fix the problem, then run: cas add {SNAPSHOTS_DIR}/{name})",
        )
        raise
    return info


def write_snapshot(
    query: str,
    source: str,
    name: str,
    *,
    root: Path,
    tmp_dir: Path | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    row_group_rows: int = ROW_GROUP_ROWS,
    now: datetime | None = None,
) -> SnapshotInfo:
    """Run ``query`` on ``source`` and publish ``root/snapshots/NAME/<UTC stamp>.parquet``.

    ``now`` (the as-of time in the file name) is for tests. Raises ``CasError`` with a one-line,
    password-free message; on any failure nothing new is left under ``snapshots/``.
    """
    validate_name(name)
    if not query or not query.strip():
        raise UsageError("the query is empty: pass it as an argument or with --query-file")
    if batch_rows < 1 or row_group_rows < 1:
        raise UsageError("--batch-rows and the row group size must be positive")
    src = parse_source(source)
    found: list[str] = []
    if not has_order_by(query):
        message = (
            "the query has no ORDER BY: its row order, and so the snapshot's bytes and hash, "
            "may change between runs even when the data does not"
        )
        found.append(message)
        warnings.warn(UnorderedQueryWarning(message), stacklevel=2)

    started = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    tmp_dir = Path(tmp_dir) if tmp_dir is not None else Path(root) / ".cas" / "tmp"
    try:
        tmp_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StorageError(f"cannot create {tmp_dir}: {err.strerror or err}") from None
    _sweep_stale_temps(tmp_dir)
    token = f"snapshot-{_HOST}-{os.getpid()}-{secrets.token_hex(6)}"
    tmp_parquet = tmp_dir / f"{token}.parquet.tmp"
    tmp_meta = tmp_dir / f"{token}.json.tmp"
    folder = Path(root) / SNAPSHOTS_DIR / name
    try:
        with connect(src) as conn:
            rows, schema, source_types = _write_with_restarts(
                conn, query, tmp_parquet, batch_rows, row_group_rows
            )
            driver = {"name": conn.driver, "version": conn.driver_version}
            server_version = conn.server_version
        _fsync(tmp_parquet)
        draft = SnapshotInfo(
            name=name,
            path=tmp_parquet,
            meta_path=tmp_meta,
            created_at=started,
            finished_at=datetime.now(timezone.utc),
            rows=rows,
            bytes=tmp_parquet.stat().st_size,
            content_hash=file_hash(tmp_parquet),
            query=query,
            source=src.redacted,
            schema=_describe_schema(schema, source_types),
            driver=driver,
            server_version=server_version,
            cas_version=cas.__version__,
            parquet={
                "writer": f"pyarrow {pa.__version__}",
                "row_groups": "content-defined",
                "row_group_rows": row_group_rows,
                "row_group_min_rows": Limits(row_group_rows).min_rows,
                "row_group_max_rows": Limits(row_group_rows).max_rows,
                "layout": "cut-marked",
                **{k: PARQUET_OPTIONS[k] for k in ("compression", "compression_level")},
            },
            warnings=found,
        )
        return _publish(draft, folder, tmp_parquet, tmp_meta)
    except pa.ArrowException as err:
        raise UsageError(
            f"cannot store the result as Parquet: {src.scrub(one_line(str(err)))}; "
            "cast the offending column in the query"
        ) from None
    except OSError as err:
        if err.errno is not None:  # disk full, permission denied...: the problem and the fix
            message = str(storage_error(err, f"cannot write the snapshot {SNAPSHOTS_DIR}/{name}"))
            raise StorageError(src.scrub(message)) from None
        raise StorageError(f"writing the snapshot failed: {src.scrub(str(err))}") from None
    finally:
        tmp_parquet.unlink(missing_ok=True)
        tmp_meta.unlink(missing_ok=True)


def list_snapshots(root: Path, name: str) -> list[SnapshotInfo]:
    """The snapshots of NAME, oldest first (file names sort in creation order).

    A sidecar without its Parquet file is a publish that was interrupted: it is skipped. A
    Parquet file without a sidecar (copied in by hand) is listed with what its footer tells.
    """
    validate_name(name)
    folder = Path(root) / SNAPSHOTS_DIR / name
    if not folder.is_dir():
        pointer = folder.parent / f"{name}.cas"
        if pointer.exists():
            raise UsageError(
                f"{SNAPSHOTS_DIR}/{name} is versioned but not checked out here; "
                f"run: cas checkout {SNAPSHOTS_DIR}/{name}"
            )
        raise UsageError(f"no snapshots named '{name}' (no folder {SNAPSHOTS_DIR}/{name})")
    infos = []
    for path in sorted(folder.glob("*.parquet")):
        meta_path = path.with_suffix(".json")
        if meta_path.is_file():
            try:
                doc = json.loads(meta_path.read_text(encoding="utf-8"))
                infos.append(SnapshotInfo.from_meta(doc, path))
                continue
            except (ValueError, KeyError, TypeError) as err:
                warnings.warn(f"{meta_path}: unreadable snapshot metadata ({err})", stacklevel=2)
        infos.append(_info_from_parquet(name, path))
    return infos


def validate_name(name: str) -> None:
    """A name is one path component: it becomes ``snapshots/NAME/`` and ``snapshots/NAME.cas``."""
    if not _NAME_RE.match(name or "") or name.endswith(".cas") or ".." in name:
        raise UsageError(
            f"invalid snapshot name {name!r}: use letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit, no '/', not ending in .cas)"
        )


def has_order_by(query: str) -> bool:
    """Whether ORDER BY appears outside comments and quotes (rough: it may be in a subquery)."""
    return _ORDER_BY.search(_SQL_NOISE.sub(" ", query)) is not None


def file_hash(path: Path) -> str:
    """The content hash recorded for a snapshot: BLAKE3 of the file's bytes.

    Read in chunks rather than mmapped: mapped pages count as the process's RSS, and a 10M-row
    snapshot would double the peak memory just to be hashed.
    """
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    buffer = bytearray(_HASH_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            hasher.update(view[:n])
    return f"blake3:{hasher.hexdigest()}"


def stamp(when: datetime) -> str:
    """``2026-11-26T21-15-03Z``: UTC, sortable, no ':' (which Windows forbids in file names)."""
    return when.astimezone(timezone.utc).strftime(_STAMP_FORMAT)


# --------------------------------------------------------------------------------------------
# Writing


def _write_with_restarts(
    conn: Connection, query: str, path: Path, batch_rows: int, row_group_rows: int
) -> tuple[int, pa.Schema, list[str | None]]:
    # Each restart widens at least one column one step (null < bool < int < float < string).
    for _attempt in range(64):
        stream = conn.execute(query, batch_rows)
        if len(stream.schema) == 0:
            raise UsageError("the query returned no columns: use a SELECT statement")
        try:
            rows, schema = write_parquet(stream, path, row_group_rows)
        except SchemaRestart:
            path.unlink(missing_ok=True)
            continue
        return rows, schema, stream.source_types
    raise UsageError("the column types of the result kept changing; cast the columns in the query")


def write_parquet(
    stream: ResultStream, path: Path, row_group_rows: int = ROW_GROUP_ROWS
) -> tuple[int, pa.Schema]:
    """Stream batches into ``path`` as content-defined row groups averaging ``row_group_rows``
    rows (``cas.rowgroups``), so the bytes depend only on the rows, not on the driver's batch
    sizes, and a change to some rows leaves the other groups' bytes as they were.

    pyarrow cannot leave gaps between column chunks, so its file (``path`` + ``.raw``) is then
    copied into ``path`` with the cut markers put in (``write_aligned``)."""
    schema = pa.schema([f.remove_metadata() for f in stream.schema])
    limits = Limits(row_group_rows)
    total = 0
    raw = path.with_name(path.name + ".raw")
    batches = _prefetched(stream) if stream.prefetch else stream.batches
    try:
        with pq.ParquetWriter(raw, schema, **PARQUET_OPTIONS) as writer:
            for group in groups(batches, schema, limits):
                # One contiguous chunk per column: pyarrow's page layout follows chunk boundaries.
                writer.write_table(group.combine_chunks(), row_group_size=limits.max_rows)
                total += group.num_rows
        with open(raw, "rb") as src, open(path, "wb") as dst:
            write_aligned(src, dst)
    finally:
        raw.unlink(missing_ok=True)
        close = getattr(batches, "close", None)
        if close is not None:
            close()
    return total, schema


_PREFETCH_DEPTH = 3
_DONE = object()


def _prefetched(stream: ResultStream) -> Iterator[pa.RecordBatch]:
    """Pull the driver's batches on a worker thread, at most a few ahead.

    Decoding the driver's stream and encoding Parquet both run in C++ without the GIL, so on
    two cores this hides most of the write time behind the fetch. If the consumer stops early
    (a write error, Ctrl-C) the pull is cancelled and the worker joined before returning, so
    the connection is never closed under a running read.
    """
    handoff: queue.Queue[object] = queue.Queue(maxsize=_PREFETCH_DEPTH)
    stop = threading.Event()
    finished = threading.Event()

    def offer(item: object) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        last: object = _DONE
        try:
            for batch in stream.batches:
                if not offer(batch):
                    return
        except BaseException as err:  # handed over: the consumer re-raises it
            last = err
        finally:
            finished.set()
        offer(last)

    worker = threading.Thread(target=produce, name="cas-snapshot-fetch", daemon=True)
    worker.start()
    try:
        while True:
            item = handoff.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        if not finished.is_set() and stream.cancel is not None:
            stream.cancel()
        worker.join()


def _publish(draft: SnapshotInfo, folder: Path, tmp_parquet: Path, tmp_meta: Path) -> SnapshotInfo:
    """Link the sidecar, then the Parquet file, under the first free name.

    Sidecar first: a Parquet file in the folder then always has its metadata, and an interrupted
    publish leaves at most a sidecar, which listing ignores. Linking (not renaming) fails when
    the name exists, so two runs in the same second cannot overwrite each other.
    """
    created_folder = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    base = stamp(draft.created_at)
    try:
        for n in range(_MAX_SAME_SECOND + 1):
            stem = base if n == 0 else f"{base}_{n:03d}"
            final_parquet = folder / f"{stem}.parquet"
            final_meta = folder / f"{stem}.json"
            if final_parquet.exists() or final_meta.exists():
                continue
            info = replace(draft, path=final_parquet, meta_path=final_meta)
            tmp_meta.write_text(
                json.dumps(info.to_meta(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
            )
            _fsync(tmp_meta)
            try:
                _link(tmp_meta, final_meta)
            except FileExistsError:
                continue
            try:
                _link(tmp_parquet, final_parquet)
            except FileExistsError:
                final_meta.unlink(missing_ok=True)
                continue
            except BaseException:
                final_meta.unlink(missing_ok=True)
                raise
            _fsync_dir(folder)
            return info
    except BaseException:
        if created_folder:
            with contextlib.suppress(OSError):  # not empty: another run published into it
                folder.rmdir()
        raise
    raise StorageError(
        f"more than {_MAX_SAME_SECOND} snapshots of '{draft.name}' in one second; try again"
    )


def _link(src: Path, dst: Path) -> None:
    """Publish without replacing: link(2) fails if ``dst`` exists, rename(2) would overwrite."""
    try:
        os.link(src, dst)
    except FileExistsError:
        raise
    except OSError as err:
        # Filesystems without hard links (some network and FUSE mounts): check, then rename;
        # only a concurrent run in the same second could slip between the two.
        if dst.exists():
            raise FileExistsError(str(dst)) from err
        os.replace(src, dst)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sweep_stale_temps(tmp_dir: Path) -> None:
    """Remove temp files of runs that were killed (kill -9 skips ``finally``): their pid is gone."""
    for entry in tmp_dir.iterdir():
        match = _TMP_RE.match(entry.name)
        if match and match["host"] == _HOST and not pid_alive(int(match["pid"])):
            entry.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# Helpers


def _describe_schema(schema: pa.Schema, source_types: list[str | None]) -> list[dict[str, Any]]:
    columns = []
    for i, f in enumerate(schema):
        column: dict[str, Any] = {"name": f.name, "type": str(f.type), "nullable": f.nullable}
        source_type = source_types[i] if i < len(source_types) else None
        if source_type:
            column["source_type"] = source_type
        columns.append(column)
    return columns


def _info_from_parquet(name: str, path: Path) -> SnapshotInfo:
    metadata = pq.read_metadata(path)
    created = _stamp_time(path.stem) or datetime.fromtimestamp(
        path.stat().st_mtime, tz=timezone.utc
    )
    return SnapshotInfo(
        name=name,
        path=path,
        meta_path=path.with_suffix(".json"),
        created_at=created,
        rows=metadata.num_rows,
        bytes=path.stat().st_size,
        content_hash=file_hash(path),
        schema=_describe_schema(metadata.schema.to_arrow_schema(), []),
        has_metadata=False,
    )


def _stamp_time(stem: str) -> datetime | None:
    try:
        return datetime.strptime(stem[:20], _STAMP_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def _iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_iso(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


def _display(path: Path, root: Path | None) -> str:
    if root is not None:
        with contextlib.suppress(ValueError):
            return path.relative_to(root).as_posix()
    return str(path)
