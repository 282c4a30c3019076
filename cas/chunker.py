"""Content-defined chunking: where a byte stream is cut, independent of where it is stored.

FastCDC (pyfastcdc, Cython; it releases the GIL) with a 64 KiB target: a 100-byte insert
changes about one chunk (~80 KiB stored) where whole-file storage re-stores the whole file. The
parameters are part of the on-disk format (docs/format.md): changing them changes chunk ids
after every edit, so golden boundary vectors in the tests pin them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import BinaryIO

import pyfastcdc

AVG_SIZE = 64 * 1024
MIN_SIZE = 16 * 1024
MAX_SIZE = 256 * 1024

_local = threading.local()


def _chunker() -> pyfastcdc.FastCDC:
    """One FastCDC per thread: its instances are not safe to share."""
    chunker = getattr(_local, "chunker", None)
    if chunker is None:
        chunker = pyfastcdc.FastCDC(
            AVG_SIZE, min_size=MIN_SIZE, max_size=MAX_SIZE, normalized_chunking=1
        )
        _local.chunker = chunker
    return chunker


def cut(buf: bytes | bytearray | memoryview) -> Iterator[memoryview]:
    """Chunks of an in-memory buffer, in order; an empty buffer has none."""
    view = memoryview(buf)
    for chunk in _chunker().cut_buf(view):
        yield view[chunk.offset : chunk.offset + chunk.length]


def cut_stream(stream: BinaryIO) -> Iterator[memoryview]:
    """Chunks of a file read in bounded memory. Each view is valid only until the next one is
    produced: hash or copy it before asking for more."""
    for chunk in _chunker().cut_stream(stream):
        yield chunk.data
