"""Checkout by reflink: large files' chunks are block-aligned in packs, and a checkout on a
filesystem with reflinks clones them out of the packs instead of copying them.

The clone tests run on a real XFS filesystem (``mkfs.xfs -m reflink=1``) in a loop-mounted image
file, which needs root and ``xfsprogs``: CI has both (``.ci/run`` installs xfsprogs), so there a
missing XFS fails rather than skips.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cas.clone import BLOCK
from cas.manifest import TableRows
from cas.objects import ALIGN_MIN_SIZE, pack_key
from cas.ops.compare import expected_rows
from cas.repo import Repo
from tests.conftest import cas, git, require_service, tree, write

BIG = 40_000_000  # spans two 32 MiB packs


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


@pytest.fixture(scope="module")
def xfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh XFS filesystem with reflinks, mounted from a sparse image file."""
    if os.geteuid() != 0:
        require_service("XFS with reflinks", "mounting a loop image needs root")
    if shutil.which("mkfs.xfs") is None:
        require_service("XFS with reflinks", "mkfs.xfs is not installed (apt install xfsprogs)")
    base = tmp_path_factory.mktemp("xfs")
    image, mount = base / "fs.img", base / "mnt"
    mount.mkdir()
    with open(image, "wb") as f:
        f.truncate(512 << 20)
    try:
        _run("mkfs.xfs", "-q", "-m", "reflink=1", str(image))
        _run("mount", "-o", "loop", str(image), str(mount))
    except subprocess.CalledProcessError as err:
        require_service("XFS with reflinks", err.stderr.decode().strip() or str(err))
    try:
        yield mount
    finally:
        _run("umount", str(mount))
        image.unlink()


def _project(root: Path, store: Path | None = None) -> Path:
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "test@example.com")
    git(root, "config", "user.name", "Test")
    cas(root, "init")
    if store is not None:
        write(root / ".cas/config.local", f"[core]\nstore = {store}\n")
    rng = os.urandom
    write(root / "data/big.bin", rng(BIG))
    write(root / "data/mid.bin", rng(3 << 20))
    for i in range(20):
        write(root / f"data/small/{i}.txt", rng(5000 + i))
    cas(root, "add", "data")
    git(root, "commit", "-qm", "v1")
    return root


def _checkout(root: Path, *args: str) -> dict:
    (result,) = json.loads(cas(root, "checkout", "--json", *args).stdout)
    return result


def _rows(repo: Repo) -> TableRows:
    target = repo.target(repo.root / "data")
    return expected_rows(repo, target, repo.read_pointer(target))


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def test_large_files_chunks_are_block_aligned_in_packs(tmp_path: Path) -> None:
    root = _project(tmp_path / "aligned")
    repo = Repo.discover(root)
    rows = _rows(repo)
    index = repo.objects.index
    ends = {(index[c].pack, index[c].offset + index[c].length) for c in index}
    for row in rows.values():
        pos = 0
        for cid, length in row.chunks:
            if row.size >= ALIGN_MIN_SIZE:
                assert (index[cid].offset - pos) % BLOCK == 0
            pos += length
        if row.size >= ALIGN_MIN_SIZE:  # all but a block at each end of each pack's run
            covered = sum(s.end - s.start for s in repo.objects.clonable(row.chunks))
            packs = len({index[cid].pack for cid, _ in row.chunks})
            assert covered >= row.size - 2 * BLOCK * packs
        else:  # small files are not padded: each chunk starts where another one ends
            for cid, _ in row.chunks:
                loc = index[cid]
                assert loc.offset == 0 or (loc.pack, loc.offset) in ends
    # padding is a rounding error: under one block per pack a large file starts in
    packs = [repo.objects.local.path(pack_key(p)) for p in repo.objects.pack_ids()]
    data = sum(p.stat().st_size for p in (root / "data").rglob("*") if p.is_file())
    assert sum(p.stat().st_size for p in packs) - data < BLOCK * len(packs) + 64 * 1024


def test_checkout_clones_on_xfs_and_stays_independent_of_the_store(xfs: Path) -> None:
    root = _project(xfs / "clones")
    v1 = tree(root / "data")
    shutil.rmtree(root / "data")
    free = _free(xfs)
    result = _checkout(root)
    assert tree(root / "data") == v1
    large = BIG + (3 << 20)
    assert result["bytes_cloned"] >= large - 8 * BLOCK
    assert free - _free(xfs) < large // 10  # the data took (almost) no new space
    # Writing into a cloned file copies its blocks on write: the store is unchanged.
    with open(root / "data/big.bin", "r+b") as f:
        f.write(b"\0" * (1 << 20))
    assert "ok" in cas(root, "fsck").stdout
    assert _checkout(root, "--force")["written"] == 1
    assert tree(root / "data") == v1


def test_edited_file_checks_out_both_versions_by_clone(xfs: Path) -> None:
    root = _project(xfs / "edits")
    v1 = tree(root / "data")
    big = root / "data/big.bin"
    data = big.read_bytes()
    big.write_bytes(data[: BIG // 2] + b"x" * 100 + data[BIG // 2 :])
    cas(root, "add", "data")
    git(root, "commit", "-qm", "v2")
    v2 = tree(root / "data")
    git(root, "checkout", "-q", "HEAD~1")
    back = _checkout(root)
    assert tree(root / "data") == v1 and back["written"] == 1
    assert back["bytes_cloned"] >= BIG - 8 * BLOCK
    git(root, "checkout", "-q", "main")
    forward = _checkout(root)
    assert tree(root / "data") == v2
    # v2's old chunks sit where v1 put them, now 100 bytes off their file offsets: only the
    # new chunk's run and the unshifted first half can be cloned
    assert BIG // 2 - 8 * BLOCK <= forward["bytes_cloned"] < BIG


def test_corrupt_pack_is_refused_before_a_cloned_file_appears(xfs: Path) -> None:
    root = _project(xfs / "corrupt")
    with Repo.discover(root) as repo:  # closed: an open store lock would keep XFS mounted
        chunk = _rows(repo)["big.bin"].chunks[10][0]
        loc = repo.objects.index[chunk]
        pack = repo.objects.local.path(pack_key(loc.pack))
    os.chmod(pack, 0o644)
    with open(pack, "r+b") as f:
        f.seek(loc.offset + loc.length // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    shutil.rmtree(root / "data")
    err = cas(root, "checkout", code=4).stderr.strip()
    assert len(err.splitlines()) == 1 and chunk.hex() in err
    assert not (root / "data/big.bin").exists()
    assert not [p for p in (root / "data").rglob("*") if ".cas-tmp" in p.name]


def test_store_on_another_filesystem_means_copies(xfs: Path, tmp_path: Path) -> None:
    root = _project(xfs / "elsewhere", store=tmp_path / "store")
    v1 = tree(root / "data")
    shutil.rmtree(root / "data")
    result = _checkout(root)
    assert tree(root / "data") == v1
    assert result["bytes_cloned"] == 0 and result["bytes_written"] == sum(map(len, v1.values()))
