"""``cas://``: the read-only fsspec filesystem, through pandas, pyarrow and fsspec itself."""

from __future__ import annotations

import importlib.metadata
import random
from pathlib import Path

import fsspec
import pandas as pd
import pyarrow.parquet as pq
import pytest

from cas.fs import CASFileSystem
from cas.ops.compare import expected_rows
from cas.repo import Repo
from tests.conftest import cas, git, write

BIG = 1_500_000


def orders(start: int, n: int) -> pd.DataFrame:
    return pd.DataFrame({"id": range(start, start + n), "amount": [i * 0.5 for i in range(n)]})


@pytest.fixture
def repo(git_repo: Path) -> Path:
    """v1: two Parquet snapshots, a big file and small ones; v2 (HEAD): the first snapshot
    rewritten, the big file edited."""
    rng = random.Random(7)
    snaps = git_repo / "snapshots" / "orders"
    snaps.mkdir(parents=True)
    orders(0, 50).to_parquet(snaps / "2026-01.parquet")
    orders(50, 30).to_parquet(snaps / "2026-02.parquet")
    write(git_repo / "data" / "big.bin", rng.randbytes(BIG))
    write(git_repo / "data" / "x" / "y.txt", "y")
    write(git_repo / "data" / "x" / "z" / "deep.txt", "deep")
    write(git_repo / "model.bin", b"weights")
    cas(git_repo, "init")
    cas(git_repo, "add", "snapshots/orders", "data", "model.bin")
    git(git_repo, "commit", "-qm", "v1")
    git(git_repo, "tag", "v1")
    orders(100, 10).to_parquet(snaps / "2026-01.parquet")
    write(git_repo / "data" / "big.bin", b"edited" + rng.randbytes(BIG))
    cas(git_repo, "add", "snapshots/orders", "data")
    git(git_repo, "commit", "-qm", "v2")
    return git_repo


def test_the_entry_point_registers_the_protocol() -> None:
    specs = importlib.metadata.entry_points(group="fsspec.specs")
    assert {e.name: e.value for e in specs}.get("cas") == "cas.fs:CASFileSystem"
    assert fsspec.get_filesystem_class("cas") is CASFileSystem


def test_pandas_reads_any_revision(repo: Path, tmp_path: Path, monkeypatch) -> None:
    url = "cas://snapshots/orders/2026-01.parquet"
    pd.testing.assert_frame_equal(
        pd.read_parquet(url, storage_options={"rev": "v1"}), orders(0, 50)
    )
    pd.testing.assert_frame_equal(pd.read_parquet(url), orders(100, 10))  # worktree pointers
    monkeypatch.chdir(tmp_path)
    folder = pd.read_parquet(
        "cas://snapshots/orders", storage_options={"repo": str(repo), "rev": "v1"}
    )
    both = pd.concat([orders(0, 50), orders(50, 30)], ignore_index=True)
    pd.testing.assert_frame_equal(folder.reset_index(drop=True), both)


def test_pyarrow_and_fsspec_open(repo: Path) -> None:
    fs = CASFileSystem(rev="v1")
    table = pq.read_table("snapshots/orders/2026-02.parquet", filesystem=fs)
    assert table.column("id").to_pylist() == list(range(50, 80))
    v2 = (repo / "data" / "big.bin").read_bytes()
    with fsspec.open("cas://data/big.bin") as f:
        assert f.read() == v2
    with fsspec.open("cas://data/big.bin", rev="v1") as f:
        v1 = f.read()
    assert len(v1) == BIG and v1 != v2[: len(v1)]
    assert fs.cat_file("model.bin") == b"weights"


def test_listing_info_find_and_glob(repo: Path) -> None:
    fs = CASFileSystem()
    assert fs.ls("", detail=False) == ["data", "model.bin", "snapshots"]
    assert fs.ls("cas://data/", detail=False) == ["data/big.bin", "data/x"]
    assert fs.info("data/x") == {"name": "data/x", "size": 0, "type": "directory"}
    info = fs.info("data/x/y.txt")
    assert (info["type"], info["size"], info["executable"]) == ("file", 1, False)
    assert info["blake3"] == next(i.hash for i in Repo.discover().ls() if i.path == "data/x/y.txt")
    assert fs.find("data") == ["data/big.bin", "data/x/y.txt", "data/x/z/deep.txt"]
    assert fs.find("data", maxdepth=2, withdirs=True) == [
        "data",
        "data/big.bin",
        "data/x",
        "data/x/y.txt",
        "data/x/z",
    ]
    assert fs.glob("snapshots/orders/*.parquet") == [
        "snapshots/orders/2026-01.parquet",
        "snapshots/orders/2026-02.parquet",
    ]
    assert fs.glob("**/*.txt") == ["data/x/y.txt", "data/x/z/deep.txt"]
    assert fs.isdir("snapshots") and fs.isfile("model.bin") and not fs.exists("data/nope")
    with pytest.raises(FileNotFoundError):
        fs.info("data/nope")
    with pytest.raises(FileNotFoundError):
        fs.open("data/x")


def covering_chunks(sizes: list[int], start: int, end: int) -> int:
    """How many chunks overlap [start, end): the fewest a range read can read."""
    count, offset = 0, 0
    for size in sizes:
        if offset < end and offset + size > start:
            count += 1
        offset += size
    return count


def test_range_reads_read_only_the_covering_chunks(repo: Path) -> None:
    opened = Repo.discover()
    target = opened.target("data")
    rows = expected_rows(opened, target, opened.read_pointer(target))
    sizes = [size for _, size in rows["big.bin"].chunks]
    assert len(sizes) > 10
    content = (repo / "data" / "big.bin").read_bytes()
    fs = CASFileSystem()
    rng = random.Random(3)
    for length in (1, 100, 200_000):
        start = rng.randrange(0, BIG - length)
        with fs.open("data/big.bin") as f:
            f.seek(start)
            assert f.read(length) == content[start : start + length]
            assert f.chunks_read == covering_chunks(sizes, start, start + length)
            assert f.reads == 1  # the covering chunks lie back to back in one pack
    with fs.open("data/big.bin") as f:  # sequential small reads read each chunk once
        while f.read(4096):
            pass
        assert f.chunks_read == len(sizes)
    assert fs.cat_file("data/big.bin", 1000, 1010) == content[1000:1010]
    assert fs.cat_file("data/big.bin", -10) == content[-10:]
    assert fs.cat_file("data/big.bin", start=BIG) == content[BIG:]


def test_read_only(repo: Path) -> None:
    fs = CASFileSystem()
    for mode in ("wb", "ab"):
        with pytest.raises(PermissionError, match="read-only"):
            fs.open("data/new.bin", mode)
    with pytest.raises(PermissionError, match="read-only"):
        fs.rm("data/big.bin")
    with pytest.raises(PermissionError, match="read-only"):
        fs.mkdir("data/new")
    with pytest.raises(PermissionError, match="read-only"):
        fs.pipe_file("model.bin", b"x")
    assert fs.cat_file("model.bin") == b"weights"


def test_duckdb_reads_through_the_filesystem(repo: Path) -> None:
    import duckdb

    con = duckdb.connect()
    con.register_filesystem(CASFileSystem(rev="v1"))
    query = "SELECT count(*), sum(id) FROM 'cas://snapshots/orders/*.parquet'"
    assert con.sql(query).fetchall() == [(80, sum(range(80)))]
    fs = CASFileSystem(rev="v1")
    assert fs.modified("data/big.bin").timestamp() == int(
        git(repo, "log", "-1", "--format=%ct", "v1")
    )
