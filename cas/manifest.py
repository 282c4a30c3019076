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
import struct
from array import array
from collections.abc import ItemsView, Iterable, Iterator, Mapping, ValuesView
from dataclasses import dataclass

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
# ".git" or "git~1" in any case, a temp-file mark, or a code point HFS+ ignores (no other non-ASCII
# character case-folds to a piece of ".git", so ".g\u200cit" is the only non-ASCII way to spell
# it). Only the paths it flags are checked one by one, so 10^7 paths cost one C-level pass.
SUSPECT_PATH = (
    r"(?s)^$|^/|^.:|\\|[\x{0}-\x{1f}\x{7f}-\x{9f}]|(^|/)\.{0,2}(/|$)|(?i:\.git|git~1)"
    r"|\.cas-tmp-"
    r"|[\x{200c}-\x{200f}\x{202a}-\x{202e}\x{206a}-\x{206f}\x{feff}]"
)
_LAST_PART = r"/[^/]*$"


class RowColumns:
    """Rows gathered as flat columns, about 90 bytes a file: a list of :class:`Row` tuples
    (with their bytes and chunk tuples) costs ~300, which at 1,000,000 files is the difference
    between an add that fits in 1 GiB and one that does not. Paths are kept by reference: the
    caller's strings are shared, not copied."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.sizes = array("Q")
        self.hashes = bytearray()
        self.execs = bytearray()
        self.counts = array("I")  # chunks per row
        self.chunk_ids = bytearray()
        self.chunk_sizes = array("I")

    def append(self, row: Row) -> None:
        self.paths.append(row.path)
        self.sizes.append(row.size)
        self.hashes += row.hash
        self.execs.append(row.executable)
        self.counts.append(len(row.chunks))
        for cid, size in row.chunks:
            self.chunk_ids += cid
            self.chunk_sizes.append(size)

    def table(self) -> pa.Table:
        """The canonical table: rows sorted by path (code point order, which is UTF-8 byte
        order), every path checked and unique. Built from the buffers: no Python object per
        row."""
        n = len(self.paths)
        offsets = np.zeros(n + 1, np.int32)
        np.cumsum(np.frombuffer(self.counts, np.uint32), out=offsets[1:])
        chunks = pa.ListArray.from_arrays(
            pa.array(offsets),
            pa.StructArray.from_arrays(
                [_fixed_array(self.chunk_ids), pa.array(np.frombuffer(self.chunk_sizes, "u4"))],
                fields=list(CHUNK_TYPE),
            ),
        )
        paths = pa.array(self.paths, pa.string())
        table = pa.table(
            {
                "path": paths,
                "size": pa.array(np.frombuffer(self.sizes, "u8")),
                "hash": _fixed_array(self.hashes),
                "executable": pa.array(np.frombuffer(self.execs, np.bool_)),
                "chunks": chunks,
            },
            schema=SCHEMA,
        )
        if n > 1 and not pc.all(pc.greater(paths[1:], paths[:-1])).as_py():
            # not in order (large files are hashed apart): sort, a copy of every column
            table = table.take(pc.sort_indices(paths))
            paths = table.column("path").combine_chunks()
            same = pc.equal(paths[1:], paths[:-1])
            if pc.any(same).as_py():
                first = pc.index(same, True).as_py()
                raise ManifestError(f"duplicate path in manifest: {paths[first].as_py()!r}")
        for p in _suspects(paths):
            check_path(p)
        return table


def _fixed_array(data: bytearray) -> pa.Array:
    """32-byte ids from their concatenation, without a bytes object per id."""
    return pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(32), len(data) // 32, [None, pa.py_buffer(data)]
    )


def from_rows(rows: Iterable[Row]) -> pa.Table:
    """The canonical table of some rows (see :meth:`RowColumns.table`)."""
    columns = RowColumns()
    for row in rows:
        columns.append(row)
    return columns.table()


class TableRows(Mapping[str, Row]):
    """A manifest's rows by path, each :class:`Row` built when asked for. A dict of Rows costs
    ~500 bytes a file, 500 MB for a checkout of 1,000,000 files; this keeps a path index and
    flat columns (~150 bytes a file), and a caller that walks the rows holds one at a time."""

    def __init__(self, table: pa.Table) -> None:
        self._where = {p: i for i, p in enumerate(table.column("path").to_pylist())}
        if len(self._where) != table.num_rows:
            raise ManifestError("duplicate path in manifest")
        f = _flat(table)
        self._sizes = array("Q", f.sizes.tobytes())
        self._hashes = f.hashes.tobytes()
        self._execs = f.executable.tobytes()
        self._offsets = array("q", f.chunk_offsets.tobytes())
        self._ids = f.chunk_ids.tobytes()
        self._chunk_sizes = array("I", f.chunk_sizes.tobytes())

    def _row(self, path: str, i: int) -> Row:
        digest = self._hashes[32 * i : 32 * i + 32]
        a, b = self._offsets[i], self._offsets[i + 1]
        ids, sizes = self._ids, self._chunk_sizes
        if b - a == 1:  # the common case: one chunk, often the file itself
            cid = ids[32 * a : 32 * a + 32]
            chunks: tuple[tuple[bytes, int], ...] = ((digest if cid == digest else cid, sizes[a]),)
        else:
            chunks = tuple((ids[32 * j : 32 * j + 32], sizes[j]) for j in range(a, b))
        return Row(path, self._sizes[i], digest, bool(self._execs[i]), chunks)

    def __getitem__(self, path: str) -> Row:
        return self._row(path, self._where[path])

    def __contains__(self, path: object) -> bool:
        return path in self._where

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def items(self) -> ItemsView[str, Row]:
        return _Items(self)

    def values(self) -> ValuesView[Row]:
        return _Values(self)

    def pairs(self) -> Iterator[tuple[str, Row]]:
        row = self._row
        for path, i in self._where.items():
            yield path, row(path, i)

    @property
    def total_size(self) -> int:
        return sum(self._sizes)


class _Items(ItemsView[str, Row]):
    _mapping: TableRows

    def __iter__(self) -> Iterator[tuple[str, Row]]:
        return self._mapping.pairs()


class _Values(ValuesView[Row]):
    _mapping: TableRows

    def __iter__(self) -> Iterator[Row]:
        return (row for _, row in self._mapping.pairs())


def to_rows(table: pa.Table) -> list[Row]:
    """Python rows, for the places that need them one by one."""
    return list(TableRows(table).values())


def _buffer(arr: pa.Array, index: int, dtype: str, count: int) -> np.ndarray:
    """``count`` values of one of ``arr``'s buffers, honouring the array's slice offset."""
    return np.frombuffer(arr.buffers()[index], dtype=dtype)[arr.offset : arr.offset + count]


@dataclass(frozen=True)
class _Flat:
    """A manifest table's columns as flat arrays, offsets zero-based: views of the Arrow
    buffers where the type allows. What the canonical encoding hashes, what :func:`validate`
    checks and what :class:`TableRows` keeps, read in one place."""

    path_offsets: np.ndarray  # <i8, rows + 1
    path_data: memoryview
    sizes: np.ndarray  # <u8
    hashes: np.ndarray  # (rows, 32) u1
    executable: np.ndarray  # u1
    chunk_offsets: np.ndarray  # <i8, rows + 1
    chunk_ids: np.ndarray  # (chunks, 32) u1
    chunk_sizes: np.ndarray  # <u4


def _flat(table: pa.Table) -> _Flat:
    t = table.combine_chunks()
    n = t.num_rows
    path = t.column("path").chunk(0) if n else pa.array([], pa.string())
    offs = _buffer(path, 1, "<i4", n + 1).astype("<i8")
    chunks = t.column("chunks").chunk(0) if n else pa.array([], pa.list_(CHUNK_TYPE))
    c_offs = _buffer(chunks, 1, "<i4", n + 1).astype("<i8")
    flat = chunks.values.slice(int(c_offs[0]), int(c_offs[-1] - c_offs[0]))
    return _Flat(
        path_offsets=offs - offs[0],
        path_data=memoryview(path.buffers()[2] or b"")[int(offs[0]) : int(offs[-1])],
        sizes=np.asarray(t.column("size").to_numpy(), "<u8"),
        hashes=_fixed(t.column("hash")),
        executable=t.column("executable").to_numpy(zero_copy_only=False).astype("u1"),
        chunk_offsets=c_offs - c_offs[0],
        chunk_ids=_fixed(flat.field("id")),
        chunk_sizes=np.asarray(flat.field("size").to_numpy(), "<u4"),
    )


def canonical_id(table: pa.Table) -> str:
    """BLAKE3 of the canonical encoding (docs/format.md, "Manifest id"). Each part is hashed
    from a view of the Arrow buffer it lives in: copying the parts out first would cost ~200
    bytes a row at the moment a 1,000,000-file add peaks."""
    check_nulls(table, "manifest")
    f = _flat(table)
    h = hashing.hasher()
    h.update(f"{FORMAT} {VERSION}\n{table.num_rows}\n".encode())
    parts: list[tuple[str, np.ndarray | memoryview]] = [
        ("path.offsets", f.path_offsets),
        ("path.data", f.path_data),
        ("size", f.sizes),
        ("hash", f.hashes),
        ("executable", f.executable),
        ("chunks.offsets", f.chunk_offsets),
        ("chunks.id", f.chunk_ids),
        ("chunks.size", f.chunk_sizes),
    ]
    for name, blob in parts:
        data = blob if isinstance(blob, memoryview) else blob.reshape(-1).view("u1")
        h.update(name.encode() + b"\n" + struct.pack("<Q", len(data)))
        h.update(data)
    return h.hexdigest()


def _fixed(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A fixed_size_binary(32) column's bytes as one (n, 32) array: a view, slice-safe, when
    the column is one chunk."""
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    views = [_buffer(c, 1, "V32", len(c)) for c in chunks if len(c)]
    flat = views[0] if len(views) == 1 else np.concatenate(views or [np.zeros(0, "V32")])
    return flat.view("u1").reshape(-1, 32)


def encode(table: pa.Table) -> memoryview:
    """Parquet bytes; options are pinned but the id never depends on them. A view of an Arrow
    buffer, not bytes: ``BytesIO.getvalue`` would copy a manifest that can be 100 MB."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", compression_level=3, use_dictionary=False)
    return memoryview(sink.getvalue())


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
            "restore it from a remote ('cas pull')",
            object_id=expected_id,
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
    for p in _suspects(paths):
        try:
            check_path(p)
        except ManifestError:
            raise ManifestError(
                f"unsafe path in manifest {manifest_id}: {p!r}; the manifest may be hostile"
            ) from None
    _check_file_and_folder(paths, manifest_id)
    f = _flat(table)
    flat_sizes = f.chunk_sizes.astype(np.uint64)
    if (flat_sizes == 0).any():  # the chunker never cuts one; a billion would cost nothing
        raise ManifestError(f"manifest {manifest_id} lists an empty chunk; it may be hostile")
    offs = f.chunk_offsets
    totals = np.add.reduceat(np.append(flat_sizes, 0), offs[:-1]) if len(flat_sizes) else 0
    totals = np.where(offs[1:] == offs[:-1], 0, totals)
    if not np.array_equal(np.asarray(totals, np.uint64), f.sizes):
        raise ManifestError(
            f"manifest {manifest_id} has chunk sizes that do not add up to file sizes"
        )


def _suspects(paths: pa.Array) -> list[str]:
    """The paths :data:`SUSPECT_PATH` flags, the only ones worth a :func:`check_path` each."""
    return paths.filter(pc.match_substring_regex(paths, SUSPECT_PATH)).to_pylist()


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
