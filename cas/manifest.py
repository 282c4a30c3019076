"""Manifests: the tree of a tracked directory as an Arrow table, stored as Parquet.

A manifest's id is BLAKE3 of a canonical encoding of its rows (docs/format.md), never of the
Parquet bytes, so the same tree has the same id whatever pyarrow version wrote it. The encoding is
built from the Arrow buffers directly, so computing it costs a memory copy, not a Python loop.

Paths are checked when a manifest is built *and* when one is read: a manifest can come from anyone
who can push to the repository, so ``..``, absolute paths, NUL bytes, backslashes and duplicate
paths are refused before any of them reaches the filesystem.
"""

from __future__ import annotations

import io
import itertools
import struct
from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cas import hashing
from cas.errors import CorruptObjectError, ManifestError
from cas.rows import Row, check_path

FORMAT = "cas-manifest"
VERSION = 1
CHUNK_TYPE = pa.struct([("id", pa.binary(32)), ("size", pa.uint32())])
SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("size", pa.uint64()),
        ("hash", pa.binary(32)),
        ("executable", pa.bool_()),
        ("chunks", pa.list_(CHUNK_TYPE)),
    ],
    metadata={b"format": FORMAT.encode(), b"version": str(VERSION).encode()},
)
MAX_ROWS = 100_000_000
#: 10^9 chunks of the 64 KiB average are 64 TB in one manifest.
MAX_CHUNKS = 1_000_000_000
_FIRST_CHUNK_LEAF = 4  # Parquet leaf columns: path, size, hash, executable, chunks.id, chunks.size
# Every path check_path refuses matches this RE2 pattern, and few safe paths do: the empty path,
# a leading "/", a drive letter, a backslash, a control character, an empty, "." or ".." part,
# ".git" in any case, or a code point HFS+ ignores (no other non-ASCII character case-folds to a
# piece of ".git", so ".g\u200cit" is the only non-ASCII way to spell it). Only the paths it
# flags are checked one by one, so 10^7 paths cost one C-level pass.
SUSPECT_PATH = (
    r"(?s)^$|^/|^.:|\\|[\x{0}-\x{1f}\x{7f}-\x{9f}]|(^|/)\.{0,2}(/|$)|(?i:\.git)"
    r"|[\x{200c}-\x{200f}\x{202a}-\x{202e}\x{206a}-\x{206f}\x{feff}]"
)
_LAST_PART = r"/[^/]*$"


def from_rows(rows: Iterable[Row]) -> pa.Table:
    """A canonical table: rows sorted by path (code point order, which is UTF-8 byte order),
    every path checked and unique. Columns are built from flat lists: a list of dicts per row
    would cost seconds for 200,000 files."""
    ordered = sorted(rows, key=lambda r: r.path)
    for a, b in itertools.pairwise(ordered):
        if a.path == b.path:
            raise ManifestError(f"duplicate path in manifest: {a.path!r}")
    for r in ordered:
        check_path(r.path)
    offsets = [0]
    ids: list[bytes] = []
    sizes: list[int] = []
    for r in ordered:
        for cid, size in r.chunks:
            ids.append(cid)
            sizes.append(size)
        offsets.append(len(ids))
    chunks = pa.ListArray.from_arrays(
        pa.array(offsets, pa.int32()),
        pa.StructArray.from_arrays(
            [pa.array(ids, pa.binary(32)), pa.array(sizes, pa.uint32())], fields=list(CHUNK_TYPE)
        ),
    )
    return pa.table(
        {
            "path": pa.array([r.path for r in ordered], pa.string()),
            "size": pa.array([r.size for r in ordered], pa.uint64()),
            "hash": pa.array([r.hash for r in ordered], pa.binary(32)),
            "executable": pa.array([r.executable for r in ordered], pa.bool_()),
            "chunks": chunks,
        },
        schema=SCHEMA,
    )


def to_rows(table: pa.Table) -> list[Row]:
    """Python rows, for the places that need them one by one. Chunk lists are rebuilt from the
    flattened columns: ``to_pylist`` on a list of structs makes a dict per chunk, 10x slower."""
    if table.num_rows == 0:
        return []
    t = table.combine_chunks()
    chunks = t.column("chunks").chunk(0)
    offs = _buffer(chunks, 1, "<i4", len(chunks) + 1).tolist()
    flat_ids = chunks.values.field("id").to_pylist()
    flat_sizes = chunks.values.field("size").to_pylist()
    pairs = list(zip(flat_ids, flat_sizes))
    return [
        Row(p, s, h, x, tuple(pairs[offs[i] : offs[i + 1]]))
        for i, (p, s, h, x) in enumerate(
            zip(
                t.column("path").to_pylist(),
                t.column("size").to_pylist(),
                t.column("hash").to_pylist(),
                t.column("executable").to_pylist(),
            )
        )
    ]


def _buffer(arr: pa.Array, index: int, dtype: str, count: int) -> np.ndarray:
    """``count`` values of one of ``arr``'s buffers, honouring the array's slice offset."""
    return np.frombuffer(arr.buffers()[index], dtype=dtype)[arr.offset : arr.offset + count]


def _offsets_and_data(arr: pa.Array, width: int) -> tuple[bytes, bytes]:
    """Zero-based int64 offsets and the values they span, for string or list arrays."""
    n = len(arr)
    offs = _buffer(arr, 1, "<i4", n + 1).astype("<i8")
    start, end = int(offs[0]), int(offs[-1])
    if width:
        child = arr.values
        data = _buffer(child, 1, f"V{width}", end)[start:end].tobytes()
    else:
        data = bytes(arr.buffers()[2])[start:end]
    return (offs - start).tobytes(), data


def canonical_id(table: pa.Table) -> str:
    """BLAKE3 of the canonical encoding (docs/format.md, "Manifest id")."""
    check_nulls(table, "manifest")
    t = table.combine_chunks()
    n = t.num_rows
    h = hashing.hasher()
    h.update(f"{FORMAT} {VERSION}\n{n}\n".encode())
    path = t.column("path").chunk(0) if n else pa.array([], pa.string())
    offs, data = _offsets_and_data(path, 0)
    chunks = t.column("chunks").chunk(0) if n else pa.array([], pa.list_(CHUNK_TYPE))
    c_offs = _buffer(chunks, 1, "<i4", n + 1).astype("<i8") if n else np.zeros(1, "<i8")
    c_start, c_end = int(c_offs[0]), int(c_offs[-1])
    flat = chunks.values.slice(c_start, c_end - c_start) if n else None
    parts: list[tuple[str, bytes]] = [
        ("path.offsets", offs),
        ("path.data", data),
        ("size", t.column("size").to_numpy().astype("<u8").tobytes()),
        ("hash", b"".join(_fixed(t.column("hash")))),
        (
            "executable",
            t.column("executable").to_numpy(zero_copy_only=False).astype("u1").tobytes(),
        ),
        ("chunks.offsets", (c_offs - c_start).tobytes()),
        ("chunks.id", b"".join(_fixed(flat.field("id"))) if flat is not None else b""),
        (
            "chunks.size",
            flat.field("size").to_numpy().astype("<u4").tobytes() if flat is not None else b"",
        ),
    ]
    for name, blob in parts:
        h.update(name.encode() + b"\n" + struct.pack("<Q", len(blob)))
        h.update(blob)
    return h.hexdigest()


def _fixed(col: pa.Array | pa.ChunkedArray) -> list[bytes]:
    """Raw bytes of a fixed_size_binary(32) column, slice-safe."""
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    return [_buffer(c, 1, "V32", len(c)).tobytes() for c in chunks]


def encode(table: pa.Table) -> bytes:
    """Parquet bytes; options are pinned but the id never depends on them."""
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", compression_level=3, use_dictionary=False)
    return sink.getvalue()


def decode(data: bytes, expected_id: str) -> pa.Table:
    """Parse and validate a stored manifest; its canonical id must equal ``expected_id``.

    The footer is checked before any column is decoded: Parquet's run-length and dictionary
    encodings let a 600 KB file decode to 10^9 rows (tens of GB), so what the footer claims is
    bounded first (``MAX_ROWS``, ``MAX_CHUNKS``) and a lie is refused without allocating."""
    try:
        parquet = pq.ParquetFile(io.BytesIO(data))
        _check_claims(parquet, expected_id)
        table = parquet.read(use_threads=False)  # see cas.cli.main.run
        table.validate(full=True)  # offsets and UTF-8: the decoder trusts what the file says
    except pa.ArrowMemoryError:
        raise
    except (pa.ArrowException, OSError, ValueError) as err:
        first = (str(err).splitlines() or [type(err).__name__])[0]
        raise ManifestError(f"manifest {expected_id} is not valid Parquet: {first}") from err
    if table.schema.remove_metadata() != SCHEMA.remove_metadata():
        raise ManifestError(f"manifest {expected_id} has an unknown schema; upgrade cas")
    check_nulls(table, f"manifest {expected_id}")
    actual = canonical_id(table)
    if actual != expected_id:
        raise CorruptObjectError(
            f"manifest {expected_id} is corrupt (its rows hash to {actual}); "
            "restore it from a remote ('cas pull')"
        )
    validate(table, expected_id)
    return table


def _check_claims(parquet: pq.ParquetFile, manifest_id: str) -> None:
    """Refuse, from the footer alone, a manifest of an unknown schema or one that claims more
    rows or chunks than a manifest may hold."""
    if parquet.schema_arrow.remove_metadata() != SCHEMA.remove_metadata():
        raise ManifestError(f"manifest {manifest_id} has an unknown schema; upgrade cas")
    check_footer(parquet.metadata, f"manifest {manifest_id}", chunks=True)


def check_footer(meta: pq.FileMetaData, where: str, chunks: bool) -> int:
    """The row count a Parquet footer claims, refused above ``MAX_ROWS`` (and, with
    ``chunks``, above ``MAX_CHUNKS`` chunks) before anything is decoded. Each row group's counts
    are checked, not only the file's total: a reader decodes what the row groups say."""
    groups = [meta.row_group(i) for i in range(meta.num_row_groups)]
    counts = [meta.num_rows, *(g.num_rows for g in groups)]
    rows = max(meta.num_rows, sum(counts[1:]))
    if rows > MAX_ROWS or min(counts) < 0:
        raise ManifestError(f"{where} claims {rows} rows (at most {MAX_ROWS}); refusing")
    if chunks:
        leaves = range(_FIRST_CHUNK_LEAF, meta.num_columns)  # chunks.id, chunks.size
        total = max((sum(g.column(j).num_values for g in groups) for j in leaves), default=0)
        if total > MAX_CHUNKS:
            raise ManifestError(f"{where} claims {total} chunks (at most {MAX_CHUNKS}); refusing")
    return rows


def check_nulls(table: pa.Table, where: str) -> None:
    """No nulls anywhere, nested ones included: a null chunk id would reach the store as None,
    and the canonical encoding reads buffers without looking at validity."""
    nested = 0
    if "chunks" in table.column_names:
        for part in table.column("chunks").chunks:
            flat = part.flatten()
            nested += flat.null_count + flat.field("id").null_count
            nested += flat.field("size").null_count
    if nested or any(col.null_count for col in table.columns):
        raise ManifestError(f"{where} has null values; the manifest may be hostile")


def validate(table: pa.Table, manifest_id: str) -> None:
    """Structural checks on a manifest from an untrusted source (docs/format.md, "Manifest").
    Vectorised: only paths a C-level regex flags (a superset of the unsafe ones: any non-ASCII
    path, any ``.git``, ``.``...) go through :func:`check_path` one by one."""
    paths = table.column("path").combine_chunks() if table.num_rows else pa.array([], pa.string())
    if len(paths) > 1 and not pc.all(pc.greater(paths[1:], paths[:-1])).as_py():
        raise ManifestError(f"manifest {manifest_id} is not sorted or has duplicate paths")
    for p in paths.filter(pc.match_substring_regex(paths, SUSPECT_PATH)).to_pylist():
        try:
            check_path(p)
        except ManifestError:
            raise ManifestError(
                f"unsafe path in manifest {manifest_id}: {p!r}; the manifest may be hostile"
            ) from None
    _check_file_and_folder(paths, manifest_id)
    chunks = table.column("chunks").combine_chunks() if table.num_rows else None
    if chunks is not None:
        sizes = np.asarray(table.column("size").to_numpy(), dtype=np.uint64)
        offs = np.frombuffer(chunks.buffers()[1], dtype="<i4")[
            chunks.offset : chunks.offset + len(chunks) + 1
        ]
        flat_sizes = chunks.values.field("size").to_numpy().astype(np.uint64)[offs[0] : offs[-1]]
        offs = offs - offs[0]
        if (flat_sizes == 0).any():  # the chunker never cuts one; a billion would cost nothing
            raise ManifestError(f"manifest {manifest_id} lists an empty chunk; it may be hostile")
        totals = np.add.reduceat(np.append(flat_sizes, 0), offs[:-1]) if len(flat_sizes) else 0
        empty = offs[1:] == offs[:-1]
        totals = np.where(empty, 0, totals)
        if not np.array_equal(totals.astype(np.uint64), sizes):
            raise ManifestError(
                f"manifest {manifest_id} has chunk sizes that do not add up to file sizes"
            )


def _check_file_and_folder(paths: pa.Array, manifest_id: str) -> None:
    """Refuse a path that is both a file and a folder (``a`` and ``a/b``): no tree holds both,
    and a checkout would fail half-way through. Folders are found one depth at a time, each
    depth one vectorised pass."""
    level = paths.filter(pc.match_substring(paths, "/"))
    folders = []
    while len(level):
        parents = pc.unique(pc.replace_substring_regex(level, _LAST_PART, ""))
        folders.append(parents)
        level = parents.filter(pc.match_substring(parents, "/"))
    if not folders:
        return
    clash = paths.filter(pc.is_in(paths, value_set=pa.concat_arrays(folders)))
    if len(clash):
        raise ManifestError(
            f"manifest {manifest_id} lists {clash[0].as_py()!r} as a file and as a folder; "
            "it may be hostile"
        )
