"""The working tree as cas sees it: regular files under a tracked folder, with their stats.

Symlinks and special files are refused rather than followed: following a link could read (or,
at checkout, write) outside the repository. Names that are not UTF-8 are refused too, because
manifest paths must compare the same on every machine.
"""

from __future__ import annotations

import contextlib
import os
import stat
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from stat import S_ISREG, S_IXUSR
from typing import overload

from cas.errors import PathError
from cas.rows import CONTROL, TEMP_MARK, TEMP_NAME, is_dotgit
from cas.store.local import pid_alive, storage_error

#: The longest file name (bytes) Linux and macOS filesystems accept.
NAME_MAX = 255
WIDTH = 4  # values per file in Listing.stats: size, mtime_ns, inode, ctime_ns
_NAME = attrgetter("name")


@dataclass(slots=True)
class Entry:
    path: str  # relative POSIX path inside the tracked folder
    size: int
    mtime_ns: int
    ino: int
    ctime_ns: int
    executable: bool

    @property
    def stat_key(self) -> tuple[int, int, int, int]:
        return (self.size, self.mtime_ns, self.ino, self.ctime_ns)

    @property
    def changed_ns(self) -> int:
        """When the file last changed in any way the cache could miss: content (mtime) or
        inode (ctime: chmod, rename, and ``os.utime`` setting an old mtime back)."""
        return max(self.mtime_ns, self.ctime_ns)


def entry_of(abspath: str, rel: str, st: os.stat_result) -> Entry:
    return Entry(
        rel, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, bool(st.st_mode & S_IXUSR)
    )


def refuse(mode: int, shown: str) -> PathError:
    """The error for anything that is neither a regular file nor a folder."""
    kind = "symbolic link" if stat.S_ISLNK(mode) else "special file"
    return PathError(
        f"{shown} is a {kind}; cas tracks regular files only: replace it by a copy or remove it",
        path=shown,
    )


class Listing(Sequence[Entry]):
    """A folder's regular files as columns: paths, a flat array of (size, mtime_ns, inode,
    ctime_ns) quadruples (``WIDTH`` values per file) and executable flags. Entries are built
    only when asked for: on the fast path (nothing changed) the stat cache compares the
    columns directly, and building 200,000 objects would cost more than the comparison."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.stats = array("q")
        self.execs = bytearray()

    def __len__(self) -> int:
        return len(self.paths)

    def add(self, path: str, st: os.stat_result) -> None:
        self.paths.append(path)
        self.stats.extend((st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns))
        self.execs.append(1 if st.st_mode & S_IXUSR else 0)

    def add_entry(self, e: Entry) -> None:
        self.paths.append(e.path)
        self.stats.extend(e.stat_key)
        self.execs.append(e.executable)

    def extend(self, other: Listing) -> None:
        self.paths += other.paths
        self.stats += other.stats
        self.execs += other.execs

    def subset(self, keep: Iterable[int]) -> Listing:
        """The entries at the indices ``keep``, in that order."""
        part = Listing()
        s = self.stats
        for i in keep:
            part.paths.append(self.paths[i])
            part.stats.extend(s[WIDTH * i : WIDTH * i + WIDTH])
            part.execs.append(self.execs[i])
        return part

    def sort(self) -> None:
        """In path order (code point order = UTF-8 order); cheap when it already is (timsort)."""
        if self.paths == sorted(self.paths):
            return
        sorted_part = self.subset(sorted(range(len(self.paths)), key=self.paths.__getitem__))
        self.paths, self.stats, self.execs = sorted_part.paths, sorted_part.stats, sorted_part.execs

    @property
    def sizes(self) -> array:
        return self.stats[0::WIDTH]

    @property
    def total_size(self) -> int:
        return sum(self.sizes)

    def changed_ns(self) -> list[int]:
        """:attr:`Entry.changed_ns` of every entry: what the racy check must look at."""
        s = self.stats
        return [max(m, c) for m, c in zip(s[1::WIDTH], s[3::WIDTH])]

    @overload
    def __getitem__(self, i: int) -> Entry: ...

    @overload
    def __getitem__(self, i: slice) -> list[Entry]: ...

    def __getitem__(self, i: int | slice) -> Entry | list[Entry]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        s, j = self.stats, WIDTH * i
        return Entry(self.paths[i], s[j], s[j + 1], s[j + 2], s[j + 3], bool(self.execs[i]))

    def __iter__(self) -> Iterator[Entry]:
        s, execs = self.stats, self.execs
        for i, path in enumerate(self.paths):
            j = WIDTH * i
            yield Entry(path, s[j], s[j + 1], s[j + 2], s[j + 3], bool(execs[i]))


def scan(root: Path, shown: str) -> Listing:
    """Every regular file under ``root``, sorted by path (code point order = UTF-8 order).
    ``shown`` is how ``root`` is named in errors. Leftover checkout temp files are skipped.

    Each folder is walked in name order, depth first, which yields the files in global path
    order unless a folder ``a`` has a sibling such as ``a.txt`` that sorts between ``a`` and
    ``a/``: that rare case is detected (a linear check) and fixed by one sort."""
    listing = Listing()
    _walk(os.fspath(root), "", shown, listing)
    listing.sort()
    return listing


def _walk(folder: str, prefix: str, shown: str, out: Listing) -> None:
    """One folder, then its sub-folders in order. The per-file loop is the hot path of
    ``cas status`` (200,000 iterations for a many-small-files dataset): locals only."""
    try:
        with os.scandir(folder) as it:
            items = sorted(it, key=_NAME)
    except PermissionError:
        raise PathError(
            f"cannot read folder {shown}/{prefix}: permission denied; fix its mode"
        ) from None
    paths_append, stats_extend, execs_append = out.paths.append, out.stats.extend, out.execs.append
    for de in items:
        key = de.name
        if not key.isascii():
            try:
                key.encode("utf-8")
            except UnicodeEncodeError:
                raise PathError(
                    f"{shown}/{prefix}{de.name!r} has a name that is not UTF-8; rename it"
                ) from None
            if CONTROL.search(key) or is_dotgit(key):
                raise _unfit(shown, prefix, key)
        elif not key.isprintable() or (key[0] in ".gG" and is_dotgit(key)):
            raise _unfit(shown, prefix, key)
        if de.is_dir(follow_symlinks=False):
            _walk(de.path, f"{prefix}{key}/", shown, out)
            continue
        if TEMP_MARK in key and TEMP_NAME.fullmatch(key):
            drop_orphan(de.path, key)
            continue
        st = de.stat(follow_symlinks=False)
        mode = st.st_mode
        if not S_ISREG(mode):
            raise refuse(mode, f"{shown}/{prefix}{key}")
        paths_append(prefix + key)
        stats_extend((st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns))
        execs_append(1 if mode & S_IXUSR else 0)


def _unfit(shown: str, prefix: str, name: str) -> PathError:
    """A name no manifest may hold (docs/format.md, "Manifest"): a control character would
    rewrite the terminal of whoever lists it, and a ``.git`` folder written by a checkout would
    be a repository whose config runs commands."""
    if is_dotgit(name):
        return PathError(
            f"{shown}/{prefix}{name} is a Git folder, which cas does not track; "
            f"move it out of {shown}"
        )
    return PathError(f"{shown}/{prefix}{name!r} has a control character in its name; rename it")


def drop_orphan(path: str, name: str) -> None:
    """A temp file (:func:`temp_name`: a checkout's, a pointer's, the stat cache's...) whose
    process is gone was left by a kill -9: the next scan or save removes it, so the rerun leaves
    the tree exactly as it should be. Only names of exactly that form are touched: a user's file
    that merely contains ``.cas-tmp-`` is data."""
    found = TEMP_NAME.fullmatch(name)
    if found and not pid_alive(int(found[1])):
        with contextlib.suppress(FileNotFoundError):  # another scan removed it first
            os.unlink(path)


def sweep(folder: Path) -> None:
    """Remove dead processes' temp files from ``folder`` (not below it): for writers whose
    folder no scan walks (pointers and ``.gitignore`` files beside tracked data, the stat
    cache, hook scripts). A missing folder holds none."""
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if TEMP_MARK in entry.name:
                    drop_orphan(entry.path, entry.name)
    except (FileNotFoundError, NotADirectoryError):
        return


def temp_name(path: Path | str) -> str:
    """The one way cas names a temp file beside ``path`` (same folder, so the final rename is
    atomic): ``.<name>.cas-tmp-<pid>-<8 random hex>``. The pid lets a later scan or
    :func:`sweep` remove it once its process is dead; the random part keeps a reused pid from
    colliding with a kill -9's leftover (O_EXCL would refuse it). The name keeps as many of
    ``path``'s first bytes as fit in NAME_MAX (cut at a character boundary), so a temp name
    exists for every legal name: a 250-byte name gets a 255-byte temp name, not ENAMETOOLONG."""
    folder, name = os.path.split(os.fspath(path))
    suffix = f"{TEMP_MARK}{os.getpid()}-{os.urandom(4).hex()}"
    room = NAME_MAX - 1 - len(suffix)
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) > room:
        name = raw[:room].decode("utf-8", "ignore")
    return os.path.join(folder, f".{name}{suffix}")


def write_atomic(path: Path, data: bytes, shown: str) -> None:
    """Write a small file atomically (a pointer, a ``.gitignore``, a checkout marker): temp file
    beside it, then rename, so a full disk or a kill -9 leaves the old file or the new one; a
    dead writer's leftover temp files in that folder are removed first."""
    sweep(path.parent)
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise storage_error(err, f"cannot write {shown}") from err
