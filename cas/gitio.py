"""The only module that talks to Git (through GitPython): root, files at a revision, ignores,
staging. Everything else sees plain paths and bytes."""

from __future__ import annotations

from pathlib import Path

import git

from cas.errors import NotARepoError, UsageError


class GitRepo:
    def __init__(self, start: Path) -> None:
        try:
            self.repo = git.Repo(start, search_parent_directories=True)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            raise NotARepoError(
                f"{start} is not inside a Git repository; run 'git init' first"
            ) from None
        if self.repo.working_tree_dir is None:
            raise NotARepoError(f"{start} is a bare Git repository; cas needs a working tree")
        self.root = Path(self.repo.working_tree_dir).resolve()

    def show(self, rev: str, relpath: str) -> bytes:
        """The bytes of ``relpath`` at ``rev``; UsageError if either does not exist."""
        try:
            blob = self.repo.commit(rev).tree / relpath
        except (git.BadName, ValueError) as err:
            raise UsageError(f"unknown revision {rev!r}; check 'git log'") from err
        except KeyError:
            raise UsageError(f"{relpath} does not exist at revision {rev!r}") from None
        return blob.data_stream.read()

    def exists_at(self, rev: str, relpath: str) -> bool:
        try:
            self.repo.commit(rev).tree / relpath
        except (git.BadName, ValueError) as err:
            raise UsageError(f"unknown revision {rev!r}; check 'git log'") from err
        except KeyError:
            return False
        return True

    def files_at(self, rev: str, suffix: str) -> list[str]:
        """Paths ending in ``suffix`` in the tree of ``rev``."""
        try:
            tree = self.repo.commit(rev).tree
        except (git.BadName, ValueError) as err:
            raise UsageError(f"unknown revision {rev!r}; check 'git log'") from err
        return sorted(
            item.path
            for item in tree.traverse()
            if item.type == "blob" and item.path.endswith(suffix)  # type: ignore[union-attr]
        )

    def worktree_files(self, suffix: str) -> list[str]:
        """Tracked and untracked-but-not-ignored files ending in ``suffix``."""
        out = self.repo.git.ls_files(
            "--cached", "--others", "--exclude-standard", "-z", "--", f"*{suffix}"
        )
        return sorted({p for p in out.split("\0") if p and (self.root / p).is_file()})

    def stage(self, relpaths: list[str]) -> None:
        if relpaths:
            self.repo.git.add("--", *relpaths)

    def is_ignored(self, relpath: str) -> bool:
        return bool(self.repo.ignored(relpath))
