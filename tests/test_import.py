"""``cas import dvc`` and ``cas import lfs`` against the real tools: DVC 3.67.1 (its own venv,
``tests/dvc_env.py``) and Debian's git-lfs. Each repository is built with the tool itself,
imported, committed, cloned and pulled from a file:// remote, and compared byte for byte."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import dvc_env
from tests.conftest import cas, git, require_service, tree, write

DVC_ENV = {"DVC_NO_ANALYTICS": "1", "DVC_NO_UPDATER": "1"}


@pytest.fixture(scope="session")
def dvc_exe() -> Path:
    exe, why = dvc_env.ensure()
    if exe is None:
        require_service(f"DVC {dvc_env.DVC_VERSION}", why)
    assert exe is not None
    return exe


@pytest.fixture(scope="session")
def git_lfs() -> None:
    if shutil.which("git-lfs") is None:
        require_service("git-lfs", "not installed (apt-get install git-lfs)")


def dvc(exe: Path, cwd: Path, *args: str) -> str:
    env = {**os.environ, **DVC_ENV}
    env.pop("PYTHONPATH", None)  # DVC's venv, not our sources
    proc = subprocess.run(
        [str(exe), *args], cwd=cwd, capture_output=True, text=True, env=env, check=False
    )
    assert proc.returncode == 0, f"dvc {' '.join(args)}: {proc.stdout}\n{proc.stderr}"
    return proc.stdout


def staged(root: Path) -> str:
    """The index and the worktree's state as Git sees them (idempotence compares these)."""
    return git(root, "status", "--porcelain=v1", "--untracked-files=all", "--ignored")


# --------------------------------------------------------------------------------------------
# DVC


@pytest.fixture
def dvc_repo(git_repo: Path, dvc_exe: Path, tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """A DVC project: a folder output, a single-file output and a dvc.lock stage output, pushed
    to a local DVC remote, committed. Returns the root and the data, byte for byte."""
    root = git_repo
    dvc(dvc_exe, root, "init", "-q")
    write(root / "data/a.txt", "alpha\n")
    write(root / "data/sub dir/b é.bin", os.urandom(70_000))
    write(root / "data/crlf.txt", b"line\r\nline\r\n")
    write(root / "models/model.bin", os.urandom(200_000))
    dvc(dvc_exe, root, "add", "-q", "data", "models/model.bin")
    dvc(dvc_exe, root, "stage", "add", "-q", "-n", "train", "-o", "out/metrics.txt",
        "mkdir -p out && printf 'acc 0.9\\n' > out/metrics.txt")  # fmt: skip
    dvc(dvc_exe, root, "repro", "-q")
    dvc(dvc_exe, root, "remote", "add", "-q", "-d", "store", str(tmp_path / "dvc-remote"))
    dvc(dvc_exe, root, "push", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "dvc")
    data = {
        **{f"data/{k}": v for k, v in tree(root / "data").items()},
        "models/model.bin": (root / "models/model.bin").read_bytes(),
        "out/metrics.txt": (root / "out/metrics.txt").read_bytes(),
    }
    return root, data


def _all_data(root: Path) -> dict[str, bytes]:
    return {
        **{f"data/{k}": v for k, v in tree(root / "data").items()},
        "models/model.bin": (root / "models/model.bin").read_bytes(),
        "out/metrics.txt": (root / "out/metrics.txt").read_bytes(),
    }


def test_dvc_import_commit_clone_pull_is_byte_identical(
    dvc_repo: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    root, data = dvc_repo
    # sources of each kind: data/ from the worktree, model.bin from the cache only, metrics
    # from the remote only
    os.unlink(root / "models/model.bin")
    os.unlink(root / "out/metrics.txt")
    cache = root / ".dvc/cache/files/md5"
    metrics_md5 = (root / "dvc.lock").read_text().split("md5: ")[-1].split()[0]
    os.unlink(cache / metrics_md5[:2] / metrics_md5[2:])
    cas(root, "init")
    out = cas(root, "import", "dvc").stdout
    assert "data -> data.cas" in out and "data.dvc removed" in out
    assert "1 from cache" in out and "1 from remote" in out
    assert _all_data(root) == data
    assert not (root / "data.dvc").exists() and not (root / "models/model.bin.dvc").exists()
    index = git(root, "ls-files")
    assert "data.dvc" not in index and "models/model.bin.dvc" not in index
    assert {"data.cas", "models/model.bin.cas", "out/metrics.txt.cas"} <= set(index.split())
    assert (root / "dvc.lock").exists()  # the pipeline is the user's
    assert git(root, "log", "--oneline").count("\n") == 1  # nothing committed
    assert "/data" in (root / ".gitignore").read_text().splitlines()

    remote = (tmp_path / "cas-remote").as_uri()
    cas(root, "remote", "add", "origin", remote)
    git(root, "commit", "-q", "-m", "cas import dvc")
    cas(root, "push")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(root), str(clone))
    cas(clone, "pull")
    assert _all_data(clone) == data


def test_dvc_import_twice_changes_nothing(dvc_repo: tuple[Path, dict[str, bytes]]) -> None:
    root, data = dvc_repo
    cas(root, "init")
    cas(root, "import", "dvc")
    before = staged(root)
    second = cas(root, "import", "dvc").stdout
    assert staged(root) == before
    assert "out/metrics.txt -> out/metrics.txt.cas" in second  # dvc.lock stays: re-added
    assert _all_data(root) == data


def test_dvc_tampered_cache_is_refused_listing_the_path(
    dvc_repo: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    root, _ = dvc_repo
    shutil.rmtree(tmp_path / "dvc-remote")  # the cache is the only copy
    os.unlink(root / "models/model.bin")
    md5 = (root / "models/model.bin.dvc").read_text().split("md5: ")[1].split()[0]
    obj = root / ".dvc/cache/files/md5" / md5[:2] / md5[2:]
    obj.chmod(0o644)
    obj.write_bytes(b"tampered")
    cas(root, "init")
    before = staged(root)
    proc = cas(root, "import", "dvc", code=4)
    assert "models/model.bin" in proc.stderr and "does not match its DVC hash" in proc.stderr
    assert staged(root) == before
    assert not (root / "models/model.bin").exists() and not (root / "data.cas").exists()


def test_dvc_edited_worktree_file_and_extra_file_are_refused(
    dvc_repo: tuple[Path, dict[str, bytes]],
) -> None:
    root, _ = dvc_repo
    write(root / "data/a.txt", "edited after dvc add\n")
    write(root / "data/new.txt", "never added to DVC\n")
    cas(root, "init")
    proc = cas(root, "import", "dvc", "data.dvc", code=4)
    assert "data/a.txt" in proc.stderr and "data/new.txt (not in DVC's record)" in proc.stderr
    assert (root / "data.dvc").exists() and not (root / "data.cas").exists()


def test_dvc_missing_everywhere_is_refused_with_the_fix(
    dvc_repo: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    root, _ = dvc_repo
    shutil.rmtree(tmp_path / "dvc-remote")
    shutil.rmtree(root / ".dvc/cache")
    os.unlink(root / "models/model.bin")
    cas(root, "init")
    proc = cas(root, "import", "dvc", "models/model.bin.dvc", code=3)
    assert "models/model.bin" in proc.stderr and "dvc pull" in proc.stderr


def test_dvc_legacy_cache_layout(dvc_repo: tuple[Path, dict[str, bytes]], tmp_path: Path) -> None:
    """DVC 2 kept objects at .dvc/cache/<2>/<30> (no files/md5/): still found."""
    root, data = dvc_repo
    shutil.rmtree(tmp_path / "dvc-remote")
    cache = root / ".dvc/cache"
    for obj in list((cache / "files/md5").rglob("*")):
        if obj.is_file():
            dest = cache / obj.parent.name / obj.name
            dest.parent.mkdir(exist_ok=True)
            os.replace(obj, dest)
    shutil.rmtree(cache / "files")
    shutil.rmtree(root / "data")
    cas(root, "init")
    cas(root, "import", "dvc", "data.dvc")
    assert _all_data(root) == data


# --------------------------------------------------------------------------------------------
# git-lfs


@pytest.fixture
def lfs_repo(git_repo: Path, git_lfs: None) -> tuple[Path, dict[str, bytes]]:
    """git-lfs tracks *.bin anywhere and the folder assets/; one plain Git file beside them."""
    root = git_repo
    git(root, "lfs", "install", "--local")
    git(root, "lfs", "track", "*.bin", "assets/**")
    write(root / "model.bin", os.urandom(150_000))
    write(root / "deep/er/weights.bin", os.urandom(20_000))
    write(root / "assets/img/cat é.png", os.urandom(90_000))
    write(root / "assets/notes.txt", "lfs too\n")
    write(root / "README.md", "plain git\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "lfs")
    assert "model.bin" in git(root, "lfs", "ls-files", "--name-only")
    data = {p: (root / p).read_bytes() for p in ("model.bin", "deep/er/weights.bin")}
    data.update({f"assets/{k}": v for k, v in tree(root / "assets").items()})
    return root, data


def _lfs_data(root: Path) -> dict[str, bytes]:
    data = {p: (root / p).read_bytes() for p in ("model.bin", "deep/er/weights.bin")}
    data.update({f"assets/{k}": v for k, v in tree(root / "assets").items()})
    return data


def test_lfs_import_commit_clone_pull_is_byte_identical(
    lfs_repo: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    root, data = lfs_repo
    # an unsmudged file (what GIT_LFS_SKIP_SMUDGE=1 leaves): its content is in .git/lfs/objects
    (root / "deep/er/weights.bin").write_bytes(git(root, "show", ":deep/er/weights.bin").encode())
    cas(root, "init")
    out = cas(root, "import", "lfs").stdout
    assert "assets -> assets.cas" in out  # assets/** covers a folder of LFS files only
    assert "model.bin -> model.bin.cas" in out and "(from lfs-objects)" in out
    assert _lfs_data(root) == data
    index = set(git(root, "ls-files").split("\n"))
    assert {"model.bin", "deep/er/weights.bin", "assets/notes.txt"}.isdisjoint(index)
    assert {"model.bin.cas", "deep/er/weights.bin.cas", "assets.cas", "README.md"} <= index
    assert "filter=lfs" not in (root / ".gitattributes").read_text()
    assert git(root, "log", "--oneline").count("\n") == 1  # nothing committed

    cas(root, "remote", "add", "origin", (tmp_path / "cas-remote").as_uri())
    git(root, "commit", "-q", "-m", "cas import lfs")
    cas(root, "push")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(root), str(clone))
    cas(clone, "pull")
    assert _lfs_data(clone) == data
    assert (clone / "README.md").read_text() == "plain git\n"


def test_lfs_import_one_pattern_then_the_rest_then_nothing(
    lfs_repo: tuple[Path, dict[str, bytes]],
) -> None:
    root, data = lfs_repo
    cas(root, "init")
    cas(root, "import", "lfs", "*.bin")
    attributes = (root / ".gitattributes").read_text()
    assert "*.bin" not in attributes and "assets/** filter=lfs" in attributes
    assert "assets/notes.txt" in git(root, "ls-files")
    cas(root, "import", "lfs")
    before = staged(root)
    assert "nothing to import" in cas(root, "import", "lfs").stdout
    assert staged(root) == before
    assert _lfs_data(root) == data


def test_lfs_edited_file_is_refused_listing_the_path(
    lfs_repo: tuple[Path, dict[str, bytes]],
) -> None:
    root, _ = lfs_repo
    (root / "model.bin").write_bytes(b"edited, not committed")
    cas(root, "init")
    before, attributes = staged(root), (root / ".gitattributes").read_text()
    proc = cas(root, "import", "lfs", code=4)
    assert "model.bin" in proc.stderr and "does not match its git-lfs hash" in proc.stderr
    assert staged(root) == before and (root / ".gitattributes").read_text() == attributes
    assert not (root / "model.bin.cas").exists()


def test_lfs_tampered_object_is_refused(lfs_repo: tuple[Path, dict[str, bytes]]) -> None:
    root, _ = lfs_repo
    pointer = git(root, "show", ":model.bin")
    (root / "model.bin").write_text(pointer)  # unsmudged: the object is the only copy
    oid = pointer.split("sha256:")[1].split()[0]
    obj = root / ".git/lfs/objects" / oid[:2] / oid[2:4] / oid
    obj.chmod(0o644)
    obj.write_bytes(b"x" * 150_000)
    cas(root, "init")
    proc = cas(root, "import", "lfs", "*.bin", code=4)
    assert "model.bin (.git/lfs/objects copy)" in proc.stderr
    assert (root / "model.bin").read_text() == pointer  # the pointer text is left as it was


def test_lfs_unknown_pattern_names_the_known_ones(lfs_repo: tuple[Path, dict[str, bytes]]) -> None:
    root, _ = lfs_repo
    cas(root, "init")
    proc = cas(root, "import", "lfs", "*.zip", code=2)
    assert "*.zip" in proc.stderr and "*.bin" in proc.stderr and "assets/**" in proc.stderr


# --------------------------------------------------------------------------------------------
# Hostile DVC records (written by hand: no DVC needed to forge one)


def _forged(root: Path, out: str, listing: list[dict[str, str]] | None = None) -> None:
    import hashlib
    import json

    cas(root, "init")
    if listing is None:
        (root / "x.dvc").write_text(f"outs:\n- md5: '{'0' * 32}'\n  path: {out}\n  hash: md5\n")
        return
    data = json.dumps(listing).encode()
    md5 = hashlib.md5(data).hexdigest()
    write(root / ".dvc/cache/files/md5" / md5[:2] / f"{md5[2:]}.dir", data)
    (root / "x.dvc").write_text(f"outs:\n- md5: {md5}.dir\n  path: {out}\n  hash: md5\n")


@pytest.mark.parametrize("out", ["../outside", ".git/hooks", ".cas/config"])
def test_dvc_record_naming_a_path_outside_the_data_is_refused(git_repo: Path, out: str) -> None:
    _forged(git_repo, out)
    proc = cas(git_repo, "import", "dvc", code=2)
    assert out.split("/")[0] in proc.stderr
    assert (git_repo / "x.dvc").exists()
    assert not [p for p in git_repo.glob("*.cas") if p.is_file()]


@pytest.mark.parametrize(
    "entry",
    [
        {"relpath": "../../escape", "md5": "0" * 32},
        {"relpath": "../sibling", "md5": "0" * 32},
        {"relpath": "ok.txt", "md5": "../../../../etc/passwd"},
    ],
)
def test_dvc_dir_listing_with_hostile_entries_is_refused(
    git_repo: Path, entry: dict[str, str]
) -> None:
    _forged(git_repo, "data", [entry])
    cas(git_repo, "import", "dvc", code=2)
    assert not (git_repo / "data").exists() and not (git_repo / "data.cas").exists()


def test_dvc_record_with_glob_characters_unstages_only_itself(git_repo: Path) -> None:
    """'git rm --cached -- *.dvc' would unstage every record: paths go to Git as literals."""
    import hashlib

    root = git_repo
    for name, content in (("star", b"one\n"), ("other", b"two\n")):
        write(root / name, content)
        md5 = hashlib.md5(content).hexdigest()
        record = "*.dvc" if name == "star" else "other.dvc"
        (root / record).write_text(f"outs:\n- md5: {md5}\n  path: {name}\n  hash: md5\n")
    git(root, "add", "--", "other.dvc", ":(literal)*.dvc")
    cas(root, "init")
    cas(root, "import", "dvc", "*.dvc")
    index = git(root, "ls-files").split("\n")
    assert "other.dvc" in index and "*.dvc" not in index and "star.cas" in index
    assert not (root / "*.dvc").exists() and (root / "other.dvc").exists()
