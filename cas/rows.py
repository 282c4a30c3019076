"""A manifest row as plain Python: what ops handle one file at a time, without pyarrow.

Kept apart from :mod:`cas.manifest` so the fast paths (``cas status`` on an unchanged tree) never
import pyarrow, whose import alone costs about a third of the 0.5 s budget.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from cas.errors import ManifestError

# C0 and C1 control characters and DEL: a name holding one can rewrite the terminal that prints
# it (``cas ls``, ``cas diff``, error messages) and breaks every line-oriented listing.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# The code points HFS+ ignores in names (Git's ``is_hfs_dotgit`` list): ``.g\u200cit`` is ``.git``
# there.
_IGNORABLE = re.compile("[\u200c-\u200f\u202a-\u202e\u206a-\u206f\ufeff]")
# Git's ``is_ntfs_dotgit`` (path.c): ``.git`` or its 8.3 short name ``git~1``, in any case, then
# any run of dots and spaces (NTFS drops them), then the end or ``:`` (an alternate data stream:
# ``.git::$INDEX_ALLOCATION`` is the folder itself). Git refuses such paths under
# core.protectNTFS (the default), so a manifest holding one could never be committed or checked
# out on Windows, and there it would be the repository's own folder.
_NTFS_DOTGIT = re.compile(r"(?:\.git|git~1)[. ]*(?::.*)?", re.IGNORECASE | re.ASCII | re.DOTALL)
#: What every temp file cas writes beside a final name carries (:func:`cas.workspace.temp_name`).
TEMP_MARK = ".cas-tmp-"
#: A temp file's whole name: ``.<name or its first bytes>.cas-tmp-<pid>-<8 hex>``. Names of this
#: form are reserved: a scan skips them (removing them once their process is dead) and no
#: manifest may hold one.
TEMP_NAME = re.compile(r"\..*\.cas-tmp-([0-9]+)-[0-9a-f]{8}", re.DOTALL)


class Row(NamedTuple):
    """One file of a manifest, as the ops layer handles it (a tuple: 200,000 of them are made
    in a many-small-files add, and a frozen dataclass costs several times more to build)."""

    path: str
    size: int
    hash: bytes
    executable: bool
    chunks: tuple[tuple[bytes, int], ...]


def is_dotgit(name: str) -> bool:
    """Whether a path component names a Git folder on some filesystem (``.git``, ``.GIT``,
    ``.g\u200cit`` on HFS+, ``.git.``, ``.git `` and ``git~1`` on NTFS). Writing one would
    plant a repository whose config runs commands (``core.fsmonitor``) as soon as anyone runs
    Git, or a Git-aware prompt, inside it; Git refuses such paths for the same reason."""
    if not name.isascii() and _IGNORABLE.sub("", name).casefold() == ".git":
        return True  # HFS+ ignores those code points; NTFS does not, so no dots or spaces here
    return _NTFS_DOTGIT.fullmatch(name) is not None


def check_path(path: str) -> None:
    """Refuse any path that could escape or alias inside a checkout (docs/format.md,
    "Manifest"): empty, absolute, drive letter, backslash, control character, an empty, ``.``,
    ``..``, ``.git`` (any spelling :func:`is_dotgit` knows) or temp-file component. Written
    for speed (C-level string tests first): ``cas add`` of 200,000 files calls it 200,000
    times."""
    if (
        not path
        or "\\" in path
        or path[0] == "/"
        or path[1:2] == ":"
        or (not path.isprintable() and CONTROL.search(path))
    ):
        raise _unsafe(path)
    parts = path.split("/")
    if "" in parts or "." in parts or ".." in parts:
        raise _unsafe(path)
    if (not path.isascii() or "git" in path.lower()) and any(map(is_dotgit, parts)):
        raise _unsafe(path)
    if TEMP_MARK in path and any(TEMP_NAME.fullmatch(part) for part in parts):
        raise _unsafe(path)


def _unsafe(path: str) -> ManifestError:
    return ManifestError(f"unsafe path in manifest: {path!r}; the manifest may be hostile")
