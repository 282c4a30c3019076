"""``cas gc``: real git, the real CLI; roots from branches, tags, stash, the index, the working
tree and linked worktrees; repacking; the store lock against a concurrent add; remote gc's grace
period on a file:// remote and SeaweedFS."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from cas import remote
from cas.ops import gc as gc_op
from cas.repo import Repo
from tests.conftest import CAS, cas, git, tree, write


def commit_data(root: Path, files: dict[str, bytes | str], message: str) -> dict[str, bytes]:
    for name, data in files.items():
        write(root / "data" / name, data)
    cas(root, "add", "data")
    git(root, "commit", "-qm", message)
    return tree(root / "data")


def gc_json(root: Path, *args: str) -> dict:
    return json.loads(cas(root, "gc", "--json", *args).stdout)


def chunk_ids(root: Path) -> set[bytes]:
    with Repo.discover(root) as repo:  # closing releases the store lock gc waits for
        return set(repo.objects.index)


def pack_ids(root: Path) -> list[str]:
    with Repo.discover(root) as repo:
        return repo.objects.pack_ids()


def file_chunks(root: Path, rev: str, path: str) -> set[bytes]:
    """The chunk ids of one file of ``data`` at ``rev``."""
    from cas import manifest

    with Repo.discover(root) as repo:
        ptr = repo.read_pointer(repo.target("data", root), rev)
        table = repo.load_manifest(ptr.manifest)
    (row,) = [r for r in manifest.to_rows(table) if r.path == path]
    return {cid for cid, _ in row.chunks}


def restores(root: Path, rev: str, expected: dict[str, bytes]) -> None:
    """``rev``'s data checks out byte for byte from the local store alone."""
    cas(root, "checkout", "--force", "--rev", rev, "data")
    assert tree(root / "data") == expected
    cas(root, "fsck")


@pytest.fixture
def repo(git_repo: Path) -> Path:
    cas(git_repo, "init")
    git(git_repo, "commit", "-qm", "init")
    return git_repo


def test_gc_after_a_branch_deletion_keeps_what_tags_reach(repo: Path) -> None:
    rng = random.Random(3)
    v1 = commit_data(repo, {"a.bin": rng.randbytes(50_000), "b.bin": rng.randbytes(40_000)}, "v1")
    git(repo, "tag", "v1")
    v2 = commit_data(repo, {"a.bin": rng.randbytes(50_000)}, "v2 on main")
    git(repo, "checkout", "-q", "-b", "feature")
    feature_only = rng.randbytes(70_000)
    commit_data(repo, {"feature.bin": feature_only}, "feature")
    feature_chunks = file_chunks(repo, "feature", "feature.bin")
    assert feature_chunks
    git(repo, "checkout", "-q", "main")
    cas(repo, "checkout", "--force")
    before = chunk_ids(repo)

    dry = gc_json(repo, "--dry-run")
    assert dry["dry_run"] and dry["manifests"] == 0 and dry["packs_deleted"] == 0
    git(repo, "branch", "-q", "-D", "feature")
    # the feature commits are still in the reflog and no remote holds their data: kept
    kept = gc_json(repo)
    assert kept["manifests"] == 0 and kept["packs_deleted"] == 0 and kept["kept_unpushed"] > 0
    assert chunk_ids(repo) == before
    dry = gc_json(repo, "--dry-run", "--delete-unpushed")
    assert dry["manifests"] == 1 and dry["bytes_freed"] > 0
    assert chunk_ids(repo) == before  # a dry run deletes nothing

    done = gc_json(repo, "--delete-unpushed")
    assert done["manifests"] == 1 and done["bytes_freed"] == dry["bytes_freed"]
    assert before - chunk_ids(repo) == feature_chunks
    restores(repo, "v1", v1)
    restores(repo, "main", v2)
    again = gc_json(repo, "--delete-unpushed")
    assert again["manifests"] == 0 and again["packs_deleted"] == 0 and again["bytes_freed"] == 0


def test_scope_flags_narrow_the_roots(repo: Path) -> None:
    commit_data(repo, {"a.txt": "tagged only"}, "v1")
    git(repo, "tag", "v1")
    git(repo, "checkout", "-q", "-b", "side")
    commit_data(repo, {"a.txt": "side branch"}, "side")
    git(repo, "checkout", "-q", "main")
    commit_data(repo, {"a.txt": "main"}, "main")
    drop = ("--dry-run", "--delete-unpushed")
    assert gc_json(repo, *drop)["manifests"] == 0
    assert gc_json(repo, *drop, "--all-tags")["manifests"] == 1  # side's data
    assert gc_json(repo, *drop, "--all-branches")["manifests"] == 1  # v1's data
    assert gc_json(repo, "--dry-run", "--all-tags")["manifests"] == 0  # no remote holds it
    git(repo, "branch", "-q", "-D", "side")
    git(repo, "tag", "-d", "v1")
    # --all-commits keeps every commit still in history or a reflog
    assert gc_json(repo, *drop, "--all-commits")["manifests"] == 0
    assert gc_json(repo, *drop)["manifests"] == 2
    assert gc_json(repo, "--dry-run")["manifests"] == 0


def test_stash_index_and_linked_worktree_are_roots(repo: Path, tmp_path: Path) -> None:
    base = commit_data(repo, {"a.txt": "committed"}, "v1")
    # a linked worktree on a commit no branch or tag names any more
    git(repo, "checkout", "-q", "-b", "wip")
    wip = commit_data(repo, {"w.txt": "only in the worktree's commit"}, "wip")
    git(repo, "checkout", "-q", "main")
    cas(repo, "checkout", "--force")
    git(repo, "worktree", "add", "-q", "--detach", str(tmp_path / "linked"), "wip")
    git(repo, "branch", "-q", "-D", "wip")
    # a stash entry
    write(repo / "data" / "a.txt", "stashed version")
    cas(repo, "add", "data")
    git(repo, "stash", "-q")
    cas(repo, "checkout", "--force")
    # the index: added, staged, not committed
    write(repo / "data" / "staged.txt", "staged only")
    cas(repo, "add", "data")
    staged = tree(repo / "data")

    done = gc_json(repo)
    assert done["manifests"] == 0, done  # everything is still reachable from some root
    shutil.rmtree(repo / "data")
    cas(repo, "checkout", "data")  # the staged pointer's data, from the store alone
    assert tree(repo / "data") == staged
    git(repo, "checkout", "-q", "HEAD", "--", "data.cas")
    git(repo, "stash", "pop", "-q")
    cas(repo, "checkout", "--force")
    assert (repo / "data" / "a.txt").read_text() == "stashed version"
    git(repo, "checkout", "-q", "HEAD", "--", "data.cas")
    restores(repo, "HEAD", base)
    restores(repo, git(tmp_path / "linked", "rev-parse", "HEAD").strip(), wip)


def test_partly_used_packs_are_repacked(repo: Path) -> None:
    rng = random.Random(5)
    keep = {f"k{i}.bin": rng.randbytes(20_000) for i in range(5)}
    drop = {f"d{i}.bin": rng.randbytes(20_000) for i in range(5)}
    commit_data(repo, {**keep, **drop}, "both in one pack")
    for name in drop:
        (repo / "data" / name).unlink()
    kept = commit_data(repo, {}, "drop half")  # the first commit is history, not a tip
    before = pack_ids(repo)
    assert len(before) == 1
    done = gc_json(repo, "--delete-unpushed")
    assert done["packs_repacked"] == 1 and done["chunks_deleted"] == 5
    after = pack_ids(repo)
    assert len(after) == 1 and after != before
    restores(repo, "HEAD", kept)


def test_gc_waits_for_a_running_add_and_loses_nothing(repo: Path) -> None:
    """An add deduplicates against chunks no root names yet (its pointer is not written): gc
    must not delete them under it. Every process using the store holds its shared lock, so gc
    waits; here this test process holds it, as a running command does, while a real add
    reuses garbage chunks."""
    rng = random.Random(9)
    old = rng.randbytes(2_000_000)
    commit_data(repo, {"old.bin": old}, "v1")
    git(repo, "rm", "-q", "--cached", "data.cas")
    git(repo, "commit", "-qm", "untrack")
    (repo / "data.cas").unlink()  # old.bin's chunks are garbage now
    holder = Repo.discover(repo)
    holder.local.exists("packs")  # any use takes the shared lock
    collecting = subprocess.Popen([*CAS, "gc"], cwd=repo, stderr=subprocess.PIPE, text=True)
    assert collecting.stderr is not None
    assert "waiting for other cas processes using the store" in collecting.stderr.readline()
    write(repo / "data" / "new.bin", rng.randbytes(100_000))
    added = json.loads(cas(repo, "add", "--json", "data").stdout)
    assert added[0]["new_bytes"] < len(old)  # old.bin was deduplicated, not stored again
    assert collecting.poll() is None, "gc ran while the store was in use"
    holder.local.close()
    assert collecting.wait(timeout=120) == 0, collecting.stderr.read()
    cas(repo, "fsck")
    shutil.rmtree(repo / "data")
    cas(repo, "checkout", "data")
    assert (repo / "data" / "old.bin").read_bytes() == old


def test_a_lock_held_too_long_is_a_clear_error(repo: Path) -> None:
    write(repo / "data" / "a.txt", "x")
    local = Repo.discover(repo).local
    with local.exclusive():
        waited = cas(repo, "add", "data", code=8, env={"CAS_LOCK_TIMEOUT": "0.3"})
    assert "waiting for cas gc to finish" in waited.stderr
    assert "cas gc has held" in waited.stderr and "lock" in waited.stderr
    cas(repo, "add", "data")


# -- remote gc -------------------------------------------------------------------------------------
def test_remote_gc_respects_the_grace_period(
    repo: Path, remote_url: tuple[str, dict[str, str]]
) -> None:
    url, env = remote_url
    cas(repo, "remote", "add", "origin", url, env=env)
    rng = random.Random(11)
    commit_data(repo, {"a.bin": rng.randbytes(30_000)}, "v1")
    git(repo, "branch", "old")
    cas(repo, "push", env=env)
    v2 = commit_data(repo, {"a.bin": rng.randbytes(30_000)}, "v2")
    cas(repo, "push", env=env)
    git(repo, "branch", "-q", "-D", "old")
    git(repo, "reflog", "expire", "--expire=now", "--all")

    out = json.loads(cas(repo, "gc", "--json", "--remote", "origin", env=env).stdout)
    assert out["manifests"] == 0 and out["packs_deleted"] == 0 and out["young"] >= 1
    # with no grace, the first run deletes what is unused now
    dry = json.loads(cas(repo, "gc", "--json", "--dry-run", "--remote", "origin",
                         "--older-than", "0s", env=env).stdout)  # fmt: skip
    assert dry["manifests"] == 1 and dry["packs_deleted"] >= 1
    done = json.loads(cas(repo, "gc", "--json", "--remote", "origin",
                          "--older-than", "0s", env=env).stdout)  # fmt: skip
    assert done["manifests"] == 1 and done["bytes_freed"] > 0
    cas(repo, "verify", "--remote", env=env)
    # a fresh store pulls HEAD's data back from what is left
    store = Repo.discover(repo).local.root
    subprocess.run(["rm", "-rf", str(store)], check=True)
    cas(repo, "pull", "--force", env=env)
    assert tree(repo / "data") == v2


def test_remote_gc_deletes_only_after_two_runs_a_grace_apart(repo: Path, tmp_path: Path) -> None:
    cas(repo, "remote", "add", "origin", (tmp_path / "remote").as_uri())
    commit_data(repo, {"a.txt": "old data"}, "v1")
    git(repo, "branch", "old")
    cas(repo, "push")
    commit_data(repo, {"a.txt": "new data"}, "v2")
    cas(repo, "push")
    git(repo, "branch", "-q", "-D", "old")
    git(repo, "reflog", "expire", "--expire=now", "--all")
    rp = Repo.discover(repo)
    store = remote.resolve(rp).open()
    now = time.time()
    for prefix in ("packs/", "index/", "manifests/"):
        for key in store.list(prefix):
            os.utime(store.path(key), (now - 3600, now - 3600))  # pushed an hour ago
    first = gc_op.gc_remote(rp, remote="origin", grace_seconds=600, now=now)
    assert first.manifests == 0 and first.marked >= 2  # v1's manifest and its pack
    (mark,) = store.list(gc_op.MARK_PREFIX)
    assert store.get(mark).decode().startswith(gc_op.MARK_HEADER)
    second = gc_op.gc_remote(rp, remote="origin", grace_seconds=600, now=now + 300)
    assert second.manifests == 0  # the mark is 5 minutes old, the grace 10
    third = gc_op.gc_remote(rp, remote="origin", grace_seconds=600, now=now + 700)
    assert third.manifests == 1 and third.packs_deleted >= 1
    assert not list(store.list(gc_op.MARK_PREFIX))  # consumed, nothing left to mark
    cas(repo, "verify", "--remote")


def test_bad_durations_are_usage_errors(repo: Path) -> None:
    """A grace period or lock timeout that is not a number is refused, never read as a default."""
    bad_grace = cas(repo, "gc", "--remote", "origin", "--older-than", "7x", code=2)
    assert "--older-than '7x' is not a duration" in bad_grace.stderr
    write(repo / "data" / "a.txt", "x")
    bad_wait = cas(repo, "add", "data", code=2, env={"CAS_LOCK_TIMEOUT": "soon"})
    assert "CAS_LOCK_TIMEOUT='soon' is not a number of seconds" in bad_wait.stderr
