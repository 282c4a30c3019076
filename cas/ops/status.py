"""``cas status``: how each target's working data differs from its pointer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cas.errors import CasError
from cas.ops.add import unfinished_checkout
from cas.ops.compare import FileChange, changes, counts, expected_rows
from cas.ops.worktree import read_worktree
from cas.state import trusted

if TYPE_CHECKING:
    from cas.repo import Repo, Target


@dataclass
class TargetStatus:
    target: str
    pointer: str
    state: str  # "unchanged" | "modified" | "missing" | "error"
    added: int = 0
    modified: int = 0
    deleted: int = 0
    changes: list[FileChange] = field(default_factory=list)
    message: str = ""


def status(repo: Repo, target: Target) -> TargetStatus:
    try:
        ptr = repo.read_pointer(target)
        if ptr.kind == "corpus":  # pinned in place, nothing local: 'cas manifest verify' checks
            return TargetStatus(target.path, target.pointer, "unchanged")
        if (unfinished := unfinished_checkout(repo, target)) is not None:
            raise unfinished
        tree = read_worktree(repo, target, expected=ptr.manifest)
        if tree.all_cached:
            return TargetStatus(target.path, target.pointer, "unchanged")
        if tree.kind is None:
            return TargetStatus(
                target.path, target.pointer, "missing", message="run 'cas checkout' to restore it"
            )
        expected = expected_rows(repo, target, ptr)
    except CasError as err:
        return TargetStatus(target.path, target.pointer, "error", message=str(err))
    found = changes(target.path, ptr.kind, expected, tree.rows)
    if not found:
        repo.stat_cache.save(
            target.path, ptr.manifest, trusted(tree.cache_entries.values()), len(expected)
        )
        return TargetStatus(target.path, target.pointer, "unchanged")
    c = counts(found)
    return TargetStatus(
        target.path, target.pointer, "modified", c["added"], c["modified"], c["deleted"], found
    )
