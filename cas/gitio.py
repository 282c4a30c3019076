"""The only module that talks to Git (through GitPython): root, files at a revision, ignores,
staging. Everything else sees plain paths and bytes."""

from __future__ import annotations

import datetime
import functools
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from cas.errors import NotARepoError, UsageError

if TYPE_CHECKING:
    import git


def find_root(start: Path) -> Path:
    """The working tree root: the nearest folder holding ``.git``. Found without GitPython,
    whose import costs ~60 ms that ``cas status`` on an unchanged tree cannot afford."""
    here = start.resolve()
    for folder in (here, *here.parents):
        if (folder / ".git").exists():
            return folder
    raise NotARepoError(f"{start} is not inside a Git repository; run 'git init' first")


def main_worktree(root: Path) -> Path | None:
    """The main worktree's root when ``root`` is a linked worktree (``git worktree add``: its
    ``.git`` is a file naming ``<common dir>/worktrees/<name>``, which holds ``commondir``);
    None for a main worktree, a submodule (no ``commondir``) or a bare common dir. Read from
    those two files, without GitPython or a git process: every command calls it."""
    dotgit = root / ".git"
    if not dotgit.is_file():
        return None
    try:
        text = dotgit.read_text(encoding="utf-8").strip()
        if not text.startswith("gitdir:"):
            return None
        gitdir = (root / text[len("gitdir:") :].strip()).resolve()
        common = (gitdir / (gitdir / "commondir").read_text(encoding="utf-8").strip()).resolve()
    except (OSError, UnicodeDecodeError):
        return None
    return common.parent if common.name == ".git" else None


class GitRepo:
    def __init__(self, start: Path) -> None:
        self.root = find_root(start)

    @functools.cached_property
    def repo(self) -> git.Repo:
        import git

        return git.Repo(self.root)

    def _commit(self, rev: str) -> git.Commit:
        import git

        try:
            return self.repo.commit(rev)
        except (git.BadName, ValueError) as err:
            raise UsageError(f"unknown revision {rev!r}; check 'git log'") from err

    def _tree(self, rev: str) -> git.Tree:
        return self._commit(rev).tree

    def show(self, rev: str, relpath: str) -> bytes:
        """The bytes of ``relpath`` at ``rev``; UsageError if either does not exist."""
        try:
            blob = self._tree(rev) / relpath
        except KeyError:
            raise UsageError(f"{relpath} does not exist at revision {rev!r}") from None
        return blob.data_stream.read()

    def exists_at(self, rev: str, relpath: str) -> bool:
        try:
            self._tree(rev) / relpath
        except KeyError:
            return False
        return True

    def files_at(self, rev: str, suffix: str) -> list[str]:
        """Paths ending in ``suffix`` in the tree of ``rev``."""
        return sorted(
            item.path
            for item in self._tree(rev).traverse()
            if item.type == "blob" and item.path.endswith(suffix)  # type: ignore[union-attr]
        )

    def run(self, *args: str) -> str:
        """Plain ``git`` for the commands on hot paths (ls-files, add): spawning git directly
        skips GitPython's import, a fifth of ``cas status``'s time budget."""
        proc = subprocess.run(
            ["git", "-C", str(self.root), *args], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            first = (proc.stderr.strip().splitlines() or ["(no message)"])[0]
            raise UsageError(f"git {args[0]} failed: {first}")
        return proc.stdout

    def probe(self, *args: str) -> str | None:
        """Plain ``git`` whose failure is an answer (no such ref), not an error."""
        proc = subprocess.run(
            ["git", "-C", str(self.root), *args], capture_output=True, text=True, check=False
        )
        return proc.stdout if proc.returncode == 0 else None

    @functools.cached_property
    def common_dir(self) -> Path:
        """The Git folder every worktree of this clone shares (``.git`` of the main worktree;
        a linked worktree's own ``.git`` is a file pointing into it)."""
        return (self.root / self.run("rev-parse", "--git-common-dir").strip()).resolve()

    def head(self) -> str | None:
        """HEAD's commit; None before the first commit."""
        out = self.probe("rev-parse", "--verify", "--quiet", "HEAD^{commit}")
        return out.strip() if out else None

    def worktree_files(self, suffix: str) -> list[str]:
        """Tracked and untracked-but-not-ignored files ending in ``suffix``."""
        out = self.run(
            "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", f"*{suffix}"
        )
        return sorted({p for p in out.split("\0") if p and (self.root / p).is_file()})

    def is_tracked(self, relpath: str) -> bool:
        """Whether Git itself tracks ``relpath`` (or anything under it)."""
        return bool(self.run("ls-files", "--", relpath))

    def stage(self, relpaths: list[str]) -> None:
        if relpaths:
            self.run("add", "--", *relpaths)

    def commit_id(self, rev: str) -> str:
        return self._commit(rev).hexsha

    def commit_time(self, rev: str) -> datetime.datetime:
        return self._commit(rev).committed_datetime

    def all_commits(self) -> list[str]:
        return self.run("rev-list", "--all").split()

    def blobs(self, revs: list[str], suffix: str, walk: bool = True) -> dict[str, str]:
        """``{blob id: path}`` of every blob whose path ends in ``suffix`` in the trees of
        ``revs`` (rev-list syntax: ``^x`` and ``--not`` exclude what ``x`` reaches), with their
        history when ``walk``. One ``git rev-list --objects`` instead of a tree read per
        commit, and Git itself skips what excluded commits already hold."""
        if not revs:
            return {}
        out = self.run("rev-list", "--objects", *([] if walk else ["--no-walk"]), *revs, "--")
        blobs = {}
        for line in out.splitlines():
            sha, _, path = line.partition(" ")
            if path.endswith(suffix):
                blobs.setdefault(sha, path)
        return blobs

    def index_blobs(self, suffix: str) -> dict[str, str]:
        """``{blob id: path}`` of the staged files ending in ``suffix``, every merge stage
        included (a conflicted file's both sides count)."""
        out = self.run("ls-files", "--stage", "-z", "--", f"*{suffix}")
        blobs = {}
        for record in out.split("\0"):
            if record:
                info, _, path = record.partition("\t")
                blobs.setdefault(info.split()[1], path)
        return blobs

    def cat_blobs(self, shas: list[str]) -> dict[str, bytes]:
        """The bytes of the blobs among ``shas`` (other objects are left out), from one
        ``git cat-file --batch``."""
        if not shas:
            return {}
        proc = subprocess.run(
            ["git", "-C", str(self.root), "cat-file", "--batch"],
            input="".join(f"{s}\n" for s in shas).encode(),
            capture_output=True,
            check=False,
        )
        if proc.returncode != 0:
            raise UsageError(f"git cat-file failed: {proc.stderr.decode(errors='replace')[:200]}")
        out, pos, blobs = proc.stdout, 0, {}
        for sha in shas:
            end = out.index(b"\n", pos)
            header = out[pos:end].split()
            if len(header) != 3:  # "<sha> missing": a blob another clone has not sent yet
                pos = end + 1
                continue
            size = int(header[2])
            if header[1] == b"blob":  # rev-list also names a folder called "x.cas": a tree
                blobs[sha] = out[end + 1 : end + 1 + size]
            pos = end + 1 + size + 1
        return blobs

    def refs(self, *prefixes: str) -> list[str]:
        """Full names of the refs under ``prefixes`` (``refs/heads``, ``refs/tags``...)."""
        return self.run("for-each-ref", "--format=%(refname)", *prefixes).split()

    def stash_commits(self) -> list[str]:
        """Every stash entry's commits: the saved worktree, its index and untracked parents
        (the first parent is the commit it was made on, an ordinary root)."""
        if self.probe("rev-parse", "--verify", "--quiet", "refs/stash") is None:
            return []
        out = self.run("log", "-g", "--format=%H %P", "refs/stash", "--")
        commits = []
        for line in out.splitlines():
            stash, *parents = line.split()
            commits += [stash, *parents[1:]]
        return commits

    def worktrees(self) -> list[tuple[Path, str | None]]:
        """Every linked worktree but this one: its folder and HEAD commit (None when it has
        no commit yet)."""
        out = self.run("worktree", "list", "--porcelain")
        found: list[tuple[Path, str | None]] = []
        for block in out.strip().split("\n\n"):
            fields = dict(line.partition(" ")[::2] for line in block.splitlines())
            path = Path(fields.get("worktree", ""))
            if "worktree" in fields and path.resolve() != self.root.resolve():
                head = fields.get("HEAD")
                found.append((path, None if not head or set(head) == {"0"} else head))
        return found
