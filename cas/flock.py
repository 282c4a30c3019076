"""Advisory file locks (``flock``) that wait visibly and give up clearly.

Two locks use this: the repository lock (``.cas/lock``, held while pointers, ``.gitignore`` and
the Git index change) and the store lock (shared by every process that reads or writes the store,
exclusive for ``cas gc``). A lock held by a killed process is released by the kernel, so a crash
never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from pathlib import Path

from cas.errors import LockedError, UsageError

#: How long to wait for a lock before giving up; ``CAS_LOCK_TIMEOUT`` (seconds) overrides it.
WAIT_SECONDS = 600.0
_POLL_SECONDS = 0.05


def wait_seconds() -> float:
    value = os.environ.get("CAS_LOCK_TIMEOUT")
    if not value:
        return WAIT_SECONDS
    try:
        return float(value)
    except ValueError:
        raise UsageError(f"CAS_LOCK_TIMEOUT={value!r} is not a number of seconds") from None


def acquire(path: Path, exclusive: bool, holder: str, quiet: bool = False) -> int | None:
    """Open ``path`` and lock it; returns the fd (closing it releases the lock), or None when
    the file can neither be created nor opened (a read-only store: nothing here can change it).
    ``holder`` names who holds it, for the one line printed while waiting and the error."""
    limit = wait_seconds()  # a bad CAS_LOCK_TIMEOUT fails every time, not only under contention
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
        return fd
    except BlockingIOError:
        pass
    except BaseException:
        os.close(fd)
        raise
    if not quiet:
        print(f"cas: waiting for {holder} to finish ({path})", file=sys.stderr)
    deadline = time.monotonic() + limit
    try:
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LockedError(
                        f"{holder} has held {path} for {limit:g} s; wait for it to finish, or "
                        "stop it (a killed process releases the lock)"
                    ) from None
                time.sleep(_POLL_SECONDS)
    except BaseException:
        os.close(fd)
        raise
