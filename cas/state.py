"""The stat cache: (path, size, mtime_ns, inode, ctime_ns, executable bit) -> "same content and
mode as that path's row of manifest M", per tracked target, like git's index. Re-adding or
``cas status`` on an unchanged dataset then hashes nothing. It is a cache only: deleting
``.cas/state/`` changes no result, only speed.

Racy entries are never recorded: a file whose mtime (or ctime) is too close to the moment it was
checked could be modified again within the same timestamp tick without any visible stat change. The
margin is 50 ms on filesystems with sub-second timestamps and 2 s on those without.

The file is a small binary format read with the stdlib alone (no numpy or pyarrow import on the
fast path): a JSON header line, then the NUL-separated paths, then an array of signed 64-bit
(size, mtime_ns, inode, ctime_ns) quadruples in native byte order, then one executable byte (0 or
1) per path. It is machine-local, never shared. ``chmod`` changes neither size nor mtime, and
``os.utime`` (``touch -r``, ``rsync -t``, ``tar x``) can put an old mtime back on new content of
the same size: a key of (size, mtime, inode) alone vouched for the old mode or bytes. The
executable bit and ctime (which every such change sets, and no user can set back) close both.
Version 1 files, which lacked them, are ignored: that costs one rehash. The racy check looks at
the later of mtime and ctime.
"""

from __future__ import annotations

import json
import os
import time
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cas import hashing
from cas.store.local import storage_error
from cas.workspace import TEMP_MARK, Entry, Listing, drop_orphan, temp_name
from cas.workspace import WIDTH as W

VERSION = 2
_FINE_MARGIN_NS = 50_000_000
_COARSE_MARGIN_NS = 2_000_000_000


def trustworthy(mtime_ns: int, checked_ns: int) -> bool:
    """Whether a stat taken at ``checked_ns`` can vouch for the content from now on."""
    coarse = mtime_ns % 1_000_000_000 == 0
    return mtime_ns < checked_ns - (_COARSE_MARGIN_NS if coarse else _FINE_MARGIN_NS)


def settled(written: Listing) -> Listing:
    """For files cas itself just wrote: wait out the racy margin after the newest write (at most
    50 ms on a fine-grained filesystem), then return those the cache may record. Git trusts the
    files it checks out the same way; only a second writer racing cas's own checkout within one
    timestamp tick would go unseen. On a filesystem with coarse timestamps waiting 2 s is worse
    than rehashing the few racy files later, so those are left out instead."""
    if not written:
        return written
    mtimes = written.changed_ns()
    newest = max(mtimes)
    while not trustworthy(newest, now := time.time_ns()):
        if newest % 1_000_000_000 == 0:
            return written.subset(i for i, m in enumerate(mtimes) if trustworthy(m, now))
        time.sleep(0.005)
    return written


def trusted(pairs: Iterable[tuple[Entry, int]]) -> Listing:
    """The entries (each with the time its stat was taken) the cache may record: not racy."""
    kept = Listing()
    for entry, checked in pairs:
        if trustworthy(entry.changed_ns, checked):
            kept.add_entry(entry)
    return kept


@dataclass
class StatSnapshot:
    """What the cache knows about one target."""

    manifest_id: str
    paths: list[str]
    stats: array  # flat (size, mtime_ns, ino, ctime_ns) quadruples, aligned with paths
    execs: bytes  # executable bit (0 or 1) per path, aligned with paths
    complete: bool  # every file of the manifest is listed (none was left out as racy)

    def unchanged(self, entries: Listing, manifest_id: str | None = None) -> bool:
        """True when ``entries`` are exactly the manifest's files, untouched since cached: the
        fast path of status, add and checkout, which then read no manifest at all. Columns are
        compared: no Entry is built."""
        if not self.complete or (manifest_id is not None and manifest_id != self.manifest_id):
            return False
        return (
            entries.paths == self.paths
            and entries.stats == self.stats
            and entries.execs == self.execs
        )

    def matching(self, entries: Listing) -> list[bool]:
        """For each entry, whether its stat and executable bit match the cached ones. One
        C-level comparison when nothing changed, the common case."""
        mine, theirs = entries.stats, self.stats
        my_x, their_x = entries.execs, self.execs
        if entries.paths == self.paths:
            if mine == theirs and my_x == their_x:
                return [True] * len(entries)
            return [
                my_x[i] == their_x[i] and mine[W * i : W * i + W] == theirs[W * i : W * i + W]
                for i in range(len(entries))
            ]
        known = {p: (theirs[W * i : W * i + W], their_x[i]) for i, p in enumerate(self.paths)}
        return [
            known.get(p) == (mine[W * i : W * i + W], my_x[i]) for i, p in enumerate(entries.paths)
        ]


class StatCache:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _file(self, target: str) -> Path:
        return self.folder / hashing.digest(target.encode()).hex()[:32]

    def load(self, target: str) -> StatSnapshot | None:
        """The cached snapshot, or None; a damaged or foreign file is ignored (lost speed only)."""
        try:
            data = self._file(target).read_bytes()
        except FileNotFoundError:
            return None
        try:
            head, _, rest = data.partition(b"\n")
            meta = json.loads(head)
            if meta.get("version") != VERSION or meta.get("target") != target:
                return None
            count, paths_len = int(meta["count"]), int(meta["paths_bytes"])
            paths = rest[:paths_len].decode("utf-8").split("\0") if count else []
            stats_end = paths_len + 8 * W * count
            stats = array("q")
            stats.frombytes(rest[paths_len:stats_end])
            execs = rest[stats_end:]
            if len(paths) != count or len(stats) != W * count or len(execs) != count:
                return None
            if execs.strip(b"\0\1"):
                return None
            return StatSnapshot(str(meta["manifest"]), paths, stats, execs, bool(meta["complete"]))
        except (ValueError, KeyError, TypeError):
            return None

    def save(self, target: str, manifest_id: str, kept: Listing, files: int) -> None:
        """Record ``kept``, entries none of which is racy (:func:`trusted`); ``files`` is how
        many files the manifest has, to know whether the record is complete."""
        kept.sort()
        paths = "\0".join(kept.paths).encode("utf-8")
        head = {
            "version": VERSION,
            "target": target,
            "manifest": manifest_id,
            "count": len(kept),
            "paths_bytes": len(paths),
            "complete": len(kept) == files,
        }
        final = self._file(target)
        tmp = temp_name(final)
        if self.folder.is_dir():
            with os.scandir(self.folder) as others:  # a save killed before its rename
                for other in others:
                    if TEMP_MARK in other.name:
                        drop_orphan(other.path, other.name)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                # one write whatever the number of entries (tofile writes none for an empty array)
                f.write(
                    json.dumps(head).encode() + b"\n" + paths + kept.stats.tobytes() + kept.execs
                )
            os.replace(tmp, final)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            final.unlink(missing_ok=True)  # a stale cache must not survive a failed update
            raise storage_error(err, f"cannot write the stat cache in {self.folder}") from err
