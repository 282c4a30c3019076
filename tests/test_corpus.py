"""Versioned manifests: corpora pinned in place (a folder, SeaweedFS S3) and append-only data.

Real git and the real ``cas`` CLI throughout, except where a test needs sizes no CLI run could
build in seconds (a 1,000,000-entry manifest) or a pure function (``merge_versions``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import blake3
import numpy as np
import pyarrow as pa
import pytest

from cas import versions
from cas.errors import ConflictError
from cas.repo import Repo
from tests.conftest import CAS, cas, git, tree, write
from tests.s3_server import S3Server


def make_shard(root: Path, name: str, count: int, seed: int) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    files = {}
    for i in range(count):
        data = rng.bytes(int(rng.integers(0, 50_000)))
        write(root / name / f"part-{i:03}.jsonl", data)
        files[f"{name}/part-{i:03}.jsonl"] = data
    write(root / name / "README.txt", "not matched by the glob")
    return files


def listing(root: Path, pointer: str, rev: str | None = None) -> dict[str, dict]:
    args = ["ls", pointer, "--json", *(["--rev", rev] if rev else [])]
    return {item["path"]: item for item in json.loads(cas(root, *args).stdout)}


# -- a corpus in a local folder -------------------------------------------------------------
def test_corpus_create_append_history(git_repo: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    first = make_shard(corpus, "2026-11", 5, seed=1)
    cas(git_repo, "init")
    out = cas(git_repo, "manifest", "create", "corpus.cas", str(corpus), "--glob", "**/*.jsonl")
    assert "+5 files" in out.stdout
    pointer = (git_repo / "corpus.cas").read_text()
    assert pointer.startswith("cas-pointer 1\nkind corpus\nversion ") and len(pointer) < 1024
    assert "corpus.cas" in git(git_repo, "diff", "--cached", "--name-only").split()
    git(git_repo, "commit", "-qm", "corpus: first slice")

    second = make_shard(corpus, "2026-12", 3, seed=2)
    out = cas(git_repo, "manifest", "append", "corpus.cas", str(corpus / "2026-12"))
    assert "+3 files" in out.stdout
    diff = git(git_repo, "diff", "--cached", "-U0", "corpus.cas").splitlines()
    changed = [line for line in diff if line[:1] in ("+", "-") and line[:3] not in ("+++", "---")]
    assert [line.split()[0] for line in changed] == ["-version", "+version"]
    git(git_repo, "commit", "-qam", "corpus: second slice")
    assert "unchanged" in cas(git_repo, "manifest", "append", "corpus.cas").stdout

    base = corpus.resolve().as_uri()
    now = listing(git_repo, "corpus.cas")
    assert set(now) == {f"{base}/{p}" for p in {**first, **second}}
    for rel, data in {**first, **second}.items():
        item = now[f"{base}/{rel}"]
        assert item["hash"] == blake3.blake3(data).hexdigest() and item["size"] == len(data)
    assert set(listing(git_repo, "corpus.cas", "HEAD~1")) == {f"{base}/{p}" for p in first}

    log = json.loads(cas(git_repo, "log", "corpus.cas", "--json").stdout)
    assert [e["files_added"] for e in log] == [3, 5] and [e["files"] for e in log] == [8, 5]
    assert log[0]["bytes_added"] == sum(map(len, second.values()))
    assert len(cas(git_repo, "log", "corpus.cas").stdout.splitlines()) == 2

    # status and checkout leave a corpus alone: its bytes live at its URL
    assert cas(git_repo, "status").stdout.strip() == "corpus.cas: unchanged"
    cas(git_repo, "checkout")
    assert not (git_repo / "corpus").exists()

    repo = Repo.discover(git_repo)
    assert versions.open_dataset(repo, "corpus.cas").count_rows() == 8
    old = versions.read_table(repo, "corpus.cas", rev="HEAD~1")
    assert old.column("path").to_pylist() == sorted(first)
    assert cas(git_repo, "manifest", "verify", "corpus.cas").stdout.strip().endswith("ok")


def test_append_only_violations_and_allow_removals(git_repo: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    make_shard(corpus, "a", 4, seed=3)
    cas(git_repo, "init")
    cas(git_repo, "manifest", "create", "corpus.cas", str(corpus))
    git(git_repo, "commit", "-qm", "v1")
    write(corpus / "a" / "part-001.jsonl", b"rewritten in place")
    (corpus / "a" / "part-002.jsonl").unlink()
    write(corpus / "b" / "new.jsonl", b"new")
    err = cas(git_repo, "manifest", "append", "corpus.cas", code=5).stderr
    assert "a/part-001.jsonl (changed)" in err and "a/part-002.jsonl (vanished)" in err
    assert "--allow-removals" in err
    assert not git(git_repo, "status", "--porcelain", "corpus.cas")  # nothing was written

    # a new shard elsewhere is appended without looking at the damaged one
    out = cas(git_repo, "manifest", "append", "corpus.cas", str(corpus / "b")).stdout
    assert "+1 files" in out
    out = cas(git_repo, "manifest", "append", "corpus.cas", "--allow-removals").stdout
    assert "1 removed" in out
    cut = len(corpus.resolve().as_uri()) + 1
    now = {p[cut:]: v for p, v in listing(git_repo, "corpus.cas").items()}
    assert "a/part-002.jsonl" not in now
    assert now["a/part-001.jsonl"]["hash"] == blake3.blake3(b"rewritten in place").hexdigest()
    assert set(now) == {"a/README.txt", "a/part-000.jsonl", "a/part-001.jsonl",
                        "a/part-003.jsonl", "b/new.jsonl"}  # fmt: skip
    v1 = {p[cut:] for p in listing(git_repo, "corpus.cas", "HEAD")}
    assert "a/part-002.jsonl" in v1 and "b/new.jsonl" not in v1  # v1 still resolves
    err = cas(git_repo, "manifest", "append", "corpus.cas", str(tmp_path), code=2).stderr
    assert "is not under the manifest's base" in err


def test_verify_names_drifted_files(git_repo: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    make_shard(corpus, "s", 20, seed=4)
    cas(git_repo, "init")
    cas(git_repo, "manifest", "create", "corpus.cas", str(corpus), "--jobs", "2")
    target = corpus / "s" / "part-007.jsonl"
    data = bytearray(target.read_bytes() or b"x")
    data[0] ^= 0xFF
    stat = target.stat()
    target.write_bytes(bytes(data))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the marker cannot tell
    (corpus / "s" / "part-011.jsonl").unlink()
    proc = cas(git_repo, "manifest", "verify", "corpus.cas", code=1)
    assert "s/part-007.jsonl: " in proc.stdout and "s/part-011.jsonl: missing" in proc.stdout
    assert "2 drifted" in proc.stdout

    runs = []
    for _ in range(2):
        proc = cas_any(git_repo, "manifest", "verify", "corpus.cas", "--sample", "0.3", "--seed",
                       "7", "--json")  # fmt: skip
        runs.append(json.loads(proc.stdout))
    assert runs[0] == runs[1] and 0 < runs[0]["checked"] < 21
    cas(git_repo, "manifest", "verify", "corpus.cas", "--sample", "0", code=2)


def cas_any(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI when either exit code is acceptable (a sample may or may not hit a drift)."""
    proc = subprocess.run([*CAS, *args], cwd=cwd, capture_output=True, text=True)
    assert proc.returncode in (0, 1), proc.stderr
    return proc


def test_bad_urls_are_one_clear_line(git_repo: Path, tmp_path: Path) -> None:
    cas(git_repo, "init")
    err = cas(git_repo, "manifest", "create", "c.cas", "nosuchproto://x/y", code=2).stderr
    assert err.startswith("cas: error: nosuchproto://x/y:") and "fsspec URL" in err
    assert len(err.strip().splitlines()) == 1
    err = cas(git_repo, "manifest", "create", "c.cas", str(tmp_path / "absent"), code=2).stderr
    assert "no files under" in err
    err = cas(git_repo, "manifest", "append", "c.cas", code=2).stderr
    assert "pointer file not found" in err


# -- a corpus in S3 (SeaweedFS) --------------------------------------------------------------
def upload(server: S3Server, bucket: str, files: dict[str, bytes]) -> None:
    import boto3

    env = server.env
    client = boto3.client(
        "s3", endpoint_url=server.endpoint, aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1",
    )  # fmt: skip
    for key, data in files.items():
        client.put_object(Bucket=bucket, Key=key, Body=data)


@pytest.mark.s3
def test_s3_corpus(git_repo: Path, s3_server: S3Server, s3_bucket: str) -> None:
    rng = np.random.default_rng(5)
    first = {
        f"web/2026-11/f{i}.jsonl.zst": rng.bytes(int(rng.integers(1, 40_000))) for i in range(6)
    }
    upload(s3_server, s3_bucket, first)
    env = s3_server.env
    url = f"s3://{s3_bucket}/web"
    cas(git_repo, "init")
    out = cas(git_repo, "manifest", "create", "corpus.cas", url, "--glob", "**/*.jsonl.zst",
              "--jobs", "4", env=env).stdout  # fmt: skip
    assert "+6 files" in out
    git(git_repo, "commit", "-qm", "corpus v1")
    second = {f"web/2026-12/g{i}.jsonl.zst": rng.bytes(1000 + i) for i in range(3)}
    upload(s3_server, s3_bucket, second)
    assert "+3 files" in cas(git_repo, "manifest", "append", "corpus.cas", url + "/2026-12/",
                             env=env).stdout  # fmt: skip
    git(git_repo, "commit", "-qam", "corpus v2")
    items = listing(git_repo, "corpus.cas")
    assert set(items) == {f"s3://{s3_bucket}/{k}" for k in {**first, **second}}
    assert all(
        items[f"s3://{s3_bucket}/{k}"]["hash"] == blake3.blake3(v).hexdigest()
        for k, v in {**first, **second}.items()
    )
    assert len(listing(git_repo, "corpus.cas", "HEAD~1")) == 6
    table = versions.read_table(Repo.discover(git_repo), "corpus.cas")
    assert all(len(m) == 32 for m in table.column("marker").to_pylist())  # S3 ETags (MD5)
    cas(git_repo, "manifest", "verify", "corpus.cas", env=env)

    upload(s3_server, s3_bucket, {"web/2026-11/f1.jsonl.zst": b"tampered"})
    out = cas(git_repo, "manifest", "verify", "corpus.cas", env=env, code=1).stdout
    assert f"s3://{s3_bucket}/web/2026-11/f1.jsonl.zst: size changed" in out
    err = cas(git_repo, "manifest", "append", "corpus.cas", env=env, code=5).stderr
    assert "2026-11/f1.jsonl.zst (changed)" in err

    no_keys = {**env, "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "",
               "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
               "AWS_CONFIG_FILE": "/nonexistent"}  # fmt: skip
    err = cas(git_repo, "manifest", "verify", "corpus.cas", env=no_keys, code=7).stderr
    assert "no credentials" in err and "AWS_ACCESS_KEY_ID" in err
    wrong = {**env, "AWS_SECRET_ACCESS_KEY": "wrong"}
    err = cas(git_repo, "manifest", "create", "c2.cas", url, env=wrong, code=7).stderr
    assert "permission denied" in err and "credentials" in err
    err = cas(git_repo, "manifest", "create", "c2.cas", "s3://no-such-bucket-x/web", env=env,
              code=7).stderr  # fmt: skip
    assert "bucket does not exist" in err
    assert len(err.strip().splitlines()) == 1


# -- the versioned-segment format at scale, and merges ---------------------------------------
def synthetic(count: int, prefix: str, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    paths = pa.array([f"{prefix}/{i:09d}.jsonl.zst" for i in range(count)], pa.string())
    hashes = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(32), count, [None, pa.py_buffer(rng.bytes(32 * count))]
    )
    sizes = pa.array(rng.integers(1, 1 << 30, count, dtype=np.uint64))
    return pa.table({"path": paths, "size": sizes, "hash": hashes,
                     "marker": pa.array([""] * count, pa.string())})  # fmt: skip


@pytest.fixture
def repo(git_repo: Path) -> Repo:
    return Repo.init(git_repo)


def test_million_entry_manifest(repo: Repo) -> None:
    big = versions.append(repo, None, synthetic(1_000_000, "2026-11", 1), base="file:///c")
    grown = versions.append(repo, big, synthetic(10_000, "2026-12", 2))
    version = versions.load_version(repo, grown)
    assert (version.files, len(version.segments), version.parent) == (1_010_000, 2, big)
    rows, last = 0, ""
    for batch in versions.dataset_of(repo, version).to_batches(columns=["path"]):
        rows += batch.num_rows
        last = max(last, batch.column(0)[-1].as_py())
    assert rows == 1_010_000 and last == "2026-12/000009999.jsonl.zst"
    clash = synthetic(3, "2026-11", 3)  # the same paths as three recorded entries
    with pytest.raises(ConflictError, match=r"2026-11/000000000\.jsonl\.zst"):
        versions.append(repo, grown, clash)


def test_merge_versions_is_the_union(repo: Repo) -> None:
    base = versions.append(repo, None, synthetic(100, "base", 1), base="s3://b/c")
    ours = versions.append(repo, base, synthetic(10, "ours", 2))
    theirs = versions.append(repo, base, synthetic(20, "theirs", 3))
    merged = versions.merge_versions(repo, base, ours, theirs)
    v = versions.load_version(repo, merged)
    assert v.files == 130 and v.parent == ours
    assert v.segments == (
        *versions.load_version(repo, ours).segments,
        versions.load_version(repo, theirs).segments[-1],
    )
    paths = versions.dataset_of(repo, v).to_table(columns=["path"]).column("path").to_pylist()
    assert len(set(paths)) == 130 and {p.split("/")[0] for p in paths} == {"base", "ours", "theirs"}
    assert versions.merge_versions(repo, base, ours, base) == ours
    assert versions.merge_versions(repo, base, base, theirs) == theirs
    both = versions.append(repo, base, synthetic(5, "ours", 2))  # ours/000000000... again
    with pytest.raises(ConflictError, match="both sides added"):
        versions.merge_versions(repo, base, ours, both)


def test_tampered_segment_is_refused(repo: Repo) -> None:
    vid = versions.append(repo, None, synthetic(10, "x", 1), base="file:///c")
    (segment,) = versions.load_version(repo, vid).segments
    path = repo.local.path(versions.segment_key(segment))
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(bytes(data))
    versions._verified.clear()
    with pytest.raises(Exception, match="is corrupt"):
        versions.dataset_of(repo, versions.load_version(repo, vid))


# -- cas add --append-only -------------------------------------------------------------------
def test_add_append_only_round_trip(git_repo: Path) -> None:
    cas(git_repo, "init")
    logs = git_repo / "logs"
    for i in range(5):
        write(logs / f"day{i}.log", os.urandom(1000 * i))
    write(logs / "big" / "model.bin", os.urandom(600_000))
    assert "+6 appended" in cas(git_repo, "add", "--append-only", "logs/").stdout
    assert (git_repo / "logs.cas").read_text().splitlines()[1] == "kind append"
    git(git_repo, "commit", "-qm", "logs v1")
    assert cas(git_repo, "status").stdout.strip() == "logs.cas: unchanged"

    write(logs / "day5.log", b"new day")
    assert "+1 appended" in cas(git_repo, "add", "--append-only", "logs").stdout
    diff = git(git_repo, "diff", "--cached", "-U0", "logs.cas").splitlines()
    changed = [line for line in diff if line[:1] in ("+", "-") and line[:3] not in ("+++", "---")]
    assert [line.split()[0] for line in changed] == ["-version", "+version"]
    git(git_repo, "commit", "-qam", "logs v2")
    assert "+0 appended" in cas(git_repo, "add", "--append-only", "logs").stdout
    v2 = tree(logs)
    assert len(listing(git_repo, "logs.cas")) == 7
    assert len(listing(git_repo, "logs.cas", "HEAD~1")) == 6

    write(logs / "day2.log", b"rewritten")
    (logs / "day3.log").unlink()
    err = cas(git_repo, "add", "--append-only", "logs", code=5).stderr
    assert "logs/day2.log (changed)" in err and "logs/day3.log (deleted)" in err
    status = cas(git_repo, "status").stdout
    assert "logs.cas: modified (1 modified, 0 added, 1 deleted)" in status

    shutil.rmtree(logs)
    cas(git_repo, "checkout")
    assert tree(logs) == v2
    assert cas(git_repo, "status").stdout.strip() == "logs.cas: unchanged"
    os.utime(logs / "day1.log")  # a touch is not a change
    assert "+0 appended" in cas(git_repo, "add", "--append-only", "logs").stdout
    cas(git_repo, "checkout", "--rev", "HEAD~1", "logs.cas")
    assert set(tree(logs)) == set(v2) - {"day5.log"}
    log = json.loads(cas(git_repo, "log", "logs.cas", "--json").stdout)
    assert [e["files_added"] for e in log] == [6]
    cas(git_repo, "add", "logs")  # plain add turns it back into a dir pointer
    err = cas(git_repo, "add", "--append-only", "logs", code=2).stderr
    assert "is a 'dir' pointer" in err


def test_a_small_sample_still_checks_a_file(git_repo: Path, tmp_path: Path) -> None:
    """``--sample 0.01`` of a 5-file corpus keeps no row by chance: at least one file is still
    checked, the output says how many, and a drifted sole file is found."""
    corpus = tmp_path / "corpus"
    make_shard(corpus, "s", 4, seed=9)  # 4 parts + README.txt
    cas(git_repo, "init")
    cas(git_repo, "manifest", "create", "corpus.cas", str(corpus))
    for seed in ("0", "1", "2"):
        out = cas(git_repo, "manifest", "verify", "corpus.cas", "--sample", "0.01", "--seed", seed)
        assert "corpus.cas: checked 1 files: ok" in out.stdout
    for f in corpus.rglob("*"):
        if f.is_file():
            f.write_bytes(f.read_bytes() + b"drift")
    out = cas(git_repo, "manifest", "verify", "corpus.cas", "--sample", "0.01", code=1)
    assert "checked 1 files: 1 drifted" in out.stdout


@pytest.mark.parametrize("kind", ["append", "corpus"])
def test_a_versioned_pointer_naming_another_object_kind_is_refused(
    git_repo: Path, tmp_path: Path, kind: str
) -> None:
    """A ``kind append`` (or ``kind corpus``) pointer naming a dir manifest, or a version of
    the other kind, is refused in one line by every command that reads it (``checkout`` and
    ``status`` leave a corpus alone: its bytes are not local)."""
    corpus = tmp_path / "corpus"
    make_shard(corpus, "s", 2, seed=2)
    cas(git_repo, "init")
    write(git_repo / "data/a.txt", "a")
    cas(git_repo, "add", "data")
    cas(git_repo, "manifest", "create", "corpus.cas", str(corpus))
    write(git_repo / "logs/l.txt", "l")
    cas(git_repo, "add", "--append-only", "logs")
    git(git_repo, "commit", "-qm", "three kinds")
    ids = {
        name: (git_repo / f"{name}.cas").read_text().split("\n")[2].split()[1]
        for name in ("data", "corpus", "logs")
    }
    other = "corpus" if kind == "append" else "logs"
    victim = "logs" if kind == "append" else "corpus"
    for wrong, what in ((ids["data"], "names manifest"), (ids[other], "version")):
        write(git_repo / f"{victim}.cas", f"cas-pointer 1\nkind {kind}\nversion {wrong}\n")
        for command in ("ls", "log", *(["checkout", "status"] if kind == "append" else [])):
            err = subprocess.run(
                [*CAS, command, f"{victim}.cas"], cwd=git_repo, capture_output=True, text=True
            )
            assert err.returncode == 2, (command, err.stdout, err.stderr)
            line = (err.stderr or err.stdout).strip()
            assert len(line.splitlines()) == 1 and what in line and f"kind {kind}" in line, line
