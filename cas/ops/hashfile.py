"""Reading a working-tree file into chunks: the one place file content enters cas."""

from __future__ import annotations

import os
import time

from cas import chunker, hashing
from cas.errors import FileChangedError, PathError
from cas.objects import PackWriter
from cas.rows import Row
from cas.workspace import Entry, entry_of

SMALL = chunker.MIN_SIZE


def hash_file(
    path: str, entry: Entry, shown: str, writer: PackWriter | None
) -> tuple[Row, Entry, int]:
    """Chunk and hash one file, storing new chunks through ``writer`` (None: hash only).

    Returns the manifest row, the stat taken after reading (to detect a concurrent writer) and
    the time that stat was taken, which the stat cache needs to rule out racy entries.
    """
    try:
        with open(path, "rb", buffering=0) as f:
            if entry.size <= SMALL:
                data = f.read()
                file_hash = hashing.digest(data)
                chunks: tuple[tuple[bytes, int], ...] = ((file_hash, len(data)),) if data else ()
                if writer is not None and data:
                    writer.add(file_hash, data)
                size = len(data)
            else:
                h = hashing.hasher()
                found = []
                size = 0
                for view in chunker.cut_stream(f):
                    cid = hashing.digest(view)
                    h.update(view)
                    if writer is not None:
                        writer.add(cid, view)
                    found.append((cid, len(view)))
                    size += len(view)
                file_hash = h.digest()
                chunks = tuple(found)
            after = os.fstat(f.fileno())
    except FileNotFoundError:
        raise FileChangedError(f"{shown} disappeared while cas read it; rerun") from None
    except PermissionError:
        raise PathError(f"cannot read {shown}: permission denied; fix its mode") from None
    checked = time.time_ns()
    now = entry_of(path, entry.path, after)
    if now.stat_key != entry.stat_key or size != entry.size:
        raise FileChangedError(
            f"{shown} changed while cas read it; rerun when nothing is writing to it"
        )
    return Row(entry.path, size, file_hash, entry.executable, chunks), now, checked
