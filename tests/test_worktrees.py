"""Linked ``git worktree``s share the main worktree's store (issue 14, "Also"): a new worktree
checks out without a remote, and what it adds is in the one store every worktree reads."""

from __future__ import annotations

import shutil
from pathlib import Path

from cas.repo import Repo
from tests.conftest import cas, git, tree, write


def test_linked_worktrees_share_the_store(git_repo: Path, tmp_path: Path) -> None:
    cas(git_repo, "init")
    write(git_repo / "data/a.txt", "v1 a")
    write(git_repo / "data/sub/b.bin", b"\x00\x01" * 5000)
    cas(git_repo, "add", "data")
    git(git_repo, "commit", "-qm", "v1")
    v1 = tree(git_repo / "data")

    other = tmp_path / "other"
    git(git_repo, "worktree", "add", "-q", "-b", "exp", str(other))
    assert not (other / "data").exists()
    cas(other, "checkout")  # no remote: the chunks come from the main worktree's store
    assert tree(other / "data") == v1
    assert Repo.discover(other).local.root == Repo.discover(git_repo).local.root
    assert not (other / ".cas/store").exists()

    write(other / "data/c.txt", "added in the linked worktree")
    cas(other, "add", "data")
    git(other, "commit", "-qm", "exp: c")
    cas(git_repo, "fsck")
    git(git_repo, "merge", "-q", "--ff-only", "exp")
    cas(git_repo, "checkout")  # the main worktree reads what the linked one stored
    assert (git_repo / "data/c.txt").read_text() == "added in the linked worktree"
    # gc from the main worktree keeps what the linked one added but has not committed
    write(other / "data/d.txt", "staged only")
    cas(other, "add", "data")
    wanted = tree(other / "data")
    cas(git_repo, "gc")
    shutil.rmtree(other / "data")
    cas(other, "checkout")
    assert tree(other / "data") == wanted
    cas(other, "fsck")


def test_a_submodule_keeps_its_own_store(git_repo: Path, tmp_path: Path) -> None:
    """A ``.git`` file that is not a linked worktree's (a submodule's has no ``commondir``)."""
    sub = tmp_path / "lib"
    git(tmp_path, "init", "-q", "-b", "main", str(sub))
    git(sub, "config", "user.email", "t@example.com")
    git(sub, "config", "user.name", "T")
    git(sub, "commit", "-q", "--allow-empty", "-m", "lib")
    cas(git_repo, "init")
    git(git_repo, "commit", "-qm", "init")
    git(git_repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(sub), "lib")
    assert (git_repo / "lib/.git").is_file()
    cas(git_repo / "lib", "init")
    assert Repo.discover(git_repo / "lib").local.root == (git_repo / "lib/.cas/store").resolve()
