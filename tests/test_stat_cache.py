"""The stat cache is only a cache: with it or without it, add and status give the same answer.

A chmod changes neither size nor mtime, and ``os.utime`` can put an old mtime back on new bytes of
the same size; the cache must see both (issue 14, item 6). The rule-based test drives random
sequences of such edits through the real Repo API (real files, real git), comparing after each
step an add and a status that use the cache with ones that start from an empty cache.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from cas.repo import Repo
from cas.state import StatCache
from tests.conftest import cas, git, write

NAMES = ["a", "b", "sub/c", "sub/d"]
OLD_NS = [1_600_000_000_000_000_000, 1_600_000_000_123_456_789]  # coarse and fine timestamps
# longer than the stat cache's 50 ms racy margin, so the next add may trust what it sees
SETTLE_S = 0.06


def test_chmod_is_recorded_and_seen_by_status(git_repo: Path) -> None:
    cas(git_repo, "init")
    write(git_repo / "data/a.txt", "a")
    script = write(git_repo / "data/b.txt", "b")
    cas(git_repo, "add", "data")
    time.sleep(SETTLE_S)
    cas(git_repo, "add", "data")  # the cache now vouches for both files
    script.chmod(0o755)
    assert "1 modified" in cas(git_repo, "status").stdout
    cas(git_repo, "add", "data")
    rows = {r["path"]: r for r in json.loads(cas(git_repo, "ls", "data", "--json").stdout)}
    assert rows["data/b.txt"]["executable"] is True
    assert rows["data/a.txt"]["executable"] is False
    pointer = (git_repo / "data.cas").read_bytes()
    shutil.rmtree(git_repo / ".cas/state")
    cas(git_repo, "add", "data")
    assert (git_repo / "data.cas").read_bytes() == pointer


def test_new_bytes_under_a_restored_mtime_are_seen(git_repo: Path) -> None:
    cas(git_repo, "init")
    f = write(git_repo / "data/a.bin", b"x" * 100)
    os.utime(f, ns=(OLD_NS[1], OLD_NS[1]))
    cas(git_repo, "add", "data")
    time.sleep(SETTLE_S)
    cas(git_repo, "add", "data")
    with open(f, "r+b") as out:  # same inode, same size
        out.write(b"y" * 100)
    os.utime(f, ns=(OLD_NS[1], OLD_NS[1]))
    assert "1 modified" in cas(git_repo, "status").stdout


def test_an_old_cache_version_is_ignored(git_repo: Path) -> None:
    cas(git_repo, "init")
    write(git_repo / "data/a.txt", "a")
    cas(git_repo, "add", "data")
    (cache,) = (git_repo / ".cas/state").iterdir()
    head, _, rest = cache.read_bytes().partition(b"\n")
    meta = json.loads(head)
    meta["version"] = 1
    cache.write_bytes(json.dumps(meta).encode() + b"\n" + rest)
    assert Repo.discover(git_repo).stat_cache.load("data") is None


def _status(repo: Repo) -> list[tuple[str, list[tuple[str, str]]]]:
    return [(s.state, [(c.path, c.change) for c in s.changes]) for s in repo.status(["data"])]


@settings(
    max_examples=8,
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
class StatCacheMachine(RuleBasedStateMachine):
    """Random writes, appends, truncations, chmods, renames, deletions, touches and mtime
    restores; after each add, the manifest the cache helped build must be the one built from
    nothing, and status must agree with and without the cache at every step."""

    @initialize()
    def make_repo(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="cas-statcache-"))
        self.root = self.tmp / "proj"
        self.root.mkdir()
        subprocess.run(["git", "init", "-q", "-b", "main"], cwd=self.root, check=True)
        git(self.root, "config", "user.email", "t@example.com")
        git(self.root, "config", "user.name", "T")
        self.repo = Repo.init(self.root)
        write(self.data("a"), b"first")
        os.chdir(self.root)  # Repo.add names targets relative to the current directory
        self.repo.add(["data"])

    def teardown(self) -> None:
        if hasattr(self, "repo"):
            self.repo.close()
            shutil.rmtree(self.tmp)

    def data(self, name: str) -> Path:
        return self.root / "data" / name

    def existing(self) -> list[str]:
        return [n for n in NAMES if self.data(n).is_file()]

    @rule(name=st.sampled_from(NAMES), content=st.binary(max_size=40))
    def write_file(self, name: str, content: bytes) -> None:
        write(self.data(name), content)

    @rule(name=st.sampled_from(NAMES), more=st.binary(min_size=1, max_size=10))
    def append(self, name: str, more: bytes) -> None:
        if self.data(name).is_file():
            with open(self.data(name), "ab") as f:
                f.write(more)

    @rule(name=st.sampled_from(NAMES), size=st.integers(0, 8))
    def truncate(self, name: str, size: int) -> None:
        if self.data(name).is_file():
            os.truncate(self.data(name), size)

    @rule(name=st.sampled_from(NAMES), executable=st.booleans())
    def chmod(self, name: str, executable: bool) -> None:
        if self.data(name).is_file():
            self.data(name).chmod(0o755 if executable else 0o644)

    @rule(src=st.sampled_from(NAMES), dst=st.sampled_from(NAMES))
    def rename(self, src: str, dst: str) -> None:
        if self.data(src).is_file():
            self.data(dst).parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.data(src), self.data(dst))

    @rule(name=st.sampled_from(NAMES))
    def delete(self, name: str) -> None:
        self.data(name).unlink(missing_ok=True)

    @rule(name=st.sampled_from(NAMES), when=st.sampled_from(OLD_NS))
    def set_mtime(self, name: str, when: int) -> None:
        if self.data(name).is_file():
            os.utime(self.data(name), ns=(when, when))

    @rule(name=st.sampled_from(NAMES), restore=st.booleans())
    def same_size_rewrite(self, name: str, restore: bool) -> None:
        """New bytes of the same size in the same inode, the old mtime put back if asked."""
        path = self.data(name)
        if not path.is_file():
            return
        before = path.stat()
        old = path.read_bytes()
        with open(path, "r+b") as f:
            f.write(bytes(b ^ 0x5A for b in old))
        if restore:
            os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))

    @rule(wait=st.booleans())
    def add(self, wait: bool) -> None:
        if wait:
            time.sleep(SETTLE_S)  # let the cache record what it saw
        (with_cache,) = self.repo.add(["data"])
        assert _status(self.repo) == [("unchanged", [])]
        fresh = Repo.discover(self.root)
        cache_dir = Path(tempfile.mkdtemp(prefix="cas-nocache-"))
        try:
            fresh.stat_cache = StatCache(cache_dir)
            (without,) = fresh.add(["data"])
        finally:
            fresh.close()
            shutil.rmtree(cache_dir)
        assert with_cache.manifest == without.manifest

    @invariant()
    def status_agrees_without_the_cache(self) -> None:
        if not hasattr(self, "repo"):
            return
        cached = _status(self.repo)
        fresh = Repo.discover(self.root)
        cache_dir = Path(tempfile.mkdtemp(prefix="cas-nocache-"))
        try:
            fresh.stat_cache = StatCache(cache_dir)
            assert _status(fresh) == cached
        finally:
            fresh.close()
            shutil.rmtree(cache_dir)


def test_deleting_the_stat_cache_changes_no_result(monkeypatch) -> None:
    monkeypatch.chdir(tempfile.gettempdir())  # the machine chdirs into each repository
    StatCacheMachine.TestCase().runTest()
