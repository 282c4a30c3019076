"""Repo: the public Python API (docs/api.md). The CLI is a thin shell over it: each command
calls the method of the same name, so a notebook and ``cas`` take one path.

    import cas
    repo = cas.Repo.open()          # or cas.Repo.init(path)
    repo.add(["data"])
    repo.status()
    repo.checkout(rev="v1")

Every method takes its first argument positionally and the rest by keyword (comparisons,
``diff`` and ``runs_diff``, take both sides positionally), and returns dataclasses.

A Repo ties the Git working tree, the ``.cas/`` folder (config, stat cache) and the local object
store together, and knows how to name things: a *target* is tracked data (``data`` or
``model.bin``), its *pointer* is ``data.cas`` beside it, both as POSIX paths relative to the root.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cas import flock, pointer
from cas.config import Config, write_default
from cas.errors import NotARepoError, PathError, UsageError
from cas.gitio import GitRepo, gitignore_pattern, main_worktree
from cas.objects import ObjectStore
from cas.parallel import TRANSFER_JOBS as DEFAULT_JOBS
from cas.progress import Progress
from cas.rows import CONTROL, is_dotgit
from cas.state import CheckoutMarks, StatCache
from cas.store.local import LocalStore
from cas.workspace import NAME_MAX, write_atomic

if TYPE_CHECKING:  # the operations are imported by the methods that run them: start-up
    from concurrent.futures import Executor

    import pyarrow as pa

    from cas.ops.add import AddResult
    from cas.ops.checkout import CheckoutResult
    from cas.ops.compare import FileChange
    from cas.ops.corpus import CorpusResult
    from cas.ops.corpus import VerifyResult as ManifestVerifyResult
    from cas.ops.fsck import FsckResult
    from cas.ops.gc import GcResult
    from cas.ops.status import TargetStatus
    from cas.ops.transfer import FetchResult, PushResult, RemoteStatus, VerifyResult
    from cas.runs.compare import RunDiff
    from cas.runs.repro import ReproResult
    from cas.snapshot import SnapshotInfo

CAS_DIR = ".cas"
_CAS_GITIGNORE = "/store/\n/state/\n/tmp/\n/config.local\n/lock\n"


@dataclass(frozen=True)
class Target:
    """Tracked data and its pointer, relative to the repository root."""

    path: str
    pointer: str


@dataclass(frozen=True)
class LsEntry:
    """One tracked file of :meth:`Repo.ls`: ``hash`` is its BLAKE3 (hex), as ``b3sum`` prints."""

    path: str
    size: int
    hash: str
    executable: bool


@dataclass
class PullResult:
    """:meth:`Repo.pull`: what the fetch brought, then each target's checkout."""

    fetch: FetchResult
    checkout: list[CheckoutResult]


@dataclass(frozen=True)
class RunSummary:
    """One run of :meth:`Repo.runs` (the fields ``cas runs --json`` prints); ``id`` is None
    while the run goes on, ``status`` is ``killed`` for a run whose process is gone."""

    id: str | None
    name: str | None
    status: str
    started: str | None
    ended: str | None
    duration: float | None
    fingerprint: dict[str, str]
    metrics: dict[str, Any]
    reproduces: str | None
    reused: str | None
    outputs: list[str]


@dataclass(frozen=True)
class RunRecord:
    """A run's whole record (docs/format.md, "Run record") and its id."""

    id: str
    record: dict[str, Any]


@dataclass(frozen=True)
class MlflowCopy:
    """:meth:`Repo.runs_to_mlflow`: a cas run and the MLflow run holding its copy."""

    id: str
    mlflow_run: str
    logged: bool  # False: MLflow held it already


@dataclass(frozen=True)
class RunsDiff:
    """:meth:`Repo.runs_diff`: the two runs and how their inputs and metrics differ."""

    a: RunRecord
    b: RunRecord
    diff: RunDiff


class Repo:
    def __init__(self, git_repo: GitRepo) -> None:
        self.git = git_repo
        self.root = git_repo.root
        self.cas_dir = self.root / CAS_DIR
        if not (self.cas_dir / "config").is_file():
            raise NotARepoError(f"cas is not initialised in {self.root}; run 'cas init'")
        self.config = Config(self.cas_dir)
        store_dir = self.config.get("core", "store")
        store_root = (self.root / store_dir) if store_dir else self._default_store()
        self.local = LocalStore(
            store_root.resolve(), fsync=self.config.get_bool("core", "fsync", False)
        )
        self.objects = ObjectStore(self.local)
        self.stat_cache = StatCache(self.cas_dir / "state")
        self.checkouts = CheckoutMarks(self.cas_dir / "checkout")
        self._owned_cache: list[tuple[Path, str]] | None = None

    def _default_store(self) -> Path:
        """``.cas/store``; in a linked worktree (``git worktree add``) the main worktree's, so
        every worktree of a clone reads and writes one store (as they share one ``.git``), and
        a new worktree checks out without fetching anything. A main worktree where cas is not
        initialised keeps its stores apart."""
        main = main_worktree(self.root)
        if main is not None and (main / CAS_DIR / "config").is_file():
            return main / CAS_DIR / "store"
        return self.cas_dir / "store"

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = ".") -> Repo:
        """The repository holding ``path`` (searched upward, as ``git`` does; None: the current
        directory). ``discover`` is the same method under its older name."""
        return cls(GitRepo(Path(path or Path.cwd())))

    discover = open

    @classmethod
    def init(cls, path: str | os.PathLike[str] | None = ".") -> Repo:
        """Create ``.cas/`` (idempotent) and stage its committed files."""
        git_repo = GitRepo(Path(path or Path.cwd()))
        cas_dir = git_repo.root / CAS_DIR
        cas_dir.mkdir(exist_ok=True)
        if not (cas_dir / "config").exists():
            write_default(cas_dir)
        (cas_dir / ".gitignore").write_text(_CAS_GITIGNORE, encoding="utf-8")
        git_repo.stage([f"{CAS_DIR}/config", f"{CAS_DIR}/.gitignore"])
        return cls(git_repo)

    def close(self) -> None:
        """Release open packs and the store's shared lock, so ``cas gc`` need not wait for a
        long-lived process (a notebook) that is done with the store. ``with Repo.discover()
        as repo:`` calls it; the next use takes the lock again."""
        self.objects.close()
        self.local.close()

    def __enter__(self) -> Repo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- naming ------------------------------------------------------------------------------
    def relpath(self, arg: str | Path, cwd: Path | None = None) -> str:
        """A user's path argument as a POSIX path relative to the root; refuses escapes."""
        base = Path(cwd or Path.cwd())
        absolute = Path(os.path.normpath(base / arg))
        root = self.root
        if absolute == root:
            raise PathError(
                "cannot track the repository root itself; name a folder or file", path=str(arg)
            )
        real_parent = absolute.parent.resolve()
        try:
            rel = absolute.relative_to(root)
            real_parent.relative_to(root)
        except ValueError:
            raise PathError(
                f"{arg} is outside the repository {root}; move the data inside it", path=str(arg)
            ) from None
        text = rel.as_posix()
        head = text.split("/", 1)[0]
        if head == CAS_DIR or is_dotgit(head):  # callers that make no target rely on this
            owner = f"cas's folder {CAS_DIR}" if head == CAS_DIR else f"Git's folder {head}"
            raise PathError(
                f"{text} is inside {owner}; refusing, with or without --force (if a commit "
                f"holds it, remove it: git rm -- {shlex.quote(text)})",
                path=text,
            )
        return text

    def target(self, arg: str | Path, cwd: Path | None = None) -> Target:
        """``data``, ``data/`` or ``data.cas`` all name the same target. Every target, from the
        command line, a Git tree, the worktree's pointers, a hook or a ``cas://`` read, is made
        here, so :meth:`_guard` sees them all."""
        rel = self.relpath(arg, cwd)
        if rel.endswith(pointer.SUFFIX):
            found = Target(pointer.target_of(rel), rel)
        else:
            found = Target(rel, pointer.pointer_for(rel))
        self._guard(found)
        return found

    def _owned(self) -> list[tuple[Path, str]]:
        """The folders cas and Git own here, symlinks resolved, each with how to name it."""
        if self._owned_cache is None:
            self._owned_cache = [  # the innermost first: it names the folder best
                (self.local.root, "the local store (core.store)"),
                (self.stat_cache.folder.resolve(), "the stat cache"),
                (self.checkouts.folder.resolve(), "the checkout markers"),
                (self.cas_dir.resolve(), f"cas's folder {CAS_DIR}"),
                ((self.root / ".git").resolve(), "Git's folder .git"),
            ]
        return self._owned_cache

    def _guard(self, target: Target) -> None:
        """Refuse a target that is, lies inside or contains a folder cas or Git owns (``.cas/``,
        the store wherever ``core.store`` puts it, the stat cache, any ``.git``), whatever
        named it: checkout deletes what a target holds that its manifest lacks, so a pointer
        ``.cas.cas`` committed by anyone would otherwise delete the store (``--force`` does not
        change this). Also refused: names Git or the filesystem cannot hold beside the data (a
        control character would split the ``.gitignore`` line, a pointer name over NAME_MAX
        cannot be written)."""
        path = target.path
        parts = path.split("/")
        problem = None
        if CONTROL.search(target.pointer):  # shown quoted: printed raw it would break the line
            raise PathError(
                f"{target.pointer!r} has a control character in its name, which would split the "
                ".gitignore line that ignores its data; rename it"
            )
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            raise PathError(f"{target.pointer!r} has a name that is not UTF-8; rename it") from None
        if any(map(is_dotgit, parts)):
            problem = "a Git folder: data there would be a repository whose config runs commands"
        elif parts[-1] == ".gitignore":
            problem = "the file cas writes its ignore rules into"
        elif parts[0] == CAS_DIR:
            problem = f"{'inside ' if parts[1:] else ''}cas's folder {CAS_DIR}"
        elif len(parts[-1].encode()) + len(pointer.SUFFIX) > NAME_MAX:
            problem = f"a name too long for its pointer (over {NAME_MAX} bytes with .cas)"
        else:
            real = self.abspath(path).parent.resolve() / parts[-1]
            for folder, what in self._owned():
                if real == folder:
                    problem = what
                elif folder in real.parents:
                    problem = f"inside {what}"
                elif real in folder.parents:
                    problem = f"a folder holding {what}"
                else:
                    continue
                break
        if problem is not None:
            raise PathError(
                f"{target.pointer} names {path}, {problem}; refusing, with or without "
                "--force (if a commit holds that pointer, remove it: "
                f"git rm -- {shlex.quote(target.pointer)})",
                path=path,
            )

    def _checked(self, pointer_path: str) -> Target:
        """A target named by Git (a committed pointer): its folder, once symlinks are resolved,
        must still be inside the repository, or writing its data could land anywhere."""
        return self.target(pointer_path, self.root)

    def targets(
        self, args: Sequence[str | Path], rev: str | None = None, cwd: Path | None = None
    ) -> list[Target]:
        """Targets named by ``args``, or every pointer (at ``rev`` or in the worktree)."""
        if args:
            return [self.target(a, cwd) for a in args]
        paths = (
            self.git.files_at(rev, pointer.SUFFIX)
            if rev
            else self.git.worktree_files(pointer.SUFFIX)
        )
        return [self._checked(p) for p in paths]

    def abspath(self, rel: str) -> Path:
        return self.root / rel

    # -- pointers and manifests --------------------------------------------------------------
    def read_pointer(self, target: Target, rev: str | None = None) -> pointer.Pointer:
        if rev is None:
            return pointer.read(self.abspath(target.pointer), target.pointer)
        return pointer.parse(self.git.show(rev, target.pointer), f"{rev}:{target.pointer}")

    def write_pointer(self, target: Target, ptr: pointer.Pointer) -> bool:
        """Atomically write a pointer; False when it was already byte-identical."""
        path = self.abspath(target.pointer)
        data = ptr.encode()
        with contextlib.suppress(FileNotFoundError):
            if path.read_bytes() == data:
                return False
        write_atomic(path, data, target.pointer)
        return True

    def load_manifest(self, manifest_id: str) -> pa.Table:
        from cas import manifest  # lazily: see cas.rows

        return manifest.decode(self.objects.get_manifest_bytes(manifest_id), manifest_id)

    def store_manifest(self, table: pa.Table) -> str:
        from cas import manifest  # lazily: see cas.rows

        manifest_id = manifest.canonical_id(table)
        if not self.objects.has_manifest(manifest_id):
            self.objects.put_manifest(manifest_id, manifest.encode(table))
        return manifest_id

    def ignore(self, target: Target) -> str:
        """Git-ignore the target in the .gitignore beside it; returns that file's path."""
        parent, _, name = target.path.rpartition("/")
        gitignore = f"{parent}/.gitignore" if parent else ".gitignore"
        path = self.abspath(gitignore)
        line = f"/{gitignore_pattern(name)}"
        existing = path.read_text(encoding="utf-8") if path.exists() else ""
        if line not in existing.splitlines():
            sep = "" if not existing or existing.endswith("\n") else "\n"
            # temp + rename, as for pointers: a full disk must not leave a truncated .gitignore
            write_atomic(path, f"{existing}{sep}{line}\n".encode(), gitignore)
        return gitignore

    @contextlib.contextmanager
    def lock(self, quiet: bool = False) -> Iterator[None]:
        """The repository lock, held while pointers, .gitignore and the Git index change.
        Content-addressed writes need none; this only orders the few shared files."""
        self.cas_dir.mkdir(exist_ok=True)
        fd = flock.acquire(self.cas_dir / "lock", True, "another cas process", quiet)
        try:
            yield
        finally:
            if fd is not None:
                os.close(fd)

    def pointer_exists(self, target: Target, rev: str | None = None) -> bool:
        if rev is None:
            return self.abspath(target.pointer).is_file()
        return self.git.exists_at(rev, target.pointer)

    # -- the operations ----------------------------------------------------------------------
    def add(
        self,
        paths: Sequence[str | Path],
        *,
        progress: Progress | None = None,
        executor: str | Executor | None = None,
        to_remote: bool = False,
        remote: str | None = None,
    ) -> list[AddResult]:
        """Track folders or files: store their chunks, write and stage their pointers.

        ``executor`` hashes on a cluster (docs/scaling.md): a Dask scheduler address
        (``tcp://host:8786``), ``processes[:N]``, ``local``, or any
        ``concurrent.futures.Executor`` whose workers see the repository and the store at the
        same paths. Default: ``core.executor`` of .cas/config, else this process.
        ``to_remote``: new chunks go to ``remote`` (default: the default remote) instead of the
        local store, which keeps only the manifests (docs/remotes.md, "add --to-remote"); it
        hashes in this process."""
        from cas.ops import add as add_op

        if not paths:
            raise UsageError("name at least one folder or file to add")
        if remote is not None and not to_remote:
            raise UsageError("-r/--remote names where --to-remote sends the data; add --to-remote")
        if to_remote:
            if executor is not None:
                raise UsageError("--to-remote hashes in this process; drop --executor")
            from cas.ops.transfer import Staging  # lazily: imports fsspec

            staging = Staging(self, remote)
            return [add_op.add(self, self.target(p), progress, staging=staging) for p in paths]
        from cas.ops.distribute import executor_for  # lazily: only a cluster add needs it

        targets = [self.target(p) for p in paths]
        with executor_for(self.config, executor) as cluster:
            return [add_op.add(self, t, progress, cluster) for t in targets]

    def status(self, paths: Sequence[str | Path] = ()) -> list[TargetStatus]:
        from cas.ops import status as status_op

        return [status_op.status(self, t) for t in self.targets(paths)]

    def remote_status(
        self, paths: Sequence[str | Path] = (), *, remote: str | None = None
    ) -> list[RemoteStatus]:
        """Per worktree pointer: pushed to ``remote`` or not, and how many chunks are not
        fetched (``cas status --remote``)."""
        from cas.ops import transfer

        return transfer.remote_status(self, paths, remote)

    def checkout(
        self,
        paths: Sequence[str | Path] = (),
        *,
        rev: str | None = None,
        force: bool = False,
        progress: Progress | None = None,
        subtree_required: bool = True,
    ) -> list[CheckoutResult]:
        """Restore data. A path inside a tracked folder (``data/images``) checks out only that
        subtree, which must hold a tracked file unless not ``subtree_required`` (``cas pull
        --path`` over several targets, only some of which hold it)."""
        from cas.ops import checkout as checkout_op

        results = []
        for target, subpath in self._split_subpaths(paths, rev):
            results.append(
                checkout_op.checkout(self, target, rev, force, subpath, progress, subtree_required)
            )
        return results

    def diff(
        self, rev_a: str = "HEAD", rev_b: str | None = None, *, paths: Sequence[str | Path] = ()
    ) -> list[FileChange]:
        """Per-file changes from ``rev_a`` to ``rev_b`` (None: the worktree pointers)."""
        from cas.ops import diff as diff_op

        if paths:
            targets = self.targets(paths)
        else:
            names = {t.pointer for t in self.targets((), rev_a)}
            names |= {t.pointer for t in self.targets((), rev_b)}
            targets = [self._checked(p) for p in sorted(names)]
        return [c for t in targets for c in diff_op.diff(self, t, rev_a, rev_b)]

    def ls(self, paths: Sequence[str | Path] = (), *, rev: str | None = None) -> list[LsEntry]:
        """Every file of the targets (at ``rev``, else the worktree pointers), sorted by path
        within each target. A corpus's files are named by their URL."""
        from cas.ops.compare import expected_rows

        listing = []
        for t in self.targets(paths, rev):
            ptr = self.read_pointer(t, rev)
            prefix = t.path
            if ptr.kind == "corpus":  # files live at the corpus URL, not in the worktree
                from cas import versions

                prefix = versions.load_pointed(self, ptr, t.pointer).base or t.path
            for path, row in sorted(expected_rows(self, t, ptr).items()):
                listing.append(
                    LsEntry(
                        path=t.path if ptr.kind == "file" else f"{prefix}/{path}",
                        size=row.size,
                        hash=row.hash.hex(),
                        executable=row.executable,
                    )
                )
        return listing

    def fsck(self) -> FsckResult:
        from cas.ops import fsck as fsck_op

        return fsck_op.fsck(self)

    # -- remotes -----------------------------------------------------------------------------
    def push(
        self,
        paths: Sequence[str | Path] = (),
        *,
        revs: Sequence[str] = (),
        all_commits: bool = False,
        remote: str | None = None,
        jobs: int = DEFAULT_JOBS,
        progress: Progress | None = None,
        repair: bool = False,
    ) -> PushResult:
        """Send what the pointers (of the worktree, of ``revs``, or of every commit) need and
        ``remote`` lacks; ``repair`` first replaces what the remote serves damaged."""
        from cas.ops import transfer

        return transfer.push(self, paths, revs, all_commits, remote, jobs, progress, repair=repair)

    def fetch(
        self,
        paths: Sequence[str | Path] = (),
        *,
        rev: str | None = None,
        subpath: str | None = None,
        remote: str | None = None,
        jobs: int = DEFAULT_JOBS,
        progress: Progress | None = None,
        repair: bool = False,
    ) -> FetchResult:
        """Bring what the pointers (of the worktree, or of ``rev``) need into the local store,
        only ``subpath`` of each target when given; ``repair`` also replaces damaged local
        copies."""
        from cas.ops import transfer

        return transfer.fetch(self, paths, [rev], subpath, remote, jobs, progress, repair)

    def pull(
        self,
        paths: Sequence[str | Path] = (),
        *,
        rev: str | None = None,
        subpath: str | None = None,
        remote: str | None = None,
        jobs: int = DEFAULT_JOBS,
        force: bool = False,
        progress: Progress | None = None,
    ) -> PullResult:
        """Fetch, then check out."""
        from cas.ops import transfer

        fetched, checked = transfer.pull(self, paths, rev, subpath, remote, jobs, force, progress)
        return PullResult(fetched, checked)

    def verify(
        self,
        paths: Sequence[str | Path] = (),
        *,
        revs: Sequence[str] = (),
        remote: str | None = None,
        deep: bool = False,
        jobs: int = DEFAULT_JOBS,
    ) -> VerifyResult:
        """Whether every object the pointers reach is on ``remote``; ``deep`` downloads and
        re-hashes every pack. Problems are listed in the result, not raised."""
        from cas.ops import transfer

        return transfer.verify(self, paths, revs, remote, deep, jobs)

    def gc(
        self,
        *,
        branches: bool = True,
        tags: bool = True,
        all_commits: bool = False,
        dry_run: bool = False,
        delete_unpushed: bool = False,
        remote: str | None = None,
        grace_seconds: float = 7 * 86400,
    ) -> GcResult:
        """Delete the objects no root reaches: HEAD, the index, the worktree, stashes, linked
        worktrees and the commits ``branches``, ``tags`` and ``all_commits`` name. Local by
        default; with ``remote`` that remote (a RemoteGcResult), deleting only what stayed
        unused for ``grace_seconds``."""
        from cas.ops import gc as gc_op
        from cas.ops.roots import Scope

        scope = Scope(branches, tags, all_commits)
        if remote is None:
            return gc_op.gc(self, scope, dry_run, delete_unpushed)
        if delete_unpushed:
            raise UsageError("--delete-unpushed is for the local store; drop it or --remote")
        return gc_op.gc_remote(self, scope, remote, grace_seconds, dry_run)

    # -- snapshots and corpora ---------------------------------------------------------------
    def snapshot_query(
        self, query: str, *, source: str, name: str, batch_rows: int | None = None
    ) -> SnapshotInfo:
        """Freeze ``query``'s result from ``source`` (a URL: postgresql://, sqlite:///,
        duckdb://) as ``snapshots/NAME/<UTC time>.parquet`` and stage its pointer. An unordered
        query warns (``cas.snapshot.UnorderedQueryWarning``)."""
        from cas import snapshot

        rows = batch_rows or snapshot.DEFAULT_BATCH_ROWS
        return snapshot.snapshot_query(self, query, source, name, batch_rows=rows)

    def snapshots(self, name: str) -> list[SnapshotInfo]:
        """The snapshots of ``snapshots/NAME``, oldest first."""
        from cas.snapshot import list_snapshots

        return list_snapshots(Path(self.root), name)

    def manifest_create(
        self,
        pointer: str,
        *,
        url: str,
        glob: str | None = None,
        jobs: int | None = None,
        executor: str | Executor | None = None,
        progress: Progress | None = None,
    ) -> CorpusResult:
        """Pin the corpus at ``url`` (a folder or any fsspec URL) in place: hash its files
        (matching ``glob``) into a first version, write ``pointer`` and stage it."""
        from cas.ops import corpus as corpus_op
        from cas.ops.distribute import executor_for

        with executor_for(self.config, executor) as cluster:
            return corpus_op.create(self, pointer, url, glob, jobs, progress, cluster)

    def manifest_append(
        self,
        pointer: str,
        *,
        url: str | None = None,
        glob: str | None = None,
        jobs: int | None = None,
        allow_removals: bool = False,
        executor: str | Executor | None = None,
        progress: Progress | None = None,
    ) -> CorpusResult:
        """Record the files under ``url`` (default: the corpus's base) the manifest lacks;
        a recorded file that changed or vanished refuses unless ``allow_removals``."""
        from cas.ops import corpus as corpus_op
        from cas.ops.distribute import executor_for

        with executor_for(self.config, executor) as cluster:
            return corpus_op.append(
                self, pointer, url, glob, jobs, allow_removals, progress, cluster
            )

    def manifest_verify(
        self,
        pointer: str,
        *,
        sample: float = 1.0,
        seed: int = 0,
        jobs: int | None = None,
        rev: str | None = None,
        progress: Progress | None = None,
    ) -> ManifestVerifyResult:
        """Re-hash the corpus's files (or a seeded ``sample`` fraction); drift is listed in
        the result, not raised."""
        from cas.ops import corpus as corpus_op

        return corpus_op.verify(self, pointer, sample, seed, jobs, rev, progress)

    # -- runs --------------------------------------------------------------------------------
    def runs(self) -> list[RunSummary]:
        """Every recorded run, oldest first. A record the catalog refused is left out with a
        RuntimeWarning naming it (``cas runs`` prints the same lines)."""
        from cas.runs.catalog import open_synced

        catalog = open_synced(self)
        try:
            for problem in catalog.problems:
                warnings.warn(problem, RuntimeWarning, stacklevel=2)
            return [RunSummary(**row) for row in catalog.rows()]
        finally:
            catalog.close()

    def run_show(self, ref: str) -> RunRecord:
        """The record of the run ``ref`` names: an id, a unique id prefix, or a name (its
        latest run that is not a repro's rerun)."""
        from cas import hashing
        from cas.runs import record
        from cas.runs.catalog import open_synced

        catalog = open_synced(self)
        try:
            run_id = catalog.resolve(ref)
        except UsageError:
            if not hashing.is_hex_id(ref):  # a whole id the catalog refused: say why, by name
                raise
            run_id = ref
        finally:
            catalog.close()
        return RunRecord(run_id, record.get(self.local, run_id))

    def runs_diff(self, run_a: str, run_b: str) -> RunsDiff:
        """Which of the four inputs differ between two runs, and how; metric changes."""
        from cas.runs.compare import diff

        a, b = self.run_show(run_a), self.run_show(run_b)
        return RunsDiff(a, b, diff(a.record, b.record))

    def runs_to_mlflow(self, refs: Sequence[str] = ()) -> list[MlflowCopy]:
        """Copy recorded runs (``refs``; default every finished one) to the MLflow tracking
        URI, each once: those MLflow already holds are found by their ``cas.run_id`` tag."""
        from cas.runs import record, tracker

        if refs:
            found = [self.run_show(ref) for ref in refs]
        else:  # a killed run has no record: nothing to copy
            found = [RunRecord(r.id, record.get(self.local, r.id)) for r in self.runs() if r.id]
        copies = tracker.export(self.config, self.root, [(r.id, r.record) for r in found])
        return [MlflowCopy(*copy) for copy in copies]

    def repro(
        self,
        ref: str,
        *,
        rtol: float | None = None,
        atol: float | None = None,
        metric: Sequence[str] = (),
        strict_env: bool = False,
        say: Callable[[str], None] = print,
    ) -> ReproResult:
        """Rerun the run ``ref`` names in a temporary worktree and compare its metrics within
        the tolerances (``metric``: ``NAME=RTOL`` each); ``say`` gets the progress lines. A
        rerun that fails raises RerunFailedError."""
        from cas.runs import repro as repro_op

        return repro_op.repro(self, ref, rtol, atol, metric, strict_env, say=say)

    def _split_subpaths(
        self, paths: Sequence[str | Path], rev: str | None
    ) -> list[tuple[Target, str | None]]:
        """Map each argument to its target, and to a subtree when it names a path inside one."""
        if not paths:
            return [(t, None) for t in self.targets((), rev)]
        result: list[tuple[Target, str | None]] = []
        for arg in paths:
            rel = self.relpath(arg)
            found: tuple[Target, str | None] | None = None
            if rel.endswith(pointer.SUFFIX):
                found = self.target(rel, self.root), None
            parts = rel.split("/")
            for i in range(len(parts), 0, -1):
                if found is not None:
                    break
                head = "/".join(parts[:i])
                candidate = Target(head, head + pointer.SUFFIX)
                if self.pointer_exists(candidate, rev):
                    self._guard(candidate)
                    found = candidate, "/".join(parts[i:]) or None
            if found is None:
                raise PathError(
                    f"{rel} is not tracked by cas (no pointer for it or a parent)", path=rel
                )
            result.append(found)
        return result
