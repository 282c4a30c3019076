"""``cas diff``: per-file changes between two revisions (or a revision and the worktree)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from cas.ops.compare import FileChange, changes, expected_rows
from cas.rows import Row

if TYPE_CHECKING:
    from cas.repo import Repo, Target


def _rows_at(repo: Repo, target: Target, rev: str | None) -> tuple[str | None, Mapping[str, Row]]:
    """A target's rows at ``rev`` (None: the worktree pointer); empty where it did not exist."""
    if not repo.pointer_exists(target, rev):
        return None, {}
    ptr = repo.read_pointer(target, rev)
    return ptr.kind, expected_rows(repo, target, ptr)


def diff(repo: Repo, target: Target, rev_a: str, rev_b: str | None) -> list[FileChange]:
    kind_a, old = _rows_at(repo, target, rev_a)
    kind_b, new = _rows_at(repo, target, rev_b)
    return changes(target.path, kind_b or kind_a or "dir", old, new)
