"""Content-defined chunking: where a byte stream is cut, independent of where it is stored.

FastCDC (pyfastcdc, Cython; it releases the GIL) with a 64 KiB target: a 100-byte insert
changes about one chunk (~80 KiB stored) where whole-file storage re-stores the whole file. The
parameters are part of the on-disk format (docs/format.md): changing them changes chunk ids
after every edit, so golden boundary vectors in the tests pin them.

One kind of file is cut differently: a query snapshot of format version 3 (cas.rowgroups) starts
with ``MARKED_HEAD`` and has a ``CUT_MARKER`` before every Parquet column chunk. It is first
split at its markers, then each piece is cut with FastCDC, so a change to some column chunks
costs their own store chunks and the next piece starts in step with the earlier snapshot's.
FastCDC alone cuts at a marker too, but not when its previous cut is closer than ``MIN_SIZE``,
and after a change that decision differs between the two files often enough to cost a whole
row group more (docs/snapshots.md, "Deduplication").
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import BinaryIO

import pyfastcdc

AVG_SIZE = 64 * 1024
MIN_SIZE = 16 * 1024
MAX_SIZE = 256 * 1024

#: 48 bytes whose gear hash (FastCDC's default table) meets both of its masks at ``AVG_SIZE``:
#: plain FastCDC also cuts before the marker's last byte wherever the marker lies ``MIN_SIZE`` or
#: more after its previous cut, so a marked file chunks well even for a chunker unaware of it.
CUT_MARKER = b"\ncas: FastCDC cuts before the last byte 0038b55\n"
#: How a marked file starts: Parquet's magic, then the marker before its first column chunk.
MARKED_HEAD = b"PAR1" + CUT_MARKER
#: The longest piece of a marked file: past it, a split is made without a marker. Anyone can
#: write a file that starts like a snapshot and has no other marker; memory must not follow it.
MAX_PIECE = 16 * 1024 * 1024
_READ_SIZE = 8 * 1024 * 1024

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
    """Chunks of a seekable file read in bounded memory. Each view is valid only until the next
    one is produced: hash or copy it before asking for more."""
    marked = stream.read(len(MARKED_HEAD)) == MARKED_HEAD
    stream.seek(0)
    if marked:
        yield from _cut_marked(stream)
        return
    for chunk in _chunker().cut_stream(stream):
        yield chunk.data


def _cut_marked(stream: BinaryIO) -> Iterator[memoryview]:
    """Split before the last byte of every marker that lies ``MIN_SIZE`` or more after the
    previous split (where FastCDC would cut, except that its cuts inside a piece never make it
    skip a marker), and ``MAX_PIECE`` after the previous split when no marker comes first; then
    cut each piece with FastCDC. Holds a read plus at most ``MAX_PIECE``."""
    buf = bytearray()
    start = searched = 0  # where the current piece starts in buf; where to look for a marker
    while True:
        block = stream.read(_READ_SIZE)
        buf += block
        while True:
            at = buf.find(CUT_MARKER, searched, start + MAX_PIECE + 1)  # ends in the piece
            if at >= 0:
                end = at + len(CUT_MARKER) - 1
                searched = at + 1
                if end - start < MIN_SIZE:
                    continue
            elif len(buf) - start > MAX_PIECE:
                end = searched = start + MAX_PIECE  # no marker for MAX_PIECE bytes
            else:
                break
            with memoryview(buf) as view:  # released before buf is resized
                piece = bytes(view[start:end])
            start = end
            yield from cut(piece)
        if not block:
            break
        del buf[:start]  # once per read: the pieces before are out
        start, searched = 0, max(0, len(buf) - len(CUT_MARKER) + 1)
    if start < len(buf):
        with memoryview(buf) as view:
            piece = bytes(view[start:])
        yield from cut(piece)
