"""``cas add --executor`` and ``cas manifest create --executor`` on a real Dask cluster.

The cluster is a real ``distributed.LocalCluster``: a scheduler and two worker processes (each
under a nanny that restarts it) on loopback, as a team's cluster would be, only smaller. The
invariant under test is that distributing the hashing changes nothing about the result: the same
manifest id as a single-machine add, even when a worker is killed in the middle.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import distributed
import numpy as np
import pytest

from cas.ops import distribute
from cas.repo import Repo
from tests.conftest import cas, git, tree, write


@pytest.fixture(scope="module")
def cluster() -> Iterator[distributed.LocalCluster]:
    # Dask's nanny sets its workers' variables (PYTHONHASHSEED, OMP/MKL/OPENBLAS_NUM_THREADS) in
    # this process's own environment before it spawns them: later tests must not inherit them.
    saved = dict(os.environ)
    try:
        with distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as found:
            yield found
    finally:
        os.environ.clear()
        os.environ.update(saved)


def make_data(root: Path, files: int = 120, seed: int = 7) -> None:
    rng = np.random.default_rng(seed)
    for i in range(files):
        write(root / "data" / f"d{i % 7}" / f"f{i:04}.bin", rng.bytes(int(rng.integers(0, 90_000))))
    write(root / "data" / "big.bin", rng.bytes(3_000_000))  # chunked, block-aligned in packs
    os.chmod(root / "data" / "d0" / "f0000.bin", 0o755)


def new_repo(path: Path) -> Path:
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "t@example.com")
    git(path, "config", "user.name", "T")
    cas(path, "init")
    return path


def manifest_of(root: Path) -> str:
    return (root / "data.cas").read_text().split("manifest ")[1].split()[0]


def local_manifest(tmp_path: Path, files: int = 120) -> str:
    """What a single-machine add of the same data gives."""
    single = new_repo(tmp_path / "single")
    make_data(single, files)
    cas(single, "add", "data")
    return manifest_of(single)


def test_cluster_add_gives_the_single_machine_manifest(
    cluster: distributed.LocalCluster, tmp_path: Path
) -> None:
    root = new_repo(tmp_path / "proj")
    make_data(root)
    out = cas(root, "add", "data", "--executor", cluster.scheduler_address, "--json")
    assert json.loads(out.stdout)[0]["hashed_files"] == 121
    assert manifest_of(root) == local_manifest(tmp_path)
    assert "ok" in cas(root, "fsck").stdout
    # the data checks out from what the workers stored, byte for byte
    expected = tree(root / "data")
    git(root, "commit", "-qm", "v1")
    for path in (root / "data").rglob("*.bin"):
        path.unlink()
    cas(root, "checkout")
    assert tree(root / "data") == expected
    assert os.stat(root / "data" / "d0" / "f0000.bin").st_mode & 0o100


def test_many_small_tasks_and_the_stat_cache(
    cluster: distributed.LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tasks of a few files each (many tasks, completing out of order): the same manifest; a
    re-add after one edit hashes only that file, on the cluster."""
    monkeypatch.setattr(distribute, "TASK_BYTES", 200_000)
    monkeypatch.setattr(distribute, "TASK_FILES", 5)
    root = new_repo(tmp_path / "proj")
    make_data(root)
    # Files hashed within 50 ms of their ctime are racily clean and not cached (cas.state):
    # past that margin, the re-add below must hash the edited file alone.
    time.sleep(0.2)
    with Repo.discover(root) as repo:
        (first,) = repo.add([root / "data"], executor=cluster.scheduler_address)
    assert first.manifest == local_manifest(tmp_path)
    write(root / "data" / "d3" / "f0003.bin", b"edited")
    with Repo.discover(root) as repo:
        with distributed.Client(cluster.scheduler_address, set_as_default=False) as client:
            (second,) = repo.add([root / "data"], executor=client.get_executor())
        assert second.hashed_files == 1
        assert repo.status() and repo.status()[0].state == "unchanged"


def test_killed_worker_changes_nothing(
    cluster: distributed.LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker process killed (SIGKILL) mid-add: its nanny restarts it, Dask reruns its tasks,
    and the manifest is the single-machine one; what the dead worker left is at most garbage."""
    monkeypatch.setattr(distribute, "TASK_BYTES", 1)  # a task per file: many, and long enough
    root = new_repo(tmp_path / "proj")
    rng = np.random.default_rng(3)
    for i in range(160):
        write(root / "data" / f"f{i:03}.bin", rng.bytes(400_000))
    with distributed.Client(cluster.scheduler_address, set_as_default=False) as client:
        pids = list(client.run(os.getpid).values())
        killed = threading.Event()

        def kill_one() -> None:
            # wait until some files are hashed (the store has sealed packs), then kill
            packs = root / ".cas" / "store" / "packs"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not (packs.is_dir() and any(packs.rglob("*"))):
                time.sleep(0.01)
            os.kill(pids[0], signal.SIGKILL)
            killed.set()

        killer = threading.Thread(target=kill_one)
        killer.start()
        with Repo.discover(root) as repo:
            (result,) = repo.add([root / "data"], executor=client.get_executor())
        killer.join()
    assert killed.is_set()
    single = new_repo(tmp_path / "single")
    for i in range(160):
        write(single / "data" / f"f{i:03}.bin", (root / "data" / f"f{i:03}.bin").read_bytes())
    cas(single, "add", "data")
    assert result.manifest == manifest_of(single)
    assert "ok" in cas(root, "fsck").stdout
    git(root, "commit", "-qm", "v1")
    expected = tree(root / "data")
    for path in (root / "data").iterdir():
        path.unlink()
    cas(root, "checkout")
    assert tree(root / "data") == expected


def test_corpus_hashed_on_the_cluster(
    cluster: distributed.LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(distribute, "TASK_FILES", 3)
    corpus = tmp_path / "corpus"
    rng = np.random.default_rng(5)
    for i in range(20):
        write(corpus / "shard" / f"part-{i:02}.jsonl", rng.bytes(int(rng.integers(0, 40_000))))
    listings = []
    for name, executor in (("one", None), ("many", cluster.scheduler_address)):
        root = new_repo(tmp_path / name)
        extra = ["--executor", executor] if executor else []
        cas(root, "manifest", "create", "corpus.cas", str(corpus), *extra)
        listings.append(json.loads(cas(root, "ls", "corpus.cas", "--json").stdout))
    assert listings[0] == listings[1] and len(listings[0]) == 20


def test_process_pool_and_bad_executors(tmp_path: Path) -> None:
    root = new_repo(tmp_path / "proj")
    make_data(root, files=30)
    cas(root, "add", "data", "--executor", "processes:2")
    with_pool = manifest_of(root)
    assert with_pool == local_manifest(tmp_path, files=30)
    bad = cas(root, "add", "data", "--executor", "nonsense", code=2)
    assert "is not an executor" in bad.stderr
    zero = cas(root, "add", "data", "--executor", "processes:0", code=2)
    assert "positive number" in zero.stderr
    gone = cas(root, "add", "data", "--executor", "tcp://127.0.0.1:9", code=2)
    assert "cannot reach the Dask scheduler" in gone.stderr
    # core.executor in the config is the default; --executor local overrides it
    with (root / ".cas" / "config.local").open("a") as f:
        f.write("[core]\nexecutor = nonsense\n")
    cas(root, "add", "data", code=2)
    cas(root, "add", "data", "--executor", "local")


def test_a_worker_that_cannot_see_the_store_says_so(tmp_path: Path) -> None:
    task = distribute.FileTask(str(tmp_path), str(tmp_path / "nowhere"), False, ())
    with pytest.raises(distribute.UsageError, match="cannot see the store"):
        distribute.hash_file_task(task)


def test_batches_cover_every_file_once() -> None:
    sizes = [10, 0, 5, distribute.TASK_BYTES * 3, 1, 1]
    parts = list(distribute.batches(sizes))
    assert [i for part in parts for i in part] == list(range(len(sizes)))
    assert range(3, 4) in parts  # a file larger than a task is a task alone
