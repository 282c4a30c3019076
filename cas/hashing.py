"""BLAKE3-256 digests: the only hash cas uses, and its one text form.

An id is 32 raw bytes inside cas and 64 lowercase hex characters on disk and on screen. Keeping the
parsing in one place means a malformed id is rejected the same way wherever it comes from.
"""

from __future__ import annotations

import re

import blake3

DIGEST_SIZE = 32
HEX_SIZE = 2 * DIGEST_SIZE
_HEX_RE = re.compile(r"[0-9a-f]{64}")


def digest(data: bytes | bytearray | memoryview) -> bytes:
    """BLAKE3-256 of ``data``; multithreaded for large buffers, where it pays."""
    if len(data) >= 1 << 20:
        return blake3.blake3(data, max_threads=blake3.blake3.AUTO).digest()
    return blake3.blake3(data).digest()


def hasher() -> blake3.blake3:
    """An incremental hasher, for streams that do not fit in memory."""
    return blake3.blake3()


def is_hex_id(text: str) -> bool:
    return _HEX_RE.fullmatch(text) is not None


def parse_hex(text: str) -> bytes:
    """The raw id of a hex string; ``ValueError`` names the bad value."""
    if not is_hex_id(text):
        raise ValueError(f"not a BLAKE3 id (64 lowercase hex characters): {text[:80]!r}")
    return bytes.fromhex(text)
