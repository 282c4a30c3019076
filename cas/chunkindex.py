"""The merged chunk index: one sorted, memory-mapped file answering "where is chunk X?" without
loading it (format in docs/format.md, "Chunk index").

This module is the codec only: bytes in, bytes out, no store. :class:`MergedIndex` reads a
mapped file; :func:`write_merged` streams a new one from an old one plus new packs' entries.
Which packs to merge, and when, is :class:`cas.objects.ObjectStore`'s business.

Why this layout (after git's multi-pack-index and borg's hashindex):

- Entries are sorted by ``key`` (the chunk id's first 8 bytes read big-endian). The keys are a
  contiguous little-endian u64 column, so ``numpy.searchsorted`` maps over it with no copy (a
  million lookups cost one vectorised pass) and ``bisect`` over a ``memoryview`` answers one
  lookup in about a microsecond. A 256-entry fanout on the first byte narrows every search to
  1/256th of the file before it starts, as in git's ``.idx``. Ids sharing a key (a chance of
  about 10^-5 among 16M chunks) are adjacent in any order: a lookup scans that run.
- Columns, not records: a lookup touches the key column's pages, then one 32-byte id, so a
  lookup in a 16M-chunk index reads a few pages, and peak RSS does not follow the store.
- A chunk may be listed once per pack holding it (two concurrent adds may store one chunk
  twice): a lookup skips entries whose pack the caller says is gone (deleted by gc).
"""

from __future__ import annotations

import bisect
import mmap
import os
import struct
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from cas import hashing
from cas.errors import CorruptObjectError

MAGIC = b"CASMIDX1"
VERSION = 1
_HEADER = struct.Struct("<8sIIQQ")  # magic, version, pack count, entry count, reserved (0)
_PACK = struct.Struct("<32sQ")  # pack id, number of entries it has here
_FANOUT = 256
_SUM = 32  # BLAKE3 of every byte before it
_ENTRY_BYTES = 8 + 32 + 4 + 4 + 8  # key, id, pack number, length, offset
_RECORD = np.dtype([("id", "V32"), ("offset", "<u8"), ("length", "<u4")])  # an index file entry
_BLOCK = 1 << 16  # entries merged per step: bounds a merge's memory whatever the index size
_NATIVE_LE = sys.byteorder == "little"


class NewerIndexError(CorruptObjectError):
    """An index of a version this cas does not know: refused, never rewritten (the newer cas
    that wrote it may rely on it)."""


def keys_of(ids: bytes | memoryview, count: int) -> np.ndarray:
    """The sort keys of ``count`` concatenated 32-byte ids."""
    words = np.frombuffer(ids, dtype=">u8", count=count * 4).reshape(count, 4)
    return words[:, 0].astype("<u8")


@dataclass(frozen=True, slots=True)
class Layout:
    """Where each part of an index of ``packs`` packs and ``entries`` entries starts."""

    packs: int
    entries: int

    @property
    def pack_table(self) -> int:
        return _HEADER.size

    @property
    def fanout(self) -> int:
        return self.pack_table + self.packs * _PACK.size

    @property
    def keys(self) -> int:
        return self.fanout + _FANOUT * 8

    @property
    def ids(self) -> int:
        return self.keys + self.entries * 8

    @property
    def pack_numbers(self) -> int:
        return self.ids + self.entries * 32

    @property
    def lengths(self) -> int:
        return self.pack_numbers + self.entries * 4

    @property
    def offsets(self) -> int:
        return self.lengths + self.entries * 4

    @property
    def checksum(self) -> int:
        return self.offsets + self.entries * 8

    @property
    def size(self) -> int:
        return self.checksum + _SUM


class MergedIndex:
    """A merged index file, read through a buffer (an ``mmap`` in use): nothing is copied at
    open but the pack table. ``where`` names the file in errors."""

    def __init__(self, buf: memoryview, where: str, mapped: mmap.mmap | None = None) -> None:
        if len(buf) < _HEADER.size:
            raise CorruptObjectError(f"{where} is truncated")
        magic, version, packs, entries, _reserved = _HEADER.unpack_from(buf, 0)
        if magic != MAGIC:
            raise CorruptObjectError(f"{where} is not a chunk index")
        if version != VERSION:
            raise NewerIndexError(f"{where} has chunk index version {version}; upgrade cas")
        layout = Layout(packs, entries)
        if len(buf) != layout.size:
            raise CorruptObjectError(f"{where} is truncated or has trailing bytes")
        self.where = where
        self.layout = layout
        self.buf = buf
        self._mapped = mapped
        table = [_PACK.unpack_from(buf, layout.pack_table + i * _PACK.size) for i in range(packs)]
        self.packs = [pid.hex() for pid, _n in table]
        self.counts = [n for _pid, n in table]
        self.fanout = np.frombuffer(buf, "<u8", _FANOUT, layout.fanout)
        if (
            sum(self.counts) != entries
            or any(a >= b for a, b in zip(self.packs, self.packs[1:]))
            or (entries and int(self.fanout[-1]) != entries)
            or bool(np.any(self.fanout[1:] < self.fanout[:-1]))
        ):
            raise CorruptObjectError(f"{where} has an inconsistent pack table or fanout")
        self.keys = np.frombuffer(buf, "<u8", entries, layout.keys)
        self.ids = buf[layout.ids : layout.pack_numbers]
        self.pack_numbers = np.frombuffer(buf, "<u4", entries, layout.pack_numbers)
        self.lengths = np.frombuffer(buf, "<u4", entries, layout.lengths)
        self.offsets = np.frombuffer(buf, "<u8", entries, layout.offsets)
        # scalar lookups index memoryviews: a Python int per access, where numpy makes a scalar
        self._keys_mv = buf[layout.keys : layout.ids].cast("Q") if _NATIVE_LE else None
        if _NATIVE_LE:
            self._numbers_mv: Sequence[int] = buf[layout.pack_numbers : layout.lengths].cast("I")
            self._lengths_mv: Sequence[int] = buf[layout.lengths : layout.offsets].cast("I")
            self._offsets_mv: Sequence[int] = buf[layout.offsets : layout.checksum].cast("Q")
        else:
            self._numbers_mv, self._lengths_mv = self.pack_numbers, self.lengths
            self._offsets_mv = self.offsets
        self._fan = [0, *(int(x) for x in self.fanout)]

    def __len__(self) -> int:
        return self.layout.entries

    def release(self, start: int, stop: int) -> None:
        """Let go of the mapped pages of bytes ``start:stop`` (they stay in the page cache and
        fault back in if read again): a pass over the whole file (a verify, a merge) would
        otherwise leave all of it in this process's RSS."""
        if self._mapped is None:
            return
        first = start // mmap.PAGESIZE * mmap.PAGESIZE
        if min(stop, len(self.buf)) > first:
            self._mapped.madvise(mmap.MADV_DONTNEED, first, min(stop, len(self.buf)) - first)

    def release_entries(self, start: int, stop: int) -> None:
        """:meth:`release` the column bytes of entries ``start:stop``."""
        layout = self.layout
        for base, width in ((layout.keys, 8), (layout.ids, 32), (layout.pack_numbers, 4),
                            (layout.lengths, 4), (layout.offsets, 8)):  # fmt: skip
            self.release(base + start * width, base + stop * width)

    def verify(self) -> None:
        """Check the checksum: one pass over the file (fsck and merges, never a lookup)."""
        end = self.layout.checksum
        hasher = hashing.hasher()
        for start in range(0, end, 8 << 20):
            hasher.update(self.buf[start : min(end, start + (8 << 20))])
            self.release(start, start + (8 << 20))
        if hasher.digest() != bytes(self.buf[end:]):
            raise CorruptObjectError(f"{self.where} does not match its checksum")

    def find(self, chunk_id: bytes, live: Sequence[bool]) -> int:
        """The position of ``chunk_id`` in a live pack (``live[pack number]``), or -1."""
        key = int.from_bytes(chunk_id[:8], "big")
        lo, hi = self._fan[chunk_id[0]], self._fan[chunk_id[0] + 1]
        if self._keys_mv is not None:
            pos = bisect.bisect_left(self._keys_mv, key, lo, hi)
            keys: Sequence[int] = self._keys_mv
        else:
            pos = lo + int(np.searchsorted(self.keys[lo:hi], np.uint64(key)))
            keys = self.keys
        return self._scan(pos, hi, key, chunk_id, keys, live)

    def _scan(
        self, pos: int, hi: int, key: int, chunk_id: bytes, keys: Sequence[int],
        live: Sequence[bool],
    ) -> int:  # fmt: skip
        ids, numbers = self.ids, self._numbers_mv
        while pos < hi and keys[pos] == key:
            if ids[pos * 32 : pos * 32 + 32] == chunk_id and live[numbers[pos]]:
                return pos
            pos += 1
        return -1

    def find_many(self, chunk_ids: bytes, count: int, live: np.ndarray) -> np.ndarray:
        """Positions of ``count`` concatenated ids (-1 where absent), in one vectorised pass:
        a searchsorted of the keys, then a compare of the 32 bytes at each position found."""
        n = self.layout.entries
        if count == 0 or n == 0:
            return np.full(count, -1, dtype=np.int64)
        want = keys_of(chunk_ids, count)
        pos = np.searchsorted(self.keys, want).astype(np.int64)
        inside = pos < n
        clipped = np.minimum(pos, n - 1)
        same_key = inside & (self.keys[clipped] == want)
        mine = np.frombuffer(chunk_ids, "V32", count)
        stored = np.frombuffer(self.ids, "V32", n)
        hit = same_key & (stored[clipped] == mine) & live[self.pack_numbers[clipped]]
        result = np.where(hit, pos, -1)
        for i in np.flatnonzero(same_key & ~hit):  # a shared key or a dead pack: scan the run
            cid = bytes(mine[i])
            result[i] = self._scan(int(pos[i]), n, int(want[i]), cid, self.keys, live)
        return result

    def entry(self, pos: int) -> tuple[int, int, int]:
        """(pack number, offset, length) at a position."""
        return int(self._numbers_mv[pos]), int(self._offsets_mv[pos]), int(self._lengths_mv[pos])

    def chunk_id(self, pos: int) -> bytes:
        return bytes(self.ids[pos * 32 : pos * 32 + 32])


def write_merged(
    fd: int,
    old: MergedIndex | None,
    old_live: Sequence[bool],
    new: Sequence[tuple[str, bytes | memoryview]],
) -> None:
    """Write to ``fd`` the index of ``old``'s live packs plus ``new`` packs, given as (pack id,
    index file body: the trailer entries). Streams ``old`` in blocks of _BLOCK entries, so the
    memory a merge needs follows the new entries, not the index. The caller renames the file
    into place (after an fsync if configured)."""
    keep = [i for i in range(len(old.packs)) if old_live[i]] if old is not None else []
    names = sorted({*(old.packs[i] for i in keep if old is not None), *(p for p, _b in new)})
    if len(names) != len(keep) + len(new):
        raise ValueError("a pack is listed twice in a merge")
    number = {p: i for i, p in enumerate(names)}
    counts = dict.fromkeys(names, 0)
    remap = np.zeros(max(1, len(old.packs) if old else 0), dtype="<u4")
    for i in keep:
        remap[i] = number[old.packs[i]]  # type: ignore[union-attr]
        counts[old.packs[i]] = old.counts[i]  # type: ignore[union-attr]
    # the new entries, sorted by key (a stable sort: each pack's entries keep their order)
    bodies = [np.frombuffer(body, _RECORD) for _p, body in new]
    for (pack_id, _b), records in zip(new, bodies):
        counts[pack_id] = len(records)
    fresh = np.concatenate(bodies) if bodies else np.zeros(0, _RECORD)
    fresh_packs = np.concatenate(
        [np.full(len(r), number[p], "<u4") for (p, _b), r in zip(new, bodies)]
    ) if bodies else np.zeros(0, "<u4")  # fmt: skip
    fresh_keys = keys_of(fresh["id"].tobytes(), len(fresh))
    order = np.argsort(fresh_keys, kind="stable")
    fresh, fresh_packs, fresh_keys = fresh[order], fresh_packs[order], fresh_keys[order]

    total = sum(counts.values())
    layout = Layout(len(names), total)
    fanout = np.zeros(_FANOUT, np.int64)
    os.ftruncate(fd, layout.size)
    written = 0
    old_n = len(old) if old is not None else 0
    live_mask = np.asarray(old_live, dtype=bool) if old is not None else np.zeros(1, bool)
    # where each new entry goes among the old ones: before the first old entry of a larger key
    cut = np.searchsorted(old.keys, fresh_keys, "left") if old is not None else np.zeros(
        len(fresh_keys), np.int64)  # fmt: skip
    taken = 0
    for start in range(0, max(old_n, 1), _BLOCK):
        stop = min(old_n, start + _BLOCK)
        last = old_n == 0 or stop == old_n
        upto = len(fresh) if last else int(np.searchsorted(cut, stop, "left"))
        part_keys = [fresh_keys[taken:upto]]
        part_ids = [fresh["id"][taken:upto]]
        part_packs = [fresh_packs[taken:upto]]
        part_lengths = [fresh["length"][taken:upto]]
        part_offsets = [fresh["offset"][taken:upto]]
        taken = upto
        if old is not None and stop > start:
            alive = live_mask[old.pack_numbers[start:stop]]
            part_keys.insert(0, old.keys[start:stop][alive])
            part_ids.insert(0, np.frombuffer(old.ids, "V32", stop - start, start * 32)[alive])
            part_packs.insert(0, remap[old.pack_numbers[start:stop][alive]])
            part_lengths.insert(0, old.lengths[start:stop][alive])
            part_offsets.insert(0, old.offsets[start:stop][alive])
        keys = np.concatenate(part_keys)
        order = np.argsort(keys, kind="stable")  # old entries first among equal keys
        columns = (
            (layout.keys, 8, keys[order]),
            (layout.ids, 32, np.concatenate(part_ids)[order]),
            (layout.pack_numbers, 4, np.concatenate(part_packs)[order]),
            (layout.lengths, 4, np.concatenate(part_lengths)[order]),
            (layout.offsets, 8, np.concatenate(part_offsets)[order]),
        )
        for base, width, column in columns:
            os.pwrite(fd, np.ascontiguousarray(column).tobytes(), base + written * width)
        fanout += np.bincount((keys >> np.uint64(56)).astype(np.int64), minlength=_FANOUT)
        written += len(keys)
        if old is not None:
            old.release_entries(start, stop)
    if written != total:
        raise ValueError(f"merge wrote {written} entries, expected {total}")
    finish(fd, [(p, counts[p]) for p in names], fanout)


def finish(fd: int, packs: Sequence[tuple[str, int]], first_bytes: np.ndarray) -> None:
    """Write the header, pack table and fanout of a file whose columns are written (sorted,
    at their :class:`Layout` offsets), then its checksum. ``packs``: (pack id, entry count) in
    pack-number order, ids ascending; ``first_bytes``: how many entries start with each byte."""
    layout = Layout(len(packs), sum(n for _p, n in packs))
    header = _HEADER.pack(MAGIC, VERSION, layout.packs, layout.entries, 0)
    table = b"".join(_PACK.pack(bytes.fromhex(p), n) for p, n in packs)
    fanout = np.cumsum(np.asarray(first_bytes, dtype=np.int64)).astype("<u8").tobytes()
    os.pwrite(fd, header + table + fanout, 0)
    hasher = hashing.hasher()
    for start in range(0, layout.checksum, 8 << 20):
        hasher.update(os.pread(fd, min(8 << 20, layout.checksum - start), start))
    os.pwrite(fd, hasher.digest(), layout.checksum)


def iter_live(index: MergedIndex, live: Sequence[bool]) -> Iterator[tuple[bytes, int]]:
    """(chunk id, position) of each entry in a live pack, in key order (gc, fsck)."""
    for pos in range(len(index)):
        if live[index.pack_numbers[pos]]:
            yield index.chunk_id(pos), pos
