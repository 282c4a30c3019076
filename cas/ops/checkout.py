"""``cas checkout``: make a target's files equal to a pointer's manifest, losing nothing.

Only files whose content differs are written; each is built in a temp file beside it from
verified chunks, its whole-file hash checked, then renamed into place, so a reader (or a kill -9)
sees the old file or the new one, never a mix. A file about to be overwritten or deleted must be
recoverable from the store, or the checkout stops and lists it (``--force`` overrides).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cas import hashing
from cas.errors import ConflictError, CorruptObjectError, PathError
from cas.ops.add import PARALLEL_MIN_SIZE
from cas.ops.compare import expected_rows
from cas.ops.worktree import read_worktree
from cas.parallel import overlapped_map
from cas.pointer import Pointer
from cas.progress import Progress, Silent
from cas.rows import Row
from cas.state import settled
from cas.store.local import storage_error
from cas.workspace import TEMP_MARK, Entry, entry_of

if TYPE_CHECKING:
    from pathlib import Path

    from cas.repo import Repo, Target

_CONFLICT_LIST = 20


@dataclass
class CheckoutResult:
    target: str
    pointer: str
    manifest: str
    written: int = 0
    deleted: int = 0
    unchanged: int = 0
    bytes_written: int = 0
    conflicts: list[str] = field(default_factory=list)


def _under(path: str, prefix: str | None) -> bool:
    return prefix is None or path == prefix or path.startswith(prefix + "/")


def checkout(
    repo: Repo,
    target: Target,
    rev: str | None = None,
    force: bool = False,
    subpath: str | None = None,
    progress: Progress | None = None,
) -> CheckoutResult:
    """``subpath`` (relative to the target) limits the checkout to one subtree."""
    progress = progress or Silent()
    ptr = repo.read_pointer(target, rev)
    result = CheckoutResult(target.path, target.pointer, ptr.manifest)
    if ptr.kind == "corpus":  # pinned in place at its URL: nothing to write locally
        _write_pointer_if_rev(repo, target, ptr, rev)
        return result
    expected = expected_rows(repo, target, ptr)
    base = repo.abspath(target.path)
    tree = read_worktree(repo, target, expected=ptr.manifest)
    if tree.all_cached:
        result.unchanged = len(tree.entries)
        _write_pointer_if_rev(repo, target, ptr, rev)
        return result

    kind_clash = tree.kind is not None and tree.kind != ptr.kind
    writes: list[Row] = []
    chmods: list[Row] = []
    deletes: list[str] = []
    for path, row in expected.items():
        if not _under(path, subpath):
            continue
        have = None if kind_clash else tree.rows.get(path)
        if have is None or have.hash != row.hash:
            writes.append(row)
        elif have.executable != row.executable:
            chmods.append(row)
        else:
            result.unchanged += 1
    for entry in tree.entries:
        if (kind_clash or entry.path not in expected) and _under(entry.path, subpath):
            deletes.append(entry.path)

    at_risk = deletes + [r.path for r in writes if r.path in tree.rows]
    unsafe = [p for p in at_risk if not _recoverable(repo, tree.rows[p])]
    if unsafe and not force:
        shown = [_shown(target, ptr.kind, p) for p in unsafe]
        more = f" (+{len(shown) - _CONFLICT_LIST} more)" if len(shown) > _CONFLICT_LIST else ""
        raise ConflictError(
            f"checkout of {target.path} would overwrite or delete data the store does not hold: "
            f"{', '.join(shown[:_CONFLICT_LIST])}{more}; run 'cas add' to keep it, "
            "or --force to discard it",
            shown,
        )
    needed = {cid for r in writes for cid, _ in r.chunks}
    missing = repo.objects.missing_chunks(needed)
    if missing:
        from cas.ops.transfer import fetch_chunks  # lazily: fsspec is not needed otherwise

        fetch_chunks(repo, missing, progress=progress, needed_by=target.pointer)

    if kind_clash:
        _remove(base)
    else:
        for p in deletes:
            _remove(_dest(base, ptr.kind, p))
            result.deleted += 1
        _prune_empty_dirs(base, deletes)

    progress.start(f"checking out {target.path}", sum(r.size for r in writes))
    cache = {
        p: tree.cache_entries[p]
        for p, row in expected.items()
        if not kind_clash and p in tree.rows and tree.rows[p] == row
    }

    dests = {row.path: str(_dest(base, ptr.kind, row.path)) for row in writes}
    _make_folders({os.path.dirname(d) for d in dests.values()})

    def write(row: Row) -> Entry:
        return _write_file(repo, row, dests[row.path], _shown(target, ptr.kind, row.path))

    # Large files on a pool while this thread writes the small ones: two threads creating small
    # files contend in the kernel and for the GIL (measured: slower than one).
    large = [r for r in writes if r.size >= PARALLEL_MIN_SIZE]
    small = [r for r in writes if r.size < PARALLEL_MIN_SIZE]
    written = []
    for entry in overlapped_map(write, large, small):
        written.append(entry)
        result.written += 1
        result.bytes_written += entry.size
        progress.advance(entry.size)
    for row in chmods:
        dest = _dest(base, ptr.kind, row.path)
        _set_executable(dest, row.executable)
        written.append(_stat_entry(dest, row.path))
    progress.finish()
    trusted_from = settled(written)
    cache.update((e.path, (e, trusted_from)) for e in written)
    repo.stat_cache.save(target.path, ptr.manifest, cache.values(), len(expected))
    _write_pointer_if_rev(repo, target, ptr, rev)
    return result


def _write_pointer_if_rev(repo: Repo, target: Target, ptr: Pointer, rev: str | None) -> None:
    """Checking out another revision's data also brings its pointer, as ``git checkout REV --
    PATH`` does, so the working tree stays coherent: data and pointer agree."""
    if rev is None:
        return
    with repo.lock():
        if repo.write_pointer(target, ptr):
            repo.git.stage([target.pointer, repo.ignore(target)])


def _shown(target: Target, kind: str, path: str) -> str:
    return target.path if kind == "file" else f"{target.path}/{path}"


def _dest(base: Path, kind: str, path: str) -> Path:
    return base if kind == "file" else base / path


def _recoverable(repo: Repo, row: Row) -> bool:
    return not repo.objects.missing_chunks(cid for cid, _ in row.chunks)


def _stat_entry(dest: str | Path, rel: str) -> Entry:
    return entry_of(str(dest), rel, os.lstat(dest))


def _make_folders(folders: set[str]) -> None:
    """Create every folder the writes need once, parents first, instead of once per file."""
    for folder in sorted(folders):
        try:
            os.makedirs(folder, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise PathError(
                f"{folder} is in the way of a folder the checkout needs: a file stands in its "
                "path; move it away or use --force"
            ) from None
        except OSError as err:
            raise storage_error(err, f"cannot create folder {folder}") from err


def _set_executable(dest: Path, executable: bool) -> None:
    mode = os.lstat(dest).st_mode & 0o777
    os.chmod(dest, (mode | 0o111) if executable else (mode & ~0o111))


def _write_file(repo: Repo, row: Row, dest: str, shown: str) -> Entry:
    """Build ``dest`` from verified chunks through a temp file beside it (plain strings, no
    pathlib: this runs once per file, 200,000 times for a many-small-files dataset)."""
    folder, name = os.path.split(dest)
    tmp = f"{folder}/.{name}{TEMP_MARK}{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o777 if row.executable else 0o666)
        try:
            if len(row.chunks) == 1 and row.chunks[0][0] == row.hash:
                _write_all(fd, repo.objects.read_chunk(row.hash))  # verified: chunk == file
            else:
                h = hashing.hasher()
                for data in repo.objects.read_chunks([cid for cid, _ in row.chunks]):
                    h.update(data)
                    _write_all(fd, data)
                if h.digest() != row.hash:
                    raise CorruptObjectError(
                        f"the chunks of {shown} do not hash to its recorded hash; "
                        "the manifest is corrupt or hostile: run 'cas fsck'"
                    )
        finally:
            os.close(fd)
        os.replace(tmp, dest)
    except OSError as err:
        _unlink(tmp)
        raise storage_error(err, f"cannot write {shown}") from err
    except BaseException:
        _unlink(tmp)
        raise
    return _stat_entry(dest, row.path)


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _prune_empty_dirs(base: Path, deleted: list[str]) -> None:
    """Remove folders that the deletions emptied, deepest first, never ``base`` itself."""
    parents = {str(p) for d in deleted for p in (base / d).parents if base in p.parents}
    for folder in sorted(parents, key=len, reverse=True):
        with contextlib.suppress(OSError):
            os.rmdir(folder)
