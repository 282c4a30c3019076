"""Linked ``git worktree``s share the main worktree's store, keep their own stat cache, and
``core.store`` still overrides the default."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import cas, git, tree, write


def _project(git_repo: Path) -> Path:
    write(git_repo / "data" / "a.txt", "alpha\n")
    write(git_repo / "data" / "sub" / "b.bin", bytes(range(256)) * 64)
    cas(git_repo, "init")
    cas(git_repo, "add", "data")
    git(git_repo, "commit", "-qm", "data v1")
    return git_repo


def test_linked_worktree_checks_out_from_the_main_store(git_repo: Path, tmp_path: Path) -> None:
    root = _project(git_repo)
    linked = tmp_path / "linked"
    git(root, "worktree", "add", "-q", str(linked))
    assert not (linked / "data").exists()  # Git checked out the pointer only
    cas(linked, "checkout")
    assert tree(linked / "data") == tree(root / "data")
    assert not (linked / ".cas" / "store").exists()  # no second, empty store
    assert (linked / ".cas" / "state").is_dir()  # the stat cache is per worktree
    # what the linked worktree adds lands in the shared store: the main one can check it out
    write(linked / "data" / "a.txt", "alpha, edited in the linked worktree\n")
    cas(linked, "add", "data")
    git(linked, "commit", "-qm", "data v2")
    git(root, "merge", "-q", "--ff-only", git(linked, "rev-parse", "HEAD").strip())
    cas(root, "checkout")
    assert (root / "data" / "a.txt").read_text() == "alpha, edited in the linked worktree\n"
    assert cas(root, "fsck").returncode == 0


def test_core_store_overrides_the_shared_default(git_repo: Path, tmp_path: Path) -> None:
    root = _project(git_repo)
    linked = tmp_path / "linked"
    git(root, "worktree", "add", "-q", str(linked))
    (linked / ".cas" / "config.local").write_text("[core]\nstore = own-store\n")
    # its own store is empty: the data is not there, and the error says how to get it
    proc = cas(linked, "checkout", code=3)
    assert "not in the local store" in proc.stderr
    assert not (linked / "data").exists()


def test_submodule_style_git_file_is_not_a_linked_worktree(git_repo: Path) -> None:
    """A ``.git`` file without ``commondir`` (a submodule's) keeps the repository's own store."""
    from cas.gitio import main_worktree

    gitdir = git_repo.parent / "modules" / "x"
    gitdir.mkdir(parents=True)
    other = git_repo.parent / "sub"
    other.mkdir()
    (other / ".git").write_text(f"gitdir: {gitdir}\n")
    assert main_worktree(other) is None
    assert main_worktree(git_repo) is None  # the main worktree itself
