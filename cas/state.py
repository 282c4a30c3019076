"""The stat cache: (path, size, mtime_ns, inode) -> "same content as that path's row of manifest
M", per tracked target, like git's index. Re-adding or ``cas status`` on an unchanged dataset then
hashes nothing. It is a cache only: deleting ``.cas/state/`` changes no result, only speed.

Racy entries are never recorded: a file whose mtime is too close to the moment it was checked
could be modified again within the same timestamp tick without any visible stat change. The
margin is 50 ms on filesystems with sub-second timestamps and 2 s on those without.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather

from cas import hashing
from cas.workspace import Entry, temp_name

VERSION = b"1"
_FINE_MARGIN_NS = 50_000_000
_COARSE_MARGIN_NS = 2_000_000_000


def trustworthy(mtime_ns: int, checked_ns: int) -> bool:
    """Whether a stat taken at ``checked_ns`` can vouch for the content from now on."""
    coarse = mtime_ns % 1_000_000_000 == 0
    return mtime_ns < checked_ns - (_COARSE_MARGIN_NS if coarse else _FINE_MARGIN_NS)


@dataclass
class StatSnapshot:
    """What the cache knows about one target."""

    manifest_id: str
    paths: list[str]
    sizes: np.ndarray
    mtimes: np.ndarray
    inos: np.ndarray

    def matching(self, entries: list[Entry]) -> list[bool]:
        """For each entry, whether its stat matches the cached one (same path, size, mtime,
        inode). Vectorised when the file list is unchanged, the common case."""
        if [e.path for e in entries] == self.paths:
            sizes = np.fromiter((e.size for e in entries), np.uint64, len(entries))
            mtimes = np.fromiter((e.mtime_ns for e in entries), np.int64, len(entries))
            inos = np.fromiter((e.ino for e in entries), np.uint64, len(entries))
            same = (sizes == self.sizes) & (mtimes == self.mtimes) & (inos == self.inos)
            return same.tolist()
        known = {
            p: (int(s), int(m), int(i))
            for p, s, m, i in zip(self.paths, self.sizes, self.mtimes, self.inos)
        }
        return [known.get(e.path) == e.stat_key for e in entries]


class StatCache:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _file(self, target: str) -> Path:
        return self.folder / hashing.digest(target.encode()).hex()[:32]

    def load(self, target: str) -> StatSnapshot | None:
        path = self._file(target)
        try:
            table = feather.read_table(path)
        except FileNotFoundError:
            return None
        except (pa.ArrowInvalid, OSError):
            path.unlink(missing_ok=True)  # a damaged cache is only lost speed
            return None
        meta = table.schema.metadata or {}
        if meta.get(b"version") != VERSION or meta.get(b"target") != target.encode():
            return None
        return StatSnapshot(
            meta[b"manifest"].decode(),
            table.column("path").to_pylist(),
            table.column("size").to_numpy(),
            table.column("mtime_ns").to_numpy(),
            table.column("ino").to_numpy(),
        )

    def save(self, target: str, manifest_id: str, entries: Iterable[tuple[Entry, int]]) -> None:
        """Record entries (each with the time its stat was taken) that are not racy."""
        kept = [e for e, checked in entries if trustworthy(e.mtime_ns, checked)]
        table = pa.table(
            {
                "path": pa.array([e.path for e in kept], pa.string()),
                "size": pa.array([e.size for e in kept], pa.uint64()),
                "mtime_ns": pa.array([e.mtime_ns for e in kept], pa.int64()),
                "ino": pa.array([e.ino for e in kept], pa.uint64()),
            }
        ).replace_schema_metadata(
            {b"version": VERSION, b"target": target.encode(), b"manifest": manifest_id.encode()}
        )
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self._file(target)
        tmp = temp_name(final)
        try:
            feather.write_feather(table, tmp, compression="uncompressed")
            os.replace(tmp, final)
        except OSError:
            tmp.unlink(missing_ok=True)
            final.unlink(missing_ok=True)  # a stale cache must not survive a failed update
            raise

    def drop(self, target: str) -> None:
        self._file(target).unlink(missing_ok=True)
