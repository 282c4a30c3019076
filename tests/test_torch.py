"""cas.torch: the datasets, their splits, DataLoader workers (fork and spawn), rank sharding,
per-epoch shuffles, on-demand fetches from a remote, and the fingerprint."""

from __future__ import annotations

import collections
import functools
import json
import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from torch.utils.data import DataLoader, get_worker_info

from cas.errors import UsageError
from cas.repo import Repo
from cas.split import assign
from cas.torch import CASDataset, CASIterableDataset, CASTableDataset
from tests.conftest import cas, git, tree, write

FRACTIONS = {"train": 0.7, "val": 0.3}


def make_files(root: Path, start: int, count: int) -> None:
    rng = random.Random(start)
    for i in range(start, start + count):
        write(root / "data" / f"d{i % 3}" / f"f{i:03}.bin", rng.randbytes(rng.randint(0, 90_000)))


@pytest.fixture
def repo(git_repo: Path) -> Path:
    """``data`` with 40 files (tag v1), then 10 more (HEAD)."""
    cas(git_repo, "init")
    make_files(git_repo, 0, 40)
    cas(git_repo, "add", "data")
    git(git_repo, "commit", "-qm", "v1")
    git(git_repo, "tag", "v1")
    make_files(git_repo, 40, 10)
    cas(git_repo, "add", "data")
    git(git_repo, "commit", "-qm", "v2")
    return git_repo


def test_items_are_the_files(repo: Path) -> None:
    ds = CASDataset("data.cas")
    files = tree(repo / "data")
    assert len(ds) == 50
    assert [ds[i] for i in range(len(ds))] == sorted(files.items())
    sized = CASDataset("data", transform=lambda path, data: (path, len(data)))
    assert sized[3] == (ds[3][0], len(ds[3][1]))


def test_splits_are_disjoint_covering_and_stable(repo: Path) -> None:
    def split(name: str, rev: str | None = None) -> set[str]:
        return set(CASDataset("data.cas", rev=rev, split=name, seed=42, fractions=FRACTIONS).paths)

    train, val = split("train"), split("val")
    every = set(tree(repo / "data"))
    assert train | val == every and not train & val and train and val
    expected = dict(zip(sorted(every), assign(sorted(every), 42, FRACTIONS)))
    assert all(expected[p] == "train" for p in train)
    old_train, old_val = split("train", "v1"), split("val", "v1")
    assert len(old_train | old_val) == 40
    assert old_train <= train and old_val <= val  # adding files moved none of the old ones
    with pytest.raises(UsageError, match="test"):
        CASDataset("data.cas", split="test", seed=42, fractions=FRACTIONS)
    with pytest.raises(UsageError, match="seed"):
        CASDataset("data.cas", split="train", fractions=FRACTIONS)


def test_rev_reads_an_older_commit_and_the_fingerprint_names_it(repo: Path) -> None:
    git(repo, "checkout", "-q", "v1")
    cas(repo, "checkout")
    v1 = tree(repo / "data")
    git(repo, "checkout", "-q", "main")
    cas(repo, "checkout")
    ds = CASDataset("data.cas", rev="v1", split="val", seed=7, fractions=FRACTIONS)
    assert all(v1[path] == data for path, data in (ds[i] for i in range(len(ds))))
    pointer = git(repo, "show", "v1:data.cas")
    fp = json.loads(json.dumps(ds.fingerprint))
    assert fp == {
        "pointer": "data.cas",
        "manifest": pointer.split("manifest ")[1].split()[0],
        "rev": git(repo, "rev-parse", "v1").strip(),
        "split": "val",
        "seed": 7,
        "fractions": FRACTIONS,
        "items": len(ds),
    }
    assert CASDataset("data.cas").fingerprint["rev"] is None  # the worktree pointer
    with pytest.raises(UsageError, match="unknown revision"):
        CASDataset("data.cas", rev="no-such-tag")


def check_reopened(parent_repo_id: int, worker: int) -> None:
    """A worker must read through its own Repo, never the parent's (shared pack fds)."""
    view = get_worker_info().dataset._files.view
    assert id(view.repo) != parent_repo_id


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_dataloader_workers(repo: Path, start_method: str) -> None:
    ds = CASDataset("data.cas", split="train", seed=1, fractions=FRACTIONS)
    expected = [ds[i] for i in range(len(ds))]  # the parent opened its store before forking
    loader = DataLoader(
        ds,
        batch_size=None,
        num_workers=2,
        multiprocessing_context=start_method,
        worker_init_fn=functools.partial(check_reopened, id(ds._files.view.repo)),
    )
    assert [tuple(item) for item in loader] == expected  # default_convert makes lists


def test_iterable_shards_cover_every_item_once(repo: Path) -> None:
    seen: collections.Counter[str] = collections.Counter()
    for rank in range(3):
        ds = CASIterableDataset("data.cas", shuffle=True, seed=5, rank=rank, world_size=3)
        loader = DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context="fork")
        seen.update(path for path, _ in loader)
    assert seen == collections.Counter(list(tree(repo / "data")))


def test_set_epoch_reshuffles_deterministically(repo: Path) -> None:
    def order(epoch: int, seed: int = 5) -> list[str]:
        ds = CASIterableDataset("data.cas", shuffle=True, seed=seed)
        ds.set_epoch(epoch)
        return [path for path, _ in ds]

    assert order(0) == order(0)
    assert order(0) != order(1) and sorted(order(0)) == sorted(order(1))
    assert order(1, seed=6) != order(1)
    plain = CASIterableDataset("data.cas")
    assert [p for p, _ in plain] == sorted(tree(repo / "data"))
    with pytest.raises(UsageError, match="seed"):
        CASIterableDataset("data.cas", shuffle=True)


def test_table_dataset_over_a_snapshot_folder(git_repo: Path) -> None:
    cas(git_repo, "init")
    folder = git_repo / "snapshots" / "orders"
    folder.mkdir(parents=True)
    for part, (lo, hi) in enumerate([(0, 600), (600, 1000)]):
        ids = [f"o{i}" for i in range(lo, hi)]
        table = pa.table({"id": ids, "amount": [float(i) for i in range(lo, hi)], "note": ids})
        pq.write_table(table, folder / f"part-{part}.parquet")
    cas(git_repo, "add", "snapshots/orders")
    git(git_repo, "commit", "-qm", "orders")

    def rows(name: str) -> list[dict]:
        ds = CASTableDataset(
            "snapshots/orders.cas",
            columns=["amount"],
            id_column="id",
            split=name,
            seed=42,
            fractions={"train": 0.8, "val": 0.2},
        )
        assert ds.fingerprint["split"] == name and ds.fingerprint["items"] == len(ds)
        return [ds[i] for i in range(len(ds))]

    train, val = rows("train"), rows("val")
    assert set(train[0]) == {"amount"}
    amounts = sorted(r["amount"] for r in train + val)
    assert amounts == [float(i) for i in range(1000)]
    labels = assign([f"o{i}" for i in range(1000)], 42, {"train": 0.8, "val": 0.2})
    assert [r["amount"] for r in val] == [float(i) for i in range(1000) if labels[i] == "val"]
    whole = CASTableDataset("snapshots/orders", repo=git_repo)
    assert len(whole) == 1000 and whole[999] == {"id": "o999", "amount": 999.0, "note": "o999"}
    assert whole.fingerprint["files"] == [
        "snapshots/orders/part-0.parquet",
        "snapshots/orders/part-1.parquet",
    ]
    loader = DataLoader(whole, batch_size=100, num_workers=2, multiprocessing_context="fork")
    assert sum(len(batch["id"]) for batch in loader) == 1000


def test_missing_chunks_are_fetched_from_the_default_remote(repo: Path, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    cas(repo, "remote", "add", "origin", remote.as_uri())
    git(repo, "commit", "-qm", "remote")
    cas(repo, "push")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    cas(clone, "fetch", "--path", "d0")  # the manifest and one subtree's chunks only
    local = Repo.discover(clone)
    ds = CASDataset("data.cas", repo=clone)
    chunks = [[cid for cid, _ in row.chunks] for row in ds._files.rows]
    missing = {p for p, ids in zip(ds.paths, chunks) if local.objects.missing_chunks(ids)}
    assert missing and all(not p.startswith("d0/") for p in missing)
    assert sorted(ds[i] for i in range(len(ds))) == sorted(tree(repo / "data").items())
    assert not Repo.discover(clone).objects.missing_chunks(c for ids in chunks for c in ids)


def test_without_torch_importing_works_and_using_names_the_extra(repo: Path) -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import cas.torch\n"
        "from cas.errors import DependencyError\n"
        "try:\n"
        "    cas.torch.CASDataset('data.cas')\n"
        "except DependencyError as err:\n"
        "    print(err)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True)
    assert "pip install 'cas-data[torch]'" in out.stdout, out.stderr
