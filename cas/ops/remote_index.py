"""Which remote pack holds a chunk, for the chunks a command handles: a remote's chunk index,
cached in the local store as a merged index file (docs/format.md, "Remote chunk index").

Push, fetch, verify, ``add --to-remote`` and gc ask about the chunks they handle, and a remote
of 16M chunks must not cost a 3 GiB dict of every one per command. So the remote's index files
(each verified against its pack id, as every index file is) are merged into
``remote-chunk-index/<id of the remote's URL>``, a file in the chunk index format of the local
store (:mod:`cas.chunkindex`, written by :func:`cas.objects.write_index_file`, the local merged
index's writer), mapped, never loaded. Its pack table names the remote packs it covers; each
command brings it level with the remote's listing of ``index/`` (one listing per prefix, as
before): packs listed since are merged in (their index files downloaded once, kept under
``remote-index/``), packs gone from the listing are dropped by the same rewrite. A cache file
failing its structure or checksum is rebuilt from those kept index files, never trusted.

Lookups skip entries of packs the ``packs/`` listing lacks (an interrupted push, a remote gc's
half-deleted pack), as the local index skips packs gc deleted: such a chunk is no holding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from cas import hashing
from cas.errors import CorruptObjectError
from cas.objects import DELTA_MAX, Location, open_merged, write_index_file

if TYPE_CHECKING:
    import numpy as np

    from cas.chunkindex import MergedIndex
    from cas.store.local import LocalStore

#: Where the cached remote chunk indexes live in the local store (one file per remote URL).
REMOTE_CHUNK_INDEX = "remote-chunk-index"
_ENTRY_BYTES = 44  # an index file entry: id, offset u64, length u32
_BATCH = 1 << 20  # ids per vectorised search, as in ObjectStore.missing_chunks

#: (pack id, verified index entries as bytes) of each pack asked for, in that order.
Bodies = Callable[[list[str]], Iterable[tuple[str, bytes | memoryview]]]


def cache_key(url: str) -> str:
    """The cache file of the remote at ``url``: named by the URL, not the remote's name, which a
    ``cas remote modify`` may point elsewhere."""
    return f"{REMOTE_CHUNK_INDEX}/{hashing.digest(url.encode()).hex()[:32]}"


class RemoteIndex:
    """The chunks a remote's listed index files name, asked about in batches. ``listed``: the
    packs whose index file the remote lists (what the cache covers); ``present``: the packs it
    lists. A chunk is *held* when a pack in both lists holds it."""

    def __init__(self, merged: MergedIndex | None, listed: set[str], present: set[str]) -> None:
        import numpy as np

        self._merged = merged
        packs = merged.packs if merged is not None else []
        self._listed = np.array([p in listed for p in packs], dtype=bool)
        self._held = self._listed & np.array([p in present for p in packs], dtype=bool)
        self._held_bytes = self._held.tobytes()  # one lookup: indexing bytes gives an int

    def __contains__(self, chunk_id: object) -> bool:
        """Whether the remote holds the chunk: the one lookup ``add --to-remote`` makes per
        chunk (a binary search of the mapped keys)."""
        if self._merged is None or not isinstance(chunk_id, bytes) or len(chunk_id) != 32:
            return False
        return self._merged.find(chunk_id, self._held_bytes) >= 0

    def locate(self, chunk_ids: Iterable[bytes], listed: bool = False) -> dict[bytes, Location]:
        """Where the remote holds each of these chunks (absent: it does not), in vectorised
        batches. ``listed``: also in packs whose index file is listed but whose pack is not
        (verify names those packs as missing)."""
        import numpy as np

        found: dict[bytes, Location] = {}
        merged = self._merged
        if merged is None:
            return found
        mask = self._listed if listed else self._held
        for batch, pos in self._positions(chunk_ids, mask):
            hit = np.flatnonzero(pos >= 0)
            at = pos[hit]
            for i, number, offset, length in zip(
                hit.tolist(), merged.pack_numbers[at].tolist(), merged.offsets[at].tolist(),
                merged.lengths[at].tolist(),
            ):  # fmt: skip
                found[batch[i]] = Location(merged.packs[number], offset, length)
        return found

    def missing(self, chunk_ids: Iterable[bytes]) -> set[bytes]:
        """The chunks the remote does not hold, in vectorised batches."""
        import numpy as np

        wanted = list(dict.fromkeys(chunk_ids))
        if self._merged is None:
            return set(wanted)
        absent = {cid for cid in wanted if len(cid) != 32}  # never an id: never indexed
        for batch, pos in self._positions(wanted, self._held):
            absent.update(batch[i] for i in np.flatnonzero(pos < 0))
        return absent

    def _positions(
        self, chunk_ids: Iterable[bytes], mask: np.ndarray
    ) -> Iterable[tuple[list[bytes], np.ndarray]]:
        """(ids, their positions in the cache or -1) per batch of up to a million ids."""
        assert self._merged is not None
        wanted = [cid for cid in dict.fromkeys(chunk_ids) if len(cid) == 32]
        for start in range(0, len(wanted), _BATCH):
            batch = wanted[start : start + _BATCH]
            yield batch, self._merged.find_many(b"".join(batch), len(batch), mask)


def remote_index(
    local: LocalStore, url: str, listed: set[str], present: set[str], bodies: Bodies
) -> RemoteIndex:
    """The remote's chunk index from its cache file, first brought level with ``listed`` (the
    packs whose index files the remote lists): new packs merged in, packs no longer listed
    dropped, a damaged file rebuilt. An up-to-date cache costs opening it and one checksum pass
    (a flipped byte would otherwise send a fetch to wrong offsets); nothing is downloaded."""
    key = cache_key(url)
    merged, _damaged = open_merged(local, key)  # damaged: None, rebuilt below
    if merged is not None:
        try:
            merged.verify()
        except CorruptObjectError:
            merged = None
    covered = set(merged.packs) if merged is not None else set()
    if merged is None and not listed:
        return RemoteIndex(None, listed, present)
    if merged is None or covered != listed:
        merged = _update(local, key, merged, listed, sorted(listed - covered), bodies)
    return RemoteIndex(merged, listed, present)


def _update(
    local: LocalStore,
    key: str,
    merged: MergedIndex | None,
    listed: set[str],
    new: list[str],
    bodies: Bodies,
) -> MergedIndex:
    """Merge ``new`` packs into the cache and drop the packs no longer listed. The index files
    come in as they download; each time they pass DELTA_MAX entries or an eighth of the cache
    (the rule of a long local add), they are merged in and the cache renamed into place, so
    memory follows that share and a killed first build keeps what it merged."""
    live = [p in listed for p in merged.packs] if merged is not None else []
    pending: list[tuple[str, bytes | memoryview]] = []
    entries = 0
    for pack_id, body in bodies(new):
        pending.append((pack_id, body))
        entries += len(body) // _ENTRY_BYTES
        if entries > max(DELTA_MAX, len(merged) // 8 if merged is not None else 0):
            merged = write_index_file(local, key, merged, live, pending)
            live = [True] * len(merged.packs)
            pending, entries = [], 0
    if pending or merged is None or not all(live):
        merged = write_index_file(local, key, merged, live, pending)
    return merged
