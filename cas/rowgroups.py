"""Content-defined row groups: where a snapshot's Parquet row groups end, decided by the rows.

A Parquet file cut into row groups of a fixed row count changes everywhere after an insert or a
delete: every later group starts at a different row, so every later page is new bytes and the
store deduplicates nothing. Cutting where a hash of the row says so instead (as FastCDC cuts a
byte stream) puts the boundaries back in the same rows a few rows after the change: only the
groups that hold a changed row are new bytes, the rest of the file is identical and is stored
once. The algorithm is part of the snapshot format (docs/format.md, "Content-defined row
groups", versions 2 and 3 of the snapshot metadata): changing it changes every snapshot's bytes.
Version 3 also lays the file out with a cut marker before every column chunk (the end of this
module), so that the store's chunks start where column chunks start.

A row's hash is a 64-bit hash of its value in the *first column that can take part* (the
ORDER BY key, when the query puts it first, as ``SELECT id, ... ORDER BY id`` does), vectorised
with numpy (no Python per row). Only the key, not the whole row: an update that keeps the keys
then moves no boundary and costs just the groups it touches (measured: a 5,000-row update of a
1,000,000-row table stored 2.4% of the file anew with a whole-row hash, 1.1% with the key's).
A column's values hash as:

* fixed-width values (integers, floats, decimals, dates, times, timestamps, durations, fixed-size
  binary of 1, 2, 4, 8 or a multiple of 8 bytes): their little-endian bits;
* booleans: 0 or 1;
* strings and binaries: the length and the first and last 8 bytes (a value's middle bytes do not
  move boundaries; that only makes them a little less even, never wrong);
* nulls: a constant; other types (lists, structs, maps...) cannot take part. With no column
  that can, every row is a candidate and groups hold exactly ``min_rows`` rows.

A key with few distinct values still gives deterministic groups, only less even ones.

A group ends after row ``i`` when it holds at least ``min_rows`` rows and ``hash(i) % divisor ==
0``, or when it reaches ``max_rows``. The decision depends only on the rows, never on how the
driver batched them, so determinism holds (the same rows give the same bytes).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa

from cas.chunker import CUT_MARKER

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_K = np.uint64(0x9E3779B97F4A7C15)
_NULL = np.uint64(0x5555555555555555)
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)
_LANES = np.arange(8)


@dataclass(frozen=True)
class Limits:
    """A group's bounds for an average of ``rows``: between a quarter and four times it."""

    rows: int

    @property
    def min_rows(self) -> int:
        return max(1, self.rows // 4)

    @property
    def max_rows(self) -> int:
        return max(self.rows * 4, 1)

    @property
    def divisor(self) -> int:
        """A boundary every ``divisor`` rows on average once ``min_rows`` are in: mean ``rows``."""
        return max(1, self.rows - self.min_rows)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit moves every output bit (wrapping uint64)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def _fixed(arr: pa.Array, width: int) -> np.ndarray | None:
    data = arr.buffers()[1]
    if data is None:
        return None
    raw = np.frombuffer(data, np.uint8, count=(arr.offset + len(arr)) * width)
    raw = raw[arr.offset * width :]
    if width in (1, 2, 4, 8):
        return raw.view(f"<u{width}").astype(np.uint64)
    if width % 8:
        return None
    words = raw.view("<u8").reshape(len(arr), width // 8)
    h = np.zeros(len(arr), np.uint64)
    for j in range(words.shape[1]):
        h = _mix(h ^ words[:, j])
    return h


def _binary(arr: pa.Array, offset_type: type) -> np.ndarray:
    buffers = arr.buffers()
    offsets = np.frombuffer(buffers[1], offset_type, count=arr.offset + len(arr) + 1)
    offsets = offsets[arr.offset :].astype(np.int64)
    data = np.frombuffer(buffers[2], np.uint8) if buffers[2] is not None else np.zeros(0, np.uint8)
    padded = np.concatenate([data, np.zeros(8, np.uint8)])
    starts, lengths = offsets[:-1], np.diff(offsets)
    head = padded[starts[:, None] + _LANES].view("<u8")[:, 0]
    tail = padded[np.maximum(starts + lengths - 8, starts)[:, None] + _LANES].view("<u8")[:, 0]
    short = lengths < 8
    if short.any():  # bytes past a short value's end belong to the next value: mask them out
        bits = (np.clip(lengths, 0, 7) * 8).astype(np.uint64)
        mask = np.where(short, (np.uint64(1) << bits) - np.uint64(1), _ALL)
        head, tail = head & mask, tail & mask
    return _mix(head ^ _mix(tail ^ lengths.astype(np.uint64)))


def column_hash(arr: pa.Array) -> np.ndarray | None:
    """One uint64 per value, or None for a type that does not take part (see the module doc)."""
    kind = arr.type
    if pa.types.is_dictionary(kind):
        arr = arr.dictionary_decode()
        kind = arr.type
    h: np.ndarray | None
    if pa.types.is_boolean(kind):
        h = np.asarray(arr.fill_null(False)).astype(np.uint64)
    elif pa.types.is_string(kind) or pa.types.is_binary(kind):
        h = _binary(arr, np.int32)
    elif pa.types.is_large_string(kind) or pa.types.is_large_binary(kind):
        h = _binary(arr, np.int64)
    elif (
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_decimal(kind)
        or pa.types.is_temporal(kind)
        or pa.types.is_fixed_size_binary(kind)
    ) and kind.bit_width % 8 == 0:
        h = _fixed(arr, kind.bit_width // 8)
    else:
        return None
    if h is not None and arr.null_count:
        h = np.where(np.asarray(arr.is_null()), _NULL, h)
    return h


def row_hashes(batch: pa.RecordBatch) -> np.ndarray:
    """A uint64 per row: the mixed hash of the first column that can take part, else zeros."""
    for column in batch.columns:
        part = column_hash(column)
        if part is not None:
            return _mix(part * _K)
    return np.zeros(batch.num_rows, np.uint64)


def groups(
    batches: Iterator[pa.RecordBatch], schema: pa.Schema, limits: Limits
) -> Iterator[pa.Table]:
    """Re-cut a stream of batches into content-defined row groups (the last may be shorter).

    At most ``max_rows`` rows plus one batch are held, whatever the size of the result."""
    pending: list[pa.RecordBatch] = []
    held = 0
    divisor = np.uint64(limits.divisor)
    for batch in batches:
        if batch.num_rows == 0:
            continue
        batch = pa.RecordBatch.from_arrays(batch.columns, schema=schema)
        ends = np.flatnonzero(row_hashes(batch) % divisor == 0)
        start = 0
        while start < batch.num_rows:
            # the earliest row that may end the group, and the row that must
            earliest = start + max(limits.min_rows - held, 1) - 1
            forced = start + limits.max_rows - held - 1
            j = int(np.searchsorted(ends, earliest))
            end = min(int(ends[j]), forced) if j < len(ends) else forced
            if end >= batch.num_rows:
                pending.append(batch.slice(start))
                held += batch.num_rows - start
                break
            pending.append(batch.slice(start, end + 1 - start))
            yield pa.Table.from_batches(pending, schema)
            pending, held, start = [], 0, end + 1
    if held:
        yield pa.Table.from_batches(pending, schema)


# --------------------------------------------------------------------------------------------
# Layout: a cut marker before every column chunk (format version 3)
#
# The store splits a file that starts with PAR1 and the marker at every marker (cas.chunker), so
# store chunks start where column chunks start: after a change, the chunks of the unchanged
# column chunks are the bytes they were (without markers, FastCDC's cuts took a row group or
# more to fall in step again, measured in docs/snapshots.md). Readers find column chunks by
# their footer offsets and never read a marker.

_MAGIC = b"PAR1"
_COPY_BLOCK = 8 * 1024 * 1024
# Thrift compact protocol type codes (Parquet's footer is a Thrift FileMetaData struct).
_BOOL_TRUE, _BOOL_FALSE, _BYTE, _DOUBLE, _BINARY, _LIST, _SET, _STRUCT = 1, 2, 3, 7, 8, 9, 10, 12
_INTEGERS = (4, 5, 6)  # i16, i32, i64: zigzag varints
# Field ids (parquet.thrift).
_FILE_ROW_GROUPS = 4
_GROUP_COLUMNS, _GROUP_FILE_OFFSET = 1, 5
_CHUNK_META = 3
_CHUNK_ELSEWHERE = (4, 5, 6, 7, 8, 9)  # page indexes and encryption: bytes outside the chunk
_META_SIZE, _META_DATA_PAGE, _META_INDEX_PAGE, _META_DICT_PAGE = 7, 9, 10, 11
_META_BLOOM = (14, 15)
#: encoding_stats and size_statistics: optional summaries no reader needs to read the data (the
#: encodings list and the page headers say the same); dropped because every byte of the footer
#: after a change is new bytes in the store.
_META_DROPPED = (13, 16)

Field = list[Any]  # [field id, compact type, value]


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


def _read(buf: bytes, pos: int, kind: int) -> tuple[Any, int]:
    if kind in (_BOOL_TRUE, _BOOL_FALSE):  # a bool field's value is its type code
        return None, pos
    if kind == _BYTE:
        return buf[pos], pos + 1
    if kind in _INTEGERS:
        n, pos = _varint(buf, pos)
        return (n >> 1) ^ -(n & 1), pos
    if kind == _DOUBLE:
        return buf[pos : pos + 8], pos + 8
    if kind == _BINARY:
        n, pos = _varint(buf, pos)
        return buf[pos : pos + n], pos + n
    if kind in (_LIST, _SET):
        header = buf[pos]
        pos += 1
        size, element = header >> 4, header & 0x0F
        if size == 15:
            size, pos = _varint(buf, pos)
        if element in (_BOOL_TRUE, _BOOL_FALSE):  # list elements are one byte each
            element = _BYTE
        items = []
        for _ in range(size):
            item, pos = _read(buf, pos, element)
            items.append(item)
        return (header & 0x0F, items), pos
    if kind == _STRUCT:
        fields: list[Field] = []
        last = 0
        while (header := buf[pos]) != 0:
            pos += 1
            delta, field_kind = header >> 4, header & 0x0F
            if delta:
                last += delta
            else:
                n, pos = _varint(buf, pos)
                last = (n >> 1) ^ -(n & 1)
            value, pos = _read(buf, pos, field_kind)
            fields.append([last, field_kind, value])
        return fields, pos + 1
    raise ValueError(f"unexpected Thrift type {kind} in the Parquet footer")


def _put_varint(out: bytearray, n: int) -> None:
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _write(out: bytearray, kind: int, value: Any) -> None:
    """The inverse of ``_read``, in the canonical form writers use (short headers when they fit),
    so an unchanged footer re-encodes to the same bytes."""
    if kind in (_BOOL_TRUE, _BOOL_FALSE):
        return
    if kind == _BYTE:
        out.append(value)
    elif kind in _INTEGERS:
        _put_varint(out, (value << 1) ^ (value >> 63))
    elif kind == _DOUBLE:
        out += value
    elif kind == _BINARY:
        _put_varint(out, len(value))
        out += value
    elif kind in (_LIST, _SET):
        element, items = value
        if len(items) < 15:
            out.append(len(items) << 4 | element)
        else:
            out.append(0xF0 | element)
            _put_varint(out, len(items))
        for item in items:
            _write(out, _BYTE if element in (_BOOL_TRUE, _BOOL_FALSE) else element, item)
    else:
        last = 0
        for fid, field_kind, field_value in value:
            if 0 < fid - last <= 15:
                out.append((fid - last) << 4 | field_kind)
            else:
                out.append(field_kind)
                _put_varint(out, (fid << 1) ^ (fid >> 63))
            last = fid
            _write(out, field_kind, field_value)
        out.append(0)


def _field(fields: list[Field], fid: int) -> Field | None:
    return next((f for f in fields if f[0] == fid), None)


def write_aligned(src: BinaryIO, dst: BinaryIO) -> None:
    """Copy the Parquet file ``src`` to ``dst`` with ``CUT_MARKER`` before every column chunk
    and before the footer, the footer's offsets moved to match (and ``_META_DROPPED`` left out).

    The column chunks must tile ``src`` from its header to its footer, as pyarrow writes them
    without page indexes or bloom filters (PARQUET_OPTIONS): anything else is refused rather than
    lost."""
    src.seek(-8, os.SEEK_END)
    tail = src.read(8)
    if tail[4:] != _MAGIC:
        raise ValueError("not a Parquet file: no PAR1 at its end")
    footer_size = int.from_bytes(tail[:4], "little")
    footer_start = src.seek(-8 - footer_size, os.SEEK_END)
    meta, _ = _read(src.read(footer_size), 0, _STRUCT)
    dst.write(_MAGIC)
    written = expected = len(_MAGIC)
    row_groups = _field(meta, _FILE_ROW_GROUPS)
    for group in row_groups[2][1] if row_groups else []:
        first: int | None = None
        for chunk in _field(group, _GROUP_COLUMNS)[2][1]:  # type: ignore[index]
            column = _field(chunk, _CHUNK_META)
            if column is None or any(f[0] in _CHUNK_ELSEWHERE for f in chunk):
                raise ValueError("a column chunk whose metadata or indexes are not inline")
            fields = column[2]
            if any(f[0] in _META_BLOOM for f in fields):
                raise ValueError("a column chunk with a bloom filter")
            dictionary = _field(fields, _META_DICT_PAGE)
            start = (dictionary or _field(fields, _META_DATA_PAGE))[2]  # type: ignore[index]
            size = _field(fields, _META_SIZE)[2]  # type: ignore[index]
            if start != expected:
                raise ValueError(f"column chunks do not follow each other (at byte {start})")
            dst.write(CUT_MARKER)
            written += len(CUT_MARKER)
            first = written if first is None else first
            src.seek(start)
            for remaining in range(size, 0, -_COPY_BLOCK):
                block = src.read(min(remaining, _COPY_BLOCK))
                if len(block) != min(remaining, _COPY_BLOCK):
                    raise ValueError("the Parquet file ends inside a column chunk")
                dst.write(block)
            for f in fields:
                if f[0] in (_META_DATA_PAGE, _META_INDEX_PAGE, _META_DICT_PAGE):
                    f[2] += written - start
            column[2] = [f for f in fields if f[0] not in _META_DROPPED]
            written += size
            expected = start + size
        offset = _field(group, _GROUP_FILE_OFFSET)
        if offset is not None and first is not None:
            offset[2] = first
    if expected != footer_start:
        raise ValueError(f"bytes between the last column chunk and the footer (at {expected})")
    footer = bytearray()
    _write(footer, _STRUCT, meta)
    dst.write(CUT_MARKER + footer + len(footer).to_bytes(4, "little") + _MAGIC)
