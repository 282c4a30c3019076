"""kill -9 at random moments of cas commands: after each kill the repository must still be sound.

A seeded loop for CI. Each trial copies a prepared project (a real Git repository, a real local
store, a real ``file://`` remote, a real SQLite database), starts one cas command as a subprocess,
SIGKILLs it after a random delay, and checks what docs/architecture.md ("Invariants") promises
for a crash:

* ``cas fsck`` is clean: nothing partial is under a final name in the store;
* every data file is its old or its new version, never a mix or a truncation (files are built
  beside their target and renamed into place);
* rerunning the same command completes and leaves exactly the new version (push: ``cas verify
  --remote --deep`` passes; gc: a dry run finds nothing left to collect, and the data checks
  out from what gc kept; fetch-repair: fsck is clean and the data checks out from the store).

``gc`` starts from a store with packs to repack (the template checks it);
``fetch-repair`` (``cas fetch --repair``) from a clone holding a damaged pack the remote does not
hold under its id, so the repair fetches the damaged chunk, copies the sound ones into a new pack
and deletes the damaged one: until its rerun, fsck may report that pack and nothing else.

Temp files still there after the rerun are failures: the architecture says the next writer
removes the temp files of dead processes. The ``tmp/`` folder of the ``file://`` remote is the
exception, counted apart: a folder remote has no atomic put, so an upload writes ``tmp/<random>``
and renames it, and only an age-based sweep can tell a dead upload's file from a live one's
(another machine's), so no rerun can remove it at once.

Only the cas process is killed, as the OOM killer would kill it; a ``git`` child it started runs
to its end before the checks, which would otherwise race it. The delays are drawn uniformly
between the interpreter start-up (before it no cas code runs, so a kill there proves nothing) and
the command's duration: the fastest of three warm-up runs, lowered whenever a trial's command
finishes before its kill. The seed fixes each trial's command and the fraction of that range it
waits; a trial whose command finished first is counted apart (and checked all the same).

    python reliability/kill.py --trials 200 --seed 1 [--ops add,checkout] [--json out.json]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import queue
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cas.workspace import TEMP_MARK

CAS = [sys.executable, "-m", "cas"]
OP_NAMES = (
    "add", "checkout", "push", "pull", "gc", "snapshot-query", "fetch-repair", "add-to-remote",
)  # fmt: skip
#: The command line of an op whose name is not its command (its help must parse, option included).
COMMANDS = {"fetch-repair": ["fetch", "--repair"], "add-to-remote": ["add", "--to-remote"]}

# Enough work that the commands outlast their start-up by several tenths of a second on a
# 2-core machine, small enough that a trial (copy, command, fsck, rerun, checks) takes ~2 s.
SMALL_FILES = 240
BIG_FILES = 3
BIG_SIZE = 4 << 20
SNAPSHOT_ROWS = (150_000, 200_000)  # rows of the first snapshot, then of the one under test
SNAPSHOT_QUERY = "SELECT * FROM orders ORDER BY id"

COMMAND_TIMEOUT = 300.0  # seconds; a hung command is a failure, not a stuck CI job
GROUP_EXIT_SECONDS = 30.0
MAX_PROBLEMS_SHOWN = 5
REMOTE_TMP = "remote/tmp/"  # a trial's file:// remote: see the module docstring


class SetupError(RuntimeError):
    """Building the projects failed: a broken harness or a broken cas, not a trial result."""


# --------------------------------------------------------------------------------------------
# Processes


def tail(text: str, limit: int = 300) -> str:
    """The last non-empty line of a command's output: cas errors are one line."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:limit] if lines else ""


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)


def must(argv: list[str], cwd: Path) -> str:
    """A set-up step: its failure stops the run with the command's error."""
    proc = run(argv, cwd)
    if proc.returncode != 0:
        raise SetupError(
            f"{' '.join(argv)} (in {cwd}) -> {proc.returncode}: {tail(proc.stderr + proc.stdout)}"
        )
    return proc.stdout


def cas(cwd: Path, *args: str) -> str:
    return must([*CAS, *args], cwd)


def git(cwd: Path, *args: str) -> str:
    return must(["git", *args], cwd)


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group, from /proc: an orphaned zombie may never
    be reaped in a container whose init does not reap, so ``killpg(pgid, 0)`` is not enough."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
        except OSError:  # the process exited while we looked
            continue
        state, _ppid, pgrp = stat[stat.rindex(")") + 2 :].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            members.append(int(entry.name))
    return members


def wait_for_group(pgid: int) -> str | None:
    """Wait until the children of a killed command have exited; a problem if they do not."""
    deadline = time.monotonic() + GROUP_EXIT_SECONDS
    while group_members(pgid):
        if time.monotonic() > deadline:
            os.killpg(pgid, signal.SIGKILL)
            return f"children of the killed command still ran after {GROUP_EXIT_SECONDS:.0f} s"
        time.sleep(0.01)
    return None


# --------------------------------------------------------------------------------------------
# Trees


def read_tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes, skipping cas's checkout temp files (cas skips
    them too; the leftover scan reports them)."""
    found: dict[str, bytes] = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if TEMP_MARK not in name:
                path = Path(dirpath, name)
                found[path.relative_to(root).as_posix()] = path.read_bytes()
    return found


def set_tree(root: Path, files: dict[str, bytes]) -> None:
    """Make ``root`` hold exactly ``files`` (writing only what differs, like an editor would)."""
    for rel in read_tree(root).keys() - files.keys():
        (root / rel).unlink()
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_bytes() != data:
            path.write_bytes(data)


def old_or_new(root: Path, old: dict[str, bytes], new: dict[str, bytes]) -> list[str]:
    """Each file is its old or its new bytes; only a file one version lacks may be absent."""
    found = read_tree(root)
    problems = []
    for rel in sorted(old.keys() | new.keys() | found.keys()):
        have = found.get(rel)
        if have is None:
            if rel in old and rel in new:
                problems.append(f"{root.name}/{rel}: missing (it is in both versions)")
        elif have != old.get(rel) and have != new.get(rel):
            problems.append(f"{root.name}/{rel}: neither its old nor its new bytes ({len(have)} B)")
    return problems


def exactly(root: Path, expected: dict[str, bytes]) -> list[str]:
    found = read_tree(root)
    problems = [f"{root.name}/{rel}: missing" for rel in sorted(expected.keys() - found.keys())]
    problems += [f"{root.name}/{rel}: unexpected" for rel in sorted(found.keys() - expected.keys())]
    problems += [
        f"{root.name}/{rel}: wrong bytes"
        for rel in sorted(expected.keys() & found.keys())
        if found[rel] != expected[rel]
    ]
    return problems


def leftovers(trial: Path) -> list[str]:
    """Temp files anywhere in a trial (working trees, stores, remote), Git's own excepted."""
    found = []
    for dirpath, dirs, files in os.walk(trial):
        dirs[:] = [d for d in dirs if d != ".git"]
        in_tmp = os.path.basename(dirpath) == "tmp"
        for name in files:
            if in_tmp or TEMP_MARK in name or name.endswith(".tmp"):
                found.append(Path(dirpath, name).relative_to(trial).as_posix())
    return sorted(found)


def versions(rng: random.Random) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """Two versions of a dataset: v2 edits, deletes and adds small files, rewrites one big file,
    edits the middle of another and adds a third (so chunks are both shared and new)."""
    v1 = {
        f"small/{i % 12:02d}/f{i:04d}.txt": rng.randbytes(rng.randint(50, 4000))
        for i in range(SMALL_FILES)
    }
    v1.update({f"big/b{i}.bin": rng.randbytes(BIG_SIZE) for i in range(BIG_FILES)})
    v2 = dict(v1)
    small = sorted(rel for rel in v1 if rel.startswith("small/"))
    for rel in small[0::6]:
        v2[rel] = rng.randbytes(rng.randint(50, 4000))
    for rel in small[1::12]:
        del v2[rel]
    v2.update({f"small/new/n{i:03d}.txt": rng.randbytes(rng.randint(50, 4000)) for i in range(20)})
    v2["big/b0.bin"] = rng.randbytes(BIG_SIZE)
    middle = BIG_SIZE // 2
    v2["big/b1.bin"] = (
        v1["big/b1.bin"][:middle] + rng.randbytes(1 << 20) + v1["big/b1.bin"][middle:]
    )
    v2[f"big/b{BIG_FILES}.bin"] = rng.randbytes(BIG_SIZE)
    return v1, v2


def fill_orders(db: Path, start: int, stop: int, rng: random.Random) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS orders "
            "(id INTEGER PRIMARY KEY, customer TEXT, amount REAL, note TEXT)"
        )
        conn.executemany(
            "INSERT INTO orders VALUES (?, ?, ?, ?)",
            (
                (i, f"c{rng.randrange(5000)}", rng.randrange(10**6) / 100, rng.randbytes(12).hex())
                for i in range(start, stop)
            ),
        )
    conn.close()


def pointer_fields(text: str) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in text.splitlines() if " " in line)


# --------------------------------------------------------------------------------------------
# Operations


Check = Callable[[Path], list[str]]


@dataclass
class Op:
    """One command under test: where it runs in a trial, and what must hold after a kill and
    after its rerun (each check returns problems, empty when the invariant holds)."""

    name: str
    folder: str
    args: list[str]
    after_kill: Check
    after_rerun: Check
    #: A pack the trial starts damaged (fetch --repair's): until the rerun, fsck may report it,
    #: and nothing else.
    damaged: str = ""


@dataclass
class Trial:
    op: str
    number: int
    delay: float | None  # None: a warm-up run, never killed
    killed: bool = False
    seconds: float = 0.0
    remote_orphans: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass
class OpReport:
    name: str
    available: bool = True
    trials: int = 0
    killed: int = 0
    finished_before_kill: int = 0
    failed: int = 0
    remote_orphans: int = 0
    duration_s: float = 0.0
    delay_range_s: tuple[float, float] = (0.0, 0.0)
    failures: list[dict[str, object]] = field(default_factory=list)


class Harness:
    """Builds one template per command under ``base/templates`` (at the trial path, so the
    absolute ``file://`` URLs in them stay right when a template is copied back there) and runs
    trials in ``base/trial``."""

    def __init__(self, base: Path, seed: int) -> None:
        self.base = base
        self.trial = base / "trial"
        self.templates = base / "templates"
        self.rng = random.Random(seed)
        self.v1, self.v2 = versions(self.rng)
        self.pointer_v1 = ""
        self.pointer_v2 = ""
        self.snapshot_old: dict[str, bytes] = {}
        self.damaged_pack = ""
        self.snapshot_new = b""

    def ops(self) -> dict[str, Op]:
        data_is_v2 = self._data_is(self.v2)
        return {
            "add": Op("add", "proj", ["add", "data"], self._add_moving, self._add_done),
            "checkout": Op("checkout", "proj", ["checkout"], self._data_moving, self._data_done),
            "push": Op("push", "proj", ["push"], data_is_v2, self._push_done),
            "pull": Op("pull", "clone", ["pull"], self._data_moving, self._data_done),
            "gc": Op("gc", "proj", ["gc"], data_is_v2, self._gc_done),
            "fetch-repair": Op(
                "fetch-repair",
                "clone",
                COMMANDS["fetch-repair"],
                data_is_v2,
                self._repair_done,
                self.damaged_pack,
            ),
            "add-to-remote": Op(
                "add-to-remote",
                "proj",
                ["add", "data", "--to-remote"],
                self._add_moving,
                self._add_to_remote_done,
            ),
            "snapshot-query": Op(
                "snapshot-query",
                "snap",
                [
                    "snapshot-query",
                    SNAPSHOT_QUERY,
                    "--source",
                    "sqlite:///app.db",
                    "--name",
                    "orders",
                ],
                lambda cwd: self._snapshots(cwd, rerun=False),
                lambda cwd: self._snapshots(cwd, rerun=True),
            ),
        }

    # -- templates ---------------------------------------------------------------------------
    def _save(self, op: str, *folders: str) -> None:
        dest = self.templates / op
        dest.mkdir(parents=True)
        for folder in folders:
            subprocess.run(["cp", "-a", str(self.trial / folder), str(dest)], check=True)

    def _new_repo(self, folder: str) -> Path:
        root = self.trial / folder
        root.mkdir(parents=True)
        git(root, "init", "-q", "-b", "main")
        git(root, "config", "user.email", "kill@example.com")
        git(root, "config", "user.name", "kill")
        cas(root, "init")
        return root

    def build(self, wanted: set[str]) -> None:
        """The states each command starts from: add (v2 on disk, v1 pointer, store without v2),
        push (remote without v2), checkout and pull (v2 pointer, v1 on disk), gc (the store
        holds v1 objects no ref reaches), snapshot-query (one snapshot, a grown table)."""
        proj = self._new_repo("proj")
        cas(proj, "remote", "add", "origin", (self.trial / "remote").as_uri())
        set_tree(proj / "data", self.v1)
        cas(proj, "add", "data")
        git(proj, "commit", "-qm", "v1")
        cas(proj, "push")
        set_tree(proj / "data", self.v2)
        self._save("add", "proj")
        self._save("add-to-remote", "proj", "remote")
        cas(proj, "add", "data")
        git(proj, "commit", "-qm", "v2")
        self.pointer_v1 = git(proj, "show", "HEAD~1:data.cas")
        self.pointer_v2 = git(proj, "show", "HEAD:data.cas")
        self._save("push", "proj", "remote")
        cas(proj, "push")
        git(proj, "clone", "-q", str(proj), str(self.trial / "clone"))
        for repo in (proj, self.trial / "clone"):  # v1 data under a v2 pointer (as after git pull)
            git(repo, "checkout", "-q", "HEAD~1")
            cas(repo, "pull" if repo.name == "clone" else "checkout")
            git(repo, "checkout", "-q", "main")
        self._save("checkout", "proj")
        self._save("pull", "clone", "remote")
        if "fetch-repair" in wanted:
            self._build_fetch_repair(self.trial / "clone")
        if "gc" in wanted:
            self._build_gc(proj)
        self._build_snapshot()
        shutil.rmtree(self.trial)

    def _build_gc(self, proj: Path) -> None:
        """Garbage: v1's commit is rewritten away (amended), so only v2 stays reachable; v1's
        chunks share packs with live ones, so gc has packs to delete and packs to repack."""
        git(proj, "reset", "-q", "--soft", "HEAD~1")
        git(proj, "commit", "-q", "--amend", "-m", "v2 only")
        git(proj, "reflog", "expire", "--expire=now", "--all")
        git(proj, "gc", "-q", "--prune=now")
        cas(proj, "checkout")
        dry = json.loads(cas(proj, "gc", "--dry-run", "--json"))
        if not dry["packs_repacked"]:  # the repack is what a kill must not break
            raise SetupError(f"the gc template has nothing to repack: {dry}")
        self._save("gc", "proj")

    def _build_fetch_repair(self, clone: Path) -> None:
        """A clone (v2 pulled) whose largest pack was rewritten under a new id the remote does
        not hold (as a range fetch or a repack makes) and then damaged in one chunk: fetch
        --repair must fetch that chunk from the remote's pack, copy the sound ones into a new
        pack and only then delete the damaged one (the harder of its two paths)."""
        from cas.objects import index_key, pack_key
        from cas.repo import Repo

        cas(clone, "pull")  # v2's data, as the pull template's rerun leaves it
        with Repo.discover(clone) as repo:
            objects = repo.objects
            biggest = max(objects.pack_ids(), key=lambda p: repo.local.size(pack_key(p)))
            entries = objects.pack_entries(biggest)
            with objects.writer(repack=True) as writer:
                for cid, _off, _len in reversed(entries):  # new offsets: a new pack id
                    writer.add(cid, objects.read_chunk(cid))
            objects.close()
            repo.local.delete(index_key(biggest))
            repo.local.delete(pack_key(biggest))
            self.damaged_pack = writer.sealed[0]
            offset = objects.pack_entries(self.damaged_pack)[0][1]
            path = repo.local.path(pack_key(self.damaged_pack))
        os.chmod(path, 0o600)
        with open(path, "r+b") as f:
            byte = os.pread(f.fileno(), 1, offset)
            os.pwrite(f.fileno(), bytes([byte[0] ^ 0xFF]), offset)
        if run([*CAS, "fsck"], clone).returncode != 1:
            raise SetupError("the damaged pack of the fetch-repair template is not detected")
        self._save("fetch-repair", "clone", "remote")

    def _repair_done(self, cwd: Path) -> list[str]:
        """The rerun left a store fsck finds clean, from which the data checks out."""
        fsck = run([*CAS, "fsck"], cwd)
        if fsck.returncode:
            return [f"cas fsck after fetch --repair -> {fsck.returncode}: {tail(fsck.stdout)}"]
        shutil.rmtree(cwd / "data")
        proc = run([*CAS, "checkout"], cwd)
        if proc.returncode:
            return [f"cas checkout after fetch --repair -> {proc.returncode}: {tail(proc.stderr)}"]
        return exactly(cwd / "data", self.v2)

    def _build_snapshot(self) -> None:
        snap = self._new_repo("snap")
        fill_orders(snap / "app.db", 0, SNAPSHOT_ROWS[0], self.rng)
        cas(snap, *self.ops()["snapshot-query"].args)
        git(snap, "commit", "-qm", "snapshot 1")
        fill_orders(snap / "app.db", *SNAPSHOT_ROWS, self.rng)
        folder = snap / "snapshots/orders"
        self.snapshot_old = read_tree(folder)
        self._save("snapshot-query", "snap")
        cas(snap, *self.ops()["snapshot-query"].args)
        newest = sorted(rel for rel in read_tree(folder) if rel.endswith(".parquet"))[-1]
        self.snapshot_new = (folder / newest).read_bytes()

    # -- checks ------------------------------------------------------------------------------
    def _data_is(self, files: dict[str, bytes]) -> Check:
        return lambda cwd: exactly(cwd / "data", files)

    def _data_moving(self, cwd: Path) -> list[str]:
        return old_or_new(cwd / "data", self.v1, self.v2)

    def _data_done(self, cwd: Path) -> list[str]:
        problems = exactly(cwd / "data", self.v2)
        if (cwd / "data.cas").read_text() != self.pointer_v2:
            problems.append("data.cas is not the v2 pointer")
        return problems

    def _add_moving(self, cwd: Path) -> list[str]:
        """add reads the data and never writes it; the pointer is swapped whole."""
        problems = exactly(cwd / "data", self.v2)
        if (cwd / "data.cas").read_text() not in (self.pointer_v1, self.pointer_v2):
            problems.append("data.cas is neither the v1 nor the v2 pointer")
        return problems

    def _add_done(self, cwd: Path) -> list[str]:
        problems = self._data_done(cwd)
        if run(["git", "show", ":data.cas"], cwd).stdout != self.pointer_v2:
            problems.append("the v2 pointer is not staged")
        return problems

    def _add_to_remote_done(self, cwd: Path) -> list[str]:
        """As add, and the remote holds everything the staged pointer needs, checked deep."""
        return self._add_done(cwd) + self._push_done(cwd)

    def _push_done(self, cwd: Path) -> list[str]:
        proc = run([*CAS, "verify", "--remote", "--deep"], cwd)
        if proc.returncode:
            return [f"cas verify --remote --deep -> {proc.returncode}: {tail(proc.stdout)}"]
        return []

    def _gc_done(self, cwd: Path) -> list[str]:
        """The rerun collected all the garbage, and what gc kept rebuilds the data: remove it
        and check it out from the store."""
        dry = run([*CAS, "gc", "--dry-run", "--json"], cwd)
        if dry.returncode or json.loads(dry.stdout)["bytes_freed"]:
            return [f"cas gc --dry-run after the rerun -> {dry.returncode}: {tail(dry.stdout)}"]
        shutil.rmtree(cwd / "data")
        proc = run([*CAS, "checkout"], cwd)
        if proc.returncode:
            return [f"cas checkout after gc -> {proc.returncode}: {tail(proc.stderr)}"]
        return exactly(cwd / "data", self.v2)

    def _snapshots(self, cwd: Path, rerun: bool) -> list[str]:
        """Earlier snapshots untouched; a new Parquet file is complete and has its sidecar (a
        sidecar alone is the documented trace of an interrupted publish); after the rerun the
        staged pointer covers the whole folder."""
        folder = cwd / "snapshots/orders"
        found = read_tree(folder)
        problems = [
            f"snapshot {rel}: changed or gone"
            for rel, data in self.snapshot_old.items()
            if found.get(rel) != data
        ]
        new = sorted(found.keys() - self.snapshot_old.keys())
        for rel in new:
            if rel.endswith(".parquet"):
                if found[rel] != self.snapshot_new:
                    problems.append(f"snapshot {rel}: not the expected bytes")
                if rel.removesuffix(".parquet") + ".json" not in found:
                    problems.append(f"snapshot {rel}: no sidecar")
            elif rel.endswith(".json"):
                try:
                    json.loads(found[rel])
                except ValueError as err:
                    problems.append(f"snapshot sidecar {rel}: not JSON ({err})")
            else:
                problems.append(f"snapshot folder: unexpected file {rel}")
        if rerun:
            if not any(rel.endswith(".parquet") for rel in new):
                problems.append("the rerun published no snapshot")
            pointer = (cwd / "snapshots/orders.cas").read_text()
            fields = pointer_fields(pointer)
            if (int(fields["files"]), int(fields["size"])) != (
                len(found),
                sum(map(len, found.values())),
            ):
                problems.append("snapshots/orders.cas does not cover the folder")
            if run(["git", "show", ":snapshots/orders.cas"], cwd).stdout != pointer:
                problems.append("snapshots/orders.cas is not staged")
        return problems

    # -- trials ------------------------------------------------------------------------------
    def reset(self, op: str) -> None:
        if self.trial.exists():
            shutil.rmtree(self.trial)
        subprocess.run(["cp", "-a", str(self.templates / op), str(self.trial)], check=True)

    def run_trial(self, op: Op, number: int, delay: float | None) -> Trial:
        """Copy, start, kill after ``delay`` (None: let it finish), then check; the delay is
        the only random input, so a failure names what to look at."""
        trial = Trial(op.name, number, delay)
        self.reset(op.name)
        cwd = self.trial / op.folder
        log = self.base / "command.log"
        with log.open("w") as out:
            started = time.monotonic()
            proc = subprocess.Popen(
                [*CAS, *op.args], cwd=cwd, stdout=out, stderr=out, start_new_session=True
            )
            try:
                code = proc.wait(timeout=delay if delay is not None else COMMAND_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                code = proc.wait()
            trial.seconds = time.monotonic() - started
        trial.killed = code == -signal.SIGKILL
        if not trial.killed and code != 0:
            trial.problems.append(f"cas {op.name} exited {code}: {tail(log.read_text())}")
        stuck = wait_for_group(proc.pid)
        if stuck:
            trial.problems.append(stuck)
        trial.problems += [f"after the kill: {p}" for p in op.after_kill(cwd)]
        fsck = run([*CAS, "fsck", "--json"], cwd)
        found = json.loads(fsck.stdout)["corrupt"] if fsck.stdout.startswith("{") else None
        expected = op.damaged and found and all(op.damaged in p for p in found)
        if fsck.returncode not in (0, 1) or found is None or (found and not expected):
            trial.problems.append(
                f"cas fsck -> {fsck.returncode}: {tail(fsck.stdout + fsck.stderr)}"
            )
        rerun = run([*CAS, *op.args], cwd)
        if rerun.returncode != 0:
            trial.problems.append(f"rerun -> {rerun.returncode}: {tail(rerun.stderr)}")
        else:
            trial.problems += [f"after the rerun: {p}" for p in op.after_rerun(cwd)]
        for path in leftovers(self.trial):
            if path.startswith(REMOTE_TMP):
                trial.remote_orphans += 1
            else:
                trial.problems.append(f"left after the rerun: {path}")
        return trial


def available(op: str) -> bool:
    """Whether this cas has the command (``gc`` arrived late; the loop is ready for it)."""
    return run([*CAS, *COMMANDS.get(op, [op]), "--help"], Path.cwd()).returncode == 0


def startup_seconds() -> float:
    """The interpreter and CLI start-up: the best of three ``cas --help``."""
    times = []
    for _ in range(3):
        started = time.monotonic()
        must([*CAS, "--help"], Path.cwd())
        times.append(time.monotonic() - started)
    return min(times)


def split(trials: int, names: list[str]) -> dict[str, int]:
    """``trials`` over ``names`` as evenly as possible, the first ones taking the remainder."""
    share, extra = divmod(trials, len(names))
    return {name: share + (i < extra) for i, name in enumerate(names)}


def never() -> None:
    """The delay of a warm-up run: none, it is not killed."""


class Workers:
    """``jobs`` harnesses, each with its own templates and trial folder, run trials side by
    side: a trial is one single-threaded Python process at a time, so two use two cores."""

    def __init__(self, base: Path, seed: int, jobs: int, wanted: set[str]) -> None:
        self.idle: queue.Queue[Harness] = queue.Queue()
        self.executor = ThreadPoolExecutor(jobs)
        harnesses = [Harness(base / f"worker{k}", seed) for k in range(jobs)]
        list(self.executor.map(lambda harness: harness.build(wanted), harnesses))
        for harness in harnesses:
            self.idle.put(harness)

    def _run(self, name: str, number: int, delay: Callable[[], float | None]) -> Trial:
        harness = self.idle.get()
        try:
            return harness.run_trial(harness.ops()[name], number, delay())
        finally:
            self.idle.put(harness)

    def run(self, tasks: list[tuple[str, int, Callable[[], float | None]]]) -> Iterator[Trial]:
        """Trials in completion order; each delay is computed when its trial starts."""
        futures = [self.executor.submit(self._run, *task) for task in tasks]
        for future in as_completed(futures):
            yield future.result()


def run_loop(trials: int, seed: int, names: list[str], jobs: int, base: Path) -> dict[str, Any]:
    started = time.monotonic()
    reports = {name: OpReport(name) for name in names}
    for name in names:
        reports[name].available = available(name)
    live = [name for name in names if reports[name].available]
    start_up = startup_seconds()
    workers = Workers(base, seed, jobs, set(live))
    warm_ups = max(3, jobs)  # side by side too: under the load the trials will see
    warm: dict[str, list[Trial]] = {name: [] for name in live}
    for trial in workers.run([(name, 0, never) for name in live for _ in range(warm_ups)]):
        warm[trial.op].append(trial)
    for name in live:
        report = reports[name]
        for trial in warm[name]:
            if trial.problems:
                report.failed += 1
                report.failures.append({"trial": "warm-up", "problems": trial.problems})
        # the fastest run: on a busy machine the mean overshoots, and trials finish unkilled
        report.duration_s = round(min(t.seconds for t in warm[name]), 3)
        low = start_up if report.duration_s > start_up else 0.0
        report.delay_range_s = (round(low, 3), report.duration_s)

    def delay(name: str, fraction: float) -> float:
        low, high = reports[name].delay_range_s
        return low + fraction * (high - low)

    rng = random.Random(seed)
    schedule = [name for name, n in split(trials, live).items() for _ in range(n)]
    rng.shuffle(schedule)
    tasks = [
        (name, number, functools.partial(delay, name, rng.random()))
        for number, name in enumerate(schedule, 1)
    ]
    for done, trial in enumerate(workers.run(tasks), 1):
        report = reports[trial.op]
        report.trials += 1
        report.killed += trial.killed
        report.finished_before_kill += not trial.killed
        if not trial.killed:  # it ran faster than the range allows for: aim lower from now on
            low, high = report.delay_range_s
            report.delay_range_s = (low, round(max(low, min(high, trial.seconds)), 3))
        report.remote_orphans += trial.remote_orphans
        if trial.problems:
            report.failed += 1
            report.failures.append(
                {
                    "trial": trial.number,
                    "delay_s": round(trial.delay or 0, 3),
                    "problems": trial.problems,
                }
            )
            print(f"FAIL {trial.op} trial {trial.number}: {trial.problems[0]}", file=sys.stderr)
        if done % 20 == 0:
            failed = sum(r.failed for r in reports.values())
            elapsed = time.monotonic() - started
            print(f"{done}/{len(tasks)} trials, {failed} failed, {elapsed:.0f} s", file=sys.stderr)
    workers.executor.shutdown()
    return {
        "seed": seed,
        "trials": len(tasks),
        "jobs": jobs,
        "seconds": round(time.monotonic() - started, 1),
        "startup_s": round(start_up, 3),
        "ok": all(r.failed == 0 for r in reports.values()),
        "ops": {name: asdict(r) for name, r in reports.items()},
    }


def print_summary(result: dict[str, Any]) -> None:
    print(f"{'op':<15} {'trials':>6} {'killed':>6} {'finished':>8} {'failed':>6}  delay range (s)")
    for name, rep in result["ops"].items():
        if not rep["available"]:
            print(f"{name:<15} not available in this cas")
            continue
        low, high = rep["delay_range_s"]
        print(
            f"{name:<15} {rep['trials']:>6} {rep['killed']:>6} {rep['finished_before_kill']:>8} "
            f"{rep['failed']:>6}  {low:.2f}-{high:.2f}"
        )
        for failure in rep["failures"][:MAX_PROBLEMS_SHOWN]:
            print(f"    trial {failure['trial']}: {'; '.join(failure['problems'][:3])}")
        if rep["remote_orphans"]:
            print(f"    {rep['remote_orphans']} orphan temp files left in the remote's tmp/")
    print(
        f"{result['trials']} trials in {result['seconds']} s: "
        + ("ok" if result["ok"] else "FAILED")
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=200, help="total, split over the ops")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--ops", default=",".join(OP_NAMES), help="comma-separated")
    parser.add_argument(
        "--jobs", type=int, default=min(2, os.cpu_count() or 1), help="trials run side by side"
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    names = args.ops.split(",")
    unknown = set(names) - set(OP_NAMES)
    if unknown or args.trials < len(names):
        parser.error(f"unknown ops {sorted(unknown)}" if unknown else "fewer trials than ops")
    base = Path(tempfile.mkdtemp(prefix="cas-kill-"))
    try:
        result = run_loop(args.trials, args.seed, names, args.jobs, base)
    finally:
        shutil.rmtree(base)
    print_summary(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
