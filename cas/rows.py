"""A manifest row as plain Python: what ops handle one file at a time, without pyarrow.

Kept apart from :mod:`cas.manifest` so the fast paths (``cas status`` on an unchanged tree) never
import pyarrow, whose import alone costs about a third of the 0.5 s budget.
"""

from __future__ import annotations

from typing import NamedTuple

from cas.errors import ManifestError


class Row(NamedTuple):
    """One file of a manifest, as the ops layer handles it (a tuple: 200,000 of them are made
    in a many-small-files add, and a frozen dataclass costs several times more to build)."""

    path: str
    size: int
    hash: bytes
    executable: bool
    chunks: tuple[tuple[bytes, int], ...]


def check_path(path: str) -> None:
    """Refuse any path that could escape or alias inside a checkout."""
    if (
        not path
        or "\x00" in path
        or "\\" in path
        or path.startswith("/")
        or (len(path) > 1 and path[1] == ":")
    ):
        raise ManifestError(f"unsafe path in manifest: {path!r}; the manifest may be hostile")
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise ManifestError(f"unsafe path in manifest: {path!r}; the manifest may be hostile")
