"""``cas checkout``: make a target's files equal to a pointer's manifest, losing nothing.

Only files whose content differs are written; each is built in a temp file beside it from
verified chunks, its whole-file hash checked, then renamed into place, so a reader (or a kill -9)
sees the old file or the new one, never a mix. Where the filesystem has reflinks (XFS, btrfs),
the block-aligned runs of a large file's chunks are cloned out of their packs rather than copied:
no data written, no space used (the chunks are still read and verified). A file about to be
overwritten or deleted must be recoverable from the store, or the checkout stops and lists it
(``--force`` overrides).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cas import hashing
from cas.errors import ConflictError, CorruptObjectError, ManifestError, PathError
from cas.objects import ALIGN_MIN_SIZE, Span
from cas.ops.add import PARALLEL_MIN_SIZE
from cas.ops.compare import expected_rows
from cas.ops.worktree import Worktree, read_worktree
from cas.parallel import overlapped_map
from cas.pointer import Pointer
from cas.progress import Progress, Silent
from cas.rows import Row
from cas.state import settled, trusted
from cas.store.local import storage_error
from cas.workspace import Listing, temp_name

if TYPE_CHECKING:
    from cas.manifest import TableRows
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
    bytes_cloned: int = 0  # of bytes_written, those cloned (reflinked) from packs, not copied
    conflicts: list[str] = field(default_factory=list)


def _under(path: str, prefix: str | None) -> bool:
    return prefix is None or path == prefix or path.startswith(prefix + "/")


def _no_subtree(target: Target, subpath: str, rev: str | None) -> PathError:
    """A subtree that names nothing (a typo) is an error, not a checkout of 0 files."""
    where = f"{rev}:{target.pointer}" if rev else target.pointer
    return PathError(
        f"{target.path}/{subpath}: no tracked file there or below in {where}; "
        f"'cas ls {target.pointer}' lists the tracked paths",
        path=f"{target.path}/{subpath}",
    )


def checkout(
    repo: Repo,
    target: Target,
    rev: str | None = None,
    force: bool = False,
    subpath: str | None = None,
    progress: Progress | None = None,
    subtree_required: bool = True,
) -> CheckoutResult:
    """``subpath`` (relative to the target) limits the checkout to one subtree; one that holds
    no tracked file is an error (a typo) when ``subtree_required``."""
    progress = progress or Silent()
    ptr = repo.read_pointer(target, rev)
    result = CheckoutResult(target.path, target.pointer, ptr.manifest)
    if ptr.kind == "corpus":  # pinned in place at its URL: nothing to write locally
        _write_pointer_if_rev(repo, target, ptr, rev)
        return result
    tree = read_worktree(repo, target, expected=ptr.manifest)
    # An earlier checkout left this target half done: only a whole-target checkout that
    # succeeds clears that; one of a subtree leaves the rest as unfinished as it was.
    unfinished = repo.checkouts.pending(target.path) is not None
    if tree.all_cached and _totals_match(ptr, tree):  # unchanged: no manifest read at all
        named = subtree_required and subpath is not None
        if named and not any(_under(p, subpath) for p in tree.entries.paths):
            raise _no_subtree(target, subpath, rev)
        result.unchanged = len(tree.entries)
        _write_pointer_if_rev(repo, target, ptr, rev)
        if unfinished and subpath is None:
            repo.checkouts.done(target.path)
        return result
    expected = expected_rows(repo, target, ptr)
    _check_totals(ptr, expected, f"{rev}:{target.pointer}" if rev else target.pointer)
    base = repo.abspath(target.path)
    plan = _plan(repo, target, ptr.kind, tree, expected, subpath)
    if (
        subtree_required
        and subpath is not None
        and not (plan.unchanged or plan.small or plan.large or plan.chmods or plan.deletes)
    ):
        raise _no_subtree(target, subpath, rev)
    result.unchanged = plan.unchanged

    unsafe = [p for p in plan.at_risk if not _recoverable(repo, tree.rows[p])]
    if unsafe and not force:
        shown = [_shown(target, ptr.kind, p) for p in unsafe]
        more = f" (+{len(shown) - _CONFLICT_LIST} more)" if len(shown) > _CONFLICT_LIST else ""
        raise ConflictError(
            f"checkout of {target.path} would overwrite or delete data the store does not hold: "
            f"{', '.join(shown[:_CONFLICT_LIST])}{more}; run 'cas add' to keep it, "
            "or --force to discard it",
            shown,
        )
    writes = plan.small + plan.large
    if writes and len(expected) > 1:
        _refuse_collisions(base, expected)
    if plan.missing:
        from cas.ops.transfer import fetch_chunks  # lazily: fsspec is not needed otherwise

        fetch_chunks(repo, set(plan.missing), progress=progress, needed_by=target.pointer)
        index = repo.objects.index
        for cid, (size, path) in plan.missing.items():
            if index[cid].length != size:
                _lying(cid, size, _shown(target, ptr.kind, path),
                       f"the store holds {index[cid].length}")  # fmt: skip

    mark = _Marker(repo, target.path, ptr.manifest)
    if plan.kind_clash:
        mark()
        _remove(base)
    else:
        for p in plan.deletes:
            mark()
            _remove(Path(_dest(base, ptr.kind, p)))
            result.deleted += 1
        _prune_empty_dirs(base, plan.deletes)

    progress.start(f"checking out {target.path}", plan.write_bytes)
    cached = Listing()
    if not plan.kind_clash:
        cached = trusted(
            tree.cache_entries[p]
            for p, have in tree.rows.items()
            if p in expected and expected[p] == have
        )
    _make_folders({os.path.dirname(_dest(base, ptr.kind, p)) for p in writes})

    cloning = _Cloning()

    def write(path: str) -> tuple[os.stat_result, int]:
        dest = _dest(base, ptr.kind, path)
        return _write_file(
            repo, expected[path], dest, _shown(target, ptr.kind, path), cloning, mark
        )

    # Large files on a pool while this thread writes the small ones: two threads creating small
    # files contend in the kernel and for the GIL (measured: slower than one).
    written = Listing()
    for path, (st, cloned) in zip(writes, overlapped_map(write, plan.large, plan.small)):
        written.add(path, st)
        result.written += 1
        result.bytes_written += st.st_size
        result.bytes_cloned += cloned
        progress.advance(st.st_size)
    for row in plan.chmods:
        mark()
        dest = _dest(base, ptr.kind, row.path)
        _set_executable(dest, row.executable)
        written.add(row.path, os.lstat(dest))
    progress.finish()
    cached.extend(settled(written))
    repo.stat_cache.save(target.path, ptr.manifest, cached, len(expected))
    _write_pointer_if_rev(repo, target, ptr, rev)
    if subpath is None or not unfinished:
        repo.checkouts.done(target.path)
    return result


@dataclass
class _Plan:
    """What a checkout will do, decided before it touches anything. Writes are paths, split by
    size (see ``overlapped_map``): their rows are built again one at a time as they are written,
    since 1,000,000 of them held at once would not fit in 1 GiB."""

    kind_clash: bool
    small: list[str] = field(default_factory=list)
    large: list[str] = field(default_factory=list)
    write_bytes: int = 0
    chmods: list[Row] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    at_risk: list[str] = field(default_factory=list)  # present files to overwrite or delete
    missing: dict[bytes, tuple[int, str]] = field(default_factory=dict)  # id -> (length, path)
    unchanged: int = 0


def _plan(
    repo: Repo,
    target: Target,
    kind: str,
    tree: Worktree,
    expected: Mapping[str, Row],
    subpath: str | None,
) -> _Plan:
    """Compare the tree with the manifest. Every chunk a write needs is checked here, before
    anything is deleted or written: one the store holds must have the length the manifest gives
    it (the index knows each length), so a manifest whose sizes lie is refused with the working
    tree untouched; one it lacks is listed for fetching, and checked once fetched."""
    plan = _Plan(kind_clash=tree.kind is not None and tree.kind != kind)
    index = repo.objects.index
    for path, row in expected.items():
        if not _under(path, subpath):
            continue
        have = None if plan.kind_clash else tree.rows.get(path)
        if have is not None and have.hash == row.hash:
            if have.executable != row.executable:
                plan.chmods.append(row)
            else:
                plan.unchanged += 1
            continue
        if have is not None:
            plan.at_risk.append(path)
        (plan.large if row.size >= PARALLEL_MIN_SIZE else plan.small).append(path)
        plan.write_bytes += row.size
        for cid, size in row.chunks:
            loc = index.get(cid)  # one lookup: a million chunks for a million small files
            if loc is not None:
                if loc.length != size:
                    _lying(cid, size, _shown(target, kind, path), f"the store holds {loc.length}")
            elif plan.missing.setdefault(cid, (size, path))[0] != size:
                first, other = plan.missing[cid]
                _lying(cid, size, _shown(target, kind, path),
                       f"and {first} for {_shown(target, kind, other)}")  # fmt: skip
    for path in tree.entries.paths:
        if (plan.kind_clash or path not in expected) and _under(path, subpath):
            plan.deletes.append(path)
    plan.at_risk[:0] = plan.deletes
    return plan


def _totals_match(ptr: Pointer, tree: Worktree) -> bool:
    """What :func:`_check_totals` checks, from the files the stat cache vouches for."""
    if ptr.kind not in ("dir", "file"):
        return True
    return (len(tree.entries), tree.entries.total_size) == (ptr.files, ptr.size)


def _check_totals(ptr: Pointer, expected: TableRows, where: str) -> None:
    """The pointer is what a reviewer sees in a Git diff: its ``size`` and ``files`` must be
    what the checkout writes, or a pointer saying 1 KB could fill the disk with 1 TB."""
    if ptr.kind not in ("dir", "file"):
        return  # versioned kinds: the version's totals are checked against its segments
    files, size = len(expected), expected.total_size
    if (files, size) != (ptr.files, ptr.size):
        raise ManifestError(
            f"{where} says {ptr.files} files, {ptr.size} bytes, but its manifest {ptr.manifest} "
            f"holds {files} files, {size} bytes; the pointer or the manifest is damaged or "
            "hostile: restore the pointer from Git"
        )


def _lying(cid: bytes, size: int, shown: str, truth: str) -> None:
    raise CorruptObjectError(
        f"the manifest gives chunk {cid.hex()} of {shown} {size} bytes, {truth}; the manifest "
        "is corrupt or hostile: nothing was written"
    )


def _folding(folder: Path) -> tuple[bool, bool]:
    """Whether the filesystem holding ``folder`` treats names differing only in case, or only
    in Unicode normalisation (NFC/NFD), as one name (macOS, Windows, casefold ext4): a probe
    file is created, and looked up under its other spellings."""
    while not folder.is_dir():
        folder = folder.parent
    probe = Path(temp_name(folder / "Case-\u00e9"))  # é in NFC
    name = probe.name
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as err:
        raise storage_error(err, f"cannot create a file in {folder}") from err
    try:
        case = os.path.lexists(folder / name.swapcase())
        norm = os.path.lexists(folder / unicodedata.normalize("NFD", name))
    finally:
        _unlink(str(probe))
    return case, norm


def _fold(path: str, case: bool, norm: bool) -> str:
    if norm and not path.isascii():
        path = unicodedata.normalize("NFC", path)
    return unicodedata.normalize("NFC", path.casefold()) if case else path


def _refuse_collisions(base: Path, expected: Mapping[str, Row]) -> None:
    """Refuse a manifest two of whose paths (or folders) are one name on this filesystem:
    ``A`` and ``a`` on a case-insensitive one, ``é`` in NFC and NFD on a normalising one. There,
    writing the second would overwrite the first. Where both can coexist (Linux), both are
    written: the manifest is valid, only this filesystem cannot hold it."""
    case, norm = _folding(base)
    if not (case or norm):
        return
    seen: dict[str, str] = {}
    for path in expected:
        parts = path.split("/")
        for depth in range(len(parts), 0, -1):
            name = "/".join(parts[:depth])
            key = _fold(name, case, norm)
            other = seen.get(key)
            if other is None:
                seen[key] = name
                continue
            if other == name:
                break  # a folder seen already, and so were its parents
            raise PathError(
                f"{other!r} and {name!r} are one name on the filesystem of {base}, which "
                f"ignores {'case' if case else 'Unicode normalisation'}; check out on a "
                "filesystem that tells them apart, or rename one in the source"
            )


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


def _dest(base: Path, kind: str, path: str) -> str:
    """A plain string, not a Path: this runs once per file, 1,000,000 times for some datasets."""
    return str(base) if kind == "file" else f"{base}/{path}"


def _recoverable(repo: Repo, row: Row) -> bool:
    return not repo.objects.missing_chunks(cid for cid, _ in row.chunks)


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


def _set_executable(dest: str, executable: bool) -> None:
    mode = os.lstat(dest).st_mode & 0o777
    os.chmod(dest, (mode | 0o111) if executable else (mode & ~0o111))


@dataclass
class _Cloning:
    """Whether clones may work in this checkout: the first refusal (ext4, or a store on another
    filesystem) turns them off, so the files after it do not each ask again."""

    on: bool = True


class _Marker:
    """Writes the target's checkout marker (:class:`cas.state.CheckoutMarks`) once, just before
    the first change to its tree (a deletion, a rename into place, a chmod): a checkout that
    fails before changing anything (a hostile manifest refused at its first file) leaves no
    marker. Called from the writer threads too, hence the lock."""

    def __init__(self, repo: Repo, target: str, manifest_id: str) -> None:
        self.repo, self.target, self.manifest_id = repo, target, manifest_id
        self.written = False
        self._lock = threading.Lock()

    def __call__(self) -> None:
        if self.written:
            return
        with self._lock:
            if not self.written:
                self.repo.checkouts.begin(self.target, self.manifest_id)
                self.written = True


def _write_file(
    repo: Repo, row: Row, dest: str, shown: str, cloning: _Cloning, mark: _Marker
) -> tuple[os.stat_result, int]:
    """Build ``dest`` from verified chunks through a temp file beside it; its stat after, and
    how many of its bytes were cloned rather than copied."""
    tmp = temp_name(dest)
    cloned: list[Span] = []
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o777 if row.executable else 0o666)
        try:
            if len(row.chunks) == 1 and row.chunks[0][0] == row.hash:
                data = repo.objects.read_chunk(row.hash)  # verified: chunk == file
                check_length(row.chunks[0], data, shown)
                _write_all(fd, data, 0)
            else:
                if cloning.on and row.size >= ALIGN_MIN_SIZE:
                    cloned = _clone(repo, row, fd, cloning)
                h = hashing.hasher()
                pos = 0
                for chunk, data in zip(
                    row.chunks, repo.objects.read_chunks([cid for cid, _ in row.chunks])
                ):
                    check_length(chunk, data, shown)
                    h.update(data)  # cloned bytes too: read, verified, just not written
                    _write_around(fd, data, pos, cloned)
                    pos += len(data)
                if h.digest() != row.hash:
                    raise CorruptObjectError(
                        f"the chunks of {shown} do not hash to its recorded hash; "
                        "the manifest is corrupt or hostile: run 'cas fsck'"
                    )
        finally:
            os.close(fd)
        mark()
        os.replace(tmp, dest)
    except OSError as err:
        _unlink(tmp)
        raise storage_error(err, f"cannot write {shown}") from err
    except BaseException:
        _unlink(tmp)
        raise
    return os.lstat(dest), sum(span.end - span.start for span in cloned)


def _clone(repo: Repo, row: Row, fd: int, cloning: _Cloning) -> list[Span]:
    """Clone what can be cloned of ``row`` into ``fd``; the spans cloned."""
    cloned = []
    for span in repo.objects.clonable(row.chunks):
        if not repo.objects.clone(span, fd):
            cloning.on = False
            break
        cloned.append(span)
    return cloned


def _write_around(fd: int, data: bytes, pos: int, cloned: list[Span]) -> None:
    """Write ``data`` (the file's bytes from ``pos``) except the parts cloned spans hold."""
    end = pos + len(data)
    view = memoryview(data)
    done = pos
    for span in cloned:  # sorted, one or a few per pack the file's chunks lie in
        if span.end <= done or span.start >= end:
            continue
        if span.start > done:
            _write_all(fd, view[done - pos : span.start - pos], done)
        done = min(span.end, end)
    if done < end:
        _write_all(fd, view[done - pos :], done)


def check_length(chunk: tuple[bytes, int], data: bytes, shown: str) -> None:
    """The chunk read must have the length the manifest gives it (whose lengths add up to the
    file's size), so a file is never written with a size its row does not state."""
    if len(data) != chunk[1]:
        raise CorruptObjectError(
            f"chunk {chunk[0].hex()} of {shown} holds {len(data)} bytes, the manifest says "
            f"{chunk[1]}; the manifest is corrupt or hostile: run 'cas fsck'"
        )


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _write_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def _remove(path: Path) -> None:
    try:
        with contextlib.suppress(FileNotFoundError):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    except OSError as err:  # a read-only folder: one line naming it, as for writes
        raise storage_error(err, f"cannot delete {path}") from err


def _prune_empty_dirs(base: Path, deleted: list[str]) -> None:
    """Remove folders that the deletions emptied, deepest first, never ``base`` itself."""
    parents = {str(p) for d in deleted for p in (base / d).parents if base in p.parents}
    for folder in sorted(parents, key=len, reverse=True):
        with contextlib.suppress(OSError):
            os.rmdir(folder)
