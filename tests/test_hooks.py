"""Git hooks and the merge driver end to end: real git, a bare repository as the Git remote, a
file:// or SeaweedFS data remote, and the hooks installed by the real ``cas install-hooks``."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from cas import remote
from cas.objects import pack_key
from cas.ops import hooks
from cas.repo import Repo
from cas.store.fsspec import FsspecStore
from tests.conftest import cas, git, tree, write


def run_git(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Real git whose failure is an answer the test checks (a hook may refuse)."""
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})}
    )


def identity(root: Path) -> None:
    git(root, "config", "user.email", "test@example.com")
    git(root, "config", "user.name", "Test")


@pytest.fixture
def project(
    tmp_path: Path, remote_url: tuple[str, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, Path, dict[str, str]]:
    """A working repository with hooks installed, a data remote and a bare Git remote: returns
    (working repo, bare repo, environment for the data remote)."""
    url, env = remote_url
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # hooks run as git's children: they inherit it
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    work = tmp_path / "work"
    git(tmp_path, "init", "-q", "-b", "main", str(work))
    identity(work)
    git(work, "remote", "add", "origin", str(bare))
    cas(work, "init")
    cas(work, "remote", "add", "origin", url)
    cas(work, "install-hooks")
    return work, bare, env


def commit_data(root: Path, files: dict[str, str], message: str) -> None:
    for name, text in files.items():
        write(root / "data" / name, text)
    cas(root, "add", "data")
    committed = run_git(root, "commit", "-qm", message)
    assert committed.returncode == 0, committed.stderr  # the pre-commit hook ran


def test_push_clone_pull_and_checkout_follow_the_data(
    project: tuple[Path, Path, dict[str, str]], tmp_path: Path
) -> None:
    work, bare, _env = project
    commit_data(work, {"a.txt": "v1 a", "b.txt": "v1 b"}, "v1")
    git(work, "tag", "v1")
    v1 = tree(work / "data")
    commit_data(work, {"a.txt": "v2 a", "c.txt": "v2 c"}, "v2")
    v2 = tree(work / "data")

    pushed = run_git(work, "push", "origin", "main", "--tags")
    assert pushed.returncode == 0, pushed.stderr
    assert "cas: data pushed to origin" in pushed.stderr
    cas(work, "verify", "--remote")
    cas(work, "verify", "--remote", "--rev", "v1")

    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(bare), str(clone))
    identity(clone)
    cas(clone, "pull")
    assert tree(clone / "data") == v2
    cas(clone, "install-hooks")
    # the clone's store lacks v1's chunks: post-checkout fetches them from the remote
    switched = run_git(clone, "checkout", "-q", "v1")
    assert switched.returncode == 0, switched.stderr
    assert tree(clone / "data") == v1
    run_git(clone, "checkout", "-q", "main")
    assert tree(clone / "data") == v2


def test_ci_check_fails_when_an_object_is_deleted_from_the_remote(
    project: tuple[Path, Path, dict[str, str]],
) -> None:
    work, _bare, _env = project
    commit_data(work, {"a.txt": "some data"}, "v1")
    assert run_git(work, "push", "-q", "origin", "main").returncode == 0
    cas(work, "verify", "--remote")
    repo = Repo.discover(work)
    store: FsspecStore = remote.resolve(repo).open()
    (pack_id,) = repo.objects.pack_ids()
    store.delete(pack_key(pack_id))
    failed = cas(work, "verify", "--remote", code=1)
    assert pack_id in failed.stdout


def test_pre_push_reads_only_the_new_commits(
    project: tuple[Path, Path, dict[str, str]],
) -> None:
    """A pointer in history that the remote already has is never read: here it is broken
    (committed past the hooks), and pushing new commits on top still works."""
    work, _bare, _env = project
    commit_data(work, {"a.txt": "one"}, "v1")
    write(
        work / "other.cas", "cas-pointer 1\nkind dir\nmanifest " + "ab" * 32 + "\nsize 1\nfiles 1\n"
    )
    git(work, "add", "other.cas")
    git(work, "commit", "-qm", "a broken pointer", "--no-verify")
    assert run_git(work, "push", "-q", "origin", "main", env={"CAS_SKIP_PUSH": "1"}).returncode == 0
    git(work, "rm", "-q", "other.cas")
    commit_data(work, {"b.txt": "two"}, "v2")
    head = git(work, "rev-parse", "HEAD").strip()
    old = git(work, "rev-parse", "HEAD~2").strip()
    # what the hook does for Git's ref line: only v2's pointer is new, so only its manifest goes
    result = hooks.pre_push(Repo.discover(work), "origin", [f"refs/heads/main {head} x {old}"])
    assert result is not None and result.manifests == 1
    cas(work, "verify", "--remote")  # HEAD's data is there
    cas(work, "verify", "--remote", "--rev", "HEAD~2", code=1)  # v1 was never read nor sent
    pushed = run_git(work, "push", "origin", "main")
    assert pushed.returncode == 0, pushed.stderr
    assert "origin already has the data" in pushed.stderr  # the API call above sent it


def test_deletion_and_skip_push(project: tuple[Path, Path, dict[str, str]]) -> None:
    work, _bare, _env = project
    commit_data(work, {"a.txt": "one"}, "v1")
    skipped = run_git(work, "push", "origin", "main", env={"CAS_SKIP_PUSH": "1"})
    assert skipped.returncode == 0 and "CAS_SKIP_PUSH" in skipped.stderr
    cas(work, "verify", "--remote", code=1)  # nothing was uploaded
    git(work, "branch", "gone")
    assert run_git(work, "push", "-q", "origin", "gone", env={"CAS_SKIP_PUSH": "1"}).returncode == 0
    deleted = run_git(work, "push", "origin", ":gone")  # a deletion: no data to send
    assert deleted.returncode == 0, deleted.stderr
    assert "data pushed" not in deleted.stderr
    cas(work, "verify", "--remote", code=1)


def test_a_failed_upload_fails_the_git_push(git_repo: Path, tmp_path: Path) -> None:
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    git(git_repo, "remote", "add", "origin", str(bare))
    blocker = write(tmp_path / "not-a-folder", "a file where the remote folder should be")
    cas(git_repo, "init")
    cas(git_repo, "remote", "add", "origin", (blocker / "remote").as_uri())
    cas(git_repo, "install-hooks")
    commit_data(git_repo, {"a.txt": "one"}, "v1")
    pushed = run_git(git_repo, "push", "origin", "main")
    assert pushed.returncode != 0
    assert "cas: error:" in pushed.stderr
    assert run_git(bare, "rev-parse", "--verify", "-q", "refs/heads/main").returncode != 0


def test_checkout_keeps_unsaved_edits(project: tuple[Path, Path, dict[str, str]]) -> None:
    work, _bare, _env = project
    commit_data(work, {"a.txt": "one"}, "v1")
    git(work, "tag", "v1")
    commit_data(work, {"a.txt": "two"}, "v2")
    write(work / "data" / "a.txt", "my unsaved edit")
    switched = run_git(work, "checkout", "-q", "v1")
    assert switched.returncode == 0
    assert "kept your unsaved changes" in switched.stderr and "data/a.txt" in switched.stderr
    assert (work / "data" / "a.txt").read_text() == "my unsaved edit"


def test_pre_commit_refuses_a_broken_pointer_and_warns_about_unadded_data(
    project: tuple[Path, Path, dict[str, str]],
) -> None:
    work, _bare, _env = project
    commit_data(work, {"a.txt": "one"}, "v1")
    pointer = work / "data.cas"
    text = pointer.read_text()
    manifest = text.split("manifest ")[1].split()[0]
    pointer.write_text(text.replace(manifest, "0" * 64))
    git(work, "add", "data.cas")
    refused = run_git(work, "commit", "-qm", "hand edit")
    assert refused.returncode != 0
    assert "refusing the commit" in refused.stderr and "0" * 64 in refused.stderr
    pointer.write_text("cas-pointer 1\nkind dir\n")
    git(work, "add", "data.cas")
    refused = run_git(work, "commit", "-qm", "truncated")
    assert refused.returncode != 0 and "refusing the commit" in refused.stderr
    git(work, "checkout", "-q", "HEAD", "--", "data.cas")
    write(work / "data" / "a.txt", "changed, not added")
    write(work / "notes.txt", "code change")
    git(work, "add", "notes.txt")
    warned = run_git(work, "commit", "-qm", "code only")
    assert warned.returncode == 0
    assert "data has changes not added" in warned.stderr


def test_own_hooks_are_chained_and_restored(git_repo: Path) -> None:
    cas(git_repo, "init")
    hook = git_repo / ".git" / "hooks" / "pre-commit"
    write(hook, '#!/bin/sh\necho mine >> "$(git rev-parse --show-toplevel)/ran.txt"\n')
    hook.chmod(0o755)
    cas(git_repo, "install-hooks")
    cas(git_repo, "install-hooks")  # idempotent: the user's hook is not wrapped twice
    assert (git_repo / ".git" / "hooks" / "pre-commit.pre-cas").read_text().endswith('ran.txt"\n')
    write(git_repo / "code.py", "x = 1\n")
    git(git_repo, "add", "code.py")
    git(git_repo, "commit", "-qm", "code")
    assert (git_repo / "ran.txt").read_text() == "mine\n"
    assert "*.cas merge=cas" in (git_repo / ".gitattributes").read_text()
    cas(git_repo, "uninstall-hooks")
    assert hook.read_text().startswith("#!/bin/sh\necho mine")
    assert not (git_repo / ".git" / "hooks" / "pre-push").exists()
    assert run_git(git_repo, "config", "merge.cas.driver").returncode != 0


def test_core_hooks_path_is_honoured(git_repo: Path) -> None:
    cas(git_repo, "init")
    git(git_repo, "config", "core.hooksPath", "githooks")
    cas(git_repo, "install-hooks")
    assert (git_repo / "githooks" / "pre-push").is_file()
    assert not (git_repo / ".git" / "hooks" / "pre-push").exists()


# -- the merge driver ------------------------------------------------------------------------------
@pytest.fixture
def local_project(git_repo: Path, tmp_path: Path) -> Path:
    cas(git_repo, "init")
    cas(git_repo, "remote", "add", "origin", (tmp_path / "remote").as_uri())
    cas(git_repo, "install-hooks")
    commit_data(git_repo, {"base.txt": "base", "shared/x.txt": "x"}, "base")
    return git_repo


def test_merge_of_two_branches_that_added_different_files_gives_the_union(
    local_project: Path,
) -> None:
    root = local_project
    git(root, "checkout", "-q", "-b", "left")
    commit_data(root, {"left.txt": "from left", "shared/x.txt": "x changed on left"}, "left")
    git(root, "checkout", "-q", "main")
    git(root, "checkout", "-q", "-b", "right")
    (root / "data" / "base.txt").unlink()
    commit_data(root, {"right.txt": "from right"}, "right")
    merged = run_git(root, "merge", "-q", "left", "-m", "merge")
    assert merged.returncode == 0, merged.stderr
    assert tree(root / "data") == {
        "left.txt": b"from left",
        "right.txt": b"from right",
        "shared/x.txt": b"x changed on left",
    }
    cas(root, "status")
    cas(root, "fsck")


def test_merge_conflict_lists_paths_and_keeps_both_sides(local_project: Path) -> None:
    root = local_project
    git(root, "checkout", "-q", "-b", "left")
    commit_data(root, {"base.txt": "left version", "left.txt": "l"}, "left")
    git(root, "checkout", "-q", "main")
    git(root, "checkout", "-q", "-b", "right")
    commit_data(root, {"base.txt": "right version", "right.txt": "r"}, "right")
    merged = run_git(root, "merge", "left", "-m", "merge")
    assert merged.returncode != 0
    assert "both sides changed base.txt" in merged.stderr
    cas(root, "checkout")  # the merged pointer is valid: ours for the conflict, the union else
    assert tree(root / "data")["base.txt"] == b"right version"
    assert {"left.txt", "right.txt"} <= set(tree(root / "data"))
    theirs = git(root, "show", ":3:data.cas")
    assert "manifest" in theirs
    cas(root, "checkout", "--force", "--rev", "left", "data")
    assert (root / "data" / "base.txt").read_text() == "left version"
