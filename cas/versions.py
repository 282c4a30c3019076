"""Versions: a manifest that only grows, as an ordered list of immutable Parquet segments.

A foundation-model corpus has 10^7 files and grows by shards. Rewriting one manifest per append
would cost O(corpus) and store the corpus listing again every time; instead each append writes one
*segment* (a Parquet object holding only the new rows) and one small *version* object naming the
parent version and the full segment list. The pointer names the version, so an append changes one
line in Git, and every older version stays readable from its own commit (docs/corpus.md).

Two kinds share this structure:

- ``corpus``: files pinned in place at a URL (``base``); rows are path (relative to ``base``),
  size, BLAKE3 hash and the store's change marker (ETag or mtime).
- ``append``: local data whose chunks are in the store; rows are the columns of a dir manifest.

Cost rules: an append reads the Parquet footers of existing segments and only the row groups whose
``[min, max]`` path range can hold one of the new paths (new shards usually sort apart, so nothing
else is read); reads stream segment files straight from the local store (``open_dataset``).
"""

from __future__ import annotations

import datetime
import io
import json
import re
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from cas import hashing, manifest
from cas.errors import (
    ConflictError,
    CorruptObjectError,
    ManifestError,
    ObjectMissingError,
    PointerError,
    UsageError,
)
from cas.objects import segment_key, version_key
from cas.pointer import VERSIONED, Pointer
from cas.rows import check_path

if TYPE_CHECKING:
    from cas.repo import Repo

FORMAT = "cas-version"
VERSION = 1
SEGMENT_FORMAT = "cas-segment"
SEGMENT_VERSION = 1
ROW_GROUP_ROWS = 65_536
HASH_BLOCK = 8 << 20
CORPUS_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("size", pa.uint64()),
        ("hash", pa.binary(32)),
        ("marker", pa.string()),
    ]
)
SCHEMAS = {"corpus": CORPUS_SCHEMA, "append": manifest.SCHEMA.remove_metadata()}
_FIELDS = ("format", "version", "kind", "base", "glob", "parent", "segments", "created")
_COUNTS = ("files", "bytes")
_CREATED = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")

_verified: set[tuple[str, str]] = set()  # (store root, segment id) already hashed by this process
_verified_lock = threading.Lock()


@dataclass(frozen=True)
class Version:
    """One version object. ``files``/``bytes`` are totals over all segments; ``base`` is the
    corpus URL (None for ``append``); ``glob`` the file filter ``create`` was given."""

    kind: str
    base: str | None
    glob: str | None
    parent: str | None
    segments: tuple[str, ...]
    created: str
    files: int
    bytes: int

    def encode(self) -> bytes:
        """Canonical JSON: sorted keys, no spaces, ASCII; the id is BLAKE3 of these bytes."""
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "kind": self.kind,
            "base": self.base,
            "glob": self.glob,
            "parent": self.parent,
            "segments": list(self.segments),
            "created": self.created,
            "files": self.files,
            "bytes": self.bytes,
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- version objects -------------------------------------------------------------------------
def store_version(repo: Repo, version: Version) -> str:
    data = version.encode()
    version_id = hashing.digest(data).hex()
    repo.local.put_bytes(version_key(version_id), data)
    return version_id


def load_version(repo: Repo, version_id: str) -> Version:
    """Read, verify against its id and parse a version object; a damaged or unknown one is
    refused rather than guessed at."""
    try:
        data = repo.local.get(version_key(version_id))
    except KeyError:
        raise ObjectMissingError(
            f"version {version_id} is not in the local store; "
            "run 'cas pull' to fetch it, or check the pointer",
            object_id=version_id,
        ) from None
    return decode_version(data, version_id)


def decode_version(data: bytes, version_id: str) -> Version:
    """Verify version bytes against their id and parse them: public so that bytes from a
    remote or from ``cas fsck`` pass the same checks as a local read before anyone trusts them.
    Every field's type is checked and the bytes must be the canonical encoding, so whatever is
    accepted re-encodes to exactly these bytes."""
    if hashing.digest(data).hex() != version_id:
        raise CorruptObjectError(
            f"version {version_id} is corrupt (its bytes hash differently)", object_id=version_id
        )
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as err:  # RecursionError: "[[[[..." 10^5 deep
        raise ManifestError(f"version {version_id} is not JSON: {str(err)[:100]}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ManifestError(f"version {version_id} is not a cas version object")
    if doc.get("version") != VERSION or isinstance(doc.get("version"), bool):
        raise ManifestError(
            f"version {version_id} has format version {doc.get('version')!r:.40}; upgrade cas"
        )
    kind = doc.get("kind")
    if set(doc) != {*_FIELDS, *_COUNTS} or not isinstance(kind, str) or kind not in VERSIONED:
        raise ManifestError(f"version {version_id} has unknown fields or kind; upgrade cas")
    segments, parent, base, glob = doc["segments"], doc["parent"], doc["base"], doc["glob"]
    ids_ok = isinstance(segments, list) and all(
        isinstance(s, str) and hashing.is_hex_id(s) for s in segments
    )
    counts_ok = all(type(doc[k]) is int and doc[k] >= 0 for k in _COUNTS)
    parent_ok = parent is None or (isinstance(parent, str) and hashing.is_hex_id(parent))
    where_ok = (
        isinstance(base, str) and (glob is None or isinstance(glob, str))
        if kind == "corpus"
        else base is None and glob is None
    )
    created_ok = isinstance(doc["created"], str) and _CREATED.fullmatch(doc["created"])
    if not (ids_ok and counts_ok and parent_ok and where_ok and created_ok):
        raise ManifestError(f"version {version_id} is malformed; the store may be damaged")
    version = Version(
        kind, base, glob, parent, tuple(segments), doc["created"], doc["files"], doc["bytes"]
    )
    if version.encode() != data:
        raise ManifestError(f"version {version_id} is not in canonical form; it may be hostile")
    return version


def load_pointed(repo: Repo, ptr: Pointer, where: str) -> Version:
    """The version a versioned pointer (``where``) names, refused unless it is a version of the
    pointer's own kind: a ``kind append`` pointer naming a dir manifest, or a corpus version,
    would otherwise be read as something it is not."""
    try:
        version = load_version(repo, ptr.manifest)
    except ObjectMissingError:
        if not repo.objects.has_manifest(ptr.manifest):
            raise
        raise PointerError(
            f"{where} is a 'kind {ptr.kind}' pointer but names manifest {ptr.manifest}, not a "
            f"version; the pointer is corrupt or hostile: restore it ('git checkout -- {where}')"
        ) from None
    if version.kind != ptr.kind:
        raise PointerError(
            f"{where} is a 'kind {ptr.kind}' pointer but names a '{version.kind}' version "
            f"({ptr.manifest}); the pointer is corrupt or hostile: restore it "
            f"('git checkout -- {where}')"
        )
    return version


def history(repo: Repo, version_id: str) -> Iterator[tuple[str, Version]]:
    """The version and its ancestors, newest first."""
    current: str | None = version_id
    while current is not None:
        version = load_version(repo, current)
        yield current, version
        current = version.parent


# -- segments --------------------------------------------------------------------------------
def check_paths(paths: pa.Array | pa.ChunkedArray, where: str) -> None:
    """Refuse unsafe paths: the manifest rules of :func:`cas.rows.check_path`, with one C-level
    regex pass picking the few paths that need the exact check (``manifest.SUSPECT_PATH``)."""
    flagged = paths.filter(pc.match_substring_regex(paths, manifest.SUSPECT_PATH))
    for path in flagged.to_pylist():
        try:
            check_path(path)
        except ManifestError:
            raise ManifestError(
                f"unsafe path in {where}: {path!r}; the manifest may be hostile"
            ) from None


def _check_sorted_unique(paths: pa.Array | pa.ChunkedArray, where: str) -> None:
    paths = paths.combine_chunks() if isinstance(paths, pa.ChunkedArray) else paths
    if len(paths) > 1 and not pc.all(pc.greater(paths[1:], paths[:-1])).as_py():
        raise ManifestError(f"{where} is not sorted by path or has duplicate paths")


def write_segment(repo: Repo, kind: str, table: pa.Table) -> str:
    """Sort, check and store ``table`` as one segment; returns its id (BLAKE3 of the bytes)."""
    schema = SCHEMAS[kind]
    table = table.select(schema.names).cast(schema).sort_by("path")
    if any(col.null_count for col in table.columns):
        raise ManifestError("a segment may not hold null values")
    check_paths(table.column("path"), "new entries")
    _check_sorted_unique(table.column("path"), "the new entries")
    meta = {b"format": SEGMENT_FORMAT.encode(), b"version": b"1", b"kind": kind.encode()}
    sink = io.BytesIO()
    pq.write_table(
        table.replace_schema_metadata(meta).combine_chunks(), sink, compression="zstd",
        compression_level=3, use_dictionary=False, row_group_size=ROW_GROUP_ROWS,
    )  # fmt: skip
    data = sink.getvalue()
    segment_id = hashing.digest(data).hex()
    repo.local.put_bytes(segment_key(segment_id), data)
    return segment_id


def segment_file(repo: Repo, segment_id: str) -> str:
    """The segment's file in the local store, hashed against its id (8 MiB at a time, once per
    process) before anyone reads it."""
    key = segment_key(segment_id)
    path = repo.local.path(key)
    token = (str(repo.local.root), segment_id)
    if token in _verified:
        return str(path)
    try:
        _check_hash(path, segment_id)
    except FileNotFoundError:
        raise ObjectMissingError(
            f"segment {segment_id} is not in the local store; run 'cas pull' to fetch it",
            object_id=segment_id,
        ) from None
    with _verified_lock:
        _verified.add(token)
    return str(path)


def _check_hash(path: str | Path, segment_id: str) -> None:
    h = hashing.hasher()
    with open(path, "rb") as f:
        while block := f.read(HASH_BLOCK):
            h.update(block)
    if h.hexdigest() != segment_id:
        raise CorruptObjectError(
            f"segment {segment_id} is corrupt (its bytes hash differently); "
            "restore it from a remote ('cas pull')",
            object_id=segment_id,
        )


def verify_segment_file(path: str | Path, segment_id: str, kind: str | None = None) -> None:
    """The checks every reader makes (hash against the id, format, schema), for a file outside
    the read path: a download before it enters the store, or ``cas fsck``. ``kind`` None
    accepts the kind the segment declares (fsck does not know which version lists it)."""
    _check_hash(path, segment_id)
    _checked_parquet(path, segment_id, kind)


def _open_segment(repo: Repo, segment_id: str, kind: str) -> pq.ParquetFile:
    return _checked_parquet(segment_file(repo, segment_id), segment_id, kind)


def _checked_parquet(path: str | Path, segment_id: str, kind: str | None) -> pq.ParquetFile:
    try:
        pf = pq.ParquetFile(path)
    except pa.ArrowException as err:  # bytes that match their id but are no Parquet: hostile
        raise ManifestError(f"segment {segment_id} is not a Parquet file: {err}") from None
    meta = pf.schema_arrow.metadata or {}
    declared = meta.get(b"kind", b"").decode(errors="replace")
    kind = declared if kind is None and declared in SCHEMAS else kind
    if meta.get(b"format") != SEGMENT_FORMAT.encode() or kind is None or declared != kind:
        raise ManifestError(f"segment {segment_id} is not a '{kind or declared}' segment")
    if meta.get(b"version") != str(SEGMENT_VERSION).encode():
        raise ManifestError(f"segment {segment_id} has an unknown format version; upgrade cas")
    if pf.schema_arrow.remove_metadata() != SCHEMAS[kind]:
        raise ManifestError(f"segment {segment_id} has an unknown schema; upgrade cas")
    manifest.check_footer(pf.metadata, f"segment {segment_id}", chunks=kind == "append")
    return pf


def scan(
    repo: Repo,
    version: Version,
    columns: list[str],
    wanted: Callable[[str, str], bool] | None = None,
) -> Iterator[pa.Table]:
    """The row groups of every segment, as tables of ``columns``; with ``wanted(min, max)``,
    row groups whose path statistics it rejects are skipped unread."""
    for segment_id in version.segments:
        pf = _open_segment(repo, segment_id, version.kind)
        for i in range(pf.num_row_groups):
            stats = pf.metadata.row_group(i).column(0).statistics
            known = stats is not None and stats.has_min_max
            if wanted and known and not wanted(stats.min, stats.max):
                continue
            yield pf.read_row_group(i, columns=columns)


def lookup(repo: Repo, version: Version, paths: pa.Array, columns: list[str]) -> pa.Table:
    """Rows of ``version`` whose path is one of ``paths``: a sorted merge of ``paths`` against
    each segment's row-group ranges, reading only the row groups that may hold one."""
    if "path" not in columns:
        columns = ["path", *columns]
    sorted_paths = paths.take(pc.sort_indices(paths)).to_pylist()

    def wanted(lo: str, hi: str) -> bool:
        i = bisect_left(sorted_paths, lo)
        return i < len(sorted_paths) and sorted_paths[i] <= hi

    groups = scan(repo, version, columns, wanted) if sorted_paths else iter(())
    return collect(
        version.kind,
        columns,
        (g.filter(pc.is_in(g.column("path"), value_set=paths)) for g in groups),
    )


def collect(kind: str, columns: list[str], groups: Iterator[pa.Table]) -> pa.Table:
    """Concatenate row groups; an empty result still has the right columns."""
    schema = SCHEMAS[kind]
    empty = pa.table({c: pa.array([], schema.field(c).type) for c in columns})
    return pa.concat_tables([empty, *groups])


def prefix_range(prefix: str) -> Callable[[str, str], bool]:
    """A ``wanted`` filter for paths starting with ``prefix`` (all paths when it is empty)."""
    if not prefix:
        return lambda lo, hi: True
    upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)  # every path with the prefix sorts below it
    return lambda lo, hi: hi >= prefix and lo < upper


# -- appending and merging -------------------------------------------------------------------
def append(
    repo: Repo,
    parent: str | None,
    entries: pa.Table,
    kind: str = "corpus",
    base: str | None = None,
    glob: str | None = None,
) -> str:
    """Append ``entries`` (new rows, any order) as one segment on top of ``parent`` and store
    the new version; returns its id. Earlier segments are never rewritten or fully read: only
    row groups whose path range could hold a new path are checked for collisions."""
    if parent is None:
        previous = Version(kind, base, glob, None, (), "", 0, 0)
    else:
        previous = load_version(repo, parent)
        if previous.kind != kind:
            raise UsageError(f"version {parent} is a '{previous.kind}' version, not '{kind}'")
        base, glob = previous.base, glob or previous.glob
    clash = lookup(repo, previous, entries.column("path").combine_chunks(), ["path"])
    if clash.num_rows:
        shown = ", ".join(clash.column("path").to_pylist()[:20])
        raise ConflictError(
            f"{clash.num_rows} entries are already in the manifest ({shown}); "
            "an append adds only new paths",
            clash.column("path").to_pylist(),
        )
    segment_id = write_segment(repo, kind, entries)
    added = int(pc.sum(entries.column("size")).as_py() or 0)
    version = Version(
        kind, base, glob, parent, (*previous.segments, segment_id), now(),
        previous.files + entries.num_rows, previous.bytes + added,
    )  # fmt: skip
    return store_version(repo, version)


def rewrite(repo: Repo, parent: str, drop: pa.Array, entries: pa.Table) -> str:
    """The ``--allow-removals`` escape: a version whose single segment is ``parent``'s rows
    minus ``drop`` plus ``entries``. Earlier segments stay as they are (older commits still
    read them); only this explicit, rare operation costs O(corpus)."""
    previous = load_version(repo, parent)
    names = SCHEMAS[previous.kind].names
    kept = [
        group.filter(pc.invert(pc.is_in(group.column("path"), value_set=drop)))
        for group in scan(repo, previous, names)
    ]
    table = pa.concat_tables([*kept, entries.select(names).cast(SCHEMAS[previous.kind])])
    segment_id = write_segment(repo, previous.kind, table)
    version = Version(
        previous.kind, previous.base, previous.glob, parent, (segment_id,), now(),
        table.num_rows, int(pc.sum(table.column("size")).as_py() or 0),
    )  # fmt: skip
    return store_version(repo, version)


def merge_versions(repo: Repo, base: str, ours: str, theirs: str) -> str:
    """The union of two appends made on different branches from ``base``: ``ours``' segments
    followed by the segments ``theirs`` added. Pure function of the three versions (only the
    result is stored); a path both sides added, or a side that rewrote history
    (``--allow-removals``), is a conflict naming what to resolve."""
    if theirs in (base, ours):
        return ours
    if ours == base:
        return theirs
    v_base, v_ours, v_theirs = (load_version(repo, v) for v in (base, ours, theirs))
    for name, side in (("ours", v_ours), ("theirs", v_theirs)):
        if side.segments[: len(v_base.segments)] != v_base.segments:
            raise ConflictError(
                f"cannot merge: {name} ({side.kind} version) is not an append on top of {base} "
                "(it was rewritten with --allow-removals); recreate one side on top of the other"
            )
        if (side.kind, side.base) != (v_base.kind, v_base.base):
            raise ConflictError(f"cannot merge: {name} tracks a different corpus or kind")
    ours_new = set(v_ours.segments[len(v_base.segments) :])
    theirs_new = [s for s in v_theirs.segments[len(v_base.segments) :] if s not in ours_new]
    only_theirs = Version(v_base.kind, None, None, None, tuple(theirs_new), "", 0, 0)
    added = collect(v_base.kind, ["path", "size"], scan(repo, only_theirs, ["path", "size"]))
    ours_only = Version(v_base.kind, None, None, None, tuple(ours_new), "", 0, 0)
    clash = lookup(repo, ours_only, added.column("path").combine_chunks(), ["path"])
    if clash.num_rows:
        shown = ", ".join(clash.column("path").to_pylist()[:20])
        raise ConflictError(
            f"cannot merge: both sides added {shown}; append it on one side only",
            clash.column("path").to_pylist(),
        )
    merged = Version(
        v_ours.kind, v_ours.base, v_ours.glob, ours, (*v_ours.segments, *theirs_new), now(),
        v_ours.files + added.num_rows,
        v_ours.bytes + int(pc.sum(added.column("size")).as_py() or 0),
    )  # fmt: skip
    return store_version(repo, merged)


# -- reading ---------------------------------------------------------------------------------
def resolve(repo: Repo, pointer_path: str, rev: str | None = None) -> tuple[Pointer, Version]:
    """The pointer (of the worktree, or at ``rev``) and the version it names."""
    target = repo.target(pointer_path)
    ptr = repo.read_pointer(target, rev)
    if ptr.kind not in VERSIONED:
        raise UsageError(
            f"{target.pointer} is a '{ptr.kind}' pointer; this command needs a corpus manifest "
            "('cas manifest create') or an append-only target ('cas add --append-only')"
        )
    return ptr, load_pointed(repo, ptr, target.pointer)


def open_dataset(repo: Repo, pointer_path: str, rev: str | None = None) -> ds.Dataset:
    """The manifest of ``pointer_path`` at ``rev`` as a streaming Arrow Dataset over the segment
    files in the local store (each verified against its id first); nothing is loaded yet."""
    _ptr, version = resolve(repo, pointer_path, rev)
    return dataset_of(repo, version)


def dataset_of(repo: Repo, version: Version) -> ds.Dataset:
    """Checks each segment's id and schema, then lets Arrow stream the files."""
    files = []
    for segment_id in version.segments:
        _open_segment(repo, segment_id, version.kind)  # id, format and schema checked
        files.append(segment_file(repo, segment_id))  # already verified: a set lookup
    return ds.dataset(files, schema=SCHEMAS[version.kind], format="parquet")


def iter_batches(dataset: ds.Dataset, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    """Every row in a fixed order (segment, then row), one segment read ahead at a time:
    measured on 10^7 entries, this halves peak memory (338 vs 692 MiB) and is faster than
    Arrow's default of reading four files ahead on two cores."""
    return dataset.to_batches(
        columns=columns, fragment_readahead=1, batch_readahead=4, use_threads=False
    )


def read_table(repo: Repo, pointer_path: str, rev: str | None = None) -> pa.Table:
    """The whole manifest of ``pointer_path`` at ``rev`` in memory, sorted by path."""
    return open_dataset(repo, pointer_path, rev).to_table().sort_by("path")


def tree_table(repo: Repo, tree_id: str) -> pa.Table:
    """A manifest-shaped table (docs/format.md columns) for a manifest id or a version id:
    for a version, the union of its segments, validated like any manifest from outside; corpus
    rows get ``executable`` false and no chunks, since their bytes are not in the store."""
    if repo.objects.has_manifest(tree_id):
        return repo.load_manifest(tree_id)
    version = load_version(repo, tree_id)
    rows = sum(_open_segment(repo, s, version.kind).metadata.num_rows for s in version.segments)
    if rows != version.files or rows > manifest.MAX_ROWS:
        raise ManifestError(
            f"version {tree_id} records {version.files} files but its segments hold {rows} rows "
            f"(at most {manifest.MAX_ROWS}); it may be hostile"
        )
    try:
        table = dataset_of(repo, version).to_table()
        table.validate(full=True)  # offsets and UTF-8, as for a manifest
    except pa.ArrowMemoryError:
        raise
    except (pa.ArrowException, OSError) as err:
        first = (str(err).splitlines() or [type(err).__name__])[0]
        raise ManifestError(f"version {tree_id} has an unreadable segment: {first}") from err
    manifest.check_nulls(table, f"version {tree_id}")
    if int(pc.sum(table.column("size")).as_py() or 0) != version.bytes:
        raise ManifestError(
            f"version {tree_id} records {version.bytes} bytes but its rows add up to another "
            "total; it may be hostile"
        )
    table = table.sort_by("path")
    if version.kind == "corpus":
        n = table.num_rows
        table = pa.table(
            {
                "path": table.column("path"),
                "size": table.column("size"),
                "hash": table.column("hash"),
                "executable": pa.array(np.zeros(n, np.bool_)),
                "chunks": pa.ListArray.from_arrays(
                    pa.array(np.zeros(n + 1, np.int32)), pa.array([], manifest.CHUNK_TYPE)
                ),
            }
        )
        check_paths(table.column("path"), f"version {tree_id}")
        _check_sorted_unique(table.column("path"), f"version {tree_id}")
        return table
    table = table.cast(manifest.SCHEMA)
    manifest.validate(table, tree_id)
    return table
