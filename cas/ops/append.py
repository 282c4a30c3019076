"""``cas add --append-only DIR``: local data in the store, recorded as an append-only version.

Like ``cas add`` the files are chunked into packs (``hash_file`` + the pack writer), but the
manifest is a version (:mod:`cas.versions`): each add appends one segment holding only the new
files, so the pointer diff is one line and the manifest work is O(new files). Files the stat cache
vouches for are not read; an existing file whose stat changed is re-hashed, and any changed or
deleted file stops the add, naming it: append-only means append-only.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from cas import manifest, versions
from cas.errors import ConflictError, UsageError
from cas.objects import PackWriter
from cas.ops.add import PARALLEL_MIN_SIZE, refuse_git_tracked, working_entries
from cas.ops.hashfile import hash_file
from cas.ops.worktree import TRUSTED
from cas.parallel import bounded_map
from cas.pointer import Pointer
from cas.progress import Progress, Silent
from cas.rows import Row
from cas.state import trusted
from cas.workspace import Entry

if TYPE_CHECKING:
    from cas.repo import Repo, Target

_SHOWN = 20


@dataclass(frozen=True)
class AppendResult:
    target: str
    pointer: str
    version: str
    files: int
    size: int
    added_files: int
    added_bytes: int
    new_bytes: int
    pointer_changed: bool


def add_append_only(repo: Repo, target: Target, progress: Progress | None = None) -> AppendResult:
    """Append the folder's new files to its version (or start one); refuse changes/deletions."""
    progress = progress or Silent()
    refuse_git_tracked(repo, target)
    kind, entries = working_entries(repo, target)
    if kind != "dir":
        raise UsageError(f"--append-only tracks a folder; {target.path} is a file")
    parent: versions.Version | None = None
    parent_id: str | None = None
    if repo.pointer_exists(target):
        ptr = repo.read_pointer(target)
        if ptr.kind != "append":
            raise UsageError(
                f"{target.pointer} is a '{ptr.kind}' pointer; remove it (git rm) to start an "
                "append-only history, or use 'cas add' without --append-only"
            )
        parent_id, parent = ptr.manifest, versions.load_pointed(repo, ptr, target.pointer)

    snapshot = repo.stat_cache.load(target.path)
    if snapshot is None or parent_id is None or snapshot.manifest_id != parent_id:
        hits = [False] * len(entries)
    else:
        hits = snapshot.matching(entries)
    todo = [e for e, hit in zip(entries, hits) if not hit]
    known = _known_rows(repo, parent, todo)
    deleted = _deleted(repo, parent, entries, sum(hits) + len(known))
    fresh = [e for e in todo if e.path not in known]
    suspects = [e for e in todo if e.path in known]

    cache = [(e, TRUSTED) for e, hit in zip(entries, hits) if hit]
    changed = []
    for entry in suspects:  # stat changed: same content (a touch) is fine, new content is not
        row, checked = _hash(repo, target, entry, None)
        if (row.size, row.hash, row.executable) != known[entry.path]:  # a chmod is a change too
            changed.append(f"{target.path}/{entry.path}")
        cache.append((entry, checked))
    if changed or deleted:
        problems = [f"{p} (changed)" for p in changed]
        problems += [f"{target.path}/{p} (deleted)" for p in deleted]
        more = f" (+{len(problems) - _SHOWN} more)" if len(problems) > _SHOWN else ""
        raise ConflictError(
            f"{target.path} is append-only but {len(problems)} recorded files changed or were "
            f"deleted: {', '.join(problems[:_SHOWN])}{more}; restore them ('cas checkout') or "
            f"track the folder with plain 'cas add'",
            problems,
        )

    new_rows, new_bytes = _store(repo, target, fresh, cache, progress)
    if parent_id is not None and not new_rows:
        version_id = parent_id
    else:
        version_id = versions.append(repo, parent_id, manifest.from_rows(new_rows), "append")
    total = entries.total_size
    repo.stat_cache.save(target.path, version_id, trusted(cache), len(entries))
    with repo.lock():
        pointer_changed = repo.write_pointer(target, Pointer("append", version_id))
        repo.git.stage([target.pointer, repo.ignore(target)])
    return AppendResult(
        target.path, target.pointer, version_id, len(entries), total, len(new_rows),
        sum(r.size for r in new_rows), new_bytes, pointer_changed,
    )  # fmt: skip


def _hash(repo: Repo, target: Target, entry: Entry, writer: PackWriter | None) -> tuple[Row, int]:
    shown = f"{target.path}/{entry.path}"
    return hash_file(str(repo.abspath(shown)), entry, shown, writer)


def _known_rows(
    repo: Repo, parent: versions.Version | None, todo: list[Entry]
) -> dict[str, tuple[int, bytes, bool]]:
    """(size, hash, executable) of the recorded files among ``todo`` (files the stat cache
    cannot vouch for), read from only the row groups that may hold them."""
    if parent is None or not todo:
        return {}
    columns = ["size", "hash", "executable"]
    found = versions.lookup(repo, parent, pa.array([e.path for e in todo], pa.string()), columns)
    return {
        p: (s, h, x)
        for p, s, h, x in zip(*(found.column(c).to_pylist() for c in ("path", *columns)))
    }


def _deleted(
    repo: Repo, parent: versions.Version | None, entries: list[Entry], present: int
) -> list[str]:
    """Recorded paths missing from the folder. Counting says whether there are any; only
    then are the recorded paths streamed to name them."""
    if parent is None or present == parent.files:
        return []
    have = pa.array([e.path for e in entries], pa.string())
    return [
        p
        for group in versions.scan(repo, parent, ["path"])
        for p in group.column("path")
        .filter(pc.invert(pc.is_in(group.column("path"), value_set=have)))
        .to_pylist()
    ]


def _store(
    repo: Repo,
    target: Target,
    fresh: list[Entry],
    cache: list[tuple[Entry, int]],
    progress: Progress,
) -> tuple[list[Row], int]:
    """Chunk the new files into packs (large ones on both cores, as ``cas add`` does)."""
    progress.start(f"appending to {target.path}", sum(e.size for e in fresh))
    rows = []
    with repo.objects.writer() as writer:

        def one(entry: Entry) -> tuple[Entry, Row, int]:
            return (entry, *_hash(repo, target, entry, writer))

        large = [e for e in fresh if e.size >= PARALLEL_MIN_SIZE]
        small = [e for e in fresh if e.size < PARALLEL_MIN_SIZE]
        for entry, row, checked in itertools.chain(bounded_map(one, large), map(one, small)):
            rows.append(row)
            cache.append((entry, checked))
            progress.advance(row.size)
    progress.finish()
    return rows, writer.new_bytes
