"""The layout of a version 3 snapshot (cas.rowgroups): cut markers before column chunks.

The marker's point is what the store's own chunker (cas.chunker, the real FastCDC) does with it:
plain FastCDC cuts at it when it can, and a marked file is split at every marker. The rewritten
file's point is that readers (pyarrow, DuckDB) see the same data and statistics as in pyarrow's
own file.
"""

from __future__ import annotations

import io
import random
import tracemalloc
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cas import chunker
from cas.chunker import CUT_MARKER
from cas.rowgroups import write_aligned
from cas.snapshot import PARQUET_OPTIONS


def test_the_store_chunker_cuts_at_every_marker_past_its_minimum_size() -> None:
    """FastCDC cuts before the marker's last byte unless its previous cut is too close (it
    never cuts within MIN_SIZE of the last cut): whatever bytes come before the marker."""
    rng = random.Random(7)
    data, markers = bytearray(), []
    for _ in range(300):
        data += rng.randbytes(rng.randrange(1, 3 * chunker.AVG_SIZE))
        markers.append(len(data))
        data += CUT_MARKER
    cuts = [0]
    for piece in chunker.cut(data):
        cuts.append(cuts[-1] + len(piece))
    cut_set = set(cuts)
    expected = 0
    for at in markers:
        before = max(c for c in cuts if c <= at)
        if at - before >= chunker.MIN_SIZE:
            assert at + len(CUT_MARKER) - 1 in cut_set, at
            expected += 1
    assert expected > 200  # most markers are past the minimum: the rule was exercised


def test_a_marked_file_is_split_at_its_markers_then_cut_by_fastcdc(tmp_path: Path) -> None:
    """The snapshot-only rule of the store's chunker (docs/format.md, "Chunking"): a file that
    starts with PAR1 and a marker is split before the last byte of every marker at least
    MIN_SIZE after the previous split, whatever FastCDC's own cuts, and each piece is cut with
    FastCDC. Markers close together, far apart and across the reader's 8 MiB blocks."""
    rng = random.Random(11)
    data = bytearray(chunker.MARKED_HEAD)
    for _ in range(400):
        data += rng.randbytes(rng.choice([100, 5000, 17_000, 40_000, 150_000, 700_000]))
        data += CUT_MARKER
    data += rng.randbytes(30_000)
    splits, start, at = [], 0, data.find(CUT_MARKER)
    while at >= 0:
        end = at + len(CUT_MARKER) - 1
        if end - start >= chunker.MIN_SIZE:
            splits.append(end)
            start = end
        at = data.find(CUT_MARKER, at + 1)
    expected = []
    for a, b in zip([0, *splits], [*splits, len(data)], strict=True):
        expected += [bytes(c) for c in chunker.cut(bytes(data[a:b]))]
    path = tmp_path / "marked.parquet"
    path.write_bytes(data)
    with open(path, "rb", buffering=0) as f:
        got = [bytes(c) for c in chunker.cut_stream(f)]
    assert got == expected and len(splits) > 200
    assert got != [bytes(c) for c in chunker.cut(data)]  # plain FastCDC would skip markers

    path.write_bytes(data[4:])  # without the head, the same bytes are any other file
    with open(path, "rb", buffering=0) as f:
        assert [bytes(c) for c in chunker.cut_stream(f)] == [
            bytes(c) for c in chunker.cut(data[4:])
        ]


def test_a_file_that_only_starts_like_a_snapshot_is_cut_in_bounded_memory(
    tmp_path: Path,
) -> None:
    """Anyone can write PAR1 and the marker, then 99 MiB with no other marker: pieces end at
    MAX_PIECE, memory stays a read plus a piece or two (not the file, nor a copy of it), and the
    chunks are the file."""
    rng = random.Random(5)
    tail = rng.randbytes(6 * chunker.MAX_PIECE + 3_000_000)
    data = chunker.MARKED_HEAD + tail
    path = tmp_path / "hostile.parquet"
    path.write_bytes(data)
    del tail
    tracemalloc.start()
    try:
        with open(path, "rb", buffering=0) as f:
            sizes = [len(c) for c in chunker.cut_stream(f)]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sum(sizes) == len(data) and max(sizes) <= chunker.MAX_SIZE
    assert peak < 5 * chunker.MAX_PIECE, peak  # 64 MiB measured, 198 MiB unbounded
    first = bytes(data[: chunker.MAX_PIECE])
    expected = [len(c) for c in chunker.cut(first)]
    assert sizes[: len(expected)] == expected  # the first piece ends at MAX_PIECE exactly


def _table(n: int) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(range(n), pa.int64()),
            "s": pa.array([None if i % 11 == 0 else f"value {i * 7919 % 1000}" for i in range(n)]),
            "l": pa.array([[i, i + 1] if i % 5 else None for i in range(n)]),
            "d": pa.array([i * 0.25 for i in range(n)]),
        }
    )


def _pyarrow_file(table: pa.Table, **options: object) -> bytes:
    sink = io.BytesIO()
    with pq.ParquetWriter(sink, table.schema, **{**PARQUET_OPTIONS, **options}) as writer:
        for start in range(0, table.num_rows, 3000):
            writer.write_table(table.slice(start, 3000))
    return sink.getvalue()


def test_a_marker_precedes_every_column_chunk_and_the_footer_and_readers_see_the_same(
    tmp_path: Path,
) -> None:
    table = _table(20_000)
    raw = _pyarrow_file(table)
    out = io.BytesIO()
    write_aligned(io.BytesIO(raw), out)
    aligned = out.getvalue()

    meta, original = pq.read_metadata(io.BytesIO(aligned)), pq.read_metadata(io.BytesIO(raw))
    assert meta.num_row_groups == original.num_row_groups == 7
    starts = []
    for g in range(meta.num_row_groups):
        for c in range(meta.num_columns):
            column, before = meta.row_group(g).column(c), original.row_group(g).column(c)
            start = column.data_page_offset
            assert aligned[start - len(CUT_MARKER) : start] == CUT_MARKER
            assert column.statistics == before.statistics  # pushdown keeps working
            assert column.total_compressed_size == before.total_compressed_size
            starts.append(start)
    assert aligned.startswith(chunker.MARKED_HEAD)  # what makes the store split it at markers
    footer_size = int.from_bytes(aligned[-8:-4], "little")
    assert aligned[-8 - footer_size - len(CUT_MARKER) : -8 - footer_size] == CUT_MARKER
    # the markers, less what the footer lost (encoding_stats, size_statistics)
    assert 0 < len(aligned) - len(raw) < len(CUT_MARKER) * (len(starts) + 1)

    assert pq.read_table(io.BytesIO(aligned)).equals(table)
    filtered = pq.read_table(io.BytesIO(aligned), filters=[("id", ">=", 17_500)])
    assert filtered.equals(table.slice(17_500))
    path = tmp_path / "aligned.parquet"
    path.write_bytes(aligned)
    got = duckdb.sql(
        f"SELECT count(*), sum(id), min(s), count(l), sum(d) FROM '{path}' WHERE id % 3 = 1"
    ).fetchall()
    rows = [r for r in table.to_pylist() if r["id"] % 3 == 1]
    assert got == [
        (
            len(rows),
            sum(r["id"] for r in rows),
            min(r["s"] for r in rows if r["s"] is not None),
            sum(r["l"] is not None for r in rows),
            sum(r["d"] for r in rows),
        )
    ]


def test_the_rewrite_is_deterministic_and_leaves_unchanged_groups_unchanged() -> None:
    """Two tables that differ only after their first row group: the aligned files share the
    first group and its markers byte for byte, and the same input gives the same file."""
    table = _table(12_000)
    changed = pa.concat_tables([table.slice(0, 3000), _table(9000).slice(0, 9000)])
    a, b = io.BytesIO(), io.BytesIO()
    write_aligned(io.BytesIO(_pyarrow_file(table)), a)
    write_aligned(io.BytesIO(_pyarrow_file(changed)), b)
    end = pq.read_metadata(a).row_group(1).column(0).data_page_offset
    assert a.getvalue()[:end] == b.getvalue()[:end]
    again = io.BytesIO()
    write_aligned(io.BytesIO(_pyarrow_file(table)), again)
    assert again.getvalue() == a.getvalue()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"write_page_index": True}, "not inline"),
        ({"bloom_filter_options": {"id": {"ndv": 100}}}, "a bloom filter"),
    ],
    ids=["page index", "bloom filter"],
)
def test_bytes_outside_the_column_chunks_are_refused_not_dropped(
    options: dict[str, object], message: str
) -> None:
    raw = _pyarrow_file(_table(5000), **options)
    with pytest.raises(ValueError, match=message):
        write_aligned(io.BytesIO(raw), io.BytesIO())
