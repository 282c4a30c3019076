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
