"""Comparing two views of a target's files: the vocabulary of status, diff and checkout."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from cas.errors import ManifestError
from cas.ops.worktree import rows_by_path
from cas.pointer import VERSIONED, Pointer
from cas.rows import Row

if TYPE_CHECKING:
    from cas.manifest import TableRows
    from cas.repo import Repo, Target


@dataclass(frozen=True)
class FileChange:
    path: str  # relative to the repository root
    change: str  # "added" | "modified" | "deleted"
    old_size: int | None
    new_size: int | None


def expected_rows(repo: Repo, target: Target, ptr: Pointer) -> TableRows:
    """A pointer's rows keyed by path inside the target. A single tracked file's row takes the
    target's current name, so renaming ``a.bin.cas`` and ``a.bin`` together keeps working.
    A versioned pointer's rows are the union of its version's segments."""
    if ptr.kind in VERSIONED:
        from cas import versions  # lazily: imports pyarrow

        versions.load_pointed(repo, ptr, target.pointer)
        return rows_by_path(versions.tree_table(repo, ptr.manifest))
    table = repo.load_manifest(ptr.manifest)
    if ptr.kind == "file":
        if table.num_rows != 1:
            raise ManifestError(
                f"{target.pointer} is a file pointer but its manifest has {table.num_rows} rows"
            )
        import pyarrow as pa  # loaded already: the manifest is a table

        name = PurePosixPath(target.path).name
        table = table.set_column(0, "path", pa.array([name], pa.string()))
    return rows_by_path(table)


def changes(
    prefix: str, kind: str, old: Mapping[str, Row], new: Mapping[str, Row]
) -> list[FileChange]:
    """Per-file differences from ``old`` to ``new``, sorted by path."""

    def shown(p: str) -> str:
        return prefix if kind == "file" else f"{prefix}/{p}"

    result = []
    for p in sorted(old.keys() | new.keys()):
        a, b = old.get(p), new.get(p)
        if a is None and b is not None:
            result.append(FileChange(shown(p), "added", None, b.size))
        elif b is None and a is not None:
            result.append(FileChange(shown(p), "deleted", a.size, None))
        elif a is not None and b is not None and (a.hash, a.executable) != (b.hash, b.executable):
            result.append(FileChange(shown(p), "modified", a.size, b.size))
    return result


def counts(found: list[FileChange]) -> dict[str, int]:
    totals = {"added": 0, "modified": 0, "deleted": 0}
    for c in found:
        totals[c.change] += 1
    return totals
