"""``cas://``: tracked data as a read-only fsspec filesystem, at any Git revision.

    import pandas as pd
    pd.read_parquet("cas://snapshots/orders/2026-11-26.parquet", storage_options={"rev": "v1"})

Paths are repository-relative paths of tracked files (``data/x/y.bin`` inside a tracked folder
``data``, or a tracked single file ``model.bin``); folders are implied by those paths. Storage
options: ``rev`` (a Git revision; default the worktree pointers) and ``repo`` (the repository's
path; default the current directory).

A revision can also ride in the URL, for tools that take nothing but a URL (Spark, a config
file): ``cas://@REV/PATH``. REV is everything between the leading ``@`` and the first ``/``,
percent-decoded, so ``feature/x`` is written ``@feature%2Fx`` (and a ``%`` as ``%25``); PATH is
taken as it is. ``cas://@/PATH`` names the worktree pointers explicitly, which is also how a
tracked path whose first component starts with ``@`` is read. The prefix stays in every name
the filesystem returns, so a reader that lists a folder and opens what it found keeps reading
the same revision; a path whose REV is not the filesystem's ``rev`` is an error, never a read
of the other revision.

Nothing is checked out: bytes come from the chunks in the
local store, each verified on read, and a range read touches only the chunks covering the range;
a read of a whole file is also checked against the file's BLAKE3. A corpus's files
(``kind corpus``) are read from where they lie, through :class:`cas.ops.corpus.CorpusReader`:
a whole file is hashed before it is returned, a range is served only while the file's size and
change marker are the recorded ones (docs/corpus.md, "Reading a corpus").

The fsspec entry point ``cas = "cas.fs:CASFileSystem"`` (group ``fsspec.specs``) makes pandas,
pyarrow, DuckDB and anything else fsspec-aware resolve ``cas://`` without importing cas first.

:class:`RepoView` is also what :mod:`cas.torch` reads through: it survives being pickled into a
DataLoader worker and reopens the repository in each process (see its docstring).
"""

from __future__ import annotations

import datetime
import io
import itertools
import os
import urllib.parse
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

from cas import hashing
from cas.errors import CorruptObjectError, UsageError
from cas.gitio import GitRepo
from cas.ops.checkout import check_length
from cas.ops.compare import expected_rows
from cas.pointer import Pointer
from cas.repo import Repo, Target
from cas.rows import Row

if TYPE_CHECKING:
    from cas.ops.corpus import CorpusReader

__all__ = ["CASFile", "CASFileSystem", "RepoView", "open_tracked", "read_bytes"]


def _ensure_local(repo: Repo, chunk_ids: list[bytes], needed_by: str) -> None:
    """Fetch the chunks the local store lacks from the default remote, into the local store.

    The one place reads reach for a remote. The check is a dict lookup per chunk; the remote
    code (fsspec stores, remote config) is imported and consulted only when a chunk is missing,
    so reading local data costs nothing more."""
    missing = repo.objects.missing_chunks(chunk_ids)
    if missing:
        from cas.ops import transfer

        transfer.fetch_chunks(repo, missing, needed_by=needed_by)


def _commit_of(repo: Repo, rev: str) -> str:
    """The commit id ``rev`` names now, so a moving branch or tag cannot change the data under
    a reader that already started (and so a training run can log exactly what it read)."""
    return repo.git.commit_id(rev)


class RepoView:
    """A repository at one revision (None: the worktree pointers), safe across processes.

    Only the root and the resolved commit are pickled. The :class:`Repo` (and with it the
    ObjectStore, whose pack file descriptors and locks must never be shared with a forked or
    spawned child) is reopened lazily whenever ``os.getpid()`` differs from the process that
    opened it, so every DataLoader worker reads through its own handles."""

    def __init__(self, repo: str | os.PathLike[str] | None = None, rev: str | None = None):
        opened = Repo.open(repo)
        self.root: Path = opened.root
        self.rev: str | None = _commit_of(opened, rev) if rev else None
        self._repo: Repo | None = opened
        self._pid = os.getpid()
        self._rows: dict[tuple[str, str], dict[str, Row]] = {}
        self._pointers: dict[str, Pointer] = {}
        self._corpora: dict[str, CorpusReader] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root, "rev": self.rev}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.root = state["root"]
        self.rev = state["rev"]
        self._repo = None
        self._pid = -1
        self._rows = {}
        self._pointers = {}
        self._corpora = {}

    @property
    def repo(self) -> Repo:
        if self._repo is None or self._pid != os.getpid():
            self._repo = Repo(GitRepo(self.root))
            self._pid = os.getpid()
            self._corpora = {}  # their fsspec clients belong to the parent process too
        return self._repo

    def targets(self) -> list[Target]:
        return self.repo.targets((), self.rev)

    def pointer(self, target: Target) -> Pointer:
        """The target's pointer; at a commit it cannot change, so it is read from Git once."""
        if self.rev is None:
            return self.repo.read_pointer(target)
        ptr = self._pointers.get(target.pointer)
        if ptr is None:
            ptr = self._pointers[target.pointer] = self.repo.read_pointer(target, self.rev)
        return ptr

    def files(self, target: Target, ptr: Pointer) -> dict[str, Row]:
        """The target's rows keyed by repository-relative path (cached per manifest id: a
        manifest never changes, so the cache stays right even for worktree pointers)."""
        key = (target.path, ptr.manifest)
        rows = self._rows.get(key)
        if rows is None:
            rows = {
                target.path if ptr.kind == "file" else f"{target.path}/{p}": row
                for p, row in expected_rows(self.repo, target, ptr).items()
            }
            self._rows[key] = rows
        return rows

    def corpus(self, target: Target, ptr: Pointer) -> CorpusReader | None:
        """The reader of a corpus pointer's files (None for any other kind), one per version."""
        if ptr.kind != "corpus":
            return None
        repo = self.repo  # first: a new process drops the readers of its parent
        reader = self._corpora.get(ptr.manifest)
        if reader is None:
            from cas.ops.corpus import CorpusReader

            reader = self._corpora[ptr.manifest] = CorpusReader(repo, ptr.manifest, target.pointer)
        return reader

    def read_file(self, target: Target, ptr: Pointer, rel: str, row: Row) -> bytes:
        """A whole file (``rel`` inside the target), verified against its row: chunk by chunk,
        then length and BLAKE3 of the whole; a corpus file is read from its location."""
        shown = target.path if ptr.kind == "file" else f"{target.path}/{rel}"
        reader = self.corpus(target, ptr)
        if reader is not None:
            return reader.read(rel, row.size, row.hash)
        return verified_file(row, self.read_chunks([cid for cid, _ in row.chunks], shown), shown)

    def read_chunks(self, chunk_ids: list[bytes], needed_by: str) -> list[bytes]:
        """Verified chunk bytes, fetching any the local store lacks first; ``needed_by`` (a
        path) names what needs them if they are on no store."""
        repo = self.repo
        _ensure_local(repo, chunk_ids, needed_by)
        return list(repo.objects.read_chunks(chunk_ids))


def verified_file(row: Row, chunks: list[bytes], shown: str) -> bytes:
    """The file's bytes from its verified chunks, once each chunk has its listed length and the
    whole hashes to the row's hash (a manifest may pair real chunks with another file's hash)."""
    for chunk, data in zip(row.chunks, chunks):
        check_length(chunk, data, shown)
    data = b"".join(chunks)
    if len(data) != row.size or hashing.digest(data) != row.hash:
        raise CorruptObjectError(
            f"the chunks of {shown} do not make up its recorded size and hash; "
            "the manifest is corrupt or hostile: run 'cas fsck'"
        )
    return data


def _dir_info(name: str) -> dict[str, Any]:
    return {"name": name, "size": 0, "type": "directory"}


def _file_info(name: str, row: Row) -> dict[str, Any]:
    return {
        "name": name,
        "size": row.size,
        "type": "file",
        "blake3": row.hash.hex(),
        "executable": row.executable,
    }


def _read_only(path: str) -> PermissionError:
    return PermissionError(
        f"cas://{path}: cas:// is read-only; write the data in the worktree and 'cas add' it"
    )


def split_rev(path: str) -> tuple[str | None, str, str]:
    """``(rev, prefix, rest)`` of a protocol-stripped path: ``"@v1/data/x"`` gives
    ``("v1", "@v1/", "data/x")``, ``"@/x"`` gives ``("", "@/", "x")`` (the worktree, said
    explicitly), a path without the ``@`` form gives ``(None, "", path)``."""
    if not path.startswith("@"):
        return None, "", path
    head, sep, rest = path.partition("/")
    return urllib.parse.unquote(head[1:]), head + sep, rest


class CASFileSystem(AbstractFileSystem):
    """Read-only view of every tracked file at one revision.

    ``cachable`` is off: fsspec would otherwise hand back the instance made for the same
    options, whose worktree target list and resolved ``rev`` commit may be stale since."""

    protocol = "cas"
    root_marker = ""
    cachable = False

    def __init__(
        self,
        repo: str | os.PathLike[str] | None = None,
        rev: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.view = RepoView(repo, rev)
        self._targets: list[Target] | None = None
        self._revs: dict[str, str | None] = {"": None}

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        """Only the protocol goes: an ``@REV/`` prefix stays, for :meth:`_path` to check."""
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        return super()._strip_protocol(path).lstrip("/")

    @staticmethod
    def _get_kwargs_from_urls(path: str) -> dict[str, Any]:
        """fsspec builds the filesystem of ``cas://@REV/...`` with ``rev=REV``."""
        rev, _, _ = split_rev(path.removeprefix("cas://").lstrip("/"))
        return {"rev": rev} if rev else {}

    def _path(self, path: str) -> tuple[str, str]:
        """``(prefix, path)``: the ``@REV/`` prefix (kept for the names returned) and the
        repository-relative path, after checking REV names this filesystem's revision."""
        rev, prefix, rest = split_rev(self._strip_protocol(path))
        if rev is not None:
            if rev not in self._revs:
                self._revs[rev] = _commit_of(self.view.repo, rev)
            if self._revs[rev] != self.view.rev:
                mine = f"revision {self.view.rev}" if self.view.rev else "the worktree pointers"
                raise ValueError(
                    f"cas://{path}: names revision {rev or '(worktree)'!r} but this filesystem "
                    f"reads {mine}; open the URL on its own (fsspec.open, pandas) or make the "
                    f"filesystem with rev={rev!r}"
                )
        return prefix, rest.rstrip("/")

    # -- lookups -----------------------------------------------------------------------------
    def _overlapping(self, path: str) -> Iterator[Target]:
        """Targets that hold ``path`` or lie under it; only their manifests are read."""
        if self._targets is None:
            self._targets = self.view.targets()
        for t in self._targets:
            inside = t.path == path or path.startswith(f"{t.path}/")
            if inside or not path or t.path.startswith(f"{path}/"):
                yield t

    def _rows(self, path: str) -> Iterator[tuple[str, Row]]:
        for t in self._overlapping(path):
            yield from self.view.files(t, self.view.pointer(t)).items()

    def _file(self, path: str) -> Row | None:
        found = self._locate(path)
        return found[3] if found is not None else None

    def _locate(self, path: str) -> tuple[Target, Pointer, str, Row] | None:
        """The target holding the file ``path``, its pointer, the path inside it, its row."""
        for t in self._overlapping(path):
            ptr = self.view.pointer(t)
            row = self.view.files(t, ptr).get(path)
            if row is not None:
                rel = path if ptr.kind == "file" else path[len(t.path) + 1 :]
                return t, ptr, rel, row
        return None

    def _under(self, path: str) -> Iterator[tuple[str, Row]]:
        """(path relative to ``path``, row) of every tracked file below the folder ``path``."""
        prefix = f"{path}/" if path else ""
        for name, row in self._rows(path):
            if name.startswith(prefix):
                yield name[len(prefix) :], row

    # -- fsspec API --------------------------------------------------------------------------
    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        at, path = self._path(path)
        row = self._file(path)
        if row is not None:
            return _file_info(at + path, row)
        if not path or next(self._under(path), None) is not None:
            return _dir_info(at + path)
        raise FileNotFoundError(f"cas://{at}{path}: not a tracked file or folder at this revision")

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        at, path = self._path(path)
        row = self._file(path)
        if row is not None:
            entries = [_file_info(at + path, row)]
        else:
            children: dict[str, dict[str, Any]] = {}
            for rel, row in self._under(path):
                head, sep, _ = rel.partition("/")
                name = at + (f"{path}/{head}" if path else head)
                children[name] = _dir_info(name) if sep else _file_info(name, row)
            if not children and path:
                raise FileNotFoundError(f"cas://{at}{path}: not a tracked folder at this revision")
            entries = [children[name] for name in sorted(children)]
        return entries if detail else [e["name"] for e in entries]

    def find(
        self,
        path: str,
        maxdepth: int | None = None,
        withdirs: bool = False,
        detail: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Every file below ``path`` from the manifests directly, without a walk of ``ls``
        calls (each of which would scan the same rows again)."""
        at, path = self._path(path)
        found: dict[str, dict[str, Any]] = {}
        row = self._file(path)
        if row is not None:
            found[at + path] = _file_info(at + path, row)
        prefix = at + (f"{path}/" if path else "")
        for rel, row in self._under(path):
            parts = rel.split("/")
            if maxdepth is None or len(parts) <= maxdepth:
                found[prefix + rel] = _file_info(prefix + rel, row)
            if withdirs:
                depth = len(parts) - 1 if maxdepth is None else min(len(parts) - 1, maxdepth)
                for i in range(1, depth + 1):
                    name = prefix + "/".join(parts[:i])
                    found.setdefault(name, _dir_info(name))
        if withdirs and path and found and at + path not in found:
            found[at + path] = _dir_info(at + path)
        names = sorted(found)
        return {n: found[n] for n in names} if detail else names

    def modified(self, path: str) -> datetime.datetime:
        """When the file's content was last recorded: the commit's time at a revision, else
        the mtime of the pointer (rewritten by every 'cas add' that changes the data). DuckDB
        keys its cache on this, so it must change whenever the bytes can."""
        _, path = self._path(path)
        if self._file(path) is None:
            raise FileNotFoundError(f"cas://{path}: not a tracked file at this revision")
        target = next(
            t for t in self._overlapping(path) if t.path == path or path.startswith(f"{t.path}/")
        )
        if self.view.rev is not None:
            return self.view.repo.git.commit_time(self.view.rev)
        mtime = self.view.repo.abspath(target.pointer).stat().st_mtime
        return datetime.datetime.fromtimestamp(mtime, tz=datetime.timezone.utc)

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: int | None = None,
        autocommit: bool = True,
        cache_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> CASFile:
        at, path = self._path(path)
        if mode != "rb":
            raise _read_only(path)
        found = self._locate(path)
        if found is None:
            raise FileNotFoundError(f"cas://{at}{path}: not a tracked file at this revision")
        from cas.runs.api import note_read  # inside 'cas run': what the run read

        note_read({"path": path, "rev": self.view.rev, "hash": found[3].hash.hex()})
        return CASFile(
            self, at + path, *found, block_size=block_size, cache_options=cache_options, **kwargs
        )

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        raise _read_only(path2)

    def rm(self, path: str, recursive: bool = False, maxdepth: int | None = None) -> None:
        raise _read_only(path)

    def rm_file(self, path: str) -> None:
        raise _read_only(path)

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        raise _read_only(path)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        raise _read_only(path)


class CASFile(AbstractBufferedFile):
    """A tracked file opened for reading; a byte range maps to the chunks covering it.

    fsspec's default read-ahead cache would fetch 5 MiB past every read, so the file uses no
    fsspec cache and keeps only the last chunk it read: sequential small reads (what pyarrow
    and ``readline`` do) read each chunk once, and a random range read reads only the chunks
    that overlap it. ``chunks_read`` counts chunks read from the store and ``reads`` the I/O
    requests that fetched them (chunks adjacent in a pack come in one read).

    Every chunk is verified against its id and its listed length; a read that covers the whole
    file is also verified against the file's size and BLAKE3. A corpus file is read from its
    location (:class:`cas.ops.corpus.CorpusReader`: whole reads hashed, ranges served while the
    file's size and change marker are the recorded ones)."""

    def __init__(
        self,
        fs: CASFileSystem,
        path: str,
        target: Target,
        ptr: Pointer,
        rel: str,
        row: Row,
        **kwargs: Any,
    ) -> None:
        self.row = row
        self.rel = rel
        self.corpus = fs.view.corpus(target, ptr)
        self.offsets = list(itertools.accumulate((size for _, size in row.chunks), initial=0))
        self.chunks_read = 0
        self.reads = 0
        self._last: tuple[int, bytes] | None = None
        kwargs.setdefault("cache_type", "none")
        if kwargs.get("block_size") is None:
            kwargs["block_size"] = "default"
        super().__init__(fs, path, mode="rb", size=row.size, **kwargs)

    def _fetch_range(self, start: int, end: int) -> bytes:
        end = min(end, self.size)
        if start >= end:
            return b""
        if self.corpus is not None:
            if start == 0 and end == self.size:
                return self.corpus.read(self.rel, self.size, self.row.hash)
            return self.corpus.read_range(self.rel, self.size, self.row.hash, start, end)
        first = bisect_right(self.offsets, start) - 1
        stop = bisect_left(self.offsets, end)  # chunks first .. stop-1 cover [start, end)
        todo = [i for i in range(first, stop) if self._last is None or i != self._last[0]]
        objects = self.fs.view.repo.objects
        reads_before = objects.reads
        got = dict(
            zip(
                todo,
                self.fs.view.read_chunks(
                    [self.row.chunks[i][0] for i in todo], f"cas://{self.path}"
                ),
            )
        )
        if self._last is not None and first <= self._last[0] < stop:
            got[self._last[0]] = self._last[1]
        for i in todo:
            check_length(self.row.chunks[i], got[i], f"cas://{self.path}")
        self.chunks_read += len(todo)
        self.reads += objects.reads - reads_before
        self._last = (stop - 1, got[stop - 1])
        if first == 0 and stop == len(self.row.chunks):  # the whole file: check its hash too
            return verified_file(self.row, [got[i] for i in range(stop)], f"cas://{self.path}")[
                start:end
            ]
        base = self.offsets[first]
        return b"".join(got[i] for i in range(first, stop))[start - base : end - base]


def open_tracked(
    path: str,
    rev: str | None = None,
    mode: str = "rb",
    *,
    repo: str | os.PathLike[str] | None = None,
    encoding: str = "utf-8",
    errors: str | None = None,
    newline: str | None = None,
) -> IO[Any]:
    """``cas.open``: one tracked file at ``rev`` (None: the worktree pointers) as a read-only
    file, through :class:`CASFileSystem` (so reads are verified, ranges touch only their
    chunks, and inside ``cas run`` the read is recorded). ``path`` is repository-relative, as
    in a ``cas://`` URL; ``repo`` is any folder inside the repository (default: the current
    directory). ``mode`` ``"r"`` decodes with ``encoding`` (UTF-8 unless given: the same bytes
    read as the same text on every machine). An untracked path raises FileNotFoundError."""
    if mode not in ("rb", "r", "rt"):
        raise UsageError(
            f"cas.open reads tracked data, mode {mode!r} is not 'rb' or 'r'; write the file in "
            "the worktree and 'cas add' it"
        )
    binary = CASFileSystem(repo=repo, rev=rev).open(path, "rb")
    if mode == "rb":
        return binary
    return io.TextIOWrapper(binary, encoding=encoding, errors=errors, newline=newline)


def read_bytes(
    path: str, rev: str | None = None, *, repo: str | os.PathLike[str] | None = None
) -> bytes:
    """``cas.read_bytes``: the whole file, verified against its BLAKE3 (see
    :func:`open_tracked`). The repository's handles are released before it returns, so a
    notebook that reads once does not keep ``cas gc`` waiting."""
    fs = CASFileSystem(repo=repo, rev=rev)
    try:
        return fs.cat_file(path)
    finally:
        fs.view.repo.close()
