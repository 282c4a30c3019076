"""Repo: the public Python API. The CLI is a thin shell over it; training code may call it too.

    from cas.repo import Repo
    repo = Repo.discover()          # or Repo.init(path)
    repo.add(["data"])
    repo.status()
    repo.checkout(rev="v1")

A Repo ties the Git working tree, the ``.cas/`` folder (config, stat cache) and the local object
store together, and knows how to name things: a *target* is tracked data (``data`` or
``model.bin``), its *pointer* is ``data.cas`` beside it, both as POSIX paths relative to the root.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cas import flock, pointer
from cas.config import Config, write_default
from cas.errors import NotARepoError, PathError, UsageError
from cas.gitio import GitRepo
from cas.objects import ObjectStore
from cas.ops import add as add_op
from cas.ops import checkout as checkout_op
from cas.ops import diff as diff_op
from cas.ops import fsck as fsck_op
from cas.ops import status as status_op
from cas.ops.add import AddResult
from cas.ops.checkout import CheckoutResult
from cas.ops.compare import FileChange, expected_rows
from cas.ops.fsck import FsckResult
from cas.ops.status import TargetStatus
from cas.progress import Progress
from cas.state import StatCache
from cas.store.local import LocalStore, storage_error

if TYPE_CHECKING:
    from concurrent.futures import Executor

    import pyarrow as pa

CAS_DIR = ".cas"
_CAS_GITIGNORE = "/store/\n/state/\n/tmp/\n/config.local\n/lock\n"


@dataclass(frozen=True)
class Target:
    """Tracked data and its pointer, relative to the repository root."""

    path: str
    pointer: str


class Repo:
    def __init__(self, git_repo: GitRepo) -> None:
        self.git = git_repo
        self.root = git_repo.root
        self.cas_dir = self.root / CAS_DIR
        if not (self.cas_dir / "config").is_file():
            raise NotARepoError(f"cas is not initialised in {self.root}; run 'cas init'")
        self.config = Config(self.cas_dir)
        store_dir = self.config.get("core", "store")
        store_root = (self.root / store_dir) if store_dir else self.cas_dir / "store"
        self.local = LocalStore(
            store_root.resolve(), fsync=self.config.get_bool("core", "fsync", False)
        )
        self.objects = ObjectStore(self.local)
        self.stat_cache = StatCache(self.cas_dir / "state")

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def discover(cls, start: Path | str | None = None) -> Repo:
        return cls(GitRepo(Path(start or Path.cwd())))

    @classmethod
    def init(cls, start: Path | str | None = None) -> Repo:
        """Create ``.cas/`` (idempotent) and stage its committed files."""
        git_repo = GitRepo(Path(start or Path.cwd()))
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
            raise PathError("cannot track the repository root itself; name a folder or file")
        real_parent = absolute.parent.resolve()
        try:
            rel = absolute.relative_to(root)
            real_parent.relative_to(root)
        except ValueError:
            raise PathError(
                f"{arg} is outside the repository {root}; move the data inside it"
            ) from None
        text = rel.as_posix()
        head = text.split("/", 1)[0]
        if head in (CAS_DIR, ".git"):
            raise PathError(f"{arg} is inside {head}/, which cas and Git manage; choose data")
        return text

    def target(self, arg: str | Path, cwd: Path | None = None) -> Target:
        """``data``, ``data/`` or ``data.cas`` all name the same target."""
        rel = self.relpath(arg, cwd)
        if rel.endswith(pointer.SUFFIX):
            return Target(pointer.target_of(rel), rel)
        return Target(rel, pointer.pointer_for(rel))

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
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise storage_error(err, f"cannot write {target.pointer}") from err
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
        line = f"/{name}"
        existing = path.read_text(encoding="utf-8") if path.exists() else ""
        if line not in existing.splitlines():
            sep = "" if not existing or existing.endswith("\n") else "\n"
            # temp + rename, as for pointers: a full disk must not leave a truncated .gitignore
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            try:
                tmp.write_text(f"{existing}{sep}{line}\n", encoding="utf-8")
                os.replace(tmp, path)
            except OSError as err:
                tmp.unlink(missing_ok=True)
                raise storage_error(err, f"cannot write {gitignore}") from err
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
        progress: Progress | None = None,
        *,
        executor: str | Executor | None = None,
    ) -> list[AddResult]:
        """Track folders or files: store their chunks, write and stage their pointers.

        ``executor`` hashes on a cluster (docs/scaling.md): a Dask scheduler address
        (``tcp://host:8786``), ``processes[:N]``, ``local``, or any
        ``concurrent.futures.Executor`` whose workers see the repository and the store at the
        same paths. Default: ``core.executor`` of .cas/config, else this process."""
        if not paths:
            raise UsageError("name at least one folder or file to add")
        from cas.ops.distribute import executor_for  # lazily: only a cluster add needs it

        targets = [self.target(p) for p in paths]
        with executor_for(self.config, executor) as cluster:
            return [add_op.add(self, t, progress, cluster) for t in targets]

    def status(self, paths: Sequence[str | Path] = ()) -> list[TargetStatus]:
        return [status_op.status(self, t) for t in self.targets(paths)]

    def checkout(
        self,
        paths: Sequence[str | Path] = (),
        rev: str | None = None,
        force: bool = False,
        progress: Progress | None = None,
    ) -> list[CheckoutResult]:
        """Restore data. A path inside a tracked folder (``data/images``) checks out only that
        subtree."""
        results = []
        for target, subpath in self._split_subpaths(paths, rev):
            results.append(checkout_op.checkout(self, target, rev, force, subpath, progress))
        return results

    def diff(
        self, rev_a: str = "HEAD", rev_b: str | None = None, paths: Sequence[str | Path] = ()
    ) -> list[FileChange]:
        """Per-file changes from ``rev_a`` to ``rev_b`` (None: the worktree pointers)."""
        if paths:
            targets = self.targets(paths)
        else:
            names = {t.pointer for t in self.targets((), rev_a)}
            names |= {t.pointer for t in self.targets((), rev_b)}
            targets = [self._checked(p) for p in sorted(names)]
        return [c for t in targets for c in diff_op.diff(self, t, rev_a, rev_b)]

    def ls(self, paths: Sequence[str | Path] = (), rev: str | None = None) -> list[dict]:
        """Every file of the targets: path, size, BLAKE3 (hex), executable bit."""
        listing = []
        for t in self.targets(paths, rev):
            ptr = self.read_pointer(t, rev)
            prefix = t.path
            if ptr.kind == "corpus":  # files live at the corpus URL, not in the worktree
                from cas import versions

                prefix = versions.load_version(self, ptr.manifest).base or t.path
            for path, row in sorted(expected_rows(self, t, ptr).items()):
                listing.append(
                    {
                        "path": t.path if ptr.kind == "file" else f"{prefix}/{path}",
                        "size": row.size,
                        "hash": row.hash.hex(),
                        "executable": row.executable,
                    }
                )
        return listing

    def fsck(self) -> FsckResult:
        return fsck_op.fsck(self)

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
                    found = candidate, "/".join(parts[i:]) or None
            if found is None:
                raise PathError(f"{rel} is not tracked by cas (no pointer for it or a parent)")
            result.append(found)
        return result
