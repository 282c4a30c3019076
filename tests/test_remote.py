"""Remotes end to end: real git, the real ``cas`` CLI, a file:// folder and a real S3 server."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from cas import manifest, objects, remote
from cas.errors import ObjectMissingError, StorageError
from cas.objects import index_key, manifest_key, pack_key
from cas.ops import transfer
from cas.repo import Repo
from cas.store.fsspec import FsspecStore
from tests.conftest import CAS, cas, git, tree, write
from tests.s3_server import ACCESS_KEY, SECRET_KEY, S3Server


def make_data(root: Path, seed: int = 7) -> None:
    """Small files only (hashed on one thread, so into one pack), in two subtrees of unequal
    size, plus an executable: enough to tell a partial fetch from a whole one."""
    rng = random.Random(seed)
    for i in range(4):
        write(root / "data" / "cats" / f"c{i}.bin", rng.randbytes(rng.randint(1, 50_000)))
    for i in range(40):
        write(root / "data" / "dogs" / f"d{i % 4}" / f"f{i}.bin", rng.randbytes(30_000 + i))
    write(root / "data" / "run.sh", "#!/bin/sh\necho hi\n")
    os.chmod(root / "data" / "run.sh", 0o755)


def setup_repo(root: Path, url: str, env: dict[str, str], in_process: bool = False) -> None:
    """``in_process`` adds through the Python API, so a monkeypatched pack size applies."""
    cas(root, "init")
    make_data(root)
    if in_process:
        Repo.discover(root).add(["data"])
    else:
        cas(root, "add", "data")
    cas(root, "remote", "add", "origin", url, env=env)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "data v1")


def clone(src: Path, dest: Path) -> Path:
    git(src.parent, "clone", "-q", str(src), str(dest))
    git(dest, "config", "user.email", "test@example.com")
    git(dest, "config", "user.name", "Test")
    return dest


def test_push_clone_pull_round_trip(
    git_repo: Path, tmp_path: Path, remote_url: tuple[str, dict[str, str]]
) -> None:
    url, env = remote_url
    setup_repo(git_repo, url, env)
    first = json.loads(cas(git_repo, "push", "--json", env=env).stdout)
    assert first["packs"] >= 1 and first["manifests"] == 1
    again = json.loads(cas(git_repo, "push", "--json", env=env).stdout)
    assert (again["packs"], again["manifests"], again["bytes"]) == (0, 0, 0)
    assert again["requests"] == 2  # the layout marker and the manifest listing, nothing more

    other = clone(git_repo, tmp_path / "clone")
    assert "origin" in cas(other, "remote", "list", env=env).stdout  # the config travelled
    cas(other, "pull", env=env)
    assert tree(other / "data") == tree(git_repo / "data")
    assert os.access(other / "data/run.sh", os.X_OK)
    assert "ok" in cas(other, "fsck").stdout
    assert ": ok" in cas(other, "verify", "--remote", "--rev", "HEAD", env=env).stdout
    status = cas(other, "status", "--remote", env=env).stdout
    assert "data.cas: pushed; all chunks local" in status


def test_partial_pull_reads_only_needed_ranges(
    git_repo: Path, tmp_path: Path, remote_url: tuple[str, dict[str, str]]
) -> None:
    url, env = remote_url
    setup_repo(git_repo, url, env)
    cas(git_repo, "push", env=env)
    other = clone(git_repo, tmp_path / "clone")
    out = json.loads(cas(other, "pull", "data.cas", "--path", "cats", "--json", env=env).stdout)
    fetched = out["fetch"]
    assert sorted(p.name for p in (other / "data").iterdir()) == ["cats"]
    assert tree(other / "data" / "cats") == tree(git_repo / "data" / "cats")

    repo = Repo.discover(other)
    ptr = repo.read_pointer(repo.target("data.cas", other))
    rows = manifest.to_rows(repo.load_manifest(ptr.manifest))
    wanted = {cid: size for r in rows if r.path.startswith("cats/") for cid, size in r.chunks}
    store = remote.resolve(repo).open()
    packs = [k.rsplit("/", 1)[1] for k in store.list("packs/")]
    metadata = store.size(manifest_key(ptr.manifest)) + sum(store.size(index_key(p)) for p in packs)
    assert fetched["packs"] == 0 and fetched["ranges"] >= 1
    assert fetched["chunks"] == len(wanted)
    assert fetched["bytes"] == metadata + sum(wanted.values())  # not one byte of the dogs
    assert fetched["bytes"] < sum(store.size(pack_key(p)) for p in packs) / 2
    assert "ok" in cas(other, "fsck").stdout


def test_checkout_fetches_missing_chunks_on_demand(git_repo: Path, tmp_path: Path) -> None:
    url = (tmp_path / "remote").as_uri()
    setup_repo(git_repo, url, {})
    cas(git_repo, "push")
    other = clone(git_repo, tmp_path / "clone")
    repo = Repo(Repo.discover(other).git)
    result = transfer.fetch(repo, subpath="nothing-matches")  # only the manifest
    assert result.manifests == 1 and result.chunks == 0
    cas(other, "checkout", "data/cats/c0.bin")  # the checkout hook fetches what it lacks
    assert (other / "data/cats/c0.bin").read_bytes() == (git_repo / "data/cats/c0.bin").read_bytes()

    repo = Repo.discover(other)
    ptr = repo.read_pointer(repo.target("data.cas", other))
    chunks = {
        cid for r in manifest.to_rows(repo.load_manifest(ptr.manifest)) for cid, _ in r.chunks
    }
    lacking = repo.objects.missing_chunks(chunks)
    assert lacking  # the checkout fetched only what c0.bin needed
    got = transfer.fetch_chunks(repo, chunks, needed_by="data.cas")
    assert got.chunks == len(lacking) and got.requests >= 1
    assert not repo.objects.missing_chunks(chunks)


def test_fetch_chunks_without_a_remote_names_the_fix(git_repo: Path) -> None:
    cas(git_repo, "init")
    repo = Repo.discover(git_repo)
    with pytest.raises(ObjectMissingError, match="no remote is configured; run `cas remote add"):
        transfer.fetch_chunks(repo, [b"\x01" * 32], needed_by="data.cas")


def test_verify_lists_a_deleted_pack_and_its_pointer(
    git_repo: Path, remote_url: tuple[str, dict[str, str]]
) -> None:
    url, env = remote_url
    setup_repo(git_repo, url, env)
    cas(git_repo, "push", env=env)
    assert ": ok" in cas(git_repo, "verify", "--remote", env=env).stdout
    store = remote.resolve(Repo.discover(git_repo)).open()
    victim = next(store.list("packs/"))
    store.delete(victim)
    proc = cas(git_repo, "verify", "--remote", "--rev", "HEAD", "--rev", "main", env=env, code=1)
    assert victim in proc.stdout
    assert "HEAD:data.cas" in proc.stdout and "main:data.cas" in proc.stdout
    report = json.loads(cas(git_repo, "verify", "--remote", "--json", env=env, code=1).stdout)
    assert [p["object"] for p in report["problems"]] == [victim]


def test_wrong_credentials_fail_in_one_line_without_the_secret(
    git_repo: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    setup_repo(git_repo, f"s3://{s3_bucket}/cas", s3_server.env)
    wrong = {**s3_server.env, "AWS_SECRET_ACCESS_KEY": "not-the-secret-123"}
    proc = cas(git_repo, "push", env=wrong, code=7)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "wrong credentials or permission denied for remote 'origin'" in lines[0]
    assert "not-the-secret-123" not in proc.stderr + proc.stdout
    # secrets in .cas/config.local win over the environment, and are never printed
    cas(git_repo, "remote", "modify", "origin", "--local", "secret_access_key", SECRET_KEY)
    cas(git_repo, "remote", "modify", "origin", "--local", "access_key_id", "cas-test-key")
    cas(git_repo, "push", env=wrong)
    listing = cas(git_repo, "remote", "list").stdout
    assert SECRET_KEY not in listing and "secret_access_key" in listing
    assert SECRET_KEY not in (git_repo / ".cas/config").read_text()
    proc = cas(git_repo, "remote", "modify", "origin", "secret_access_key", "x", code=2)
    assert "--local" in proc.stderr


def test_missing_bucket(git_repo: Path, s3_server: S3Server) -> None:
    setup_repo(git_repo, "s3://no-such-bucket-here/cas", s3_server.env)
    proc = cas(git_repo, "push", env=s3_server.env, code=7)
    assert "bucket of remote 'origin' (s3://no-such-bucket-here/cas) does not exist" in proc.stderr
    assert "cas remote modify origin url" in proc.stderr


def test_unknown_and_missing_remote(git_repo: Path, tmp_path: Path) -> None:
    cas(git_repo, "init")
    make_data(git_repo)
    cas(git_repo, "add", "data")
    assert (
        "no remote configured; run `cas remote add origin" in cas(git_repo, "push", code=2).stderr
    )
    cas(git_repo, "remote", "add", "origin", (tmp_path / "r").as_uri())
    assert (
        "no remote named 'nope'; see `cas remote list`"
        in cas(git_repo, "push", "-r", "nope", code=2).stderr
    )
    assert ".cas/config" in git(git_repo, "diff", "--cached", "--name-only")
    assert "not a URL" in cas(git_repo, "remote", "add", "b", "relative/path", code=2).stderr


def test_corrupt_remote_pack_does_not_poison_the_store(git_repo: Path, tmp_path: Path) -> None:
    setup_repo(git_repo, (tmp_path / "remote").as_uri(), {})
    cas(git_repo, "push")
    repo = Repo.discover(git_repo)
    ptr = repo.read_pointer(repo.target("data.cas", git_repo))
    rows = manifest.to_rows(repo.load_manifest(ptr.manifest))
    first = next(r for r in rows if r.path.startswith("cats/") and r.chunks).chunks[0][0]
    loc = repo.objects.index[first]  # a chunk both the full and the partial pull need
    victim = tmp_path / "remote" / pack_key(loc.pack)
    data = bytearray(victim.read_bytes())
    data[loc.offset + loc.length // 2] ^= 0xFF
    victim.chmod(0o644)
    victim.write_bytes(bytes(data))
    other = clone(git_repo, tmp_path / "clone")
    proc = cas(other, "pull", code=4)
    assert victim.name in proc.stderr and "corrupt" in proc.stderr
    assert "ok" in cas(other, "fsck").stdout
    assert not any((other / ".cas/store/packs").rglob("*"))  # nothing from the bad pack
    # partial fetches verify each chunk: the same pack read by ranges fails too
    proc = cas(other, "pull", "data.cas", "--path", "cats", code=4)
    assert first.hex() in proc.stderr and loc.pack in proc.stderr  # by range or whole pack
    assert "ok" in cas(other, "fsck").stdout


class StopServerAfter:
    """A Progress that stops the server once ``after`` bytes have been pushed."""

    def __init__(self, server: S3Server, after: int) -> None:
        self.server, self.after, self.done = server, after, 0

    def start(self, description: str, total: int) -> None:
        pass

    def advance(self, amount: int) -> None:
        self.done += amount
        if self.done >= self.after and self.server.proc is not None:
            self.server.stop()

    def finish(self) -> None:
        pass


def test_server_stopped_mid_push_then_rerun_completes(
    git_repo: Path, own_s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = own_s3_server
    server.create_bucket("midpush")
    for key, value in server.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(objects, "PACK_TARGET_SIZE", 200_000)  # many packs from little data
    setup_repo(git_repo, "s3://midpush/cas", server.env, in_process=True)
    repo = Repo.discover(git_repo)
    total = len(repo.objects.pack_ids())
    assert total >= 5
    with pytest.raises(StorageError, match="cannot reach remote 'origin'"):
        transfer.push(repo, jobs=1, progress=StopServerAfter(server, 1))
    server.start()
    store = remote.resolve(repo).open()
    assert not list(store.list("manifests/"))  # manifests go last: none is visible yet
    rerun = transfer.push(repo, jobs=2)
    assert 0 < rerun.packs < total and rerun.manifests == 1
    assert transfer.verify(repo).ok


def test_kill_9_mid_push_then_rerun_completes(
    git_repo: Path, s3_server: S3Server, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(objects, "PACK_TARGET_SIZE", 20_000)
    setup_repo(git_repo, f"s3://{s3_bucket}/cas", s3_server.env, in_process=True)
    repo = Repo.discover(git_repo)
    total = len(repo.objects.pack_ids())
    store = remote.resolve(repo).open()
    proc = subprocess.Popen(
        [*CAS, "push", "--jobs", "1"],
        cwd=git_repo,
        env={**os.environ, **s3_server.env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while len(list(store.list("packs/"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not list(store.list("manifests/")), "push finished before the kill; make it longer"
    rerun = transfer.push(repo, jobs=4)
    assert rerun.manifests == 1 and rerun.packs < total
    assert ": ok" in cas(git_repo, "verify", "--remote", env=s3_server.env).stdout


def test_put_file_in_one_buffer_or_streamed_arrives_whole(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file up to PUT_WHOLE (every pack) goes out as one bytearray PUT, a larger one through
    s3fs's own upload; both arrive byte for byte, with the options every remote uses. A local
    file that cannot be read is one line naming it."""
    spec = remote.Remote(
        "origin", f"s3://{s3_bucket}/cas", {"endpoint_url": s3_server.endpoint},
        {"access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY},
    )  # fmt: skip
    store = spec.open()
    data = random.Random(3).randbytes(3 << 20)
    path = write(tmp_path / "pack", data)
    store.put_file("packs/whole", path)
    monkeypatch.setattr("cas.store.fsspec.PUT_WHOLE", 1 << 20)
    store.put_file("packs/streamed", path)
    assert store.get("packs/whole") == data and store.get("packs/streamed") == data
    with pytest.raises(StorageError, match=r"cannot read .*absent"):
        store.put_file("packs/absent", tmp_path / "absent")


def test_ranges_merge_across_alignment_padding_only() -> None:
    """Chunks apart by less than a block (a large file's alignment padding) are one range GET;
    a wider gap (a chunk not wanted) starts another, so unwanted chunks are never read."""
    locs = [("a", 0, 1000), ("b", 1000, 500), ("c", 1500 + 4000, 700), ("d", 6200 + 4096, 10)]
    items = [(cid.encode(), objects.Location("p", off, n)) for cid, off, n in locs]
    ranges = transfer._coalesce(items)
    assert [(start, length) for _p, start, length, _c in ranges] == [(0, 6200), (10296, 10)]
    assert [len(chunks) for *_r, chunks in ranges] == [3, 1]


def test_transient_errors_are_retried_permanent_ones_are_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = FsspecStore("memory://cas-retry-test", label="remote 'm'")
    store.put_bytes("k", b"v")
    with pytest.raises(KeyError):  # a missing key is the Store contract's KeyError, no retry
        store.get("absent")
    monkeypatch.setattr("cas.store.fsspec.time.sleep", lambda _s: None)
    real = store.fs.cat_file
    calls: list[str] = []

    def flaky(path: str, **kw: object) -> bytes:
        calls.append(path)
        if len(calls) < 3:
            raise ConnectionResetError(104, "reset")
        return real(path, **kw)

    monkeypatch.setattr(store.fs, "cat_file", flaky)
    assert store.get("k") == b"v" and len(calls) == 3

    def denied(path: str, **kw: object) -> bytes:
        calls.append(path)
        raise PermissionError(13, "denied")

    calls.clear()
    monkeypatch.setattr(store.fs, "cat_file", denied)
    with pytest.raises(StorageError, match="permission denied"):
        store.get("k")
    assert len(calls) == 1
