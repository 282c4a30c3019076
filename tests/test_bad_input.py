"""Bad input: each case ends in one line naming the problem and the fix, a non-zero exit, no
traceback (unless --verbose), and nothing half-written where a user would see it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cas import objects
from cas.errors import FileChangedError
from cas.ops.hashfile import hash_file
from cas.workspace import scan
from tests.conftest import CAS, cas, git, tree, write


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.fixture
def repo(git_repo: Path) -> Path:
    cas(git_repo, "init")
    return git_repo


def test_path_outside_the_repository(repo: Path, tmp_path: Path) -> None:
    write(tmp_path / "outside/x", "x")
    line = one_line(cas(repo, "add", str(tmp_path / "outside"), code=2).stderr)
    assert "outside the repository" in line
    line = one_line(cas(repo, "add", "../..", code=2).stderr)
    assert "outside the repository" in line


def test_path_that_does_not_exist(repo: Path) -> None:
    assert "does not exist" in one_line(cas(repo, "add", "nope", code=2).stderr)


def test_git_and_cas_internals_are_refused(repo: Path) -> None:
    assert ".git/" in one_line(cas(repo, "add", ".git/objects", code=2).stderr)
    assert "repository root" in one_line(cas(repo, "add", ".", code=2).stderr)


def test_not_inside_a_git_repository(tmp_path: Path) -> None:
    line = one_line(cas(tmp_path, "init", code=2).stderr)
    assert "not inside a Git repository" in line and "git init" in line


def test_not_initialised(git_repo: Path) -> None:
    assert "run 'cas init'" in one_line(cas(git_repo, "status", code=2).stderr)


def test_symlinks_are_refused_not_followed(repo: Path, tmp_path: Path) -> None:
    write(tmp_path / "secret", "secret")
    write(repo / "data/a", "a")
    os.symlink(tmp_path / "secret", repo / "data/link")
    line = one_line(cas(repo, "add", "data", code=2).stderr)
    assert "data/link is a symbolic link" in line
    assert not (repo / "data.cas").exists()


def test_verbose_shows_the_traceback(repo: Path) -> None:
    assert "Traceback" in cas(repo, "--verbose", "add", "nope", code=2).stderr


def test_file_that_changes_while_hashed(tmp_path: Path) -> None:
    write(tmp_path / "d/f", "before")
    (entry,) = scan(tmp_path / "d", "d")
    write(tmp_path / "d/f", "after, longer")  # changes between the stat and the read
    with pytest.raises(FileChangedError, match="changed while cas read it"):
        hash_file(str(tmp_path / "d/f"), entry, "d/f", None)


def test_unreadable_file(repo: Path) -> None:
    """Root reads any file, so cas runs without the capabilities that let it (setpriv, from
    util-linux): permissions then apply as they would to any user."""
    write(repo / "data/ok", "ok")
    write(repo / "data/secret", "secret")
    os.chmod(repo / "data/secret", 0)
    drop = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
    proc = subprocess.run([*drop, *CAS, "add", "data"], cwd=repo, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "cannot read data/secret: permission denied" in one_line(proc.stderr)
    assert not (repo / "data.cas").exists()


def _corrupt_one_chunk(repo: Path) -> str:
    """Flip a byte of the first chunk of some pack; return that chunk's id."""
    pack = next((repo / ".cas/store/packs").rglob("*"))
    while pack.is_dir():
        pack = next(pack.iterdir())
    data = bytearray(pack.read_bytes())
    entries = objects.pack_trailer(bytes(data), pack.name)
    cid, off, _length = entries[0]
    data[off] ^= 0xFF
    os.chmod(pack, 0o644)
    pack.write_bytes(bytes(data))
    return cid.hex()


def test_corrupt_object_fails_checkout_and_fsck(repo: Path) -> None:
    write(repo / "data/a.bin", os.urandom(5000))
    cas(repo, "add", "data")
    chunk = _corrupt_one_chunk(repo)
    before = tree(repo / "data")
    os.unlink(repo / "data/a.bin")
    line = one_line(cas(repo, "checkout", code=4).stderr)
    assert chunk in line and "corrupt" in line
    assert tree(repo / "data") == {k: v for k, v in before.items() if k != "a.bin"}
    assert not [p for p in (repo / "data").iterdir() if ".cas-tmp-" in p.name]
    out = cas(repo, "fsck", code=1).stdout
    assert chunk in out


def test_malformed_pointer(repo: Path) -> None:
    write(repo / "data/a", "a")
    cas(repo, "add", "data")
    text = (repo / "data.cas").read_text().replace("size 1", "size one")
    (repo / "data.cas").write_text(text)
    line = one_line(cas(repo, "checkout", "data.cas", code=2).stderr)
    assert "data.cas:4: size is not a non-negative integer" in line


def test_kill_9_in_the_middle_of_add(repo: Path) -> None:
    for i in range(8):
        write(repo / f"data/f{i}.bin", os.urandom(24 << 20))
    expected = tree(repo / "data")
    proc = subprocess.Popen([*CAS, "add", "data"], cwd=repo)
    tmp = repo / ".cas/store/tmp"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (tmp.is_dir() and any(tmp.iterdir())):
        time.sleep(0.01)
    assert proc.poll() is None, "add finished before it could be killed; use more data"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (repo / "data.cas").exists()
    cas(repo, "fsck")  # whatever was sealed is sound
    out = cas(repo, "add", "data").stdout
    assert "data.cas: 8 files" in out
    cas(repo, "fsck")
    assert not any(tmp.iterdir()), "the rerun cleans the dead process's temp packs"
    git(repo, "commit", "-qm", "v1")
    import shutil

    shutil.rmtree(repo / "data")
    cas(repo, "checkout")
    assert tree(repo / "data") == expected


def test_python_api_raises_typed_errors(repo: Path) -> None:
    from cas.errors import PathError
    from cas.repo import Repo

    with pytest.raises(PathError):
        Repo.discover(repo).add(["missing"])
    assert sys.modules["cas.repo"] is not None


def test_symlinked_target_or_parent_is_refused(repo: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write(outside / "x", "x")
    os.symlink(outside, repo / "data")
    assert "symbolic link" in one_line(cas(repo, "add", "data", code=2).stderr)
    os.unlink(repo / "data")
    write(repo / "sub/data/a", "a")
    cas(repo, "add", "sub/data")
    git(repo, "commit", "-qm", "v1")
    shutil.rmtree(repo / "sub")
    os.symlink(outside, repo / "sub")  # a parent of a committed pointer now leads outside
    for args in (["--rev", "HEAD"], ["sub/data.cas"]):
        line = one_line(cas(repo, "checkout", *args, code=2).stderr)
        assert "outside the repository" in line
    assert sorted(p.name for p in outside.iterdir()) == ["x"]  # nothing written there


def test_data_git_already_tracks_is_refused(repo: Path) -> None:
    write(repo / "data/a", "a")
    git(repo, "add", "data")
    line = one_line(cas(repo, "add", "data", code=2).stderr)
    assert "tracked by Git" in line and "git rm -r --cached -- data" in line
    line = one_line(cas(repo, "add", "--append-only", "data", code=2).stderr)
    assert "tracked by Git" in line
