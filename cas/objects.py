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
import os
import struct
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cas import hashing
from cas.clone import BLOCK, clone_range
from cas.errors import CorruptObjectError, ObjectMissingError, StorageError
from cas.store.local import LocalStore, storage_error

PACK_MAGIC = b"CASPACK1"
INDEX_MAGIC = b"CASIDX01"
_ENTRY = struct.Struct("<32sQI")  # chunk id, offset in pack, length
_TAIL = struct.Struct("<I8s")  # entry count, magic
PACK_TARGET_SIZE = 32 * 1024 * 1024
_MAX_OPEN_PACKS = 64
_MAX_READ = 8 * 1024 * 1024
_PACK_SHIFT = 72  # a code is pack number << 72 | offset << 32 | length (u32)
_OFFSET_MASK = (1 << 40) - 1
# Files this large get their chunks block-aligned in packs (see PackWriter.add): at most BLOCK - 1
# bytes of padding per pack a file's new chunks start in, under 0.4% of the file.
ALIGN_MIN_SIZE = 1 << 20


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


class ChunkIndex(Mapping[bytes, Location]):
    """chunk id -> :class:`Location`, one int per chunk: a dataset of 1,000,000 small files
    has 1,000,000 chunks, and a Location object (with its two ints) per chunk cost ~100 bytes
    more. The int packs the pack's number (into a list of pack ids), the offset and the length."""

    __slots__ = ("_codes", "_numbers", "_packs")

    def __init__(self) -> None:
        self._codes: dict[bytes, int] = {}
        self._packs: list[str] = []
        self._numbers: dict[str, int] = {}

    def add(self, pack_id: str, entries: Iterable[tuple[bytes, int, int]]) -> None:
        number = self._numbers.setdefault(pack_id, len(self._packs))
        if number == len(self._packs):
            self._packs.append(pack_id)
        base = number << _PACK_SHIFT
        codes = self._codes
        for cid, off, length in entries:
            codes[cid] = base | (off << 32) | length

    def __getitem__(self, chunk_id: bytes) -> Location:
        code = self._codes[chunk_id]
        return Location(self._packs[code >> _PACK_SHIFT], (code >> 32) & _OFFSET_MASK,
                        code & 0xFFFFFFFF)  # fmt: skip

    def __contains__(self, chunk_id: object) -> bool:
        return chunk_id in self._codes

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._codes)

    def __len__(self) -> int:
        return len(self._codes)


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


def iter_entries(data: bytes | memoryview, where: str) -> Iterator[tuple[bytes, int, int]]:
    """A pack table's entries one at a time: loading the index of 1,000,000 chunks through a
    list would hold a tuple per chunk at once."""
    if len(data) % _ENTRY.size:
        raise CorruptObjectError(f"{where} is truncated; run 'cas fsck' to find damaged packs")
    return _ENTRY.iter_unpack(data)


def decode_entries(data: bytes | memoryview, where: str) -> list[tuple[bytes, int, int]]:
    return list(iter_entries(data, where))


def trailer_bytes(data: bytes, count: int) -> bytes:
    """The trailer of a pack holding ``count`` chunks: what the pack id hashes."""
    return data[len(data) - _TAIL.size - count * _ENTRY.size :]


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
    """

    def __init__(self, objects: ObjectStore, repack: bool = False) -> None:
        self.objects = objects
        self.repack = repack
        self._local = threading.local()
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
            self._pending.add(chunk_id)
            self.new_bytes += len(data)
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
        return True

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
        self.objects.local.put_bytes(index_key(pack_id), INDEX_MAGIC + pack.table)
        if self.objects.register(pack_id, _ENTRY.iter_unpack(pack.table)):
            with self._lock:  # the index knows them now: the pending set need not
                self._pending.difference_update(c for c, _o, _n in _ENTRY.iter_unpack(pack.table))
        self.sealed.append(pack_id)


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
        index = ChunkIndex()
        indexed = set()
        for key in self.local.list("index/"):
            pack_id = key.rsplit("/", 1)[1]
            data = self.local.get(key)
            if not data.startswith(INDEX_MAGIC):
                raise CorruptObjectError(f"index {key} is damaged; delete it and rerun")
            index.add(pack_id, iter_entries(memoryview(data)[len(INDEX_MAGIC) :], key))
            indexed.add(pack_id)
        for key in self.local.list("packs/"):
            pack_id = key.rsplit("/", 1)[1]
            if pack_id not in indexed:  # sealed but killed before its index was written
                entries = pack_trailer(self.local.get(key), pack_id)
                self.local.put_bytes(index_key(pack_id), INDEX_MAGIC + encode_entries(entries))
                index.add(pack_id, entries)
        return index

    def forget_index(self) -> None:
        """Drop the loaded index: other processes sealed packs it does not know (workers of
        ``cas add --executor``); the next lookup loads it again."""
        with self._lock:
            self._index = None

    def register(self, pack_id: str, entries: Iterable[tuple[bytes, int, int]]) -> bool:
        """Add a new pack's chunks to the index, if it is loaded (else it is loaded later, from
        the index file just written); True if they were added."""
        if self._index is None:
            return False
        with self._lock:
            self._index.add(pack_id, entries)
        return True

    def has_chunk(self, chunk_id: bytes) -> bool:
        return chunk_id in self.index

    def missing_chunks(self, chunk_ids: Iterable[bytes]) -> set[bytes]:
        index = self.index
        return {cid for cid in chunk_ids if cid not in index}

    def writer(self, repack: bool = False) -> PackWriter:
        return PackWriter(self, repack)

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
                    f"pack {pack_id} is listed in the index but missing; run 'cas fsck'"
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
                f"chunk {chunk_id.hex()} is not in the local store; run 'cas pull' to fetch it"
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
                        f"chunk {cid.hex()} in pack {loc.pack} is corrupt; "
                        "run 'cas fsck' and restore the pack from a remote ('cas pull')"
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
                "run 'cas pull' to fetch it, or check the pointer"
            ) from None
        except OSError as err:
            raise StorageError(f"cannot read manifest {manifest_id}: {err.strerror}") from err

    def pack_ids(self) -> list[str]:
        return [key.rsplit("/", 1)[1] for key in self.local.list("packs/")]

    def manifest_ids(self) -> list[str]:
        return [key.rsplit("/", 1)[1] for key in self.local.list("manifests/")]
