"""What a target's files hold right now, learned as cheaply as possible.

Shared by status, checkout and diff: a file whose stat matches the stat cache is known to hold its
row of the cached manifest without reading a byte; any other file is hashed (and chunked, so its
chunks can be checked against the store before anything overwrites it).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cas.objects import version_key
from cas.ops.add import file_path, working_entries
from cas.ops.hashfile import hash_file
from cas.rows import Row
from cas.workspace import Entry, Listing

if TYPE_CHECKING:
    import pyarrow as pa

    from cas.manifest import TableRows
    from cas.repo import Repo, Target

TRUSTED = sys.maxsize


@dataclass
class Worktree:
    """A target's files: their stats, and their content where it was learned."""

    kind: str | None  # "dir", "file", or None when nothing is there
    entries: Listing
    rows: dict[str, Row] = field(default_factory=dict)
    cache_entries: dict[str, tuple[Entry, int]] = field(default_factory=dict)
    all_cached: bool = False


def rows_by_path(table: pa.Table) -> TableRows:
    from cas import manifest  # lazily: see cas.rows

    return manifest.TableRows(table)


def _has_tree(repo: Repo, tree_id: str) -> bool:
    """The stat cache names a manifest, or a version for append-only targets."""
    return repo.objects.has_manifest(tree_id) or repo.local.exists(version_key(tree_id))


def _tree(repo: Repo, tree_id: str) -> pa.Table:
    from cas import versions  # lazily: imports pyarrow

    return versions.tree_table(repo, tree_id)


def read_worktree(repo: Repo, target: Target, expected: str | None = None) -> Worktree:
    """Stat every file; learn its content from the cache or by hashing it.

    When the cache matches every file and names ``expected`` (the manifest the caller compares
    against), no row is materialised at all: ``all_cached`` says so and the caller takes the
    fast path.
    """
    kind, entries = working_entries(repo, target, missing_ok=True)
    tree = Worktree(kind, entries)
    snapshot = repo.stat_cache.load(target.path)
    if snapshot and not _has_tree(repo, snapshot.manifest_id):
        snapshot = None  # the cached manifest is gone (gc): trust nothing
    if snapshot and snapshot.unchanged(entries, expected):
        tree.all_cached = True
        return tree
    hits = snapshot.matching(entries) if snapshot else [False] * len(entries)
    cached: Mapping[str, Row] = {}
    if snapshot and any(hits):
        cached = rows_by_path(_tree(repo, snapshot.manifest_id))
    for entry, hit in zip(entries, hits):
        if hit and entry.path in cached:
            tree.rows[entry.path] = cached[entry.path]
            tree.cache_entries[entry.path] = (entry, TRUSTED)
        else:
            shown = file_path(repo, target, kind, entry.path)
            row, checked = hash_file(str(repo.abspath(shown)), entry, shown, None)
            tree.rows[entry.path] = row
            tree.cache_entries[entry.path] = (entry, checked)
    return tree
