"""``cas add``: working-tree data -> chunks in packs -> manifest -> pointer, staged in Git.

Order makes every crash harmless: packs are sealed (durable, findable) before the manifest that
names their chunks is written, and the manifest before the pointer that names it. A kill -9 at any
point leaves at most unreferenced objects or temp files, and rerunning completes the work.
"""

from __future__ import annotations

import os
import shlex
import stat
import sys
from array import array
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cas.errors import ConflictError, PathError
from cas.gitio import git_rm_cached
from cas.ops.hashfile import hash_file
from cas.ops.needs import Need
from cas.parallel import overlapped_map
from cas.pointer import Pointer
from cas.progress import Progress, Silent
from cas.rows import Row
from cas.state import trustworthy
from cas.workspace import Listing, refuse, scan

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from cas.objects import Staging
    from cas.ops.distribute import Cluster
    from cas.repo import Repo, Target
    from cas.state import StatSnapshot

_ALWAYS_TRUSTED = sys.maxsize
PARALLEL_MIN_SIZE = 1 << 20


@dataclass(frozen=True)
class AddResult:
    target: str
    pointer: str
    manifest: str
    files: int
    size: int
    hashed_files: int
    new_bytes: int
    pointer_changed: bool
    remote: str | None = None  # --to-remote: where the new bytes went instead of the store


def working_entries(
    repo: Repo, target: Target, missing_ok: bool = False
) -> tuple[str | None, Listing]:
    """The kind of a target in the working tree ("dir", "file"; None if absent and
    ``missing_ok``) and its files. A symlinked target is refused: following it could read or
    write outside the repository."""
    path = repo.abspath(target.path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if missing_ok:
            return None, Listing()
        raise PathError(f"{target.path} does not exist; check the path", path=target.path) from None
    if stat.S_ISDIR(st.st_mode):
        return "dir", scan(path, target.path)
    if stat.S_ISREG(st.st_mode):
        single = Listing()
        single.add(path.name, st)
        return "file", single
    raise refuse(st.st_mode, target.path)


def file_path(repo: Repo, target: Target, kind: str, rel: str) -> str:
    """Where a manifest row lives, relative to the repository root."""
    return target.path if kind == "file" else f"{target.path}/{rel}"


def refuse_git_tracked(repo: Repo, target: Target) -> None:
    """Data Git already tracks would be versioned twice (and its ignore rule would not apply)."""
    if repo.git.is_tracked(target.path):
        raise PathError(
            f"{target.path} is tracked by Git; run: {git_rm_cached(target.path)}", path=target.path
        )


def unfinished_checkout(repo: Repo, target: Target) -> ConflictError | None:
    """The error for a target whose last checkout stopped part way (:class:`CheckoutMarks`):
    its tree holds part of the old data and part of the new, so adding it would record every
    file not yet written as deleted."""
    if repo.checkouts.pending(target.path) is None:
        return None
    return ConflictError(
        f"the last checkout of {target.path} did not finish, so files may be missing; finish "
        f"it with: cas checkout -- {shlex.quote(target.pointer)} (then make your changes again)"
    )


def add(
    repo: Repo,
    target: Target,
    progress: Progress | None = None,
    cluster: Cluster | None = None,
    tracked_ok: bool = False,
    staging: Staging | None = None,
) -> AddResult:
    """``cluster``: hash on its workers instead of this process (:mod:`cas.ops.distribute`).
    ``tracked_ok`` is for ``cas import lfs``, which drops the files from the Git index only once
    their pointer is written (so a kill -9 never loses the record).
    ``staging`` (``cas add --to-remote``): new packs go to its remote and leave the local
    store, and the manifest reaches the remote before the pointer names it, so a pointer that
    is written can be fetched by every clone; a failure before that leaves the old pointer."""
    progress = progress or Silent()
    if not tracked_ok:
        refuse_git_tracked(repo, target)
    if (err := unfinished_checkout(repo, target)) is not None:
        raise err
    kind, entries = working_entries(repo, target)
    snapshot = repo.stat_cache.load(target.path)
    if snapshot and not repo.objects.has_manifest(snapshot.manifest_id):
        snapshot = None  # the cached manifest is gone (gc): trust nothing
    total = entries.total_size

    if snapshot and snapshot.unchanged(entries):
        manifest_id, hashed, new_bytes = snapshot.manifest_id, 0, 0
    else:
        manifest_id, hashed, new_bytes = _store(
            repo, target, kind, entries, snapshot, progress, cluster, staging
        )
    ptr = Pointer(kind, manifest_id, total, len(entries))
    if staging is not None:
        staging.finish(Need(target.pointer, target.pointer, ptr.kind, manifest_id))
    with repo.lock():
        changed = repo.write_pointer(target, ptr)
        gitignore = repo.ignore(target)
        repo.git.stage([target.pointer, gitignore])
    remote = staging.spec.name if staging is not None else None
    return AddResult(target.path, target.pointer, manifest_id, len(entries), total, hashed,
                     new_bytes, changed, remote)  # fmt: skip


def _store(
    repo: Repo,
    target: Target,
    kind: str,
    entries: Listing,
    snapshot: StatSnapshot | None,
    progress: Progress,
    cluster: Cluster | None,
    staging: Staging | None = None,
) -> tuple[str, int, int]:
    """Hash what the stat cache cannot vouch for, store new chunks and the manifest, and
    refresh the cache. Returns (manifest id, files hashed, new bytes stored).

    Files are handled by their index in ``entries``: at 1,000,000 files an Entry or a Row kept
    per file would cost hundreds of MB (docs/reliability.md, "Load")."""
    # pyarrow is imported only here: an unchanged re-add must not pay its import time
    import pyarrow as pa
    import pyarrow.compute as pc

    from cas import manifest

    hits = snapshot.matching(entries) if snapshot else None
    todo = array("q", (i for i, hit in enumerate(hits) if not hit)) if hits else range(len(entries))
    sizes = entries.sizes
    progress.start(f"adding {target.path}", sum(sizes[i] for i in todo))
    rows = manifest.RowColumns()
    checked = array("q", [_ALWAYS_TRUSTED]) * len(entries)  # when each file was seen unchanged

    def take(found: Iterator[tuple[int, Row, int]]) -> None:
        for i, row, seen in found:
            rows.append(row)
            checked[i] = seen
            progress.advance(row.size)

    if cluster is not None:
        new_bytes = _store_on(cluster, repo, target, kind, entries, todo, take)
    else:
        with repo.objects.writer(staging=staging) as writer:
            root = str(repo.root)

            def one(i: int) -> tuple[int, Row, int]:
                entry = entries[i]
                shown = file_path(repo, target, kind, entry.path)
                return (i, *hash_file(f"{root}/{shown}", entry, shown, writer))

            # Large files on a pool (chunking and hashing release the GIL) while this thread
            # does the small ones, where more threads would only fight over the GIL (measured:
            # 2x slower).
            large = array("q", (i for i in todo if sizes[i] >= PARALLEL_MIN_SIZE))
            small = array("q", (i for i in todo if sizes[i] < PARALLEL_MIN_SIZE))
            take(overlapped_map(one, large, small))
        new_bytes = writer.new_bytes
    progress.finish()
    table = rows.table()
    if snapshot and hits and any(hits):
        old = repo.load_manifest(snapshot.manifest_id)
        kept_paths = pa.array([p for p, hit in zip(entries.paths, hits) if hit], pa.string())
        kept = old.filter(pc.is_in(old.column("path"), value_set=kept_paths))
        table = pa.concat_tables([kept, table]).sort_by("path")
    manifest_id = repo.store_manifest(table)
    changed = entries.changed_ns()
    racy = {i for i in todo if not trustworthy(changed[i], checked[i])}
    trusted = entries.subset(i for i in range(len(entries)) if i not in racy) if racy else entries
    repo.stat_cache.save(target.path, manifest_id, trusted, len(entries))
    return manifest_id, len(todo), new_bytes


def _store_on(
    cluster: Cluster,
    repo: Repo,
    target: Target,
    kind: str,
    entries: Listing,
    todo: Sequence[int],
    take: Callable[[Iterator[tuple[int, Row, int]]], None],
) -> int:
    """Hash ``todo`` on the cluster's workers, in consecutive batches; the bytes they stored.
    The coordinator's chunk index is dropped afterwards: packs it never saw were sealed."""
    from cas.ops.distribute import FileTask, batches, hash_file_task, run_windowed

    root, store = str(repo.root), str(repo.local.root)
    sizes = entries.sizes
    # Any store call takes the store's shared lock (gc waits until the manifest is written) and
    # creates the store's folder, which the workers check they can see.
    repo.local.exists("packs")

    def tasks() -> Iterator[FileTask]:
        for part in batches([sizes[i] for i in todo]):
            items = []
            for j in part:
                i = todo[j]
                entry = entries[i]
                items.append((i, file_path(repo, target, kind, entry.path), entry))
            yield FileTask(root, store, repo.local.fsync, tuple(items))

    new_bytes = 0
    try:
        for result in run_windowed(cluster.executor, hash_file_task, tasks(), cluster.window):
            take(iter(result.rows))
            new_bytes += result.new_bytes
    finally:
        repo.objects.forget_index()
    return new_bytes
