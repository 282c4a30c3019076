"""The cached chunk index of a remote (cas/ops/remote_index.py, docs/format.md "Remote chunk
index"): built once and reused, grown by the packs another clone pushes, rebuilt when damaged or
when a remote pack goes, consistent after kill -9 during its write, and lookups for a few chunks
against a 1M-chunk cache that do not load it. Real git, the real CLI, a real ``file://`` remote;
the remote's ``get`` is only watched (each call goes through) to count index file downloads."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cas import chunkindex, objects, remote
from cas.objects import index_key, open_merged, pack_key
from cas.ops import transfer
from cas.ops.remote_index import cache_key, remote_index
from cas.repo import Repo
from cas.store.fsspec import FsspecStore
from cas.store.local import LocalStore
from tests.conftest import cas, git, tree, write
from tests.test_remote import clone, setup_repo


@pytest.fixture
def index_gets(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ``index/`` keys the in-process API downloads from any remote."""
    got: list[str] = []
    real = FsspecStore.get

    def get(self: FsspecStore, key: str) -> bytes:
        if key.startswith("index/"):
            got.append(key)
        return real(self, key)

    monkeypatch.setattr(FsspecStore, "get", get)
    return got


def remote_indexes(url: str) -> set[str]:
    return {k.rsplit("/", 1)[1] for k in FsspecStore(url).list("index/")}


def cache_of(repo: Repo) -> tuple[Path, list[str]]:
    """The cache file of the default remote and the packs its table names (checksum checked)."""
    key = cache_key(remote.resolve(repo).open().url)
    merged, damaged = open_merged(repo.local, key)
    assert merged is not None and not damaged
    merged.verify()
    return repo.local.path(key), merged.packs


def add_more(root: Path, name: str, seed: int) -> None:
    """Another dataset, committed and pushed: new packs on the remote."""
    rng = random.Random(seed)
    for i in range(20):
        write(root / name / f"f{i}.bin", rng.randbytes(20_000 + i))
    cas(root, "add", name)
    git(root, "add", "-A")
    git(root, "commit", "-qm", f"add {name}")
    cas(root, "push")


def test_the_cache_is_built_once_reused_and_grown_by_new_packs(
    git_repo: Path, tmp_path: Path, index_gets: list[str]
) -> None:
    url = (tmp_path / "remote").as_uri()
    setup_repo(git_repo, url, {})
    cas(git_repo, "push")
    other = clone(git_repo, tmp_path / "clone")
    repo = Repo.discover(other)
    transfer.fetch(repo, subpath="cats")  # a partial fetch builds the cache
    first = remote_indexes(url)
    assert sorted(index_gets) == sorted(index_key(p) for p in first)
    path, packs = cache_of(repo)
    assert set(packs) == first
    stamp = path.stat().st_mtime_ns, path.stat().st_ino

    index_gets.clear()
    fetched = transfer.fetch(Repo.discover(other))  # the rest: the cache answers
    assert fetched.chunks > 0 and index_gets == []
    assert (path.stat().st_mtime_ns, path.stat().st_ino) == stamp  # not rewritten
    result = transfer.verify(Repo.discover(other))
    assert result.ok and result.chunks > 0 and index_gets == []

    add_more(git_repo, "more", seed=3)  # another clone pushes new packs
    git(other, "pull", "-q", "--no-rebase", "origin", "main")
    added = remote_indexes(url) - first
    assert added
    transfer.fetch(Repo.discover(other))
    assert sorted(index_gets) == sorted(index_key(p) for p in added)  # only the new ones
    assert set(cache_of(Repo.discover(other))[1]) == first | added
    cas(other, "checkout", "more.cas", "data.cas")
    assert tree(other / "more") == tree(git_repo / "more")
    assert tree(other / "data") == tree(git_repo / "data")
    assert "ok" in cas(other, "fsck").stdout


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_a_damaged_cache_is_rebuilt_not_trusted(
    git_repo: Path, tmp_path: Path, index_gets: list[str], damage: str
) -> None:
    """A flipped byte in a chunk id (only the checksum tells), a truncation, garbage: the next
    command rebuilds the cache from the index files it kept, downloading none, and answers as
    before."""
    url = (tmp_path / "remote").as_uri()
    setup_repo(git_repo, url, {})
    cas(git_repo, "push")
    other = clone(git_repo, tmp_path / "clone")
    transfer.fetch(Repo.discover(other), subpath="cats")
    path, packs = cache_of(Repo.discover(other))
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[chunkindex.Layout(len(packs), 0).ids + 5] ^= 0xFF
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data = bytearray(os.urandom(len(data)))
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    index_gets.clear()
    assert transfer.verify(Repo.discover(other)).ok
    transfer.fetch(Repo.discover(other))
    assert index_gets == []
    cas(other, "checkout", "data.cas")
    assert tree(other / "data") == tree(git_repo / "data")
    assert cache_of(Repo.discover(other))[1] == packs  # whole again


def test_a_pack_gone_from_the_remote_leaves_the_cache(git_repo: Path, tmp_path: Path) -> None:
    """Remote gc drops a pack (its index file first): the next command rewrites the cache
    without it, and its chunks are no holding. A pack whose index file is still listed stays
    covered but is no holding either (verify names it)."""
    url = (tmp_path / "remote").as_uri()
    setup_repo(git_repo, url, {})
    cas(git_repo, "push")
    add_more(git_repo, "more", seed=4)
    repo = Repo.discover(git_repo)
    assert transfer.verify(repo).ok
    store = remote.resolve(repo).open()
    packs = sorted(remote_indexes(url))
    assert set(cache_of(repo)[1]) == set(packs)
    victim = repo.objects.index[next(iter(_chunks(repo, "more.cas")))].pack
    store.delete(index_key(victim))
    store.delete(pack_key(victim))
    found = transfer.verify(Repo.discover(git_repo))
    assert [p.object for p in found.problems] == [pack_key(victim)]
    assert set(cache_of(Repo.discover(git_repo))[1]) == set(packs) - {victim}

    other = next(p for p in packs if p != victim)
    store.delete(pack_key(other))  # an index file naming a pack that is gone
    found = transfer.verify(Repo.discover(git_repo))
    assert {p.object: p.problem for p in found.problems}[pack_key(other)] == (
        "missing (its index file is there)"
    )
    assert other in cache_of(Repo.discover(git_repo))[1]


def _chunks(repo: Repo, pointer: str) -> set[bytes]:
    from cas import manifest

    ptr = repo.read_pointer(repo.target(pointer, repo.root))
    return {c for r in manifest.to_rows(repo.load_manifest(ptr.manifest)) for c, _ in r.chunks}


_BUILDER = """
import sys
from pathlib import Path
import numpy as np
from cas.ops.remote_index import remote_index
from cas.store.local import LocalStore

local = LocalStore(Path(sys.argv[1]), fsync=False)
rng = np.random.default_rng(int(sys.argv[2]))
names = sorted(rng.bytes(32).hex() for _ in range(40))
packs = {p: rng.bytes(44 * 10_000) for p in names}

def bodies(wanted):
    return ((p, packs[p]) for p in wanted)

every, fewer = set(names), set(names[3:])
remote_index(local, "file:///remote", every, every, bodies)
print("writing", flush=True)
while True:  # a drop of packs gone and a merge of new ones, over and over, until killed
    remote_index(local, "file:///remote", fewer, fewer, bodies)
    remote_index(local, "file:///remote", every, every, bodies)
"""


def test_kill_during_a_cache_write_leaves_a_consistent_cache(tmp_path: Path) -> None:
    """kill -9 at random moments of cache rewrites (400,000 entries: packs dropped, then
    merged back in): the cache file is the old one or the new one, whole, and the next command
    answers every lookup right; at most the killed write's temp file is left."""
    root = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    rng = np.random.default_rng(21)  # the child's packs, rebuilt here to check its answers
    names = sorted(rng.bytes(32).hex() for _ in range(40))
    packs = {p: rng.bytes(44 * 10_000) for p in names}
    local = LocalStore(root, fsync=False)
    key = cache_key("file:///remote")
    pick = random.Random(22)
    for _trial in range(5):
        child = subprocess.Popen([sys.executable, "-c", _BUILDER, str(root), "21"], env=env,
                                 stdout=subprocess.PIPE)  # fmt: skip
        assert child.stdout is not None and child.stdout.readline() == b"writing\n"
        time.sleep(pick.uniform(0.0, 0.4))
        child.send_signal(signal.SIGKILL)
        child.communicate()
        assert child.returncode == -signal.SIGKILL
        merged, damaged = open_merged(local, key)
        assert merged is not None and not damaged
        merged.verify()
        assert set(merged.packs) in (set(names), set(names[3:]))
        leftovers = list((root / "tmp").iterdir())
        assert len(leftovers) <= 1, leftovers

        def bodies(wanted: list[str]) -> list[tuple[str, bytes]]:
            return [(p, packs[p]) for p in wanted]

        index = remote_index(local, "file:///remote", set(names), set(names[:-1]), bodies)
        sample = {p: packs[p][44 * i : 44 * i + 44] for i, p in enumerate(names)}
        located = index.locate(entry[:32] for entry in sample.values())
        for p, entry in sample.items():
            offset, length = np.frombuffer(entry[32:], "<u8", 1)[0], int.from_bytes(
                entry[40:], "little")  # fmt: skip
            if p == names[-1]:
                assert entry[:32] not in located  # its pack is not listed: no holding
            else:
                assert located[entry[:32]] == objects.Location(p, int(offset), length)
        assert index.missing([entry[:32] for entry in sample.values()]) == {sample[names[-1]][:32]}
        local.clean_tmp()


_LOOKUP = """
import json, sys
from pathlib import Path
from cas.objects import open_merged
from cas.ops.remote_index import cache_key, remote_index
from cas.store.local import LocalStore

def memory():
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return {k: int(fields[k].split()[0]) for k in ("VmRSS", "VmHWM", "RssAnon")}

local = LocalStore(Path(sys.argv[1]), fsync=False)
url = sys.argv[2]
merged, _ = open_merged(local, cache_key(url))
packs = set(merged.packs)
ids = [merged.chunk_id(i) for i in range(0, len(merged), len(merged) // 5)]
del merged

def refuse(wanted):
    raise AssertionError(f"the cache was rebuilt for {len(wanted)} packs")

Path("/proc/self/clear_refs").write_text("5")  # peak RSS from here
before = memory()
index = remote_index(local, url, packs, packs, refuse)
found = index.locate([*ids, bytes(32)])
held = [cid in index for cid in ids]
after = memory()
print(json.dumps({"found": len(found), "held": sum(held), "before": before, "after": after}))
"""


def test_lookups_in_a_large_remote_cache_do_not_load_it(tmp_path: Path) -> None:
    """A remote cache of 1,000,000 chunks (bench/bench_index.py's synthetic builder, 56 MB):
    opening it (with its checksum pass), a batch lookup and single lookups of a few chunks
    raise the peak RSS by well under the 208 MiB that the dict of every chunk the remote side
    built before took (measured here), and the private memory by next to nothing. What growth
    there is, is mapped page cache: the binary searches' pages, in the kernel's folios (up to
    2 MiB here, with 8 MiB readahead), a number that follows log(n), not n."""
    from bench.bench_index import build_synthetic

    scratch, root = tmp_path / "synthetic", tmp_path / "store"
    scratch.mkdir()
    build_synthetic(scratch, 1_000_000, 200)
    url = "s3://bucket/large"
    target = root / cache_key(url)
    target.parent.mkdir(parents=True)
    os.replace(scratch / objects.MERGED_INDEX_KEY, target)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", _LOOKUP, str(root), url], env=env,
                         capture_output=True, text=True, check=True)  # fmt: skip
    got = json.loads(out.stdout)
    assert got["found"] == 5 and got["held"] == 5  # every asked id, and not the zero id
    grew = got["after"]["VmHWM"] - got["before"]["VmRSS"]  # KiB
    assert grew < 48 * 1024, got
    assert got["after"]["RssAnon"] - got["before"]["RssAnon"] < 8 * 1024, got
