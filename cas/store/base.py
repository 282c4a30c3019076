"""The Store contract every backend honours; the shared test suite checks each against it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol


class Store(Protocol):
    """Immutable key -> bytes. Writes are atomic and idempotent: putting an existing key is a
    no-op, because the same key always names the same bytes (keys are content ids)."""

    url: str

    def exists(self, key: str) -> bool: ...

    def get(self, key: str) -> bytes:
        """The whole blob; ``KeyError`` if absent."""
        ...

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset``; partial fetches read only what they need."""
        ...

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def put_file(self, key: str, path: Path) -> None:
        """Store the content of a local file under ``key``; the file may be consumed."""
        ...

    def list(self, prefix: str) -> Iterator[str]:
        """Every key under ``prefix`` (a folder such as ``packs/``)."""
        ...

    def size(self, key: str) -> int: ...

    def delete(self, key: str) -> None: ...
