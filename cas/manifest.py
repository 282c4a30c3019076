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
    if any(table.column(name).null_count for name in SCHEMA.names):
        raise ManifestError("manifest has null values; the manifest may be hostile")
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
    """Parse and validate a stored manifest; its canonical id must equal ``expected_id``."""
    try:
        table = pq.read_table(io.BytesIO(data), use_threads=False)  # see cas.cli.main.run
    except (pa.ArrowInvalid, OSError) as err:
        raise ManifestError(f"manifest {expected_id} is not valid Parquet: {err}") from err
    if table.schema.remove_metadata() != SCHEMA.remove_metadata():
        raise ManifestError(f"manifest {expected_id} has an unknown schema; upgrade cas")
    if table.num_rows > MAX_ROWS:
        raise ManifestError(f"manifest {expected_id} claims {table.num_rows} rows; refusing")
    actual = canonical_id(table)
    if actual != expected_id:
        raise CorruptObjectError(
            f"manifest {expected_id} is corrupt (its rows hash to {actual}); "
            "restore it from a remote ('cas pull')"
        )
    validate(table, expected_id)
    return table


def validate(table: pa.Table, manifest_id: str) -> None:
    """Structural checks on a manifest from an untrusted source."""
    paths = table.column("path").to_pylist()
    encoded = [p.encode() for p in paths]
    if encoded != sorted(encoded) or len(set(encoded)) != len(encoded):
        raise ManifestError(f"manifest {manifest_id} is not sorted or has duplicate paths")
    for p in paths:
        check_path(p)
    chunks = table.column("chunks").combine_chunks() if table.num_rows else None
    if chunks is not None:
        sizes = np.asarray(table.column("size").to_numpy(), dtype=np.uint64)
        flat_sizes = chunks.values.field("size").to_numpy().astype(np.uint64)
        offs = np.frombuffer(chunks.buffers()[1], dtype="<i4")[
            chunks.offset : chunks.offset + len(chunks) + 1
        ]
        totals = np.add.reduceat(np.append(flat_sizes, 0), offs[:-1]) if len(flat_sizes) else 0
        empty = offs[1:] == offs[:-1]
        totals = np.where(empty, 0, totals)
        if not np.array_equal(totals.astype(np.uint64), sizes):
            raise ManifestError(
                f"manifest {manifest_id} has chunk sizes that do not add up to file sizes"
            )
