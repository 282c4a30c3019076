"""Pointer files: the few lines Git versions in place of the data.

Exactly one valid encoding (docs/format.md, "Pointer"): fixed key order, LF endings, no
timestamps or host names, so an unchanged dataset always gives a byte-identical pointer and a
changed one a small, readable diff.

    cas-pointer 1
    kind dir
    manifest 3f2a...64 hex
    size 2147483648
    files 20184
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cas import hashing
from cas.errors import PointerError

SUFFIX = ".cas"
HEADER = "cas-pointer 1"
KINDS = ("dir", "file")
MAX_SIZE = 1024


@dataclass(frozen=True)
class Pointer:
    kind: str
    manifest: str
    size: int
    files: int

    def encode(self) -> bytes:
        return (
            f"{HEADER}\nkind {self.kind}\nmanifest {self.manifest}\n"
            f"size {self.size}\nfiles {self.files}\n"
        ).encode()


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
    keys = ("kind", "manifest", "size", "files")
    if len(lines) != len(keys) + 1:
        raise PointerError(f"{where}: expected {len(keys) + 1} lines, found {len(lines)}")
    values: dict[str, str] = {}
    for lineno, (key, line) in enumerate(zip(keys, lines[1:]), start=2):
        found, _, value = line.partition(" ")
        if found != key or not value:
            raise PointerError(f"{where}:{lineno}: expected '{key} <value>', found {line[:60]!r}")
        values[key] = value
    if values["kind"] not in KINDS:
        raise PointerError(f"{where}:2: unknown kind {values['kind']!r}; upgrade cas")
    if not hashing.is_hex_id(values["manifest"]):
        raise PointerError(f"{where}:3: manifest is not a 64-hex BLAKE3 id")
    numbers = {}
    for lineno, key in ((4, "size"), (5, "files")):
        value = values[key]
        if not value.isdigit() or (len(value) > 1 and value[0] == "0"):
            raise PointerError(f"{where}:{lineno}: {key} is not a non-negative integer")
        numbers[key] = int(value)
    pointer = Pointer(values["kind"], values["manifest"], numbers["size"], numbers["files"])
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
