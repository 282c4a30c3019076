"""Damaged stores (issue 14, items 2, 4 and 9): corrupt or truncated index files, packs gone or
unreadable, damaged local and remote objects. Real git, the real CLI, the file:// remote and
SeaweedFS. Each message that names a fix is followed by running that fix."""

from __future__ import annotations

import os
import random
import shutil
import stat
from pathlib import Path

import pytest

from cas import hashing
from cas import remote as remote_config
from cas.objects import INDEX_MAGIC, index_key, pack_key
from cas.repo import Repo
from tests.conftest import cas, git, tree, write
from tests.test_faults import cas_unprivileged, unprivileged

ENTRY = 44  # chunk id (32), offset (8), length (4)


@pytest.fixture
def repo(git_repo: Path) -> Path:
    cas(git_repo, "init")
    git(git_repo, "commit", "-qm", "init")
    return git_repo


def commit_data(root: Path, files: dict[str, bytes], message: str) -> dict[str, bytes]:
    for name, data in files.items():
        write(root / "data" / name, data)
    cas(root, "add", "data")
    git(root, "commit", "-qm", message)
    return tree(root / "data")


def store(root: Path) -> Path:
    with Repo.discover(root) as repo:
        return repo.local.root


def packs(root: Path) -> list[str]:
    with Repo.discover(root) as repo:
        return repo.objects.pack_ids()


def rewrite(path: Path, change: bytes, at: int) -> None:
    """Overwrite bytes of a read-only store file in place."""
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(change)


def flip(path: Path, at: int) -> None:
    data = path.read_bytes()
    rewrite(path, bytes([data[at] ^ 0xFF]), at)


def restored(root: Path, expected: dict[str, bytes], rev: str = "HEAD") -> None:
    """``rev``'s data checks out byte for byte; then the pointer is HEAD's again (a checkout
    of a revision writes that revision's pointer)."""
    shutil.rmtree(root / "data", ignore_errors=True)
    cas(root, "checkout", "--force", "--rev", rev, "data")
    assert tree(root / "data") == expected
    git(root, "checkout", "-q", "HEAD", "--", "data.cas")


# -- item 2: index files are verified against their packs ---------------------------------------
def test_a_corrupt_index_is_found_by_fsck_and_never_drives_gc(repo: Path) -> None:
    rng = random.Random(1)
    keep = commit_data(repo, {f"f{i}.bin": rng.randbytes(30_000) for i in range(6)}, "v1")
    (pack_id,) = packs(repo)
    index = store(repo) / index_key(pack_id)
    for n in range(3):  # the first byte of three chunk ids, as in the issue
        flip(index, len(INDEX_MAGIC) + n * ENTRY)
    fsck = cas(repo, "fsck", code=1)
    assert f"index/{pack_id} does not match pack {pack_id}" in fsck.stdout
    assert "rebuilt it from the pack's trailer" in fsck.stdout
    assert "not local" not in fsck.stdout  # the chunks are found in the pack
    cas(repo, "fsck")  # rebuilt: clean

    for n in range(3):
        flip(index, len(INDEX_MAGIC) + n * ENTRY)
    done = cas(repo, "gc", "--json", "--delete-unpushed")
    assert '"packs_repacked": 0' in done.stdout and '"packs_deleted": 0' in done.stdout
    restored(repo, keep)
    cas(repo, "fsck")


def test_a_forged_index_cannot_make_add_skip_a_chunk(repo: Path) -> None:
    """The sibling in ObjectStore's index: an entry claiming a chunk the pack lacks made add
    believe the chunk stored, and skip it."""
    commit_data(repo, {"old.bin": random.Random(2).randbytes(20_000)}, "v1")
    (pack_id,) = packs(repo)
    new = b"content the store does not hold yet" * 100  # one chunk: its id is its hash
    rewrite(store(repo) / index_key(pack_id), hashing.digest(new), len(INDEX_MAGIC))
    kept = commit_data(repo, {"new.bin": new}, "v2")
    restored(repo, kept)
    cas(repo, "fsck")


def test_a_truncated_index_is_reported_and_rebuilt(repo: Path) -> None:
    kept = commit_data(repo, {"a.bin": random.Random(3).randbytes(50_000)}, "v1")
    (pack_id,) = packs(repo)
    index = store(repo) / index_key(pack_id)
    os.chmod(index, stat.S_IRUSR | stat.S_IWUSR)
    os.truncate(index, index.stat().st_size - 7)
    fsck = cas(repo, "fsck", code=1)
    assert f"index/{pack_id} is not an index file" in fsck.stdout
    cas(repo, "fsck")
    restored(repo, kept)


# -- item 9: damage is diagnosed right ------------------------------------------------------------
def test_a_pack_gone_with_its_index_kept(repo: Path, tmp_path: Path) -> None:
    rng = random.Random(4)
    kept = commit_data(repo, {"a.bin": rng.randbytes(40_000)}, "v1")
    url = (tmp_path / "remote").as_uri()
    cas(repo, "remote", "add", "origin", url)
    cas(repo, "push")
    (pack_id,) = packs(repo)
    os.unlink(store(repo) / pack_key(pack_id))
    shutil.rmtree(repo / "data")
    cas(repo, "remote", "remove", "origin")
    checkout = cas(repo, "checkout", "data", code=3)
    assert "not in the local store" in checkout.stderr and "no remote" in checkout.stderr
    fsck = cas(repo, "fsck", code=1)
    assert f"pack {pack_id} is gone but index/{pack_id} remains" in fsck.stdout
    gc = cas(repo, "gc", code=3)  # a chunk the roots need is nowhere: gc deletes nothing
    assert "gc deleted nothing" in gc.stderr
    assert (store(repo) / index_key(pack_id)).exists()
    cas(repo, "remote", "add", "origin", url)
    cas(repo, "fetch")  # what the fsck message says
    cas(repo, "gc")  # drops the stale index: the pack is back, fetched whole
    cas(repo, "fsck")
    restored(repo, kept)


def test_unreadable_store_folders_and_files_are_one_line_errors(repo: Path) -> None:
    commit_data(repo, {"a.bin": random.Random(5).randbytes(40_000)}, "v1")
    root = store(repo)
    (pack_id,) = packs(repo)
    for folder in ("packs", "manifests", "index"):
        path = root / folder
        os.chmod(path, 0)
        try:
            failed = cas_unprivileged(repo, "fsck", code=7)
        finally:
            os.chmod(path, 0o755)
        assert "permission denied" in failed.stderr and "Traceback" not in failed.stderr
    pack = root / pack_key(pack_id)
    os.chmod(pack, 0)
    try:
        failed = cas_unprivileged(repo, "fsck", code=1)
        assert f"cannot read {pack_key(pack_id)}" in failed.stdout
        assert "Traceback" not in failed.stderr
    finally:
        os.chmod(pack, stat.S_IRUSR)
    assert unprivileged() or os.geteuid() != 0  # the checks above ran without root's override
    cas(repo, "fsck")


# -- item 9: real repair paths ---------------------------------------------------------------------
def test_fetch_repair_replaces_a_damaged_local_pack(
    repo: Path, remote_url: tuple[str, dict[str, str]]
) -> None:
    url, env = remote_url
    kept = commit_data(repo, {"a.bin": random.Random(6).randbytes(60_000)}, "v1")
    cas(repo, "remote", "add", "origin", url)
    cas(repo, "push", env=env)
    (pack_id,) = packs(repo)
    flip(store(repo) / pack_key(pack_id), 100)
    shutil.rmtree(repo / "data")
    failed = cas(repo, "checkout", "data", code=4)
    assert "run 'cas fetch --repair'" in failed.stderr
    assert "run 'cas fetch --repair'" in cas(repo, "fsck", code=1).stdout
    cas(repo, "fetch", "--repair", env=env)
    cas(repo, "fsck")
    restored(repo, kept)


def test_fetch_repair_rebuilds_a_pack_the_remote_holds_under_another_id(
    repo: Path, tmp_path: Path
) -> None:
    """A clone that fetched by ranges holds its own packs: the damaged chunk comes from the
    remote's pack, the sound ones are copied, and the damaged pack goes."""
    rng = random.Random(7)
    kept = commit_data(repo, {f"f{i}.bin": rng.randbytes(30_000) for i in range(4)}, "v1")
    url = (tmp_path / "remote").as_uri()
    cas(repo, "remote", "add", "origin", url)
    cas(repo, "push")
    (pushed,) = packs(repo)
    extra = commit_data(repo, {"local.bin": rng.randbytes(30_000)}, "v2: not pushed")
    with Repo.discover(repo) as r:  # one pack with a pushed chunk and an unpushed one
        entries = r.objects.pack_entries(pushed)
        chunks = [r.objects.read_chunk(entries[0][0])]
        (new_pack,) = set(r.objects.pack_ids()) - {pushed}
        unpushed = r.objects.pack_entries(new_pack)[0][0]
        chunks.append(r.objects.read_chunk(unpushed))
        with r.objects.writer(repack=True) as writer:
            writer.add(entries[0][0], chunks[0])
            writer.add(unpushed, chunks[1])
        (mixed,) = writer.sealed
    # the only local copies: the mixed pack (damaged where the pushed chunk is) and the rest
    with Repo.discover(repo) as r:
        offset = r.objects.pack_entries(mixed)[0][1]
    flip(store(repo) / pack_key(mixed), offset)
    os.unlink(store(repo) / pack_key(pushed))
    os.unlink(store(repo) / index_key(pushed))
    os.unlink(store(repo) / pack_key(new_pack))
    os.unlink(store(repo) / index_key(new_pack))
    cas(repo, "fsck", code=1)
    cas(repo, "fetch", "--repair", "--rev", "HEAD~1")
    assert mixed not in packs(repo)
    cas(repo, "fsck")
    restored(repo, extra)  # the unpushed chunk survived the repair
    restored(repo, kept, "HEAD~1")


def test_push_repair_replaces_a_damaged_remote_pack(
    repo: Path, remote_url: tuple[str, dict[str, str]]
) -> None:
    url, env = remote_url
    kept = commit_data(repo, {"a.bin": random.Random(8).randbytes(60_000)}, "v1")
    cas(repo, "remote", "add", "origin", url)
    cas(repo, "push", env=env)
    (pack_id,) = packs(repo)
    with Repo.discover(repo) as r:
        remote = remote_config.resolve(r).open()
        data = bytearray(remote.get(pack_key(pack_id)))
        data[100] ^= 0xFF
        remote.put_bytes(pack_key(pack_id), bytes(data))
    deep = cas(repo, "verify", "--remote", "--deep", env=env, code=1)
    assert "run 'cas push --repair'" in deep.stdout
    assert "everything is on remote" in cas(repo, "push", env=env).stdout  # not the fix
    repaired = cas(repo, "push", "--repair", env=env)
    assert "replaced 1 damaged objects" in repaired.stdout
    cas(repo, "verify", "--remote", "--deep", env=env)
    # a clone gets sound data from the repaired remote
    clone = repo.parent / "clone"
    git(repo.parent, "clone", "-q", str(repo), str(clone))
    cas(clone, "remote", "add", "origin", url)
    cas(clone, "pull", env=env)
    assert tree(clone / "data") == kept


def test_push_repair_replaces_a_damaged_remote_index(repo: Path, tmp_path: Path) -> None:
    kept = commit_data(repo, {"a.bin": random.Random(9).randbytes(60_000)}, "v1")
    url = (tmp_path / "remote").as_uri()
    cas(repo, "remote", "add", "origin", url)
    cas(repo, "push")
    (pack_id,) = packs(repo)
    remote_index = tmp_path / "remote" / index_key(pack_id)
    flip(remote_index, len(INDEX_MAGIC))
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    cas(clone, "remote", "add", "origin", url)
    failed = cas(clone, "pull", code=4)
    assert "run 'cas push --repair'" in failed.stderr
    cas(repo, "push", "--repair")
    cas(clone, "pull")
    assert tree(clone / "data") == kept


# -- item 4: gc keeps what history needs unless a remote holds it -------------------------------
def test_gc_keeps_unpushed_history_and_drops_what_a_remote_holds(
    repo: Path, remote_url: tuple[str, dict[str, str]]
) -> None:
    url, env = remote_url
    rng = random.Random(10)
    v1 = commit_data(repo, {"a.bin": rng.randbytes(60_000)}, "v1")
    v2 = commit_data(repo, {"a.bin": rng.randbytes(60_000)}, "v2")
    before = packs(repo)
    kept = cas(repo, "gc", env=env)  # no remote: all history's data stays
    assert "no remote holds" in kept.stdout and packs(repo) == before
    restored(repo, v1, "HEAD~1")

    cas(repo, "remote", "add", "origin", url)
    cas(repo, "push", env=env)  # only v2: v1's data is still only here
    assert packs(repo) == before and "no remote holds" in cas(repo, "gc", env=env).stdout
    restored(repo, v1, "HEAD~1")
    cas(repo, "push", "--all-commits", env=env)
    done = cas(repo, "gc", "--json", env=env)
    assert '"manifests": 1' in done.stdout and '"packs_deleted": 1' in done.stdout
    assert len(packs(repo)) == 1
    cas(repo, "pull", "--force", "--rev", "HEAD~1", env=env)  # back from the remote
    assert tree(repo / "data") == v1
    git(repo, "checkout", "-q", "HEAD", "--", "data.cas")
    restored(repo, v2)


def test_delete_unpushed_is_explicit(repo: Path) -> None:
    rng = random.Random(11)
    commit_data(repo, {"a.bin": rng.randbytes(40_000)}, "v1")
    v2 = commit_data(repo, {"a.bin": rng.randbytes(40_000)}, "v2")
    assert cas(repo, "gc", "--json")
    assert len(packs(repo)) == 2
    cas(repo, "gc", "--delete-unpushed")
    assert len(packs(repo)) == 1
    failed = cas(repo, "checkout", "--force", "--rev", "HEAD~1", "data", code=3)
    assert "not in the local store" in failed.stderr
    restored(repo, v2)
    usage = cas(repo, "gc", "--delete-unpushed", "--remote", "origin", code=2)
    assert "--delete-unpushed is for the local store" in usage.stderr
