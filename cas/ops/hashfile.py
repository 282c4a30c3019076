"""Reading a working-tree file into chunks: the one place file content enters cas."""

from __future__ import annotations

import errno
import os
import time

from cas import chunker, hashing
from cas.errors import FileChangedError, PathError
from cas.objects import ALIGN_MIN_SIZE, PackWriter
from cas.rows import Row
from cas.workspace import Entry

SMALL = chunker.MIN_SIZE


def hash_file(path: str, entry: Entry, shown: str, writer: PackWriter | None) -> tuple[Row, int]:
    """Chunk and hash one file, storing new chunks through ``writer`` (None: hash only).

    Returns the manifest row and the time the file was last seen unchanged (its stat after
    reading equals ``entry``'s, or the read is refused), which the stat cache needs to rule out
    racy entries.
    """
    try:
        # The scan saw a regular file; if a symlink (or a FIFO) took its place since, refuse it
        # rather than read through it (a link could point anywhere) or block on it.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise FileChangedError(f"{shown} disappeared while cas read it; rerun") from None
    except PermissionError:
        raise PathError(f"cannot read {shown}: permission denied; fix its mode") from None
    except OSError as err:
        if err.errno != errno.ELOOP:
            raise
        raise FileChangedError(
            f"{shown} became a symbolic link while cas read it; cas follows no links: "
            "replace it by a copy and rerun"
        ) from None
    try:
        if entry.size <= SMALL:  # one read, one chunk: the common case of many small files
            data = os.read(fd, SMALL + 1)
            file_hash = hashing.digest(data)
            chunks: tuple[tuple[bytes, int], ...] = ((file_hash, len(data)),) if data else ()
            if writer is not None and data:
                writer.add(file_hash, data)
            size = len(data)
        else:
            h = hashing.hasher()
            found = []
            size = 0
            aligned = entry.size >= ALIGN_MIN_SIZE
            with os.fdopen(fd, "rb", buffering=0, closefd=False) as f:
                for view in chunker.cut_stream(f):
                    cid = hashing.digest(view)
                    h.update(view)
                    if writer is not None:
                        writer.add(cid, view, at=size if aligned else None)
                    found.append((cid, len(view)))
                    size += len(view)
            file_hash = h.digest()
            chunks = tuple(found)
        after = os.fstat(fd)
    except BlockingIOError:  # a FIFO took the file's place
        raise FileChangedError(f"{shown} is no longer a regular file; rerun") from None
    finally:
        os.close(fd)
    checked = time.time_ns()
    now = (after.st_size, after.st_mtime_ns, after.st_ino, after.st_ctime_ns)
    if now != entry.stat_key or size != entry.size:
        raise FileChangedError(
            f"{shown} changed while cas read it; rerun when nothing is writing to it"
        )
    return Row(entry.path, size, file_hash, entry.executable, chunks), checked
