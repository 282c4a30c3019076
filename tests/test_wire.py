"""What crosses the wire: push verifies every byte it uploads (issue 14.3), packs move in bounded
pieces whatever ``--jobs`` (issue 17.4). Real git, the real CLI, file:// and a real S3 server."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from bench.tools import measure
from cas import objects
from cas.errors import CorruptObjectError
from cas.objects import PACK_PIECE, PackReader, index_key, pack_key
from cas.repo import Repo
from cas.store.fsspec import FsspecStore
from tests.conftest import CAS, cas, git, tree, write
from tests.test_remote import clone


def big_repo(root: Path, url: str, env: dict[str, str], megabytes: int, seed: int = 5) -> None:
    """A committed dataset of large random files (one pack per ~32 MiB) and a remote."""
    rng = random.Random(seed)
    cas(root, "init")
    for i in range(megabytes // 4):
        write(root / "data" / f"f{i:03}.bin", rng.randbytes(4 << 20))
    write(root / "data" / "small.txt", "small\n")
    cas(root, "add", "data")
    cas(root, "remote", "add", "origin", url, env=env)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "data")


def repo_remote(repo: Repo) -> FsspecStore:
    from cas import remote

    return remote.resolve(repo).open()


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.chmod(0o644)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("where", ["first chunk", "last chunk", "trailer"])
def test_push_refuses_a_corrupt_local_pack(
    git_repo: Path, tmp_path: Path, remote_url: tuple[str, dict[str, str]], where: str
) -> None:
    """One flipped byte anywhere in a pack (the first piece, the last chunk, the trailer): push
    exits 4 naming the pack and the fix, and the remote holds neither it nor its index, nor any
    manifest; with
    the byte restored the same push completes and a deep verify passes."""
    url, env = remote_url
    big_repo(git_repo, url, env, megabytes=8)
    repo = Repo.discover(git_repo)
    pack_id = max(repo.objects.pack_ids(), key=lambda p: repo.local.size(pack_key(p)))
    path = repo.local.path(pack_key(pack_id))
    locations = [loc for loc in repo.objects.index.values() if loc.pack == pack_id]
    first = min(locations, key=lambda loc: loc.offset)
    last = max(locations, key=lambda loc: loc.offset)
    assert path.stat().st_size > 4 * PACK_PIECE  # the pack is read in several pieces
    offset = {
        "first chunk": first.offset + 10,
        "last chunk": last.offset + last.length - 1,
        "trailer": path.stat().st_size - 20,
    }[where]
    original = path.read_bytes()
    flip(path, offset)
    assert cas(git_repo, "fsck", code=1)
    proc = cas(git_repo, "push", env=env, code=4)
    assert pack_id in proc.stderr and "corrupt" in proc.stderr
    assert "nothing of it was uploaded: run 'cas fsck'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    store = repo_remote(repo)
    packs = {k.rsplit("/", 1)[1] for k in store.list("packs/")}
    assert pack_id not in packs  # good packs may have gone up beside it: never the bad one
    assert {k.rsplit("/", 1)[1] for k in store.list("index/")} <= packs - {pack_id}
    assert not list(store.list("manifests/"))
    path.write_bytes(original)
    cas(git_repo, "push", env=env)
    assert ": ok" in cas(git_repo, "verify", "--remote", "--deep", env=env).stdout


def test_pack_reader_withholds_bytes_it_has_not_checked(tmp_path: Path) -> None:
    """The bytes a reader hands out are the bytes it checked, not an earlier read: a pack
    changed after the reader opened it (trailer read, pack id proven) fails at the piece that
    holds the change, before the last byte is served; a rewind checks everything again."""
    objects_ = Repo.init(_git_init(tmp_path / "r")).objects
    rng = random.Random(1)
    with objects_.writer() as writer:
        for i in range(40):
            data = rng.randbytes(100_000 + i)
            writer.add(objects.hashing.digest(data), data)
    [pack_id] = objects_.pack_ids()
    path = objects_.local.path(pack_key(pack_id))
    good = path.read_bytes()
    with PackReader(path, pack_id, "here", "fix it") as reader:
        assert reader.read(-1) == good
        reader.seek(0)
        assert reader.read(-1) == good  # a retry reads and checks again
        flip(path, 3 * PACK_PIECE + 5)  # after the trailer was read and proven
        reader.seek(0)
        served = bytearray()
        with pytest.raises(
            CorruptObjectError, match=rf"pack {pack_id} here .* wrong bytes; fix it"
        ):
            while chunk := reader.read(256 << 10):
                served += chunk
        assert len(served) < len(good) and good.startswith(served)
        assert reader.failure is not None
        with pytest.raises(CorruptObjectError):
            reader.read(1)  # a failed reader stays failed


def _git_init(root: Path) -> Path:
    root.mkdir()
    git(root, "init", "-q")
    return root


def test_push_sends_the_index_of_the_checked_pack_not_the_local_file(
    git_repo: Path, tmp_path: Path, remote_url: tuple[str, dict[str, str]]
) -> None:
    """A damaged local index file (three chunks' offsets wrong) never reaches the remote: push
    sends the index the verified trailer gives, so a clone pulls and verifies (the remote
    index used to fail its check against the pack id in every clone)."""
    url, env = remote_url
    big_repo(git_repo, url, env, megabytes=4)  # one 4 MiB file: ~64 chunks
    repo = Repo.discover(git_repo)
    pack_id = max(repo.objects.pack_ids(), key=lambda p: repo.local.size(index_key(p)))
    index = repo.local.path(index_key(pack_id))
    for i in range(3):
        flip(index, 8 + i * 44 + 32 + 4)  # magic, then (id, offset u64, length u32) entries
    cas(git_repo, "push", env=env)
    other = clone(git_repo, tmp_path / "clone")
    cas(other, "pull", env=env)
    assert tree(other / "data") == tree(git_repo / "data")
    assert ": ok" in cas(other, "verify", "--remote", "--deep", env=env).stdout


def peak_rss_mib(cwd: Path, *args: str, env: dict[str, str]) -> tuple[float, str]:
    """Run the real CLI; return its peak RSS in MiB and its stdout. Measured by bench's
    launcher, never from here: on exec Linux folds the parent's high-water RSS into the child's
    ru_maxrss, and this pytest process's (900 MiB once torch and a long session are in it) made
    a push of 170 MiB read as 858."""
    out, err = cwd.parent / "rss.out", cwd.parent / "rss.err"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        found = measure([*CAS, *args], cwd=cwd, env=env, stdout=stdout, stderr=stderr)
    assert found.returncode == 0, err.read_text()
    return found.rss_kib / 1024, out.read_text()


def test_push_and_pull_memory_is_bounded_whatever_the_jobs(
    git_repo: Path, tmp_path: Path, s3_server: object, s3_bucket: str
) -> None:
    """Push and pull of 10 packs (~320 MiB) to SeaweedFS at --jobs 16: each job used to hold
    its whole 32 MiB pack (and asyncio a copy), ~700 MiB here; now a few pieces per job."""
    env = s3_server.env  # type: ignore[attr-defined]
    big_repo(git_repo, f"s3://{s3_bucket}/cas", env, megabytes=320)
    assert len(Repo.discover(git_repo).objects.pack_ids()) >= 9
    # The bound is issue 17's (<= 300 MiB at any --jobs); measured 239 / 227 MiB on an idle
    # machine, where the whole-pack push peaked at 649-1030 MiB.
    rss, out = peak_rss_mib(git_repo, "push", "--jobs", "16", "--json", env=env)
    assert json.loads(out)["packs"] >= 9
    assert rss <= 300, f"push peaked at {rss:.0f} MiB"
    other = clone(git_repo, tmp_path / "clone")
    rss, _out = peak_rss_mib(other, "fetch", "--jobs", "16", env=env)
    assert rss <= 300, f"fetch peaked at {rss:.0f} MiB"
    cas(other, "checkout", env=env)
    assert tree(other / "data") == tree(git_repo / "data")


def count_staged(store: Path) -> int:
    """Packs a store holds, sealed or being filled (temp files)."""
    return len(list((store / "packs").rglob("*/*"))) + len(list((store / "tmp").glob("*")))


def test_add_to_remote_keeps_at_most_two_packs_and_clones_get_the_data(
    git_repo: Path,
    tmp_path: Path,
    remote_url: tuple[str, dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``add --to-remote`` of data worth ~20 packs: at every upload the local store holds at
    most two packs (the one uploading, the one filling), none after; the manifest is on the
    remote, so another clone pulls byte-identical data, and this clone checks out on demand.
    A second add of the same data plus one new file stores only the new file's chunk (the
    remote's index dedups)."""
    url, env = remote_url
    monkeypatch.setattr(objects, "PACK_TARGET_SIZE", 200_000)
    big_repo_files(git_repo, count=12)
    cas(git_repo, "init")
    cas(git_repo, "remote", "add", "origin", url, env=env)
    from cas.ops import transfer

    seen: list[int] = []
    upload = transfer.Staging.upload

    def counting(self: transfer.Staging, pack_id: str, path: Path) -> None:
        seen.append(count_staged(git_repo / ".cas/store"))
        upload(self, pack_id, path)

    monkeypatch.setattr(transfer.Staging, "upload", counting)
    repo = Repo.discover(git_repo)
    [result] = repo.add(["data"], to_remote=True)
    repo.close()
    assert result.remote == "origin" and len(seen) >= 10
    assert max(seen) <= 2, seen
    assert count_staged(git_repo / ".cas/store") == 0
    store = repo_remote(Repo.discover(git_repo))
    assert len(list(store.list("packs/"))) == len(seen)
    assert [k.rsplit("/", 1)[1] for k in store.list("manifests/")] == [result.manifest]
    git(git_repo, "commit", "-qm", "data")
    other = clone(git_repo, tmp_path / "clone")
    cas(other, "pull", env=env)
    assert tree(other / "data") == tree(git_repo / "data")
    expected = tree(git_repo / "data")
    (git_repo / "data" / "f00.bin").unlink()
    cas(git_repo, "checkout", env=env)  # fetched on demand from the default remote
    assert tree(git_repo / "data") == expected
    write(git_repo / "data" / "new.txt", "new\n")
    out = cas(git_repo, "add", "data", "--to-remote", "--json", env=env).stdout
    assert json.loads(out)[0]["new_bytes"] == 4


def big_repo_files(root: Path, count: int) -> None:
    rng = random.Random(9)
    for i in range(count):
        write(root / "data" / f"f{i:02}.bin", rng.randbytes(300_000 + i))


def test_add_to_remote_survives_a_server_outage(
    git_repo: Path, tmp_path: Path, own_s3_server: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server stops after the first pack of an ``add --to-remote``: one line naming the
    remote, exit 7, no pointer written and no manifest on the remote; after a restart the
    rerun completes (what the first run sealed locally is pushed) and a clone pulls exact
    data."""
    server = own_s3_server
    server.create_bucket("outage")  # type: ignore[attr-defined]
    env = server.env  # type: ignore[attr-defined]
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(objects, "PACK_TARGET_SIZE", 200_000)
    big_repo_files(git_repo, count=8)
    cas(git_repo, "init")
    cas(git_repo, "remote", "add", "origin", "s3://outage/cas", env=env)
    from cas.errors import StorageError
    from cas.ops import transfer

    upload = transfer.Staging.upload
    calls: list[str] = []

    def stop_after_first(self: transfer.Staging, pack_id: str, path: Path) -> None:
        calls.append(pack_id)
        if len(calls) == 2:
            server.stop()  # type: ignore[attr-defined]
        upload(self, pack_id, path)

    monkeypatch.setattr(transfer.Staging, "upload", stop_after_first)
    monkeypatch.setattr("cas.store.fsspec.BACKOFF_CAP_SECONDS", 0.2)
    repo = Repo.discover(git_repo)
    with pytest.raises(StorageError, match="cannot reach remote 'origin'"):
        repo.add(["data"], to_remote=True)
    repo.close()
    assert not (git_repo / "data.cas").exists()
    server.start()  # type: ignore[attr-defined]
    store = repo_remote(Repo.discover(git_repo))
    assert not list(store.list("manifests/"))
    monkeypatch.setattr(transfer.Staging, "upload", upload)
    cas(git_repo, "add", "data", "--to-remote", env=env)
    git(git_repo, "commit", "-qm", "data")
    assert ": ok" in cas(git_repo, "verify", "--remote", "--deep", env=env).stdout
    other = clone(git_repo, tmp_path / "clone")
    cas(other, "pull", env=env)
    assert tree(other / "data") == tree(git_repo / "data")
