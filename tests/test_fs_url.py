"""``cas://@REV/PATH``: the revision inside the URL, for tools that take nothing but a URL.

Read through pandas, pyarrow datasets (hive partitions), Dask and Hugging Face ``datasets``,
with a branch name holding ``/``, a path holding ``@`` and a top-level folder starting with ``@``.
"""

from __future__ import annotations

from pathlib import Path

import dask.dataframe as dd
import datasets
import fsspec
import pandas as pd
import pyarrow.dataset as pads
import pytest

from cas.errors import UsageError
from cas.fs import CASFileSystem, split_rev
from tests.conftest import cas, git, write


def frame(start: int, n: int) -> pd.DataFrame:
    return pd.DataFrame({"id": range(start, start + n), "v": [float(i) for i in range(n)]})


@pytest.fixture
def repo(git_repo: Path) -> Path:
    """Branch ``feature/x`` holds v1 of a hive-partitioned table; HEAD (main) holds v2, where
    partition day=2 changed. ``@odd/a@b.txt`` exercises ``@`` in paths."""
    table = git_repo / "tbl"
    for day, start in ((1, 0), (2, 10)):
        (table / f"day={day}").mkdir(parents=True)
        frame(start, 10).to_parquet(table / f"day={day}" / "part.parquet", index=False)
    write(git_repo / "@odd" / "a@b.txt", "at v1")
    cas(git_repo, "init")
    cas(git_repo, "add", "tbl", "@odd")
    git(git_repo, "commit", "-qm", "v1")
    git(git_repo, "branch", "feature/x")
    frame(100, 5).to_parquet(table / "day=2" / "part.parquet", index=False)
    write(git_repo / "@odd" / "a@b.txt", "at v2")
    cas(git_repo, "add", "tbl", "@odd")
    git(git_repo, "commit", "-qm", "v2")
    return git_repo


V1 = pd.concat([frame(0, 10), frame(10, 10)], ignore_index=True)
V2 = pd.concat([frame(0, 10), frame(100, 5)], ignore_index=True)
AT_V1 = "cas://@feature%2Fx/tbl"


def test_split_rev_is_unambiguous() -> None:
    assert split_rev("@v1/data/x") == ("v1", "@v1/", "data/x")
    assert split_rev("@feature%2Fx/data") == ("feature/x", "@feature%2Fx/", "data")
    assert split_rev("@main@{1}/a@b") == ("main@{1}", "@main@{1}/", "a@b")
    assert split_rev("@100%25/x") == ("100%", "@100%25/", "x")
    assert split_rev("@/@odd/x") == ("", "@/", "@odd/x")
    assert split_rev("data/a@b%2F") == (None, "", "data/a@b%2F")


def test_pandas(repo: Path) -> None:
    got = pd.read_parquet(AT_V1).sort_values("id", ignore_index=True)
    pd.testing.assert_frame_equal(got[["id", "v"]], V1)
    now = pd.read_parquet("cas://tbl").sort_values("id", ignore_index=True)
    pd.testing.assert_frame_equal(now[["id", "v"]], V2)
    # the same revision in both places is fine; the URL alone equals storage_options
    same = pd.read_parquet(AT_V1, storage_options={"rev": "feature/x"})
    pd.testing.assert_frame_equal(same.sort_values("id", ignore_index=True)[["id", "v"]], V1)


def test_pyarrow_dataset_with_hive_partitions(repo: Path) -> None:
    fs, path = fsspec.core.url_to_fs(AT_V1)
    assert path == "@feature%2Fx/tbl"
    dataset = pads.dataset(path, filesystem=fs, format="parquet", partitioning="hive")
    table = dataset.to_table().to_pandas().sort_values("id", ignore_index=True)
    assert table["day"].tolist() == [1] * 10 + [2] * 10
    pd.testing.assert_frame_equal(table[["id", "v"]], V1)
    assert all(f.startswith("@feature%2Fx/tbl/day=") for f in dataset.files)


def test_dask(repo: Path) -> None:
    got = dd.read_parquet(AT_V1).compute().sort_values("id", ignore_index=True)
    pd.testing.assert_frame_equal(got[["id", "v"]], V1)
    now = dd.read_parquet("cas://@HEAD/tbl").compute().sort_values("id", ignore_index=True)
    pd.testing.assert_frame_equal(now[["id", "v"]], V2)


def test_hugging_face_datasets(repo: Path, tmp_path: Path) -> None:
    ds = datasets.load_dataset(
        "parquet",
        data_files={"train": f"{AT_V1}/day=2/part.parquet"},
        cache_dir=str(tmp_path / "hf-cache"),
        split="train",
    )
    assert ds["id"] == list(range(10, 20))


def test_paths_holding_at_signs(repo: Path) -> None:
    assert fsspec.open("cas://@/@odd/a@b.txt").open().read() == b"at v2"
    assert fsspec.open("cas://@feature%2Fx/@odd/a@b.txt").open().read() == b"at v1"
    assert fsspec.open("cas://@HEAD~1/@odd/a@b.txt").open().read() == b"at v1"
    fs = CASFileSystem(rev="feature/x")
    assert fs.ls("@feature%2Fx/@odd", detail=False) == ["@feature%2Fx/@odd/a@b.txt"]
    assert fs.cat_file("tbl/day=1/part.parquet")[:4] == b"PAR1"  # no prefix: fs's revision
    with pytest.raises(UsageError, match="unknown revision 'odd'"):  # '@odd' is a revision
        fs.cat_file("@odd/a@b.txt")


def test_a_url_naming_another_revision_is_refused(repo: Path) -> None:
    """A filesystem made for one revision never silently reads a URL naming another."""
    worktree = CASFileSystem()
    with pytest.raises(ValueError, match="names revision 'feature/x'"):
        worktree.cat_file("@feature%2Fx/@odd/a@b.txt")
    with pytest.raises(ValueError, match=r"names revision '\(worktree\)'"):
        CASFileSystem(rev="feature/x").open("@/@odd/a@b.txt")
    with pytest.raises(TypeError):  # fsspec refuses two different values for one option
        fsspec.open("cas://@feature%2Fx/@odd/a@b.txt", rev="HEAD").open()
    with pytest.raises(ValueError, match="names revision 'HEAD'"):  # HEAD is not the worktree
        worktree.cat_file("@HEAD/@odd/a@b.txt")
    assert CASFileSystem(rev="HEAD").cat_file("@main/@odd/a@b.txt") == b"at v2"  # same commit
