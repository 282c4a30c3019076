"""Content-defined row groups: where a snapshot's Parquet row groups end, decided by the rows.

A Parquet file cut into row groups of a fixed row count changes everywhere after an insert or a
delete: every later group starts at a different row, so every later page is new bytes and the
store deduplicates nothing. Cutting where a hash of the row says so instead (as FastCDC cuts a
byte stream) puts the boundaries back in the same rows a few rows after the change: only the
groups that hold a changed row are new bytes, the rest of the file is identical and is stored
once. The algorithm is part of the snapshot format (docs/format.md, "Content-defined row
groups", version 2 of the snapshot metadata): changing it changes every snapshot's bytes.

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

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

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
