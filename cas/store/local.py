"""The local-disk store: atomic temp-then-rename writes, read-only files once written.

A temp file lives in the store's own ``tmp/`` folder so the final rename never crosses a
filesystem; a kill -9 leaves at most an orphan there, never a partial file under a final key.

Every process that touches the store holds its *shared* lock (``<store>/lock``) from first use
until it exits or calls :meth:`LocalStore.close`; ``cas gc`` holds it *exclusively*. So gc never
deletes a pack that a running ``add`` has just deduplicated against (its pointer is not written
yet, so no root names the chunk) or that a checkout is reading, while adds, checkouts and fetches
still run side by side: content-addressed writes need no lock among themselves.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import threading
import time
import uuid
import weakref
from collections.abc import Iterator
from pathlib import Path

from cas import flock
from cas.errors import StorageError

_READ_ONLY = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
STALE_TMP_SECONDS = 24 * 3600
_TEMP_NAME = re.compile(r"[0-9]+-[0-9a-f]{32}")  # f"{pid}-{uuid4 hex}", as temp_path() names them


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
        self._lock_fd: int | None = None
        self._locked = False
        self._guard = threading.Lock()

    # -- the store lock --------------------------------------------------------------------------
    def _use(self) -> None:
        if not self._locked:
            with self._guard:
                if not self._locked:
                    self._take(exclusive=False)

    def _take(self, exclusive: bool) -> None:
        self._release()
        # A root that cannot be created is reported by the first write; reads need no lock file.
        with contextlib.suppress(OSError):
            self.root.mkdir(parents=True, exist_ok=True)
        holder = "other cas processes using the store" if exclusive else "cas gc"
        fd = flock.acquire(self.root / "lock", exclusive, holder)
        if fd is not None:  # a store dropped without close() must not hold gc off
            self._finalizer = weakref.finalize(self, os.close, fd)
        self._lock_fd = fd
        self._locked = True

    def _release(self) -> None:
        if self._lock_fd is not None:
            self._finalizer()  # closes the fd, once
        self._lock_fd = None
        self._locked = False

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the store alone (gc): waits for every other process using it to finish."""
        with self._guard:
            self._take(exclusive=True)
        try:
            yield
        finally:
            with self._guard:
                self._release()

    def close(self) -> None:
        """Release the shared lock, so a long-lived process (a notebook) does not hold off gc;
        the next use takes it again."""
        with self._guard:
            self._release()

    # -- blobs -----------------------------------------------------------------------------------
    def path(self, key: str) -> Path:
        self._use()
        return self.root / key

    def exists(self, key: str) -> bool:
        self._use()
        return (self.root / key).exists()

    def get(self, key: str) -> bytes:
        self._use()
        try:
            return (self.root / key).read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None
        except OSError as err:
            raise storage_error(err, f"cannot read {key} in the store {self.root}") from err

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        self._use()
        try:
            with open(self.root / key, "rb") as f:
                return os.pread(f.fileno(), length, offset)
        except FileNotFoundError:
            raise KeyError(key) from None
        except OSError as err:
            raise storage_error(err, f"cannot read {key} in the store {self.root}") from err

    def size(self, key: str) -> int:
        self._use()
        try:
            return (self.root / key).stat().st_size
        except FileNotFoundError:
            raise KeyError(key) from None
        except OSError as err:
            raise storage_error(err, f"cannot read {key} in the store {self.root}") from err

    def temp_path(self) -> Path:
        """A fresh path in ``tmp/``, for writers that stream into a file before committing it."""
        self._use()
        try:
            self.tmp.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise storage_error(err, f"cannot create {self.tmp}") from err
        return self.tmp / f"{os.getpid()}-{uuid.uuid4().hex}"

    def put_bytes(self, key: str, data: bytes | memoryview) -> None:
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
        self._use()
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
        self._use()
        base = self.root / prefix
        if not base.is_dir():
            return

        def fail(err: OSError) -> None:  # os.walk skips what it cannot read unless told
            raise storage_error(err, f"cannot list {err.filename} in the store")

        for dirpath, _dirs, files in os.walk(base, onerror=fail):
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in files:
                yield f"{rel}/{name}"

    def delete(self, key: str) -> None:
        self._use()
        with contextlib.suppress(FileNotFoundError):
            (self.root / key).unlink()

    def clean_tmp(self) -> int:
        """Remove temp files left by killed processes; only old ones, since a live writer may
        own a young one. Returns how many were removed."""
        self._use()
        if not self.tmp.is_dir():
            return 0
        cutoff = time.time() - STALE_TMP_SECONDS
        removed = 0
        for entry in os.scandir(self.tmp):
            # Only names temp_path() makes: core.store may come from a committed file and name
            # any folder, whose tmp/ then holds files (and folders) that are not cas's.
            if not _TEMP_NAME.fullmatch(entry.name) or not entry.is_file(follow_symlinks=False):
                continue
            pid = entry.name.split("-", 1)[0]
            dead = not pid_alive(int(pid))
            if dead or entry.stat(follow_symlinks=False).st_mtime < cutoff:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
        return removed


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine: a temp file named after a dead
    one is an orphan of a kill -9 (a reused pid only keeps an orphan longer)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True
