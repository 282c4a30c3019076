"""ObjectStore: chunks packed into immutable packs, manifests as objects, all verified on read.

Terms (the format is in docs/format.md):
- chunk: a piece of file content; its id is BLAKE3 of its bytes.
- pack: many chunks concatenated, then a trailer listing (id, offset, length) of each. Creating one
  file per 4 KiB chunk costs what ``cp -r`` costs, so chunks travel and rest in packs, as in git
  and restic. A pack's id is BLAKE3 of its trailer (the chunk ids in it commit to the content).
- index: ``index/<pack id>`` is a copy of a pack's trailer, so finding a chunk needs no pack read.
  It is derived data: a missing index file is rebuilt from the pack's trailer.
- manifest: a Parquet tree stored under its canonical id (see :mod:`cas.manifest`).

Reads check every chunk's hash, so wrong bytes raise :class:`CorruptObjectError` naming the chunk
and its pack; they are never returned.
"""

from __future__ import annotations

import contextlib
import io
import mmap
import os
import struct
import threading
import types
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cas import hashing
from cas.clone import BLOCK, clone_range
from cas.errors import CorruptObjectError, ObjectMissingError, StorageError
from cas.store.local import LocalStore, storage_error

if TYPE_CHECKING:  # numpy and the merged index load only when chunks are looked up: an
    # unchanged 'cas status' must import neither (tests/test_cli_conventions.py)
    import numpy as np

    from cas.chunkindex import MergedIndex

PACK_MAGIC = b"CASPACK1"
INDEX_MAGIC = b"CASIDX01"
_ENTRY = struct.Struct("<32sQI")  # chunk id, offset in pack, length
_TAIL = struct.Struct("<I8s")  # entry count, magic
PACK_TARGET_SIZE = 32 * 1024 * 1024
_MAX_OPEN_PACKS = 64
_MAX_READ = 8 * 1024 * 1024
#: A pack is read for upload or verification in pieces of this size (see PackReader).
PACK_PIECE = 1 << 20
_PACK_SHIFT = 72  # a code is pack number << 72 | offset << 32 | length (u32)
_OFFSET_MASK = (1 << 40) - 1
# Files this large get their chunks block-aligned in packs (see PackWriter.add): at most BLOCK - 1
# bytes of padding per pack a file's new chunks start in, under 0.4% of the file.
ALIGN_MIN_SIZE = 1 << 20
MERGED_INDEX_KEY = "chunk-index"
# When the packs the merged index does not cover pile up past either bound, the next command
# merges them in (a merge rewrites the merged index: O(store), so not on every new pack; a
# delta of 100,000 chunks loads in ~50 ms). A process that seals packs itself merges when its
# delta passes DELTA_MAX or an eighth of the merged index, whichever is more: the delta's memory
# (~150 bytes a chunk) stays an eighth of the store's, and a 10M-chunk add rewrites the merged
# index ~20 times (~9x its final size written in all), not once per pack.
MERGE_PACKS = 64
MERGE_ENTRIES = 100_000
DELTA_MAX = 250_000
_BATCH = 1 << 20


@dataclass(frozen=True, slots=True)
class Span:
    """Bytes ``start:end`` of a file, held byte for byte at ``offset`` in a pack."""

    start: int
    end: int
    pack: str
    offset: int

    def whole_blocks(self) -> Span | None:
        """The part that starts and ends on a block boundary, if any (the offsets are equal
        modulo BLOCK, so both sides start on one)."""
        start = -(-self.start // BLOCK) * BLOCK
        end = self.end // BLOCK * BLOCK
        if end <= start:
            return None
        return Span(start, end, self.pack, self.offset + start - self.start)


@dataclass(frozen=True, slots=True)  # one per chunk in the index: no per-object dict
class Location:
    pack: str
    offset: int
    length: int


class _Delta:
    """Packs the merged index does not cover yet: chunk id -> one int per chunk (a Location
    object per chunk cost ~100 bytes more). The int packs the pack's number (into ``packs``),
    the offset and the length."""

    __slots__ = ("codes", "numbers", "packs")

    def __init__(self) -> None:
        self.codes: dict[bytes, int] = {}
        self.packs: list[str] = []
        self.numbers: dict[str, int] = {}

    def add(self, pack_id: str, entries: Iterable[tuple[bytes, int, int]]) -> None:
        number = self.numbers.setdefault(pack_id, len(self.packs))
        if number == len(self.packs):
            self.packs.append(pack_id)
        base = number << _PACK_SHIFT
        codes = self.codes
        for cid, off, length in entries:
            codes[cid] = base | (off << 32) | length

    def location(self, code: int) -> Location:
        return Location(self.packs[code >> _PACK_SHIFT], (code >> 32) & _OFFSET_MASK,
                        code & 0xFFFFFFFF)  # fmt: skip


def _mapped(merged: MergedIndex, live: Sequence[bool]) -> tuple[MergedIndex, bytes, np.ndarray]:
    """The merged index with its live-pack mask twice: bytes for one lookup (indexing them
    gives a plain int), an array for a vectorised batch."""
    import numpy as np

    mask = np.asarray(live, dtype=bool)
    return merged, mask.tobytes(), mask


class ChunkIndex(Mapping[bytes, Location]):
    """chunk id -> :class:`Location`: the merged index (a mapped file, :mod:`cas.chunkindex`)
    plus a small in-memory delta of the packs sealed since it was written. Lookups read the
    delta first, then the merged index, skipping entries of packs no longer in the store (gc
    deleted them; the next merge drops them). A merge swaps in a new merged index, then an
    empty delta; readers read the delta first, so a lookup racing a swap still finds its chunk.
    """

    __slots__ = ("_delta", "_merged")

    def __init__(self, merged: MergedIndex | None = None, live: Sequence[bool] = ()) -> None:
        self._merged = _mapped(merged, live) if merged is not None else None
        self._delta = _Delta()

    def add(self, pack_id: str, entries: Iterable[tuple[bytes, int, int]]) -> None:
        self._delta.add(pack_id, entries)

    def swap(self, merged: MergedIndex, live: Sequence[bool]) -> None:
        """Replace everything by ``merged`` (which covers every pack added so far)."""
        self._merged = _mapped(merged, live)
        self._delta = _Delta()

    @property
    def delta_size(self) -> int:
        return len(self._delta.codes)

    @property
    def delta_packs(self) -> list[str]:
        return list(self._delta.packs)

    @property
    def merged(self) -> tuple[MergedIndex, bytes] | None:
        if self._merged is None:
            return None
        merged, live, _ = self._merged
        return merged, live

    def get(self, chunk_id: bytes, default: Location | None = None) -> Location | None:  # type: ignore[override]
        """The location, or ``default``: the one lookup checkout and push make per chunk."""
        delta = self._delta
        code = delta.codes.get(chunk_id)
        if code is not None:
            return delta.location(code)
        if self._merged is not None:
            merged, live, _ = self._merged
            pos = merged.find(chunk_id, live)
            if pos >= 0:
                number, offset, length = merged.entry(pos)
                return Location(merged.packs[number], offset, length)
        return default

    def __getitem__(self, chunk_id: bytes) -> Location:
        loc = self.get(chunk_id)
        if loc is None:
            raise KeyError(chunk_id)
        return loc

    def __contains__(self, chunk_id: object) -> bool:
        if chunk_id in self._delta.codes:
            return True
        if self._merged is None or not isinstance(chunk_id, bytes) or len(chunk_id) != 32:
            return False
        merged, live, _ = self._merged
        return merged.find(chunk_id, live) >= 0

    def missing(self, chunk_ids: Iterable[bytes]) -> set[bytes]:
        """The ids not indexed: the merged index answers in vectorised batches (one
        searchsorted per million ids), not one lookup per id."""
        codes = self._delta.codes
        rest = [cid for cid in dict.fromkeys(chunk_ids) if cid not in codes]
        if self._merged is None or not rest:
            return set(rest)
        import numpy as np

        merged, _, live_np = self._merged
        found = {cid for cid in rest if len(cid) != 32}  # never an id: never indexed
        rest = [cid for cid in rest if len(cid) == 32] if found else rest
        for start in range(0, len(rest), _BATCH):
            batch = rest[start : start + _BATCH]
            pos = merged.find_many(b"".join(batch), len(batch), live_np)
            found.update(batch[i] for i in np.flatnonzero(pos < 0))
        return found

    def __iter__(self) -> Iterator[bytes]:
        """Every indexed id once (gc, fsck: O(store) by nature)."""
        codes = self._delta.codes
        yield from codes
        if self._merged is None:
            return
        from cas.chunkindex import iter_live

        merged, live, _ = self._merged
        run_key, run_ids = -1, set()
        for cid, pos in iter_live(merged, live):
            key = int(merged.keys[pos])
            if key != run_key:
                run_key, run_ids = key, set()
            if cid not in codes and cid not in run_ids:
                run_ids.add(cid)
                yield cid

    def __len__(self) -> int:
        return sum(1 for _ in self)


def pack_key(pack_id: str) -> str:
    return f"packs/{pack_id[:2]}/{pack_id}"


def index_key(pack_id: str) -> str:
    return f"index/{pack_id}"


def manifest_key(manifest_id: str) -> str:
    return f"manifests/{manifest_id[:2]}/{manifest_id}"


def version_key(version_id: str) -> str:
    return f"versions/{version_id[:2]}/{version_id}"


def segment_key(segment_id: str) -> str:
    return f"segments/{segment_id[:2]}/{segment_id}"


def encode_entries(entries: Iterable[tuple[bytes, int, int]]) -> bytes:
    return b"".join(_ENTRY.pack(cid, off, length) for cid, off, length in entries)


def decode_entries(data: bytes | memoryview, where: str) -> list[tuple[bytes, int, int]]:
    if len(data) % _ENTRY.size:
        raise CorruptObjectError(f"{where} is truncated; run 'cas fsck' to find damaged packs")
    return list(_ENTRY.iter_unpack(data))


def trailer_bytes(data: bytes, count: int) -> bytes:
    """The trailer of a pack holding ``count`` chunks: what the pack id hashes."""
    return data[len(data) - _TAIL.size - count * _ENTRY.size :]


class PackReader(io.RawIOBase):
    """A pack file read front to back, every byte checked before it is returned: the one pack
    verifier of uploads (push hands it to the store as the request body) and downloads.

    The trailer is read first (from the end of the file); then the file is read in pieces of
    PACK_PIECE bytes, and a piece is returned only once every chunk it completes hashes to its
    id (a chunk spanning pieces is hashed incrementally) and every trailer byte in it equals the
    trailer whose hash is the pack id. The last piece holds the trailer, so a reader that gets
    every byte has got a pack that passed the checks of ``cas fsck``, and an upload that stops
    at a bad byte never completes: the remote publishes no object. Memory: one piece, whatever
    the pack size. ``failure`` keeps the error that stopped a read (the HTTP stack may wrap it);
    seeking back to 0 restarts the checks, so a retried request is checked again."""

    def __init__(self, path: Path, pack_id: str, where: str, fix: str) -> None:
        """``where`` places the pack in messages ("in the local store", "on remote 'origin'");
        ``fix`` ends them."""
        super().__init__()
        self.pack_id = pack_id
        self._what = f"pack {pack_id} {where} is corrupt"
        self._fix = fix
        self.failure: CorruptObjectError | None = None
        self._served = 0
        self._file = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by close()
        try:
            self.size = os.fstat(self._file.fileno()).st_size
            self.entries, self._trailer = self._read_trailer()
            self._order = sorted(self.entries, key=lambda entry: entry[1])
            for (_c, off, length), (_d, nxt, _n) in zip(self._order, self._order[1:]):
                if off + length > nxt:
                    raise self._corrupt("its trailer lists overlapping chunks")
        except BaseException:
            self._file.close()
            raise
        self._table_start = self.size - len(self._trailer)
        self.seek(0)

    def _corrupt(self, why: str) -> CorruptObjectError:
        self.failure = CorruptObjectError(f"{self._what}: {why}; {self._fix}")
        return self.failure

    def _read_trailer(self) -> tuple[list[tuple[bytes, int, int]], bytes]:
        if self.size < _TAIL.size:
            raise self._corrupt("it is too short")
        count, magic = _TAIL.unpack(os.pread(self._file.fileno(), _TAIL.size,
                                             self.size - _TAIL.size))  # fmt: skip
        table_start = self.size - _TAIL.size - count * _ENTRY.size
        if magic != PACK_MAGIC or table_start < 0:
            raise self._corrupt("it has no valid trailer")
        trailer = os.pread(self._file.fileno(), self.size - table_start, table_start)
        if len(trailer) != self.size - table_start:
            raise self._corrupt("it shrank while it was read")
        if hashing.digest(trailer).hex() != self.pack_id:
            raise self._corrupt("its trailer does not hash to its name")
        entries = decode_entries(trailer[: -_TAIL.size], f"pack {self.pack_id}")
        if any(off + length > table_start for _cid, off, length in entries):
            raise self._corrupt("its trailer lists a chunk beyond its data")
        return entries, trailer

    # -- io.RawIOBase ------------------------------------------------------------------------
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._served

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Back to 0 (a retry re-reads and re-checks everything) or where it is already: a
        reader cannot skip bytes it has not checked."""
        target = (
            offset + {os.SEEK_SET: 0, os.SEEK_CUR: self._served, os.SEEK_END: self.size}[whence]
        )
        if target == 0:
            self._file.seek(0)
            self._checked = self._next = self._served = self._at = 0
            self._hasher: Any = None  # a blake3 hasher while a chunk spans pieces
            self._piece = memoryview(b"")
        elif target != self._served:
            raise io.UnsupportedOperation("a PackReader only rewinds to its start")
        return self._served

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` checked bytes (at most the rest of one piece; ``-1``: the rest of
        the pack, which only a small pack should be read with)."""
        if size is None or size < 0:
            out = bytearray()
            while chunk := self.read(PACK_PIECE):
                out += chunk
            return bytes(out)
        if self.failure is not None:
            raise self.failure
        if self._at == len(self._piece):
            if self._checked >= self.size:
                return b""
            self._check_next_piece()
        out = bytes(self._piece[self._at : self._at + size])  # the one copy: HTTP wants bytes
        self._at += len(out)
        self._served += len(out)
        return out

    def close(self) -> None:
        self._file.close()
        super().close()

    def _check_next_piece(self) -> None:
        """Read the next piece and check every chunk it ends and every trailer byte in it."""
        start = self._checked
        want = min(PACK_PIECE, self.size - start)
        data = self._file.read(want)
        if len(data) != want:
            raise self._corrupt("it shrank while it was read")
        piece, end = memoryview(data), start + want
        order = self._order
        while self._next < len(order):
            cid, off, length = order[self._next]
            if off >= end:
                break
            lo, hi = max(off, start), min(off + length, end)
            if lo == off and hi == off + length:
                ok = hashing.digest(piece[off - start : hi - start]) == cid
            else:
                if self._hasher is None:
                    self._hasher = hashing.hasher()
                self._hasher.update(piece[lo - start : hi - start])
                if hi < off + length:
                    break  # the chunk goes on in the next piece
                ok, self._hasher = self._hasher.digest() == cid, None
            if not ok:
                raise self._corrupt(f"chunk {cid.hex()} has wrong bytes")
            self._next += 1
        if end > self._table_start:
            lo = max(start, self._table_start)
            if (
                piece[lo - start :]
                != self._trailer[lo - self._table_start : end - self._table_start]
            ):
                raise self._corrupt("its trailer changed while it was read")
        self._piece, self._at, self._checked = piece, 0, end

    def check_all(self) -> list[tuple[bytes, int, int]]:
        """Read the whole pack (one piece at a time) and return its trailer entries."""
        if self.failure is not None:
            raise self.failure
        while self._checked < self.size:
            self._check_next_piece()
        self._at, self._served = len(self._piece), self.size
        return self.entries


def pack_trailer(data: bytes, pack_id: str) -> list[tuple[bytes, int, int]]:
    """The entries a pack's trailer lists, checked against the pack's own length."""
    where = f"pack {pack_id}"
    if len(data) < _TAIL.size:
        raise CorruptObjectError(f"{where} is too short; run 'cas fsck'")
    count, magic = _TAIL.unpack_from(data, len(data) - _TAIL.size)
    table_start = len(data) - _TAIL.size - count * _ENTRY.size
    if magic != PACK_MAGIC or table_start < 0:
        raise CorruptObjectError(f"{where} has no valid trailer; run 'cas fsck'")
    entries = decode_entries(data[table_start : len(data) - _TAIL.size], where)
    for _cid, off, length in entries:
        if off + length > table_start:
            raise CorruptObjectError(f"{where} lists a chunk beyond its data; run 'cas fsck'")
    return entries


def checked_index(
    data: bytes | memoryview, pack_id: str, where: str, fix: str
) -> list[tuple[bytes, int, int]]:
    """The entries of an index file, if it is the trailer of pack ``pack_id``; else
    CorruptObjectError naming ``where`` and ``fix`` (see :func:`checked_body`)."""
    return decode_entries(checked_body(data, pack_id, where, fix), where)


def checked_body(data: bytes | memoryview, pack_id: str, where: str, fix: str) -> memoryview:
    """The entries of an index file as its bytes (what :func:`cas.chunkindex.write_merged`
    takes, with no decoding), if it is the trailer of pack ``pack_id``; else CorruptObjectError
    naming ``where`` and ``fix``. The one check of every index file, local
    (:meth:`ObjectStore.pack_entries`) or remote: a pack id is BLAKE3 of its trailer, and an index
    file is ``INDEX_MAGIC`` + the trailer's entries, so one hash of the file (44 bytes a chunk,
    ~25 ms of CPU for 1,000,000 chunks) proves every chunk id, offset and length in it. A chunk
    index built from index files (in memory, or on disk) must take its entries from here."""
    view = memoryview(data)
    body = view[len(INDEX_MAGIC) :]
    if bytes(view[: len(INDEX_MAGIC)]) != INDEX_MAGIC or len(body) % _ENTRY.size:
        raise CorruptObjectError(f"{where} is not an index file; {fix}")
    hasher = hashing.hasher()
    hasher.update(body)
    hasher.update(_TAIL.pack(len(body) // _ENTRY.size, PACK_MAGIC))
    if hasher.digest().hex() != pack_id:
        raise CorruptObjectError(f"{where} does not match pack {pack_id}; {fix}")
    return body


def verified_trailer(
    read: Callable[[int, int], bytes], size: int, pack_id: str, fix: str
) -> list[tuple[bytes, int, int]]:
    """The entries of a pack's trailer, read with ``read(offset, length)`` from a pack of
    ``size`` bytes, checked against the pack id (and the pack's length): two small reads, not
    the whole pack. The chunks themselves are not read (fsck and fetch check those)."""
    where = f"pack {pack_id}"
    if size < _TAIL.size:
        raise CorruptObjectError(f"{where} is too short; {fix}")
    tail = read(size - _TAIL.size, _TAIL.size)
    count, magic = _TAIL.unpack(tail)
    table_start = size - _TAIL.size - count * _ENTRY.size
    if magic != PACK_MAGIC or table_start < 0:
        raise CorruptObjectError(f"{where} has no valid trailer; {fix}")
    table = read(table_start, count * _ENTRY.size)
    if hashing.digest(table + tail).hex() != pack_id:
        raise CorruptObjectError(
            f"{where} is corrupt: its trailer does not hash to its name; {fix}"
        )
    entries = decode_entries(table, where)
    if any(off + length > table_start for _cid, off, length in entries):
        raise CorruptObjectError(f"{where} lists a chunk beyond its data; {fix}")
    return entries


#: What a message about a damaged local object tells the user to run: it re-downloads every
#: damaged object the pointers need from the remote (``cas.ops.transfer.fetch(repair=True)``).
LOCAL_REPAIR = "run 'cas fetch --repair' to replace it from a remote"


class _OpenPack:
    """A pack being filled by one thread: a temp file and its trailer entries so far, already
    encoded (44 bytes a chunk, where a tuple of three objects cost ~150)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # buffered: 200,000 small chunks must not mean 200,000 write calls
        self.file = open(path, "wb", buffering=1 << 20)  # noqa: SIM115 - closed when sealed
        self.table = bytearray()
        self.count = 0
        self.offset = 0


def _discard(pack: _OpenPack) -> None:
    """Close and delete a temp pack after a failure. Closing flushes the buffer, which fails
    again on a full disk: that error is the one already being raised, so it is not raised twice
    (and must not stop the temp file's removal)."""
    with contextlib.suppress(OSError):
        pack.file.close()
    pack.path.unlink(missing_ok=True)


class PackWriter:
    """Appends chunks to temp packs and seals each at PACK_TARGET_SIZE. Each thread fills its
    own pack, so two hashing threads never wait for each other's writes. Sealing (fsync when
    configured, rename, index write) runs on a background thread.

    Use as a context manager: leaving the block seals every open pack and waits for every seal,
    so once it returns every chunk written is durable and findable. A pack's id is BLAKE3 of its
    trailer, which lists each chunk's id, offset and length: the chunk ids already commit to the
    content, so the data is not hashed a second time.

    ``repack`` (gc) copies chunks the store already holds, so it skips the "already stored" check,
    and fsyncs even when ``core.fsync`` is off: the old pack is deleted once the new one is sealed,
    and a power cut must not take both. ``sealed`` lists the packs written.

    ``staging`` (``cas add --to-remote``) sends each sealed pack elsewhere and takes it out of the
    local store: every thread then fills one shared pack, and a seal waits for the previous
    pack's upload, so at most two packs are ever on disk (one filling, one uploading); a chunk
    the staging's remote already holds is not stored again.
    """

    def __init__(
        self, objects: ObjectStore, repack: bool = False, staging: Staging | None = None
    ) -> None:
        self.objects = objects
        self.repack = repack
        self.staging = staging
        self._local: threading.local | types.SimpleNamespace = (
            threading.local() if staging is None else types.SimpleNamespace(pack=None)
        )
        self._shared = threading.Lock() if staging is not None else contextlib.nullcontext()
        self._open: list[_OpenPack] = []
        self._pending: set[bytes] = set()
        self._lock = threading.Lock()
        self._sealer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cas-seal")
        self._sealing: list[Future[None]] = []
        self.new_bytes = 0
        self._cannot_write = f"cannot write a pack to the store {objects.local.root}"
        self.sealed: list[str] = []

    def __enter__(self) -> PackWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is None:
                for pack in list(self._open):
                    self._seal(pack)
                for fut in self._sealing:
                    fut.result()
        finally:
            for pack in list(self._open):  # after any error: packs that will never be sealed
                self._open.remove(pack)
                _discard(pack)
            self._sealer.shutdown(wait=True)

    def add(self, chunk_id: bytes, data: bytes | memoryview, at: int | None = None) -> bool:
        """Store a chunk unless the store already has it; True if it was new.

        ``at`` is the chunk's offset in its file, given for files of ALIGN_MIN_SIZE or more: the
        chunk then lands at a pack offset equal to it modulo BLOCK (after up to BLOCK - 1 zero
        bytes of padding), so a checkout on a filesystem with reflinks can clone the file's run
        of chunks out of the pack instead of copying it (:meth:`ObjectStore.clonable`).
        """
        with self._lock:
            if chunk_id in self._pending or (not self.repack and self.objects.has_chunk(chunk_id)):
                return False
            if self.staging is not None and self.staging.has_chunk(chunk_id):
                return False
            self._pending.add(chunk_id)
            self.new_bytes += len(data)
        with self._shared:
            self._append(chunk_id, data, at)
        return True

    def _append(self, chunk_id: bytes, data: bytes | memoryview, at: int | None) -> None:
        pack: _OpenPack | None = getattr(self._local, "pack", None)
        try:
            if pack is None:
                pack = _OpenPack(self.objects.local.temp_path())
                self._local.pack = pack
                with self._lock:
                    self._open.append(pack)
            pad = 0 if at is None else (at - pack.offset) % BLOCK
            if pad:
                pack.file.write(bytes(pad))
                pack.offset += pad
            pack.file.write(data)
        except OSError as err:
            raise storage_error(err, self._cannot_write) from err
        pack.table += _ENTRY.pack(chunk_id, pack.offset, len(data))
        pack.count += 1
        pack.offset += len(data)
        if pack.offset >= PACK_TARGET_SIZE:
            self._local.pack = None
            self._seal(pack)

    def _seal(self, pack: _OpenPack) -> None:
        with self._lock:
            self._open.remove(pack)
        trailer = bytes(pack.table) + _TAIL.pack(pack.count, PACK_MAGIC)
        try:
            pack.file.write(trailer)
            pack.file.flush()
        except OSError as err:
            _discard(pack)
            raise storage_error(err, self._cannot_write) from err
        pack_id = hashing.digest(trailer).hex()
        if self.staging is not None:
            for fut in self._sealing:  # the previous pack is uploaded before another is sealed
                fut.result()
        self._sealing.append(self._sealer.submit(self._commit, pack, pack_id))

    def _commit(self, pack: _OpenPack, pack_id: str) -> None:
        try:
            if self.objects.local.fsync or self.repack:
                os.fsync(pack.file.fileno())
            pack.file.close()
            self.objects.local.put_file(pack_key(pack_id), pack.path)
        except OSError as err:
            pack.path.unlink(missing_ok=True)
            raise storage_error(err, self._cannot_write) from err
        if self.staging is not None:
            # Sealed under its name first: a kill -9 or a network failure during the upload
            # leaves an ordinary local pack (its index is rebuilt from its trailer), which the
            # rerun's push sends. Its chunks stay pending: later packs of this add skip them.
            self.staging.upload(pack_id, self.objects.local.path(pack_key(pack_id)))
            self.objects.local.delete(pack_key(pack_id))
            self.sealed.append(pack_id)
            return
        self.objects.local.put_bytes(index_key(pack_id), INDEX_MAGIC + pack.table)
        if self.objects.register(pack_id, _ENTRY.iter_unpack(pack.table)):
            with self._lock:  # the index knows them now: the pending set need not
                self._pending.difference_update(c for c, _o, _n in _ENTRY.iter_unpack(pack.table))
        self.sealed.append(pack_id)


def open_merged(local: LocalStore, key: str) -> tuple[MergedIndex | None, bool]:
    """The merged index file at ``key``, mapped; (None, True) if it is damaged, (None, False) if
    absent. One of a version this cas does not know is refused. The one reader of both merged
    indexes: the local store's and the cached ones of remotes (:mod:`cas.ops.remote_index`)."""
    from cas.chunkindex import MergedIndex, NewerIndexError

    path = local.path(key)
    try:
        with open(path, "rb") as f:
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except FileNotFoundError:
        return None, False
    except ValueError:  # an empty file cannot be mapped
        return None, True
    except OSError as err:
        raise storage_error(err, f"cannot read {path}") from err
    try:
        return MergedIndex(memoryview(mapped), str(path), mapped), False
    except NewerIndexError:
        raise
    except CorruptObjectError:
        return None, True


def write_index_file(
    local: LocalStore,
    key: str,
    merged: MergedIndex | None,
    live: Sequence[bool],
    bodies: Sequence[tuple[str, bytes | memoryview]],
) -> MergedIndex:
    """Write the merged index of ``merged``'s live packs plus ``bodies`` (pack id, verified
    index entries) to ``key``: a temp file, fsync if configured, then a rename, so a kill -9
    leaves the old file or the new one, never a part. Returns the new file, mapped."""
    from cas.chunkindex import write_merged

    tmp = local.temp_path()
    try:
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            write_merged(fd, merged, live, bodies)
            if local.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise storage_error(err, f"cannot write the chunk index to {local.root}") from err
    local.put_file(key, tmp)
    fresh, damaged = open_merged(local, key)
    if fresh is None or damaged:
        raise CorruptObjectError(f"the chunk index just written to {local.path(key)} is "
                                 "unreadable; delete it and rerun")  # fmt: skip
    return fresh


class Staging(Protocol):
    """Where ``cas add --to-remote`` sends sealed packs (:class:`cas.ops.transfer.Staging`)."""

    def has_chunk(self, chunk_id: bytes) -> bool: ...

    def upload(self, pack_id: str, path: Path) -> None: ...


class ObjectStore:
    """Chunks and manifests on a local store. Thread-safe for readers."""

    def __init__(self, local: LocalStore) -> None:
        self.local = local
        self._index: ChunkIndex | None = None
        self._lock = threading.Lock()
        self._fds: OrderedDict[str, int] = OrderedDict()
        self.reads = 0

    # -- index -------------------------------------------------------------------------------
    @property
    def index(self) -> ChunkIndex:
        """chunk id -> location, loaded on first use (status and unchanged adds never need it)."""
        if self._index is None:
            with self._lock:
                if self._index is None:
                    self._index = self._load_index()
        return self._index

    def _load_index(self) -> ChunkIndex:
        """The merged index, plus a delta of the present packs it does not cover (their index
        files, each verified against its pack id; a pack sealed but killed before its index
        file was written is re-indexed from its trailer). Merges when the delta has piled up,
        or the merged index is missing or damaged while there is anything to merge (it is
        derived data: rebuilt from the index files)."""
        present = set(self.pack_ids())
        merged, damaged = self._open_merged()
        live = [p in present for p in merged.packs] if merged is not None else []
        covered = set(merged.packs) if merged is not None else set()
        fresh: dict[str, list[tuple[bytes, int, int]]] = {}
        for pack_id in sorted(present - covered):
            try:
                fresh[pack_id] = self.pack_entries(pack_id)
            except (CorruptObjectError, ObjectMissingError):
                continue  # its chunks count as absent (see pack_entries)
        pending = sum(len(e) for e in fresh.values())
        dead = sum(n for n, alive in zip(merged.counts, live) if not alive) if merged else 0
        piled = damaged or len(fresh) > MERGE_PACKS or pending > MERGE_ENTRIES
        if (fresh and piled) or dead > MERGE_ENTRIES:
            try:
                return ChunkIndex(*self._merge(merged, live, fresh))
            except StorageError:
                pass  # a full disk or a read-only shared store: the delta answers instead
        index = ChunkIndex(merged, live)
        for pack_id, entries in fresh.items():
            index.add(pack_id, entries)
        return index

    def _open_merged(self) -> tuple[MergedIndex | None, bool]:
        return open_merged(self.local, MERGED_INDEX_KEY)

    def _merge(
        self,
        merged: MergedIndex | None,
        live: Sequence[bool],
        packs: Mapping[str, list[tuple[bytes, int, int]]] | Sequence[str],
    ) -> tuple[MergedIndex, list[bool]]:
        """Write a merged index of ``merged``'s live packs plus ``packs`` (temp file, fsync if
        configured, rename: a kill -9 leaves the old index or the new one) and map it. A
        damaged old index is dropped and every pack merged from its index file instead."""
        if merged is not None:
            try:
                merged.verify()
            except CorruptObjectError:
                alive = (p for p, a in zip(merged.packs, live) if a)
                packs = sorted({*packs, *alive})
                merged, live = None, []
        bodies = []
        for pack_id in packs:
            try:
                entries = (
                    packs[pack_id] if isinstance(packs, Mapping) else self.pack_entries(pack_id)
                )
            except (CorruptObjectError, ObjectMissingError):
                continue  # its chunks count as absent (see pack_entries)
            bodies.append((pack_id, encode_entries(entries)))
        fresh = write_index_file(self.local, MERGED_INDEX_KEY, merged, live, bodies)
        return fresh, [True] * len(fresh.packs)

    def pack_entries(self, pack_id: str) -> list[tuple[bytes, int, int]]:
        """A pack's chunks (id, offset, length), verified against its id: from its index file,
        or, when that is missing (a pack sealed by a process killed before it wrote the index)
        or fails the check, from the pack's trailer, and the index file is then rewritten.
        Raises CorruptObjectError when the trailer fails too, ObjectMissingError when the pack
        is gone."""
        key = index_key(pack_id)
        damaged = False
        try:
            return checked_index(self.local.get(key), pack_id, key, LOCAL_REPAIR)
        except KeyError:
            pass
        except CorruptObjectError:
            damaged = True
        entries = self.trailer(pack_id)
        if damaged:
            self.local.delete(key)
        self.local.put_bytes(key, INDEX_MAGIC + encode_entries(entries))
        return entries

    def trailer(self, pack_id: str) -> list[tuple[bytes, int, int]]:
        """The verified trailer of a local pack (see :func:`verified_trailer`)."""
        key = pack_key(pack_id)
        try:
            size = self.local.size(key)
        except KeyError:
            raise ObjectMissingError(
                f"pack {pack_id} is not in the local store; run 'cas fsck'", object_id=pack_id
            ) from None
        return verified_trailer(
            lambda off, n: self.local.get_range(key, off, n), size, pack_id, LOCAL_REPAIR
        )

    def forget_index(self) -> None:
        """Drop the loaded index: other processes sealed packs it does not know (workers of
        ``cas add --executor``); the next lookup loads it again."""
        with self._lock:
            self._index = None

    def register(self, pack_id: str, entries: Iterable[tuple[bytes, int, int]]) -> bool:
        """Add a new pack's chunks to the index, if it is loaded (else it is loaded later, from
        the index file just written); True if they were added. Past DELTA_MAX chunks (or an
        eighth of the merged index) in the delta, it is merged in, so a long add's memory stays
        bounded."""
        if self._index is None:
            return False
        with self._lock:
            self._index.add(pack_id, entries)
            current = self._index.merged
            if self._index.delta_size > max(DELTA_MAX, len(current[0]) // 8 if current else 0):
                merged, live = current if current is not None else (None, b"")
                covered = set(merged.packs) if merged is not None else set()
                packs = [p for p in self._index.delta_packs if p not in covered]
                self._index.swap(*self._merge(merged, list(live), packs))
        return True

    def has_chunk(self, chunk_id: bytes) -> bool:
        return chunk_id in self.index

    def missing_chunks(self, chunk_ids: Iterable[bytes]) -> set[bytes]:
        return self.index.missing(chunk_ids)

    def verify_index(self) -> str | None:
        """What is wrong with the merged index, if anything (fsck reads it all: a checksum)."""
        merged, damaged = self._open_merged()
        try:
            if damaged:
                raise CorruptObjectError(f"{self.local.path(MERGED_INDEX_KEY)} is damaged")
            if merged is not None:
                merged.verify()
        except CorruptObjectError as err:
            return f"{err}; delete it: it is rebuilt from the index files"
        return None

    def writer(self, repack: bool = False, staging: Staging | None = None) -> PackWriter:
        return PackWriter(self, repack, staging)

    # -- chunk reads -------------------------------------------------------------------------
    def _fd(self, pack_id: str) -> int:
        with self._lock:
            fd = self._fds.get(pack_id)
            if fd is not None:
                self._fds.move_to_end(pack_id)
                return fd
            try:
                fd = os.open(self.local.path(pack_key(pack_id)), os.O_RDONLY)
            except FileNotFoundError:
                raise ObjectMissingError(
                    f"pack {pack_id} left the local store while being read; rerun"
                ) from None
            except OSError as err:
                raise storage_error(err, f"cannot read pack {pack_id}") from err
            self._fds[pack_id] = fd
            if len(self._fds) > _MAX_OPEN_PACKS:
                _old, old_fd = self._fds.popitem(last=False)
                os.close(old_fd)
            return fd

    def _location(self, chunk_id: bytes) -> Location:
        loc = self.index.get(chunk_id)
        if loc is None:
            raise ObjectMissingError(
                f"chunk {chunk_id.hex()} is not in the local store; run 'cas pull' to fetch it",
                object_id=chunk_id.hex(),
            )
        return loc

    def read_chunk(self, chunk_id: bytes) -> bytes:
        (data,) = self.read_chunks([chunk_id])
        return data

    def read_chunks(self, chunk_ids: Sequence[bytes]) -> Iterator[bytes]:
        """The chunks in order, each verified. Chunks that lie back to back in one pack (the
        chunks of one file usually do) are read with a single pread of up to 8 MiB, so a 1 MiB
        range of a file costs one read, not sixteen; ``reads`` counts the preads."""
        locs = [self._location(cid) for cid in chunk_ids]
        i = 0
        while i < len(locs):
            first = locs[i]
            j = i + 1
            while (
                j < len(locs)
                and locs[j].pack == first.pack
                and locs[j].offset == locs[j - 1].offset + locs[j - 1].length
                and locs[j].offset + locs[j].length - first.offset <= _MAX_READ
            ):
                j += 1
            span = locs[j - 1].offset + locs[j - 1].length - first.offset
            data = os.pread(self._fd(first.pack), span, first.offset)
            self.reads += 1
            for cid, loc in zip(chunk_ids[i:j], locs[i:j]):
                piece = data[loc.offset - first.offset : loc.offset - first.offset + loc.length]
                if len(piece) != loc.length or hashing.digest(piece) != cid:
                    raise CorruptObjectError(
                        f"chunk {cid.hex()} in pack {loc.pack} is corrupt; {LOCAL_REPAIR}",
                        object_id=cid.hex(),
                    )
                yield piece
            i = j

    # -- clones ------------------------------------------------------------------------------
    def clonable(self, chunks: Sequence[tuple[bytes, int]]) -> list[Span]:
        """The block-aligned ranges of a file (its chunk list) that lie back to back in one pack
        at offsets equal to theirs modulo BLOCK: what a checkout may clone rather than copy. A
        file added whole has all but its first and last partial blocks (and a block either side
        of each pack boundary) in such spans; chunks it shares with other files usually not."""
        runs: list[Span] = []
        pos = 0
        for cid, length in chunks:
            loc = self._location(cid)
            last = runs[-1] if runs else None
            if (
                last is not None
                and last.end == pos
                and last.pack == loc.pack
                and last.offset + pos - last.start == loc.offset
            ):
                runs[-1] = Span(last.start, pos + length, last.pack, last.offset)
            elif (loc.offset - pos) % BLOCK == 0:
                runs.append(Span(pos, pos + length, loc.pack, loc.offset))
            pos += length
        return [blocks for run in runs if (blocks := run.whole_blocks()) is not None]

    def clone(self, span: Span, fd: int) -> bool:
        """Clone a span into ``fd`` at the span's file offset; False where the filesystem
        cannot (see :mod:`cas.clone`). Unverified: the caller reads the chunks to check them."""
        return clone_range(self._fd(span.pack), span.offset, span.end - span.start, fd, span.start)

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()

    # -- manifests ---------------------------------------------------------------------------
    def has_manifest(self, manifest_id: str) -> bool:
        return self.local.exists(manifest_key(manifest_id))

    def put_manifest(self, manifest_id: str, data: bytes | memoryview) -> None:
        self.local.put_bytes(manifest_key(manifest_id), data)

    def get_manifest_bytes(self, manifest_id: str) -> bytes:
        try:
            return self.local.get(manifest_key(manifest_id))
        except KeyError:
            raise ObjectMissingError(
                f"manifest {manifest_id} is not in the local store; "
                "run 'cas pull' to fetch it, or check the pointer",
                object_id=manifest_id,
            ) from None
        except OSError as err:
            raise StorageError(f"cannot read manifest {manifest_id}: {err.strerror}") from err

    def pack_ids(self) -> list[str]:
        return [key.rsplit("/", 1)[1] for key in self.local.list("packs/")]

    def manifest_ids(self) -> list[str]:
        return [key.rsplit("/", 1)[1] for key in self.local.list("manifests/")]
