"""Two cas processes at once, for real: the real CLI in two interpreters, with a file barrier
that holds each one inside its operation until the other has got there too (so the overlap
is certain, not hoped for), and seeded random small delays at the points where the processes
touch shared state (packs, manifests, pointers, the stat cache, the Git index, the remote).

What must hold afterwards: both commands succeed (one may wait for the repository lock, and
then says so on stderr), the store verifies, every pointer names a manifest whose files are
exactly the data, Git's index stages what the worktree holds, and no temp file is left.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cas import remote
from cas.ops import transfer
from cas.repo import Repo
from tests.conftest import git, tree, write
from tests.test_faults import (
    PROJECT_ROOT,
    assert_pointer_matches,
    assert_store_sound,
    new_repo,
    temp_leftovers,
)

BARRIER_SECONDS = 60.0
WAITING = "waiting for another cas process"


# -- the hook each racing process installs -----------------------------------------------------
def race_from_env() -> None:
    """Hook for a CLI subprocess, configured by ``CAS_RACE`` (JSON):

    - ``dir``, ``name``, ``peers``: a control folder shared by the racers, this one's name and
      everyone's (itself included);
    - ``points``: ``[["module:attr.path", barrier, max_delay], ...]``: functions to wrap. Each
      call first sleeps a random time up to ``max_delay`` (seeded by ``seed``); a call to a
      ``barrier`` point waits until this racer has created ``at-NAME`` and seen every peer's
      (so nothing after any barrier point runs before every racer has reached one);
    - ``contend``: the racer that takes the repository lock first holds it until a peer's
      stderr (``stderr-PEER``) says it is waiting, so the lock is contended for certain.
    """
    spec = json.loads(os.environ["CAS_RACE"])
    control, me, peers = Path(spec["dir"]), spec["name"], spec["peers"]
    rng = random.Random(spec["seed"])
    guard = threading.Lock()
    reached, passed = threading.Event(), threading.Event()

    def barrier() -> None:
        """The first call (on any thread) meets the peers; every call waits until it has."""
        with guard:
            first = not reached.is_set()
            reached.set()
        if first:
            (control / f"at-{me}").touch()
            wait_until(lambda: all((control / f"at-{p}").exists() for p in peers), "the peers")
            passed.set()
        wait_until(passed.is_set, "the barrier")

    def wrapped(real: Callable[..., Any], at_barrier: bool, max_delay: float) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            if at_barrier:
                barrier()
            with guard:
                delay = rng.uniform(0, max_delay)
            time.sleep(delay)
            return real(*args, **kwargs)

        return call

    for target, at_barrier, max_delay in spec["points"]:
        module, path = target.split(":")
        owner: Any = importlib.import_module(module)
        *parents, name = path.split(".")
        for part in parents:
            owner = getattr(owner, part)
        setattr(owner, name, wrapped(getattr(owner, name), at_barrier, max_delay))

    if spec.get("contend"):
        real_lock = Repo.lock

        @contextlib.contextmanager
        def lock(self: Repo, quiet: bool = False) -> Iterator[None]:
            with real_lock(self, quiet):
                try:
                    os.close(os.open(control / "first-locker", os.O_CREAT | os.O_EXCL))
                except FileExistsError:
                    pass
                else:
                    others = [control / f"stderr-{p}" for p in peers if p != me]
                    wait_until(lambda: any(WAITING in f.read_text() for f in others), "a waiter")
                yield

        Repo.lock = lock  # type: ignore[method-assign]


def wait_until(ready: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + BARRIER_SECONDS
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"race hook: no {what} after {BARRIER_SECONDS} s")
        time.sleep(0.01)


# -- running racers ----------------------------------------------------------------------------
class Racer:
    """One ``cas`` process with the race hook; its output goes to files in the control folder
    (the contend protocol reads a peer's stderr while it runs)."""

    def __init__(
        self, cwd: Path, control: Path, name: str, args: list[str], spec: dict[str, Any],
        env: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        self.name, self.args = name, args
        self.stdout_path = control / f"stdout-{name}"
        self.stderr_path = control / f"stderr-{name}"
        boot = (
            f"import sys; sys.path.insert(0, {str(PROJECT_ROOT)!r}); sys.argv[0] = 'cas'\n"
            "from tests.test_concurrency import race_from_env; race_from_env()\n"
            "from cas.cli.main import run; run()"
        )
        race = json.dumps({**spec, "dir": str(control), "name": name})
        with open(self.stdout_path, "w") as out, open(self.stderr_path, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", boot, *args],
                cwd=cwd,
                stdout=out,
                stderr=err,
                env={**os.environ, **(env or {}), "CAS_RACE": race},
            )

    def wait(self) -> tuple[int, str, str]:
        code = self.proc.wait(timeout=180)
        return code, self.stdout_path.read_text(), self.stderr_path.read_text()


def race(
    control: Path, runs: list[tuple[Path, list[str]]], points: list[list[Any]], seed: int,
    contend: bool = False, env: dict[str, str] | None = None,
) -> list[tuple[int, str, str]]:  # fmt: skip
    """Start every run at once (named A, B, ...), wait for all; assert each reached the
    barrier, i.e. all were inside their operations at the same time."""
    control.mkdir(parents=True)
    names = [chr(ord("A") + i) for i in range(len(runs))]
    spec = {"peers": names, "points": points, "seed": seed, "contend": contend}
    racers = [
        Racer(cwd, control, name, args, {**spec, "seed": seed * 100 + i}, env)
        for i, (name, (cwd, args)) in enumerate(zip(names, runs))
    ]
    results = [r.wait() for r in racers]
    for racer, (code, _out, err) in zip(racers, results):
        assert code == 0, f"{racer.name}: cas {' '.join(racer.args)} -> {code}\n{err}"
    if any(point[1] for point in points):
        assert all((control / f"at-{n}").exists() for n in names), "the barrier was not reached"
    return results


ADD_POINTS = [
    ["cas.objects:PackWriter.add", True, 0.002],
    ["cas.store.local:LocalStore.put_file", False, 0.02],
    ["cas.state:StatCache.save", False, 0.02],
    ["cas.repo:Repo.write_pointer", False, 0.02],
    ["cas.gitio:GitRepo.stage", False, 0.02],
]


def make_target(root: Path, name: str, rng: random.Random, files: int = 12) -> None:
    """Fresh content for ``name/``: small files, one past 1 MiB (the hashing pool)."""
    for i in range(files):
        write(root / name / f"f{i:02d}.bin", rng.randbytes(rng.randint(1, 40_000)))
    write(root / name / "big.bin", rng.randbytes(1_200_000 + rng.randint(0, 99_999)))


def assert_repo_consistent(root: Path, targets: list[str]) -> None:
    """The store verifies; each pointer names exactly its data and is what Git's index stages;
    each target is git-ignored exactly once; no temp file is left."""
    assert_store_sound(root, allow_dead_temps=True)
    ignored = (root / ".gitignore").read_text().splitlines()
    for target in targets:
        assert_pointer_matches(root, target)
        staged = git(root, "show", f":{target}.cas")
        assert staged == (root / f"{target}.cas").read_text(), target
        assert ignored.count(f"/{target}") == 1, ignored
    assert temp_leftovers(root) == []


# -- two adds ----------------------------------------------------------------------------------
def test_two_adds_of_one_target_one_waits_for_the_lock(tmp_path: Path) -> None:
    """Both processes hash and store the same folder at once (same chunks into separate temp
    packs, the same manifest); then the one that takes the repository lock first holds it
    until the other says it is waiting. Both succeed; the pointer is exact."""
    root = new_repo(tmp_path / "proj")
    make_target(root, "data", random.Random(1))
    results = race(tmp_path / "control", [(root, ["add", "data"])] * 2, ADD_POINTS, seed=1,
                   contend=True)  # fmt: skip
    waited = [err for _code, _out, err in results if WAITING in err]
    assert len(waited) == 1, [err for _c, _o, err in results]
    assert [line for line in waited[0].splitlines() if line] == [waited[0].strip()]  # one line
    assert_repo_consistent(root, ["data"])
    outs = [out for _code, out, _err in results]
    assert outs[0].split(",")[0] == outs[1].split(",")[0] == "data.cas: 13 files"


@pytest.mark.parametrize("seed", [1, 2])
def test_two_adds_of_different_targets(tmp_path: Path, seed: int) -> None:
    """Rounds of two adds to different targets in one repository, each round with new
    content and its own random delays: the store, both pointers, the .gitignore both append
    to and the Git index stay consistent, and a checkout from the store alone is exact."""
    rng = random.Random(seed)
    root = new_repo(tmp_path / "proj")
    for name in ("left", "right"):
        make_target(root, name, rng)
    for n in range(2):
        if n:  # the second round re-adds edited data: stat cache, dedup, pointer updates
            for name in ("left", "right"):
                make_target(root, name, rng, files=6)
        runs = [(root, ["add", "left"]), (root, ["add", "right"])]
        race(tmp_path / f"control-{n}", runs, ADD_POINTS, seed=seed * 10 + n)
        assert_repo_consistent(root, ["left", "right"])
    expected = {name: tree(root / name) for name in ("left", "right")}
    git(root, "commit", "-qm", "both")
    for name in ("left", "right"):
        for path in (root / name).iterdir():
            path.unlink()
    Repo.discover(root).checkout()
    assert {name: tree(root / name) for name in ("left", "right")} == expected


# -- checkout while another process adds -------------------------------------------------------
def test_checkout_while_another_process_adds(tmp_path: Path) -> None:
    """One process checks out an older version of ``old`` (writing its files, then its
    pointer and the Git index under the lock) while another adds new content to ``new``; each
    is held inside its operation until the other is inside its own."""
    rng = random.Random(4)
    root = new_repo(tmp_path / "proj")
    make_target(root, "old", rng)
    make_target(root, "new", rng)
    Repo.discover(root).add([root / "old", root / "new"])
    git(root, "commit", "-qm", "v1")
    v1 = tree(root / "old")
    v1_pointer = (root / "old.cas").read_text()
    make_target(root, "old", rng)
    Repo.discover(root).add([root / "old"])
    git(root, "commit", "-qm", "v2")
    make_target(root, "new", rng)  # not added yet: the racing add stores it
    expected_new = tree(root / "new")
    points = [
        *ADD_POINTS,
        ["cas.ops.checkout:_write_file", True, 0.005],
    ]
    runs = [(root, ["checkout", "--rev", "HEAD~1", "old.cas"]), (root, ["add", "new"])]
    race(tmp_path / "control", runs, points, seed=4)
    assert tree(root / "old") == v1 and (root / "old.cas").read_text() == v1_pointer
    assert tree(root / "new") == expected_new
    assert_repo_consistent(root, ["old", "new"])
    assert [s.state for s in Repo.discover(root).status()] == ["unchanged", "unchanged"]


# -- two clones pushing to one remote ----------------------------------------------------------
def test_two_clones_push_to_one_remote_at_once(
    tmp_path: Path, remote_url: tuple[str, dict[str, str]]
) -> None:
    """Two clones each add ``shared`` (the same bytes, so the same packs and manifest) and a
    folder of their own, then push at the same moment: no upload starts before both have
    listed the remote, so both upload the shared objects, concurrently. Both pushes succeed,
    verify passes from both, and a third clone pulls each one's data exactly."""
    url, env = remote_url
    seed_repo = new_repo(tmp_path / "seed")
    remote.add(Repo.discover(seed_repo), "origin", url)
    git(seed_repo, "commit", "-qm", "remote")
    bare = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(seed_repo), str(bare))
    shared_rng = random.Random(7)
    make_target(seed_repo, "shared", shared_rng)
    shared = tree(seed_repo / "shared")

    clones: dict[str, Path] = {}
    for i, name in enumerate(("b", "c")):
        clone = tmp_path / name
        git(tmp_path, "clone", "-q", str(bare), str(clone))
        git(clone, "config", "user.email", "test@example.com")
        git(clone, "config", "user.name", "Test")
        for rel, data in shared.items():
            write(clone / "shared" / rel, data)
        make_target(clone, f"own_{name}", random.Random(10 + i))
        Repo.discover(clone).add([clone / "shared", clone / f"own_{name}"])
        git(clone, "commit", "-qm", f"data of {name}")
        clones[name] = clone
    points = [
        ["cas.store.fsspec:FsspecStore.put_reader", True, 0.03],  # packs
        ["cas.store.fsspec:FsspecStore.put_file", True, 0.03],  # manifests
        ["cas.store.fsspec:FsspecStore.put_bytes", True, 0.03],
    ]
    runs = [(clones[n], ["push", "--jobs", "2", "--json"]) for n in ("b", "c")]
    results = race(tmp_path / "control", runs, points, seed=7, env=env)
    for (_code, out, _err), clone in zip(results, clones.values()):
        # each listed an empty remote, so each sent every pack: the shared ones twice at once
        pushed = json.loads(out)
        assert pushed["packs"] == len(Repo.discover(clone).objects.pack_ids()), pushed
        assert pushed["manifests"] == 2, pushed

    for name, clone in clones.items():
        assert transfer.verify(Repo.discover(clone)).ok, name
        git(clone, "push", "-q", "origin", f"HEAD:{name}")
    third = tmp_path / "third"
    git(tmp_path, "clone", "-q", str(bare), str(third))
    for name, clone in clones.items():
        git(third, "checkout", "-q", name)
        transfer.pull(Repo.discover(third))
        for target in ("shared", f"own_{name}"):
            assert tree(third / target) == tree(clone / target), (name, target)
    assert_store_sound(third)
