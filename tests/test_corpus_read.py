"""Reading a corpus's files (issue 14, item 5): the training datasets and ``cas://`` read them
from where they lie, verified against the manifest, and refuse what no longer matches.

A corpus row has no chunks (its bytes were never in the store): the readers used to join zero
chunks and return ``b""`` for every file, and ``cat_file`` died with an IndexError.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from cas.errors import CorruptObjectError, ObjectMissingError
from cas.fs import CASFileSystem
from cas.torch import CASDataset, CASIterableDataset
from tests.conftest import cas, git, write
from tests.s3_server import S3Server
from tests.test_corpus import upload


def make_corpus(root: Path) -> dict[str, bytes]:
    rng = np.random.default_rng(3)
    files = {
        f"shard{i % 2}/part-{i}.jsonl": rng.bytes(int(rng.integers(1, 30_000))) for i in range(6)
    }
    files["empty.jsonl"] = b""
    for rel, data in files.items():
        write(root / rel, data)
    return files


@pytest.fixture
def corpus(git_repo: Path, tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    folder = tmp_path / "corpus"
    files = make_corpus(folder)
    cas(git_repo, "init")
    cas(git_repo, "manifest", "create", "corpus.cas", str(folder))
    git(git_repo, "commit", "-qm", "corpus")
    return folder, files


def test_datasets_yield_the_corpus_bytes(corpus: tuple[Path, dict[str, bytes]]) -> None:
    _folder, files = corpus
    assert dict(CASDataset("corpus.cas")[i] for i in range(len(files))) == files
    assert dict(CASIterableDataset("corpus.cas")) == files  # the docs' own example
    halves = [
        list(CASIterableDataset("corpus.cas", shuffle=True, seed=0, rank=r, world_size=2))
        for r in (0, 1)
    ]
    assert sorted(halves[0] + halves[1]) == sorted(files.items())


def test_cas_fs_reads_whole_files_and_ranges(corpus: tuple[Path, dict[str, bytes]]) -> None:
    _folder, files = corpus
    fs = CASFileSystem()
    rel = "shard1/part-3.jsonl"
    data = files[rel]
    assert fs.cat_file(f"corpus/{rel}") == data
    assert fs.cat_file(f"corpus/{rel}", start=5, end=105) == data[5:105]
    with fs.open(f"corpus/{rel}") as f:
        f.seek(len(data) // 2)
        assert f.read(10) == data[len(data) // 2 : len(data) // 2 + 10]
        f.seek(0)
        assert f.read() == data
    assert fs.cat_file("corpus/empty.jsonl") == b""


def test_changed_corpus_files_are_refused(corpus: tuple[Path, dict[str, bytes]]) -> None:
    folder, files = corpus
    same_size = folder / "shard0/part-0.jsonl"
    before = same_size.stat()
    same_size.write_bytes(bytes(b ^ 1 for b in files["shard0/part-0.jsonl"]))
    os.utime(same_size, ns=(before.st_atime_ns, before.st_mtime_ns))  # the marker says "same"
    (folder / "shard1/part-1.jsonl").write_bytes(b"shorter")
    (folder / "shard0/part-2.jsonl").unlink()
    touched = folder / "shard0/part-4.jsonl"
    os.utime(touched, ns=(1, 1))  # new marker, same bytes: still readable

    fs = CASFileSystem()
    with pytest.raises(CorruptObjectError, match=r"part-0.jsonl holds other bytes") as err:
        fs.cat_file("corpus/shard0/part-0.jsonl")
    assert "cas manifest append corpus.cas --allow-removals" in str(err.value)
    with pytest.raises(CorruptObjectError, match=r"part-1.jsonl is 7 bytes"):
        fs.cat_file("corpus/shard1/part-1.jsonl", start=0, end=3)
    with pytest.raises(ObjectMissingError, match=r"part-2.jsonl is gone"):
        fs.cat_file("corpus/shard0/part-2.jsonl")
    assert (
        fs.cat_file("corpus/shard0/part-4.jsonl", start=1, end=4)
        == files["shard0/part-4.jsonl"][1:4]
    )
    ds = CASDataset("corpus.cas")
    with pytest.raises(CorruptObjectError):
        ds[ds.paths.index("shard0/part-0.jsonl")]
    assert ds[ds.paths.index("shard1/part-5.jsonl")][1] == files["shard1/part-5.jsonl"]


def test_a_range_is_served_only_while_the_marker_matches(
    corpus: tuple[Path, dict[str, bytes]],
) -> None:
    """New bytes of the same size under a new mtime: the marker differs, so the first range
    read hashes the whole file and refuses it, though the range itself is unchanged."""
    folder, files = corpus
    rel = "shard1/part-3.jsonl"
    changed = bytearray(files[rel])
    changed[-1] ^= 0xFF
    (folder / rel).write_bytes(bytes(changed))
    with pytest.raises(CorruptObjectError, match="holds other bytes"):
        CASFileSystem().cat_file(f"corpus/{rel}", start=0, end=10)


@pytest.mark.s3
def test_s3_corpus_reads_verified(git_repo: Path, s3_server: S3Server, s3_bucket: str,
                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    files = {f"web/f{i}.jsonl": os.urandom(1000 + i) for i in range(4)}
    upload(s3_server, s3_bucket, files)
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    cas(git_repo, "init")
    cas(git_repo, "manifest", "create", "corpus.cas", f"s3://{s3_bucket}/web")
    expected = {k.removeprefix("web/"): v for k, v in files.items()}
    assert dict(CASIterableDataset("corpus.cas")) == expected
    assert (
        CASFileSystem().cat_file("corpus/f2.jsonl", start=10, end=20)
        == files["web/f2.jsonl"][10:20]
    )
    upload(s3_server, s3_bucket, {"web/f1.jsonl": b"x" * 1001})  # same size, new ETag
    fs = CASFileSystem()
    with pytest.raises(CorruptObjectError, match=r"f1.jsonl holds other bytes"):
        fs.cat_file("corpus/f1.jsonl", start=0, end=10)
    with pytest.raises(CorruptObjectError, match=r"f1.jsonl holds other bytes"):
        CASDataset("corpus.cas")[1]
