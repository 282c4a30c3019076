"""The local-disk store: atomic temp-then-rename writes, read-only files once written.

A temp file lives in the store's own ``tmp/`` folder so the final rename never crosses a
filesystem; a kill -9 leaves at most an orphan there, never a partial file under a final key.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from cas.errors import StorageError

_READ_ONLY = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
STALE_TMP_SECONDS = 24 * 3600


def storage_error(err: OSError, what: str) -> StorageError:
    """One message per OS failure, naming what failed and the fix."""
    fixes = {
        errno.ENOSPC: "the disk is full: free space (cas gc helps) and rerun",
        errno.EDQUOT: "the disk quota is exceeded: free space and rerun",
        errno.EACCES: "permission denied: check the owner and mode of the folder",
        errno.EPERM: "permission denied: check the owner and mode of the folder",
        errno.EROFS: "the filesystem is read-only: point core.store at a writable folder",
    }
    fix = fixes.get(err.errno or 0, err.strerror or str(err))
    return StorageError(f"{what}: {fix}")


class LocalStore:
    """A folder of blobs. ``fsync`` trades speed for surviving power loss (not needed for
    surviving kill -9, which the rename discipline already covers)."""

    def __init__(self, root: Path, fsync: bool = True) -> None:
        self.root = root
        self.url = root.as_uri()
        self.fsync = fsync
        self.tmp = root / "tmp"

    def path(self, key: str) -> Path:
        return self.root / key

    def exists(self, key: str) -> bool:
        return (self.root / key).exists()

    def get(self, key: str) -> bytes:
        try:
            return (self.root / key).read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        try:
            with open(self.root / key, "rb") as f:
                return os.pread(f.fileno(), length, offset)
        except FileNotFoundError:
            raise KeyError(key) from None

    def size(self, key: str) -> int:
        try:
            return (self.root / key).stat().st_size
        except FileNotFoundError:
            raise KeyError(key) from None

    def temp_path(self) -> Path:
        """A fresh path in ``tmp/``, for writers that stream into a file before committing it."""
        try:
            self.tmp.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise storage_error(err, f"cannot create {self.tmp}") from err
        return self.tmp / f"{os.getpid()}-{uuid.uuid4().hex}"

    def put_bytes(self, key: str, data: bytes) -> None:
        if self.exists(key):
            return
        tmp = self.temp_path()
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                if self.fsync:
                    os.fsync(f.fileno())
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise storage_error(err, f"cannot write {key} to the store {self.root}") from err
        self.put_file(key, tmp)

    def put_file(self, key: str, path: Path) -> None:
        """Rename ``path`` (already complete, already fsynced if wanted) into place."""
        final = self.root / key
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(path, _READ_ONLY)
            os.replace(path, final)
        except OSError as err:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            raise storage_error(err, f"cannot write {key} to the store {self.root}") from err

    def list(self, prefix: str) -> Iterator[str]:
        base = self.root / prefix
        if not base.is_dir():
            return
        for dirpath, _dirs, files in os.walk(base):
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in files:
                yield f"{rel}/{name}"

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.root / key).unlink()

    def clean_tmp(self) -> int:
        """Remove temp files left by killed processes; only old ones, since a live writer may
        own a young one. Returns how many were removed."""
        if not self.tmp.is_dir():
            return 0
        cutoff = time.time() - STALE_TMP_SECONDS
        removed = 0
        for entry in os.scandir(self.tmp):
            pid = entry.name.split("-", 1)[0]
            dead = pid.isdigit() and not _pid_alive(int(pid))
            if dead or entry.stat().st_mtime < cutoff:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
        return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
