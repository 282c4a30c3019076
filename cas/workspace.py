"""The working tree as cas sees it: regular files under a tracked folder, with their stats.

Symlinks and special files are refused rather than followed: following a link could read (or,
at checkout, write) outside the repository. Names that are not UTF-8 are refused too, because
manifest paths must compare the same on every machine.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISDIR, S_ISREG, S_IXUSR

from cas.errors import PathError

TEMP_MARK = ".cas-tmp-"


@dataclass(slots=True)
class Entry:
    path: str  # relative POSIX path inside the tracked folder
    size: int
    mtime_ns: int
    ino: int
    executable: bool

    @property
    def stat_key(self) -> tuple[int, int, int]:
        return (self.size, self.mtime_ns, self.ino)


def entry_of(abspath: str, rel: str, st: os.stat_result) -> Entry:
    return Entry(rel, st.st_size, st.st_mtime_ns, st.st_ino, bool(st.st_mode & stat.S_IXUSR))


def refuse(mode: int, shown: str) -> PathError:
    """The error for anything that is neither a regular file nor a folder."""
    kind = "symbolic link" if stat.S_ISLNK(mode) else "special file"
    return PathError(
        f"{shown} is a {kind}; cas tracks regular files only: replace it by a copy or remove it"
    )


def scan(root: Path, shown: str) -> list[Entry]:
    """Every regular file under ``root``, sorted by path (code point order = UTF-8 order).
    ``shown`` is how ``root`` is named in errors. Leftover checkout temp files are skipped."""
    entries: list[Entry] = []
    stack = [("", os.fspath(root))]
    while stack:
        prefix, folder = stack.pop()
        try:
            it = os.scandir(folder)
        except PermissionError:
            raise PathError(
                f"cannot read folder {shown}/{prefix}: permission denied; fix its mode"
            ) from None
        with it:
            for de in it:
                name = de.name
                rel = prefix + name
                if not name.isascii():
                    try:
                        name.encode("utf-8")
                    except UnicodeEncodeError:
                        raise PathError(
                            f"{shown}/{rel!r} has a name that is not UTF-8; rename it"
                        ) from None
                if TEMP_MARK in name:
                    continue
                st = de.stat(follow_symlinks=False)
                mode = st.st_mode
                if S_ISREG(mode):
                    entries.append(
                        Entry(rel, st.st_size, st.st_mtime_ns, st.st_ino, bool(mode & S_IXUSR))
                    )
                elif S_ISDIR(mode):
                    stack.append((rel + "/", de.path))
                else:
                    raise refuse(mode, f"{shown}/{rel}")
    entries.sort(key=lambda e: e.path)
    return entries


def temp_name(path: Path) -> Path:
    """A temp file beside ``path``: same folder, so the final rename is atomic."""
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}-{os.urandom(4).hex()}")
