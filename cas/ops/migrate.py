"""What ``cas import dvc`` and ``cas import lfs`` share: verified copies into the worktree and
the refusal that lists every file whose content is not what the old tool recorded.

An importer first *plans*: for every file it finds the bytes (worktree, the tool's cache, a
remote) and checks them against the recorded hash, copying into place only what is verified.
Only when nothing is wrong does it version anything (``cas add``'s op: store, pointer,
.gitignore, stage), and only after the pointer is written does it drop the old tool's record,
so a kill -9 at any moment leaves the old record or the new pointer (or both), and a rerun
completes the import.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cas.errors import CorruptObjectError, ObjectMissingError
from cas.store.local import storage_error

_BLOCK = 1 << 20


@dataclass
class Problems:
    """Files that cannot be imported, by reason; raised together so the user sees them all."""

    mismatched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def raise_if_any(self, tool: str, fix_missing: str) -> None:
        if self.mismatched:
            shown = ", ".join(sorted(self.mismatched))
            raise CorruptObjectError(
                f"content does not match its {tool} hash, nothing imported: {shown}; restore "
                f"these files (or re-record them with {tool}) and rerun"
            )
        if self.missing:
            shown = ", ".join(sorted(self.missing))
            raise ObjectMissingError(
                f"no copy of these {tool} files was found, nothing imported: {shown}; "
                f"{fix_missing}, then rerun"
            )


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file's bytes, read in bounded memory."""
    hasher = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            hasher.update(block)
    return hasher.hexdigest()


def copy_verified(
    src: Path, dest: Path, matches: Callable[[Path], bool], what: str, replace: bool = False
) -> bool:
    """Copy ``src`` to ``dest`` through a temp file beside it, renamed into place only when
    ``matches`` accepts the copy (so the bytes checked are the bytes placed). Returns False, and
    leaves ``dest`` as it was, when the content is wrong. Replaces only a symlink (DVC's link
    into its cache) or, with ``replace``, a file the caller knows Git holds (an LFS pointer):
    any other file at ``dest`` is the caller's to verify, never to overwrite."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(src, "rb") as fin, open(tmp, "xb") as fout:
            while block := fin.read(_BLOCK):
                fout.write(block)
        if not matches(tmp):
            tmp.unlink()
            return False
        if os.path.lexists(dest) and not dest.is_symlink() and not replace:
            tmp.unlink()
            return matches(dest)  # another run placed it meanwhile
        os.replace(tmp, dest)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise storage_error(err, f"cannot write {what}") from err
    return True
