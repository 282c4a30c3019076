"""The merged chunk index (cas/chunkindex.py, docs/format.md "Chunk index"): lookups one at a
time and in batches against a plain dict, merges that drop gc'd packs and keep duplicates,
damaged and newer files, the upgrade of a store that has only index files, and kill -9 during a
merge. Real stores on disk, real packs written by PackWriter."""

from __future__ import annotations

import mmap
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cas import chunkindex, hashing, objects
from cas.chunkindex import MergedIndex, write_merged
from cas.errors import CorruptObjectError
from cas.objects import MERGED_INDEX_KEY, ObjectStore, index_key, pack_key
from cas.store.local import LocalStore
from tests.conftest import cas, tree, write


def encode(entries: list[tuple[bytes, int, int]]) -> bytes:
    return objects.encode_entries(entries)


def merged_file(path: Path, old: MergedIndex | None, live: list[bool], new: list) -> MergedIndex:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_merged(fd, old, live, new)
    finally:
        os.close(fd)
    with open(path, "rb") as f:
        index = MergedIndex(memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)), "t")
    index.verify()
    return index


def random_packs(rng: random.Random, packs: int, per_pack: int) -> list[tuple[str, bytes]]:
    """Packs with random ids, a share of ids repeated across packs, and ids sharing their
    first 8 bytes (the sort key) with another."""
    ids: list[bytes] = []
    out = []
    for p in range(packs):
        entries = []
        for i in range(per_pack):
            if ids and rng.random() < 0.1:
                cid = rng.choice(ids)  # the same chunk in two packs
            elif ids and rng.random() < 0.05:
                cid = rng.choice(ids)[:8] + rng.randbytes(24)  # a shared key
            else:
                cid = rng.randbytes(32)
            ids.append(cid)
            entries.append((cid, i * 100, rng.randint(1, 1 << 20)))
        out.append((hashing.digest(b"pack %d" % p).hex(), encode(entries)))
    return out


def expected(packs: list[tuple[str, bytes]], live: set[str]) -> dict[bytes, set]:
    """chunk id -> every (pack, offset, length) a live pack holds it at."""
    want: dict[bytes, set] = {}
    for pack_id, body in packs:
        if pack_id in live:
            for cid, off, length in objects.decode_entries(body, pack_id):
                want.setdefault(cid, set()).add((pack_id, off, length))
    return want


def test_lookups_and_batch_lookups_agree_with_a_dict(tmp_path: Path) -> None:
    rng = random.Random(7)
    packs = random_packs(rng, 12, 3000)
    index = merged_file(tmp_path / "m", None, [], packs)
    live = np.ones(len(index.packs), dtype=bool)
    want = expected(packs, {p for p, _ in packs})
    absent = [rng.randbytes(32) for _ in range(2000)] + [c[:8] + bytes(24) for c in want][:500]
    absent = [c for c in absent if c not in want]
    queries = list(want) + absent
    rng.shuffle(queries)
    positions = index.find_many(b"".join(queries), len(queries), live)
    for cid, pos in zip(queries, positions):
        one = index.find(cid, live)
        if cid in want:
            assert pos >= 0 and one >= 0 and index.chunk_id(one) == cid
            number, off, length = index.entry(int(pos))
            assert (index.packs[number], off, length) in want[cid]
        else:
            assert pos == -1 and one == -1
    assert len(index) == sum(len(b) // 44 for _p, b in packs)  # duplicates kept, one per pack
    # through ChunkIndex: a batch (with an id of the wrong length, as hostile input could give)
    chunk_index = objects.ChunkIndex(index, [True] * len(index.packs))
    assert chunk_index.missing([*queries, b"short"]) == {*absent, b"short"}
    assert all(chunk_index.get(c) is None for c in absent[:100])


def test_merge_drops_dead_packs_and_keeps_live_duplicates(tmp_path: Path) -> None:
    rng = random.Random(11)
    packs = random_packs(rng, 6, 2000)
    first = merged_file(tmp_path / "a", None, [], packs[:4])
    gone = {first.packs[0], first.packs[2]}
    live = [p not in gone for p in first.packs]
    second = merged_file(tmp_path / "b", first, live, packs[4:])
    alive = {p for p, _ in packs} - gone
    assert sorted(second.packs) == sorted(alive) == second.packs
    want = expected(packs, alive)
    ones = np.ones(len(second.packs), dtype=bool)
    found = second.find_many(b"".join(want), len(want), ones)
    assert (found >= 0).all()
    for cid, pos in zip(want, found):
        number, off, length = second.entry(int(pos))
        assert (second.packs[number], off, length) in want[cid]
    # what only the dead packs held is gone
    only_dead = set(expected(packs, gone)) - set(want)
    assert only_dead and all(second.find(c, ones) == -1 for c in only_dead)
    # and a pack the caller marks dead is skipped without a rewrite
    mask = np.array([p != second.packs[0] for p in second.packs])
    for cid in want:
        pos = second.find(cid, mask)
        holders = {p for p, _o, _n in want[cid]}
        assert (pos >= 0) == bool(holders - {second.packs[0]})


def test_truncated_garbage_and_newer_files_are_refused(tmp_path: Path) -> None:
    packs = random_packs(random.Random(3), 2, 100)
    merged_file(tmp_path / "m", None, [], packs)
    data = (tmp_path / "m").read_bytes()
    for bad in (data[:-1], data + b"\0", b"XXXXXXXX" + data[8:], data[:20]):
        with pytest.raises(CorruptObjectError):
            MergedIndex(memoryview(bad), "m")
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 1
    with pytest.raises(CorruptObjectError, match="checksum"):
        MergedIndex(memoryview(bytes(flipped)), "m").verify()
    newer = bytearray(data)
    newer[8:12] = (2).to_bytes(4, "little")
    with pytest.raises(chunkindex.NewerIndexError, match="upgrade cas"):
        MergedIndex(memoryview(bytes(newer)), "m")


# -- the store ---------------------------------------------------------------------------------
def fill(objects_: ObjectStore, packs: int, per_pack: int, seed: int) -> dict[bytes, bytes]:
    """``packs`` real packs of ``per_pack`` small chunks each; returns id -> bytes."""
    rng = random.Random(seed)
    chunks: dict[bytes, bytes] = {}
    for _ in range(packs):
        with objects_.writer() as writer:
            for _ in range(per_pack):
                data = rng.randbytes(rng.randint(1, 40))
                cid = hashing.digest(data)
                writer.add(cid, data)
                chunks[cid] = data
    return chunks


def open_store(root: Path) -> ObjectStore:
    return ObjectStore(LocalStore(root, fsync=False))


def assert_finds_all(root: Path, chunks: dict[bytes, bytes]) -> ObjectStore:
    store = open_store(root)
    assert not store.missing_chunks(chunks)
    sample = list(chunks)[:: max(1, len(chunks) // 500)]
    assert list(store.read_chunks(sample)) == [chunks[c] for c in sample]
    assert all(store.has_chunk(c) for c in sample)
    assert store.verify_index() is None
    return store


def test_an_old_store_upgrades_without_touching_packs(tmp_path: Path) -> None:
    """A store with only index files (as every store before the merged index): once they pile
    up, a command writes the merged index from them; packs and index files stay as they were."""
    root = tmp_path / "store"
    chunks = fill(open_store(root), objects.MERGE_PACKS + 2, 50, seed=1)
    before = {k: (root / k).read_bytes() for k in open_store(root).local.list("")}
    assert not (root / MERGED_INDEX_KEY).exists()
    store = assert_finds_all(root, chunks)
    assert (root / MERGED_INDEX_KEY).exists()
    assert store.index.delta_size == 0  # everything answered from the merged index
    after = {k: (root / k).read_bytes() for k in before}
    assert after == before
    # set(index) lists each chunk once, as the dict did
    assert set(store.index) == set(chunks) and len(store.index) == len(chunks)


def test_new_packs_are_a_delta_until_they_pile_up(tmp_path: Path) -> None:
    root = tmp_path / "store"
    chunks = fill(open_store(root), objects.MERGE_PACKS + 1, 20, seed=2)
    assert_finds_all(root, chunks)
    merged_bytes = (root / MERGED_INDEX_KEY).read_bytes()
    new = fill(open_store(root), 3, 20, seed=3)
    fresh = set(new) - set(chunks)  # short random chunks repeat: the writer stores them once
    chunks.update(new)
    store = assert_finds_all(root, chunks)
    assert store.index.delta_size == len(fresh) > 0
    assert (root / MERGED_INDEX_KEY).read_bytes() == merged_bytes  # not rewritten for 3 packs


def test_a_pack_gc_deleted_is_not_found_through_the_merged_index(tmp_path: Path) -> None:
    root = tmp_path / "store"
    chunks = fill(open_store(root), objects.MERGE_PACKS + 1, 20, seed=4)
    store = assert_finds_all(root, chunks)
    victim = store.pack_ids()[0]
    held = {c for c, _o, _n in store.pack_entries(victim)}
    store.local.delete(index_key(victim))  # as gc does: the index file, then the pack
    store.local.delete(pack_key(victim))
    again = open_store(root)
    assert again.missing_chunks(chunks) == held
    assert not any(again.has_chunk(c) for c in held)
    assert victim not in {loc.pack for loc in (again.index[c] for c in chunks if c not in held)}


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "garbage"])
def test_a_damaged_merged_index_is_rebuilt(tmp_path: Path, damage: str) -> None:
    root = tmp_path / "store"
    chunks = fill(open_store(root), objects.MERGE_PACKS + 1, 20, seed=5)
    assert_finds_all(root, chunks)
    path = root / MERGED_INDEX_KEY
    data = path.read_bytes()
    path.chmod(0o644)
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":  # in an id: only the checksum can tell
        layout = chunkindex.Layout(len(open_store(root).pack_ids()), len(chunks))
        flipped = bytearray(data)
        flipped[layout.ids + 5] ^= 0xFF
        path.write_bytes(bytes(flipped))
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(os.urandom(len(data)))
    if damage == "flip":
        assert "checksum" in (open_store(root).verify_index() or "")
        # lookups through it still never return wrong bytes (reads verify), and a merge, the
        # next time one is due, verifies it and rebuilds it from the index files
        chunks = {**chunks, **fill(open_store(root), objects.MERGE_PACKS + 1, 1, seed=6)}
    assert_finds_all(root, chunks)
    assert open_store(root).verify_index() is None


def test_a_newer_merged_index_is_refused_not_rewritten(tmp_path: Path) -> None:
    root = tmp_path / "store"
    fill(open_store(root), objects.MERGE_PACKS + 1, 5, seed=8)
    assert_finds_all(root, {})
    path = root / MERGED_INDEX_KEY
    data = bytearray(path.read_bytes())
    data[8:12] = (9).to_bytes(4, "little")
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptObjectError, match="version 9; upgrade cas"):
        _ = open_store(root).index
    assert path.read_bytes() == bytes(data)


def test_an_index_file_that_does_not_match_its_pack_is_not_trusted(tmp_path: Path) -> None:
    """A damaged index file of a pack the merged index does not cover: its entries come from
    the pack's verified trailer instead, and the file is rewritten (ObjectStore.pack_entries)."""
    root = tmp_path / "store"
    fill(open_store(root), 2, 5, seed=9)
    key = index_key(open_store(root).pack_ids()[0])
    good = (root / key).read_bytes()
    data = bytearray(good)
    data[-1] ^= 1  # a length: a read would take the wrong bytes
    (root / key).chmod(0o644)
    (root / key).write_bytes(bytes(data))
    assert not open_store(root).missing_chunks(
        c for c, _o, _n in objects.decode_entries(good[8:], key)
    )
    assert (root / key).read_bytes() == good


def test_a_long_add_merges_its_delta_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past DELTA_MAX chunks registered (or an eighth of the merged index), the process merges:
    its delta stays bounded, and every chunk, before and after each merge, is found (dedup
    within the add included)."""
    monkeypatch.setattr(objects, "DELTA_MAX", 300)
    monkeypatch.setattr(objects, "PACK_TARGET_SIZE", 2000)
    root = tmp_path / "store"
    store = open_store(root)
    _ = store.index
    rng = random.Random(10)
    chunks: dict[bytes, bytes] = {}
    peak = 0
    with store.writer() as writer:
        for i in range(3000):
            data = rng.randbytes(30) if i % 7 else next(iter(chunks.values()), b"x")
            cid = hashing.digest(data)
            assert writer.add(cid, data) == (cid not in chunks)
            chunks[cid] = data
            peak = max(peak, store.index.delta_size)
    assert (root / MERGED_INDEX_KEY).exists()
    assert peak <= max(300, len(chunks) // 8) + 2000 // 30 + 1  # + at most one pack's chunks
    assert not store.missing_chunks(chunks)
    assert_finds_all(root, chunks)


_MERGER = """
import sys
from pathlib import Path
from cas.objects import ObjectStore
from cas.store.local import LocalStore
store = ObjectStore(LocalStore(Path(sys.argv[1]), fsync=False))
packs = sorted(store.pack_ids())
store._merge(None, [], packs)
print("merging", flush=True)
while True:  # the two kinds of merge, over and over, until killed
    old, live = store._merge(None, [], packs[:-3])  # from index files alone
    store._merge(old, live, packs[-3:])  # an old merged index plus new packs
"""


def test_kill_during_a_merge_leaves_a_consistent_index(tmp_path: Path) -> None:
    """kill -9 a process at random moments while it merges (from index files alone, and an old
    merged index plus new packs): the next command finds every chunk, and the merged index it
    finds is whole (the old one or the new one) or absent."""
    root = tmp_path / "store"
    chunks = fill(open_store(root), objects.MERGE_PACKS + 1, 300, seed=12)
    path = root / MERGED_INDEX_KEY
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    rng = random.Random(13)
    for _trial in range(6):
        path.unlink(missing_ok=True)
        child = subprocess.Popen([sys.executable, "-c", _MERGER, str(root)], env=env,
                                 stdout=subprocess.PIPE)  # fmt: skip
        assert child.stdout is not None and child.stdout.readline() == b"merging\n"
        time.sleep(rng.uniform(0.0, 0.5))
        child.send_signal(signal.SIGKILL)
        child.communicate()
        assert child.returncode == -signal.SIGKILL  # killed while merging, not finished
        assert path.exists()
        assert open_store(root).verify_index() is None
        assert_finds_all(root, chunks)
        leftovers = list((root / "tmp").iterdir())
        assert len(leftovers) <= 1, leftovers  # a killed merge leaves at most its temp file
        open_store(root).local.clean_tmp()
        assert not list((root / "tmp").iterdir())


def test_the_cli_works_through_a_merged_index_and_fsck_checks_it(git_repo: Path) -> None:
    """Real CLI on a store that had only index files: add merges them, checkout reads through
    the merged index, fsck passes; a damaged merged index fails fsck with the fix, which works."""
    cas(git_repo, "init")
    root = git_repo / ".cas" / "store"
    fill(open_store(root), objects.MERGE_PACKS + 1, 5, seed=14)
    files = {f"f{i}.bin": random.Random(i).randbytes(3000 + i) for i in range(3)}
    for name, data in files.items():
        write(git_repo / "data" / name, data)
    cas(git_repo, "add", "data")
    assert (root / MERGED_INDEX_KEY).exists()
    for name in files:
        (git_repo / "data" / name).unlink()
    cas(git_repo, "checkout", "data")
    assert tree(git_repo / "data") == files
    cas(git_repo, "fsck")
    path = root / MERGED_INDEX_KEY
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    out = cas(git_repo, "fsck", code=1).stdout
    assert f"{path} does not match its checksum; delete it: it is rebuilt" in out
    path.unlink()
    cas(git_repo, "fsck")


def test_gc_through_a_merged_index_deletes_and_keeps_the_right_chunks(git_repo: Path) -> None:
    """gc on a store answered by a merged index: unreferenced packs go, the merged index's
    entries for them stop answering, and what the commits need still checks out and fscks."""
    cas(git_repo, "init")
    root = git_repo / ".cas" / "store"
    garbage = fill(open_store(root), objects.MERGE_PACKS + 1, 5, seed=15)
    files = {"a.bin": random.Random(1).randbytes(5000), "b.bin": random.Random(2).randbytes(7000)}
    for name, data in files.items():
        write(git_repo / "data" / name, data)
    cas(git_repo, "add", "data")
    subprocess.run(["git", "add", "-A"], cwd=git_repo, check=True)
    subprocess.run(["git", "commit", "-qm", "v1"], cwd=git_repo, check=True)
    assert (root / MERGED_INDEX_KEY).exists()
    assert not open_store(root).missing_chunks(garbage)
    cas(git_repo, "gc")
    after = open_store(root)
    assert after.missing_chunks(garbage) == set(garbage)
    for name in files:
        (git_repo / "data" / name).unlink()
    cas(git_repo, "checkout", "data")
    assert tree(git_repo / "data") == files
    cas(git_repo, "fsck")
    assert not set(after.index) & set(garbage)
