"""The issue's user story, end to end: real git, the real ``cas`` CLI, a local store."""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from pathlib import Path

import blake3

from tests.conftest import cas, git, tree, write


def make_data(root: Path, seed: int = 1) -> None:
    rng = random.Random(seed)
    for i in range(30):
        write(root / "data" / f"d{i % 3}" / f"f{i:02}.bin", rng.randbytes(rng.randint(0, 40_000)))
    write(root / "data" / "big.bin", rng.randbytes(600_000))
    write(root / "data" / "run.sh", "#!/bin/sh\necho hi\n")
    os.chmod(root / "data" / "run.sh", 0o755)


def test_round_trip_of_two_versions(git_repo: Path) -> None:
    cas(git_repo, "init")
    make_data(git_repo)
    out = cas(git_repo, "add", "data/").stdout
    assert "data.cas: 32 files" in out
    staged = git(git_repo, "diff", "--cached", "--name-only").split()
    assert {"data.cas", ".gitignore", ".cas/config", ".cas/.gitignore"} <= set(staged)
    assert "/data" in (git_repo / ".gitignore").read_text().splitlines()
    git(git_repo, "commit", "-qm", "data v1")
    v1 = tree(git_repo / "data")
    assert cas(git_repo, "status").stdout.strip() == "data.cas: unchanged"

    data = git_repo / "data"
    for name in ("d0/f00.bin", "d1/f01.bin", "d2/f02.bin"):
        write(data / name, b"changed " + name.encode())
    write(data / "new.txt", "new")
    (data / "d0/f03.bin").unlink()
    (data / "d1/f04.bin").unlink()
    status = cas(git_repo, "status").stdout
    assert "data.cas: modified (3 modified, 1 added, 2 deleted)" in status
    js = json.loads(cas(git_repo, "status", "--json").stdout)
    assert js[0]["modified"] == 3 and js[0]["added"] == 1 and js[0]["deleted"] == 2

    cas(git_repo, "add", "data")
    git(git_repo, "commit", "-qm", "data v2")
    git(git_repo, "tag", "v2")
    v2 = tree(git_repo / "data")

    git(git_repo, "checkout", "-q", "HEAD~1")
    cas(git_repo, "checkout")
    assert tree(git_repo / "data") == v1
    assert os.access(git_repo / "data/run.sh", os.X_OK)
    assert cas(git_repo, "status").stdout.strip() == "data.cas: unchanged"

    cas(git_repo, "checkout", "--rev", "v2", "data.cas")
    assert tree(git_repo / "data") == v2
    assert git(git_repo, "rev-parse", "HEAD") != git(git_repo, "rev-parse", "v2")
    assert cas(git_repo, "status").stdout.strip() == "data.cas: unchanged"

    git(git_repo, "checkout", "-q", "-f", "main")
    diff = json.loads(cas(git_repo, "diff", "HEAD~1", "HEAD", "--json").stdout)
    kinds = {(c["path"], c["change"]) for c in diff}
    assert ("data/new.txt", "added") in kinds
    assert ("data/d0/f03.bin", "deleted") in kinds
    assert ("data/d0/f00.bin", "modified") in kinds
    assert len(diff) == 6

    listing = json.loads(cas(git_repo, "ls", "data.cas", "--rev", "HEAD~1", "--json").stdout)
    assert len(listing) == 32
    git(git_repo, "checkout", "-q", "HEAD~1")
    cas(git_repo, "checkout")
    for item in listing:
        content = (git_repo / item["path"]).read_bytes()
        assert blake3.blake3(content).hexdigest() == item["hash"]  # what b3sum prints
        assert len(content) == item["size"]

    fsck = cas(git_repo, "fsck").stdout
    assert "ok" in fsck


def test_single_file_subdirectory_and_several_targets(git_repo: Path) -> None:
    cas(git_repo, "init")
    write(git_repo / "models/model.bin", os.urandom(300_000))
    write(git_repo / "models/other/a.txt", "a")
    write(git_repo / "extra/b.txt", "b")
    sub = git_repo / "models"
    cas(sub, "add", "model.bin", "other", "../extra")
    assert (sub / "model.bin.cas").read_text().startswith("cas-pointer 1\nkind file\n")
    assert (git_repo / "extra.cas").exists() and (sub / "other.cas").exists()
    assert "/model.bin" in (sub / ".gitignore").read_text().splitlines()
    git(git_repo, "commit", "-qm", "models")
    original = (sub / "model.bin").read_bytes()
    (sub / "model.bin").unlink()
    st = json.loads(cas(sub, "status", "--json").stdout)
    assert {s["pointer"]: s["state"] for s in st}["models/model.bin.cas"] == "missing"
    cas(sub, "checkout", "model.bin.cas")
    assert (sub / "model.bin").read_bytes() == original


def test_partial_checkout_of_a_subtree(git_repo: Path) -> None:
    cas(git_repo, "init")
    make_data(git_repo)
    cas(git_repo, "add", "data")
    git(git_repo, "commit", "-qm", "v1")
    v1 = tree(git_repo / "data")
    shutil.rmtree(git_repo / "data")
    cas(git_repo, "checkout", "data/d1")
    got = tree(git_repo / "data")
    assert got == {k: v for k, v in v1.items() if k.startswith("d1/")}
    cas(git_repo, "checkout")
    assert tree(git_repo / "data") == v1


def test_unsaved_edits_are_never_overwritten_without_force(git_repo: Path) -> None:
    cas(git_repo, "init")
    make_data(git_repo)
    cas(git_repo, "add", "data")
    git(git_repo, "commit", "-qm", "v1")
    write(git_repo / "data/new.txt", "v2 only")
    cas(git_repo, "add", "data")
    git(git_repo, "commit", "-qm", "v2")
    git(git_repo, "checkout", "-q", "HEAD~1")
    # an unsaved edit and an untracked file: both would be lost
    write(git_repo / "data/d0/f00.bin", "my unsaved edit")
    write(git_repo / "data/notes.txt", "untracked")
    err = cas(git_repo, "checkout", code=5).stderr
    assert "data/d0/f00.bin" in err and "data/notes.txt" in err and "--force" in err
    assert (git_repo / "data/d0/f00.bin").read_text() == "my unsaved edit"
    assert (git_repo / "data/new.txt").exists()  # nothing was touched
    cas(git_repo, "checkout", "--force")
    assert not (git_repo / "data/notes.txt").exists()
    assert not (git_repo / "data/new.txt").exists()  # in the store: safe to delete
    assert cas(git_repo, "status").stdout.strip() == "data.cas: unchanged"


def test_deleting_the_stat_cache_changes_no_result(git_repo: Path) -> None:
    cas(git_repo, "init")
    make_data(git_repo)
    cas(git_repo, "add", "data")
    pointer_v1 = (git_repo / "data.cas").read_bytes()
    write(git_repo / "data/d0/f00.bin", "edit")
    before = json.loads(cas(git_repo, "status", "--json").stdout)
    shutil.rmtree(git_repo / ".cas/state")
    after = json.loads(cas(git_repo, "status", "--json").stdout)
    assert before == after
    assert not (git_repo / ".cas/state").exists()  # a modified tree's status records nothing
    out = json.loads(cas(git_repo, "add", "data", "--json").stdout)[0]
    assert out["hashed_files"] == 32  # no cache: everything hashed
    assert (git_repo / "data.cas").read_bytes() != pointer_v1
    again = json.loads(cas(git_repo, "add", "data", "--json").stdout)[0]
    assert again["hashed_files"] == 0 and again["pointer_changed"] is False


def test_same_size_edit_right_after_add_is_seen(git_repo: Path) -> None:
    """A racy edit (same size, same timestamp tick) must not hide behind the stat cache."""
    cas(git_repo, "init")
    write(git_repo / "data/a.txt", "aaaa")
    cas(git_repo, "add", "data")
    write(git_repo / "data/a.txt", "bbbb")
    assert "1 modified" in cas(git_repo, "status").stdout


def test_store_growth_after_small_insert_is_one_chunk(git_repo: Path) -> None:
    cas(git_repo, "init")
    big = os.urandom(16 << 20)
    write(git_repo / "data/big.bin", big)
    cas(git_repo, "add", "data")
    write(git_repo / "data/big.bin", big[: 8 << 20] + b"y" * 100 + big[8 << 20 :])
    out = json.loads(cas(git_repo, "add", "data", "--json").stdout)[0]
    assert 0 < out["new_bytes"] <= 2 * 256 * 1024  # at most two chunks of the maximum size


def test_deleting_a_file_is_seen_by_status_add_and_checkout(git_repo: Path) -> None:
    cas(git_repo, "init")
    make_data(git_repo)
    cas(git_repo, "add", "data")
    time.sleep(0.1)  # let the stat cache trust every file
    cas(git_repo, "add", "data")
    (git_repo / "data/d0/f00.bin").unlink()
    assert "0 modified, 0 added, 1 deleted" in cas(git_repo, "status").stdout
    assert "data.cas: 31 files" in cas(git_repo, "add", "data").stdout
    (git_repo / "data/d1/f01.bin").unlink()
    cas(git_repo, "checkout")
    assert (git_repo / "data/d1/f01.bin").exists()


def test_clones_can_share_one_store(git_repo: Path, tmp_path: Path) -> None:
    cas(git_repo, "init")
    shared = tmp_path / "shared-store"
    cfg = git_repo / ".cas/config"
    cfg.write_text(f"[core]\nstore = {shared}\n")
    make_data(git_repo)
    cas(git_repo, "add", "data")
    git(git_repo, "add", ".cas/config")
    git(git_repo, "commit", "-qm", "v1")
    assert any((shared / "packs").rglob("*")) and not (git_repo / ".cas/store").exists()
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(git_repo), str(clone))
    cas(clone, "checkout")  # no pull needed: the store is shared
    assert tree(clone / "data") == tree(git_repo / "data")


def test_init_is_idempotent_and_keeps_config(git_repo: Path) -> None:
    cas(git_repo, "init")
    (git_repo / ".cas/config").write_text("[core]\nfsync = true\n")
    cas(git_repo, "init")
    assert "fsync = true" in (git_repo / ".cas/config").read_text()
    ignored = (git_repo / ".cas/.gitignore").read_text().split()
    assert {"/store/", "/state/", "/config.local"} <= set(ignored)
