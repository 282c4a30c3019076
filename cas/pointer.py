"""Pointer files: the few lines Git versions in place of the data.

Exactly one valid encoding (docs/format.md, "Pointer"): fixed key order, LF endings, no
timestamps or host names, so an unchanged dataset always gives a byte-identical pointer and a
changed one a small, readable diff.

    cas-pointer 1                       cas-pointer 1
    kind dir                            kind corpus
    manifest 3f2a...(64 hex)            version 9c1e...(64 hex)
    size 2147483648
    files 20184

``dir`` and ``file`` name one manifest. ``corpus`` (files pinned in place, by URL) and
``append`` (append-only data in the store) name a *version*: a list of manifest segments that
only grows, so an append changes exactly one line of the pointer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cas import hashing
from cas.errors import PointerError

SUFFIX = ".cas"
HEADER = "cas-pointer 1"
KEYS = {
    "dir": ("manifest", "size", "files"),
    "file": ("manifest", "size", "files"),
    "corpus": ("version",),
    "append": ("version",),
}
KINDS = tuple(KEYS)
VERSIONED = ("corpus", "append")
MAX_SIZE = 1024
MAX_COUNT = 2**64 - 1  # size and files are u64, like the manifest's size column


@dataclass(frozen=True)
class Pointer:
    """``manifest`` holds the manifest id for ``dir``/``file`` and the version id for the
    versioned kinds; ``size`` and ``files`` are 0 for the latter (their version records them)."""

    kind: str
    manifest: str
    size: int = 0
    files: int = 0

    def encode(self) -> bytes:
        values = {"manifest": self.manifest, "version": self.manifest}
        values.update(size=str(self.size), files=str(self.files))
        body = "".join(f"{key} {values[key]}\n" for key in KEYS[self.kind])
        return f"{HEADER}\nkind {self.kind}\n{body}".encode()


def parse(data: bytes, where: str) -> Pointer:
    """Parse pointer bytes; every error names ``where`` and the line."""
    if len(data) > MAX_SIZE:
        raise PointerError(f"{where}: not a cas pointer (larger than {MAX_SIZE} bytes)")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise PointerError(f"{where}: not a cas pointer (not ASCII text)") from None
    if "\r" in text:
        raise PointerError(f"{where}: CRLF line endings; set 'git config core.autocrlf false'")
    if not text.endswith("\n"):
        raise PointerError(f"{where}: truncated pointer (no final newline); restore it from Git")
    lines = text[:-1].split("\n")
    if lines[0] != HEADER:
        raise PointerError(
            f"{where}:1: expected {HEADER!r}, found {lines[0][:40]!r}; "
            "restore the file from Git or upgrade cas"
        )
    kind_line = lines[1] if len(lines) > 1 else ""
    kind = kind_line[5:] if kind_line.startswith("kind ") else ""
    if kind not in KEYS:
        raise PointerError(f"{where}:2: unknown kind {kind_line[:40]!r}; upgrade cas")
    keys = KEYS[kind]
    if len(lines) != len(keys) + 2:
        raise PointerError(f"{where}: expected {len(keys) + 2} lines, found {len(lines)}")
    values: dict[str, str] = {}
    for lineno, (key, line) in enumerate(zip(keys, lines[2:]), start=3):
        found, _, value = line.partition(" ")
        if found != key or not value:
            raise PointerError(f"{where}:{lineno}: expected '{key} <value>', found {line[:60]!r}")
        if key in ("manifest", "version") and not hashing.is_hex_id(value):
            raise PointerError(f"{where}:{lineno}: {key} is not a 64-hex BLAKE3 id")
        if key in ("size", "files") and (
            not value.isdigit() or (len(value) > 1 and value[0] == "0")
        ):
            raise PointerError(f"{where}:{lineno}: {key} is not a non-negative integer")
        if key in ("size", "files") and (len(value) > 20 or int(value) > MAX_COUNT):
            raise PointerError(f"{where}:{lineno}: {key} is larger than 2^64-1; it may be hostile")
        values[key] = value
    pointer = Pointer(
        kind,
        values.get("manifest") or values["version"],
        int(values.get("size", 0)),
        int(values.get("files", 0)),
    )
    if pointer.encode() != data:
        raise PointerError(f"{where}: not in canonical form; restore it from Git")
    return pointer


def read(path: Path, where: str | None = None) -> Pointer:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PointerError(f"{where or path}: pointer file not found") from None
    return parse(data, where or str(path))


def target_of(pointer_path: str) -> str:
    """The data a pointer tracks: ``data.cas`` -> ``data``."""
    return pointer_path[: -len(SUFFIX)]


def pointer_for(target: str) -> str:
    return target + SUFFIX
