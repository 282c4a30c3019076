"""Versioned pointers (``kind append``, ``kind corpus``) through a remote, and ``cas fsck`` on
their objects: real git, the real ``cas`` CLI, a file:// folder and a real S3 server."""

from __future__ import annotations

import json
import os
from pathlib import Path

from cas import remote, versions
from cas.repo import Repo
from tests.conftest import cas, git, tree, write
from tests.test_remote import clone


def append_only_repo(root: Path, url: str, env: dict[str, str]) -> dict[str, bytes]:
    """``logs/`` added append-only in two commits (two versions, two segments); returns the
    second commit's files."""
    cas(root, "init")
    cas(root, "remote", "add", "origin", url, env=env)
    logs = root / "logs"
    for i in range(4):
        write(logs / f"day{i}.log", os.urandom(20_000 * i))
    write(logs / "big" / "model.bin", os.urandom(300_000))
    cas(root, "add", "--append-only", "logs/")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "logs v1")
    write(logs / "day4.log", os.urandom(70_000))
    assert "+1 appended" in cas(root, "add", "--append-only", "logs").stdout
    git(root, "commit", "-qam", "logs v2")
    return tree(logs)


def version_of(root: Path, pointer: str) -> versions.Version:
    repo = Repo.discover(root)
    return versions.load_version(repo, repo.read_pointer(repo.target(pointer, root)).manifest)


def test_append_only_push_clone_pull(
    git_repo: Path,
    tmp_path: Path,
    remote_url: tuple[str, dict[str, str]],
) -> None:
    url, env = remote_url
    files = append_only_repo(git_repo, url, env)
    pushed = json.loads(cas(git_repo, "push", "--json", env=env).stdout)
    assert (pushed["versions"], pushed["segments"], pushed["manifests"]) == (2, 2, 0)
    assert pushed["packs"] >= 1
    again = json.loads(cas(git_repo, "push", "--json", env=env).stdout)
    assert (again["versions"], again["segments"], again["packs"], again["bytes"]) == (0, 0, 0, 0)
    assert again["requests"] == 3  # the layout marker, the version and segment listings

    other = clone(git_repo, tmp_path / "clone")
    assert "not fetched" in cas(other, "status", "--remote", env=env).stdout
    fetched = json.loads(cas(other, "pull", "--json", env=env).stdout)["fetch"]
    assert (fetched["versions"], fetched["segments"]) == (2, 2)
    assert tree(other / "logs") == files
    assert cas(other, "status").stdout.strip() == "logs.cas: unchanged"
    log = json.loads(cas(other, "log", "logs.cas", "--json").stdout)
    assert [e["files_added"] for e in log] == [1, 5]  # the whole chain resolves
    listed = json.loads(cas(other, "ls", "logs.cas", "--json").stdout)
    assert {item["path"] for item in listed} == {f"logs/{p}" for p in files}
    assert len(json.loads(cas(other, "ls", "logs.cas", "--rev", "HEAD~1", "--json").stdout)) == 5
    cas(other, "checkout", "--rev", "HEAD~1", "logs.cas")
    assert set(tree(other / "logs")) == set(files) - {"day4.log"}
    assert "ok" in cas(other, "fsck").stdout
    assert ": ok" in cas(other, "verify", "--remote", "--rev", "HEAD", env=env).stdout
    status = cas(other, "status", "--remote", env=env).stdout
    assert "logs.cas: pushed; all chunks local" in status


def test_corpus_pointer_resolves_in_a_clone(git_repo: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    for i in range(3):
        write(corpus / "2026-11" / f"part-{i}.jsonl", os.urandom(1000 + i))
    cas(git_repo, "init")
    cas(git_repo, "remote", "add", "origin", (tmp_path / "remote").as_uri())
    cas(git_repo, "manifest", "create", "corpus.cas", str(corpus))
    git(git_repo, "add", "-A")
    git(git_repo, "commit", "-qm", "corpus")
    pushed = json.loads(cas(git_repo, "push", "--json").stdout)
    assert (pushed["versions"], pushed["segments"], pushed["packs"]) == (1, 1, 0)  # no chunks

    other = clone(git_repo, tmp_path / "clone")
    cas(other, "ls", "corpus.cas", code=3)  # the version is not local yet
    cas(other, "fetch")
    ours = json.loads(cas(git_repo, "ls", "corpus.cas", "--json").stdout)
    assert json.loads(cas(other, "ls", "corpus.cas", "--json").stdout) == ours
    assert len(ours) == 3


def test_verify_names_a_segment_deleted_from_the_remote(git_repo: Path, tmp_path: Path) -> None:
    append_only_repo(git_repo, (tmp_path / "remote").as_uri(), {})
    cas(git_repo, "push")
    assert ": ok" in cas(git_repo, "verify", "--remote").stdout
    store = remote.resolve(Repo.discover(git_repo)).open()
    victim = versions.segment_key(version_of(git_repo, "logs.cas").segments[-1])
    store.delete(victim)
    proc = cas(git_repo, "verify", "--remote", "--rev", "HEAD", code=1)
    assert f"missing: {victim} (needed by HEAD:logs.cas)" in proc.stdout
    report = json.loads(cas(git_repo, "verify", "--remote", "--json", code=1).stdout)
    assert [p["object"] for p in report["problems"]] == [victim]


def test_corrupt_remote_segment_is_refused_and_not_stored(git_repo: Path, tmp_path: Path) -> None:
    append_only_repo(git_repo, (tmp_path / "remote").as_uri(), {})
    cas(git_repo, "push")
    segment = version_of(git_repo, "logs.cas").segments[0]
    victim = tmp_path / "remote" / versions.segment_key(segment)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.chmod(0o644)
    victim.write_bytes(bytes(data))
    other = clone(git_repo, tmp_path / "clone")
    proc = cas(other, "pull", code=4)
    assert segment in proc.stderr and "corrupt" in proc.stderr
    assert not (other / ".cas/store" / versions.segment_key(segment)).exists()
    assert "ok" in cas(other, "fsck").stdout
    proc = cas(git_repo, "verify", "--remote", "--deep", code=1)
    line = f"corrupt: {versions.segment_key(segment)} on remote 'origin'"
    assert line in proc.stdout and "(needed by logs.cas)" in proc.stdout


def test_fsck_finds_a_corrupt_segment_and_version(git_repo: Path) -> None:
    cas(git_repo, "init")
    write(git_repo / "logs" / "a.log", os.urandom(5000))
    cas(git_repo, "add", "--append-only", "logs")
    assert "ok" in cas(git_repo, "fsck").stdout
    repo = Repo.discover(git_repo)
    version_id = repo.read_pointer(repo.target("logs.cas", git_repo)).manifest
    (segment,) = versions.load_version(repo, version_id).segments
    for key in (versions.segment_key(segment), versions.version_key(version_id)):
        path = repo.local.path(key)
        path.chmod(0o644)
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    proc = cas(git_repo, "fsck", code=1)
    assert f"segment {segment} is corrupt" in proc.stdout
    assert f"version {version_id} is corrupt" in proc.stdout
    report = json.loads(cas(git_repo, "fsck", "--json", code=1).stdout)
    assert (report["versions"], report["segments"], len(report["corrupt"])) == (1, 1, 2)


def test_wrong_version_bytes_on_the_remote_are_refused(git_repo: Path, tmp_path: Path) -> None:
    append_only_repo(git_repo, (tmp_path / "remote").as_uri(), {})
    cas(git_repo, "push")
    repo = Repo.discover(git_repo)
    version_id = repo.read_pointer(repo.target("logs.cas", git_repo)).manifest
    victim = tmp_path / "remote" / versions.version_key(version_id)
    victim.chmod(0o644)
    victim.write_bytes(victim.read_bytes().replace(b'"files":', b'"files": '))
    other = clone(git_repo, tmp_path / "clone")
    proc = cas(other, "fetch", code=4)
    assert f"version {version_id} is corrupt" in proc.stderr
    assert not any((other / ".cas/store/versions").rglob("*"))
