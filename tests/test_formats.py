"""Golden vectors and parsers for the on-disk formats (docs/format.md): chunker, manifest id,
pointer. A failure here means stored data would silently change meaning: bump a format version."""

from __future__ import annotations

import io
from pathlib import Path

import blake3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cas import chunker, hashing, manifest, pointer
from cas.errors import CorruptObjectError, ManifestError, PointerError
from cas.rows import Row

GOLDEN_DATA = blake3.blake3(b"cas chunker golden vector").digest(length=1 << 20)
GOLDEN_SIZES = [
    94632, 120889, 43532, 120058, 81627, 27131, 45704,
    89079, 61999, 38829, 108195, 91535, 73435, 51931,
]  # fmt: skip


def test_chunk_boundaries_are_pinned() -> None:
    assert [len(c) for c in chunker.cut(GOLDEN_DATA)] == GOLDEN_SIZES


def test_stream_and_buffer_chunking_agree() -> None:
    streamed = [bytes(c) for c in chunker.cut_stream(io.BytesIO(GOLDEN_DATA))]
    assert [len(c) for c in streamed] == GOLDEN_SIZES
    assert b"".join(streamed) == GOLDEN_DATA


def test_small_insert_changes_few_chunks() -> None:
    data = blake3.blake3(b"insert").digest(length=8 << 20)
    edited = data[: 4 << 20] + b"x" * 100 + data[4 << 20 :]
    before = {hashing.digest(c) for c in chunker.cut(data)}
    after = [hashing.digest(c) for c in chunker.cut(edited)]
    new = [c for c in after if c not in before]
    assert 1 <= len(new) <= 2
    assert len(after) > 50


def _rows() -> list[Row]:
    abc = hashing.digest(b"abc")
    return [
        Row("b/x.bin", 3, abc, False, ((abc, 3),)),
        Row("a.txt", 0, hashing.digest(b""), True, ()),
    ]


def test_manifest_id_is_pinned_and_order_independent() -> None:
    table = manifest.from_rows(_rows())
    golden = "22e0a911de7e9ea370f7ee5106d91da3ee019bfaeec8f89f1006f80a07f074dd"
    assert manifest.canonical_id(table) == golden
    assert manifest.canonical_id(manifest.from_rows(reversed(_rows()))) == golden


def _many_rows() -> list[Row]:
    """Rows of every shape: empty, one chunk that is the file, several chunks."""
    rows = _rows()
    parts = [hashing.digest(bytes([i])) for i in range(3)]
    whole = hashing.digest(b"".join(parts))
    rows.append(Row("c/multi", 3, whole, False, tuple((p, 1) for p in parts)))
    other = hashing.digest(b"other")
    rows.append(Row("c/one-chunk-not-the-file", 5, hashing.digest(b"x"), True, ((other, 5),)))
    return rows


def test_table_rows_give_back_the_rows_from_any_slice() -> None:
    rows = sorted(_many_rows())
    table = manifest.from_rows(reversed(rows))
    assert table.column("path").to_pylist() == [r.path for r in rows]
    for t in (table, pa.concat_tables([table.slice(0, 1), table.slice(1)]), table.slice(1)):
        expected = {r.path: r for r in rows[len(rows) - t.num_rows :]}
        view = manifest.TableRows(t)
        assert dict(view.items()) == expected
        assert list(view.values()) == list(expected.values())
        assert len(view) == len(expected) and "nope" not in view
        assert view[rows[-1].path] == rows[-1]
        assert view.total_size == sum(r.size for r in expected.values())
    assert manifest.to_rows(table) == rows
    assert manifest.to_rows(table.slice(0, 0)) == []


def test_rows_out_of_order_are_sorted_and_duplicates_refused() -> None:
    rows = _many_rows()
    assert manifest.canonical_id(manifest.from_rows(rows)) == manifest.canonical_id(
        manifest.from_rows(sorted(rows))
    )
    with pytest.raises(ManifestError, match="duplicate path in manifest: 'c/multi'"):
        manifest.from_rows([*rows, rows[2]])
    with pytest.raises(ManifestError, match="unsafe"):
        manifest.from_rows([rows[0]._replace(path="a/../b")])


def test_manifest_id_ignores_arrow_chunking_and_parquet_options() -> None:
    table = manifest.from_rows(_rows())
    rechunked = pa.concat_tables([table.slice(0, 1), table.slice(1, 1)])
    assert rechunked.column("path").num_chunks == 2
    assert manifest.canonical_id(rechunked) == manifest.canonical_id(table)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="snappy", use_dictionary=True)
    data = sink.getvalue()
    assert data != manifest.encode(table)
    assert manifest.decode(data, manifest.canonical_id(table)).num_rows == 2


def test_manifest_decode_rejects_wrong_id_and_garbage() -> None:
    table = manifest.from_rows(_rows())
    data = manifest.encode(table)
    with pytest.raises(CorruptObjectError, match="corrupt"):
        manifest.decode(data, "0" * 64)
    with pytest.raises(ManifestError, match="not valid Parquet"):
        manifest.decode(b"not parquet", "0" * 64)


@pytest.mark.parametrize(
    "path", ["../evil", "/etc/passwd", "a/../../b", "C:/x", "a\\b", "a\x00b", "a//b", "./a", ""]
)
def test_manifest_refuses_unsafe_paths(path: str) -> None:
    row = Row(path, 0, hashing.digest(b""), False, ())
    with pytest.raises(ManifestError, match="unsafe path"):
        manifest.from_rows([row])


def test_manifest_refuses_lying_sizes() -> None:
    abc = hashing.digest(b"abc")
    table = manifest.from_rows([Row("a", 4, abc, False, ((abc, 3),))])
    with pytest.raises(ManifestError, match="do not add up"):
        manifest.decode(manifest.encode(table), manifest.canonical_id(table))


def test_manifest_refuses_duplicates() -> None:
    row = Row("a", 0, hashing.digest(b""), False, ())
    with pytest.raises(ManifestError, match="duplicate"):
        manifest.from_rows([row, row])


POINTER = pointer.Pointer("dir", "ab" * 32, 1234, 5)


def test_pointer_encoding_is_exact() -> None:
    data = POINTER.encode()
    assert data == (b"cas-pointer 1\nkind dir\nmanifest " + b"ab" * 32 + b"\nsize 1234\nfiles 5\n")
    assert len(data) < 1024
    assert pointer.parse(data, "x.cas") == POINTER


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"cas-pointer 2\nkind dir\n", "x.cas:1: expected"),
        (POINTER.encode().replace(b"\n", b"\r\n"), "CRLF"),
        (POINTER.encode()[:-1], "truncated"),
        (POINTER.encode().replace(b"kind dir", b"kind blob"), "x.cas:2: unknown kind"),
        (POINTER.encode().replace(b"manifest ab", b"manifest zz"), "x.cas:3: manifest"),
        (POINTER.encode().replace(b"size 1234", b"size -1"), "x.cas:4: size"),
        (POINTER.encode().replace(b"size 1234", b"size 01234"), "x.cas:4: size"),
        (POINTER.encode().replace(b"files 5", b"count 5"), "x.cas:5: expected 'files"),
        (POINTER.encode() + b"extra 1\n", "expected 5 lines"),
        (b"\xff\xfe", "not ASCII"),
        (b"x" * 2000, "larger than"),
    ],
)
def test_malformed_pointers_name_file_and_line(data: bytes, message: str) -> None:
    with pytest.raises(PointerError, match=message):
        pointer.parse(data, "x.cas")


@given(st.binary(max_size=400))
def test_pointer_parser_never_crashes(data: bytes) -> None:
    try:
        parsed = pointer.parse(data, "fuzz.cas")
    except PointerError:
        return
    assert parsed.encode() == data  # anything accepted is canonical


@given(st.text(max_size=60))
def test_path_check_never_accepts_escapes(path: str) -> None:
    try:
        manifest.check_path(path)
    except ManifestError:
        return
    parts = path.split("/")
    assert ".." not in parts and not path.startswith("/") and "\x00" not in path


def test_versioned_pointer_is_three_lines_and_one_changes() -> None:
    a = pointer.Pointer("corpus", "ab" * 32)
    b = pointer.Pointer("corpus", "cd" * 32)
    assert a.encode() == b"cas-pointer 1\nkind corpus\nversion " + b"ab" * 32 + b"\n"
    assert pointer.parse(a.encode(), "c.cas") == a
    changed = [x for x, y in zip(a.encode().split(b"\n"), b.encode().split(b"\n")) if x != y]
    assert len(changed) == 1
    with pytest.raises(PointerError, match="expected 3 lines"):
        pointer.parse(a.encode() + b"size 1\n", "c.cas")


def test_scan_orders_paths_as_utf8_bytes_even_around_folder_names(tmp_path: Path) -> None:
    from cas.workspace import scan

    for name in ("a/x", "a.txt", "a-b", "b", "a/b/c", "é", "Z"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    listing = scan(tmp_path, "t")
    assert listing.paths == sorted(listing.paths, key=lambda p: p.encode())
    assert [e.path for e in listing] == listing.paths
    assert [e.size for e in listing] == [len(p.encode()) for p in listing.paths]
