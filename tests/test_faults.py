"""Faults from below cas, against real components: a disk that fills up, permissions that say
no, an S3 server that goes away mid-transfer, wrong credentials.

Every case checks one contract: one line naming the problem and the fix (exit 7 from the CLI),
a store that still verifies with nothing partial under a final name, no temp file left behind,
working-tree files that are their old or their new version (never truncated), and a rerun
without the fault that completes.

A real full disk would need a mount the tests cannot assume, so :class:`DiskFull` simulates one
in-process: the N-th space-consuming call under one folder (a file write, a rename, a link, a
sendfile) and every later one fail with ENOSPC, and closing a file that holds unflushed bytes
fails too, as it does on a real full disk (checked against ``/dev/full``). A dry run of the same
command counts the calls, so the fault can hit the first, the last, one in the middle, and the
first write to a file that already holds buffered bytes. Where pyarrow writes from C++ (the
snapshot's Parquet file), the file is sent to ``/dev/full``: a real ENOSPC from the kernel.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import blake3
import pyarrow.parquet as pq
import pytest

from cas import objects, remote, snapshot
from cas.errors import StorageError
from cas.objects import INDEX_MAGIC, encode_entries, pack_key, pack_trailer
from cas.ops import transfer
from cas.repo import Repo
from cas.workspace import TEMP_MARK
from tests.conftest import CAS, cas, git, tree, write
from tests.s3_server import ACCESS_KEY, SECRET_KEY, S3Server

PROJECT_ROOT = Path(__file__).resolve().parent.parent


# -- a disk that fills up ----------------------------------------------------------------------
class DiskFull:
    """Fail the ``fail_at``-th space-consuming call under ``root`` and every later one with
    ENOSPC (``fail_at=0``: only count). ``ops`` names each call, so a dry run tells how many
    there are; ``log`` (outside ``root``) gets them too, for a dry run in a subprocess."""

    def __init__(self, root: Path, fail_at: int = 0, log: Path | None = None) -> None:
        self.root = str(root.resolve()) + "/"
        self.fail_at = fail_at
        self.log = log
        self.ops: list[str] = []
        self.full = False
        self._lock = threading.Lock()
        self._saved: list[tuple[Any, str, Any]] = []
        self._count: Callable[[str, str], None] = self.tick  # logs too, once installed

    def under(self, path: Any) -> bool:
        try:
            text = os.fsdecode(path)
        except TypeError:  # a file descriptor: never one of ours
            return False
        return os.path.abspath(text).startswith(self.root)

    def tick(self, kind: str, path: str) -> None:
        """Count one call; raise ENOSPC from the failing one on."""
        with self._lock:
            self.ops.append(f"{kind} {path}")
            if self.fail_at and len(self.ops) >= self.fail_at:
                self.full = True
            full = self.full
        if full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    @staticmethod
    def _fd_path(fd: int) -> str:
        try:
            return os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # not a file (or already closed): not under the root
            return ""

    def _patch(self, owner: Any, name: str, value: Any) -> None:
        self._saved.append((owner, name, getattr(owner, name)))
        setattr(owner, name, value)

    def install(self) -> None:
        real_open, real_sendfile = builtins.open, os.sendfile
        log = real_open(self.log, "a", encoding="utf-8") if self.log else None

        def open_(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            f = real_open(file, mode, *args, **kwargs)
            if any(c in mode for c in "wax+") and self.under(file):
                return _FaultyFile(f, self, os.fsdecode(file))
            return f

        def counted(kind: str, path: str) -> None:
            if log is not None:
                log.write(f"{kind} {path}\n")
                log.flush()
            self.tick(kind, path)

        def writer(real: Callable[..., int], name: str) -> Callable[..., int]:
            def write_(fd: int, data: Any, *args: Any) -> int:
                path = self._fd_path(fd)
                if self.under(path):
                    counted(name, path)
                return real(fd, data, *args)

            return write_

        def renamer(real: Callable[..., None], name: str) -> Callable[..., None]:
            def rename_(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
                if self.under(dst):
                    counted(name, os.fsdecode(dst))
                real(src, dst, *args, **kwargs)

            return rename_

        def sendfile_(out_fd: int, in_fd: int, offset: Any, count: int) -> int:
            path = self._fd_path(out_fd)
            if self.under(path):
                counted("os.sendfile", path)
            return real_sendfile(out_fd, in_fd, offset, count)

        self._count = counted
        self._patch(builtins, "open", open_)
        self._patch(io, "open", open_)
        for name in ("write", "pwrite"):
            self._patch(os, name, writer(getattr(os, name), f"os.{name}"))
        for name in ("replace", "rename", "link"):
            self._patch(os, name, renamer(getattr(os, name), f"os.{name}"))
        self._patch(os, "sendfile", sendfile_)

    def uninstall(self) -> None:
        while self._saved:
            owner, name, value = self._saved.pop()
            setattr(owner, name, value)

    @contextmanager
    def installed(self) -> Iterator[DiskFull]:
        self.install()
        try:
            yield self
        finally:
            self.uninstall()


class _FaultyFile:
    """A file opened for writing under a :class:`DiskFull` root: each ``write`` is counted;
    once the disk is full, ``flush`` and ``close`` of a file holding written bytes fail too,
    as a buffered file's do when its buffer cannot reach the disk."""

    def __init__(self, real: Any, disk: DiskFull, path: str) -> None:
        self._real, self._disk, self._path = real, disk, path
        self._dirty = False

    def write(self, data: Any) -> int:
        self._disk._count("write", self._path)
        n = self._real.write(data)
        self._dirty = True
        return int(n)

    def flush(self) -> None:
        if self._disk.full and self._dirty:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self._path)
        self._real.flush()

    def close(self) -> None:
        if self._real.closed:
            return
        self._real.close()
        if self._disk.full and self._dirty:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self._path)

    def __enter__(self) -> _FaultyFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def disk_full_from_env() -> None:
    """Hook for a CLI subprocess: ``CAS_TEST_DISK_FULL='{"root", "fail_at", "log"}'``."""
    spec = json.loads(os.environ["CAS_TEST_DISK_FULL"])
    log = Path(spec["log"]) if spec.get("log") else None
    DiskFull(Path(spec["root"]), int(spec["fail_at"]), log).install()


def hooked_cas(
    cwd: Path, hook: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """Start the real ``cas`` CLI in a fresh interpreter that first calls ``hook``
    ("module:function") to install a fault; stdout and stderr are pipes."""
    module, function = hook.split(":")
    boot = (
        f"import sys; sys.path.insert(0, {str(PROJECT_ROOT)!r}); sys.argv[0] = 'cas'\n"
        f"from {module} import {function}; {function}()\n"
        "from cas.cli.main import run; run()"
    )
    return subprocess.Popen(
        [sys.executable, "-c", boot, *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


# -- checks ------------------------------------------------------------------------------------
def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def assert_disk_full_message(message: str) -> None:
    """The problem (the disk is full) and the fix (free space), as ``storage_error`` says."""
    assert "the disk is full" in message and "free space" in message, message


def assert_store_sound(root: Path, allow_dead_temps: bool = False) -> None:
    """fsck passes (every pack and manifest under its final name verifies), every index file
    is its pack's trailer (none names a missing pack), and the store's tmp/ is empty; with
    ``allow_dead_temps``, after clean_tmp removed what dead processes left."""
    repo = Repo.discover(root)
    tmp = repo.local.tmp
    if allow_dead_temps:
        repo.local.clean_tmp()
    assert not tmp.exists() or not list(tmp.iterdir()), list(tmp.iterdir())
    result = repo.fsck()
    assert result.ok, result.corrupt
    for key in repo.local.list("index/"):
        pack_id = key.rsplit("/", 1)[1]
        entries = pack_trailer(repo.local.get(pack_key(pack_id)), pack_id)
        assert repo.local.get(key) == INDEX_MAGIC + encode_entries(entries), key


def temp_leftovers(root: Path) -> list[str]:
    """Temp files cas writes beside their targets (data files, pointers, .gitignore, the stat
    cache, snapshots): none may survive a failed command."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in (".git", "store")]
        for name in files:
            if TEMP_MARK in name or name.endswith(".tmp"):
                found.append(os.path.relpath(os.path.join(folder, name), root))
    return found


def assert_old_or_new(root: Path, old: dict[str, bytes], new: dict[str, bytes]) -> None:
    """Each file is byte for byte its old or its new version (absent only if one lacks it)."""
    for rel in sorted(set(old) | set(new)):
        path = root / rel
        have = path.read_bytes() if path.is_file() else None
        assert have in (old.get(rel), new.get(rel)), f"{rel} is neither its old nor new version"


def files_of(root: Path, rels: list[str]) -> dict[str, bytes]:
    """The bytes of these files (relative to ``root``), and of every file under those that
    are folders; absent ones are left out."""
    out: dict[str, bytes] = {}
    for rel in rels:
        path = root / rel
        if path.is_dir():
            out.update({f"{rel}/{k}": v for k, v in tree(path).items()})
        elif path.is_file():
            out[rel] = path.read_bytes()
    return out


def assert_pointer_matches(root: Path, target: str) -> None:
    """The target's pointer names a manifest in the store whose files are exactly the
    target's files now (paths and BLAKE3)."""
    listing = Repo.discover(root).ls([root / f"{target}.cas"])
    have = files_of(root, [target])
    assert {i.path: i.hash for i in listing} == {
        p: blake3.blake3(b).hexdigest() for p, b in have.items()
    }


# -- repositories ------------------------------------------------------------------------------
def new_repo(root: Path) -> Path:
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "test@example.com")
    git(root, "config", "user.name", "Test")
    Repo.init(root)
    return root


def make_data(root: Path, version: int, seed: int = 11) -> None:
    """``data/`` (and in v2 ``model.bin``): small files (hashed on the main thread), a large
    one (the pool); v2 edits one, appends to the large one, and in ``data/sub/`` deletes one
    and adds one."""
    rng = random.Random(seed)
    write(root / "data/a.txt", f"version {version}\n")
    write(root / "data/sub/b.bin", rng.randbytes(60_000))
    write(root / "data/big.bin", rng.randbytes(1_500_000))
    for i in range(6):
        write(root / f"data/many/f{i}.bin", rng.randbytes(3_000 + i))
    if version == 2:
        os.unlink(root / "data/sub/b.bin")
        write(root / "data/sub/new.bin", rng.randbytes(90_000))
        with open(root / "data/big.bin", "ab") as f:
            f.write(rng.randbytes(100_000))
        write(root / "model.bin", rng.randbytes(200_000))


TARGETS = ["data", "model.bin"]
TOUCHED_BY_ADD = ["data.cas", "model.bin.cas", ".gitignore"]
EVERYTHING = [*TARGETS, *TOUCHED_BY_ADD]


def add(root: Path, *targets: str) -> None:
    Repo.discover(root).add([root / t for t in targets])


def v1_committed(root: Path) -> Path:
    """``data`` v1 added and committed; the worktree holds v2 (not added)."""
    new_repo(root)
    make_data(root, 1)
    add(root, "data")
    git(root, "commit", "-qm", "v1")
    make_data(root, 2)
    return root


def v2_committed(root: Path) -> Path:
    """Commits v1 and v2 of ``data``; the worktree holds v2."""
    v1_committed(root)
    add(root, "data")
    git(root, "commit", "-qm", "v2")
    return root


def pushed_source(root: Path, url: str) -> Path:
    """Commits v1 (``data``) and v2 (``data``, ``model.bin``), each pushed to ``url``."""
    new_repo(root)
    remote.add(Repo.discover(root), "origin", url)
    make_data(root, 1)
    add(root, "data")
    git(root, "commit", "-qm", "v1")
    transfer.push(Repo.discover(root))
    make_data(root, 2)
    add(root, *TARGETS)
    git(root, "commit", "-qm", "v2")
    transfer.push(Repo.discover(root))
    return root


def clone_at_v1(src: Path, dest: Path) -> Path:
    """A clone that pulled v1, then moved to v2 with Git: the next pull fetches v2's new
    chunks and rewrites, adds and deletes files."""
    git(src.parent, "clone", "-q", str(src), str(dest))
    git(dest, "checkout", "-q", "HEAD~1")
    transfer.pull(Repo.discover(dest))
    git(dest, "checkout", "-q", "main")
    return dest


def sqlite_source(path: Path, rows: int = 20_000) -> str:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT, price REAL)")
    rng = random.Random(5)
    conn.executemany(
        "INSERT INTO orders VALUES (?, ?, ?)",
        ((i, f"item-{rng.randrange(10**6)}", rng.random() * 100) for i in range(rows)),
    )
    conn.commit()
    conn.close()
    return f"sqlite:///{path}"


QUERY = "SELECT * FROM orders ORDER BY id"


def snapshot_files(root: Path) -> list[str]:
    folder = root / "snapshots/o"
    return sorted(p.relative_to(root).as_posix() for p in folder.rglob("*") if p.is_file())


# -- where the disk fills ----------------------------------------------------------------------
def count_ops(root: Path, action: Callable[[], object]) -> list[str]:
    disk = DiskFull(root)
    with disk.installed():
        action()
    return disk.ops


def position(where: str, ops: list[str]) -> int:
    """The 1-based call at which the disk fills: ``first``, ``last``, ``middle``, or
    ``buffered``: the first write to a file already written to, which then holds bytes that
    closing it must flush."""
    if where == "buffered":
        seen: set[str] = set()
        for i, op in enumerate(ops, 1):
            kind, path = op.split(" ", 1)
            if kind in ("write", "os.write", "os.pwrite", "os.sendfile") and path in seen:
                return i
            seen.add(path)
        raise AssertionError(f"no second write to any file among {ops}")
    return {"first": 1, "middle": (len(ops) + 1) // 2, "last": len(ops)}[where]


# -- disk full, in-process ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "where",
    ["first", "buffered", "middle",
     "last"],
)  # fmt: skip
def test_disk_full_during_add(tmp_path: Path, where: str) -> None:
    """Adding an edited folder and a new single file. The same add on a twin repository
    without the fault says what "new" is for the files add writes."""
    dry = v1_committed(tmp_path / "dry")
    ops = count_ops(dry, lambda: add(dry, *TARGETS))
    new = files_of(dry, TOUCHED_BY_ADD)

    root = v1_committed(tmp_path / "proj")
    old = files_of(root, TOUCHED_BY_ADD)
    data = files_of(root, TARGETS)
    disk = DiskFull(root, position(where, ops))
    with disk.installed(), pytest.raises(StorageError) as caught:
        add(root, *TARGETS)
    assert disk.full, "the fault was never hit"
    assert_disk_full_message(str(caught.value))
    assert_old_or_new(root, old, new)
    assert files_of(root, TARGETS) == data  # add only reads the data
    assert temp_leftovers(root) == []
    assert_store_sound(root)

    add(root, *TARGETS)  # the rerun completes, and ends where the twin did
    assert files_of(root, TOUCHED_BY_ADD) == new
    assert_store_sound(root)
    git(root, "commit", "-qm", "v2")
    shutil.rmtree(root / "data")
    os.unlink(root / "model.bin")
    Repo.discover(root).checkout()
    assert files_of(root, TARGETS) == data


@pytest.mark.parametrize("where", ["first", "buffered", "middle", "last"])
def test_disk_full_during_checkout(tmp_path: Path, where: str) -> None:
    """Checking out v1 over a v2 worktree: files rewritten (a large one on the pool), restored
    and deleted, the stat cache saved, the pointer replaced and staged."""
    dry = v2_committed(tmp_path / "dry")
    ops = count_ops(dry, lambda: Repo.discover(dry).checkout(rev="HEAD~1"))
    new = files_of(dry, ["data", "data.cas"])

    root = v2_committed(tmp_path / "proj")
    old = files_of(root, ["data", "data.cas"])
    disk = DiskFull(root, position(where, ops))
    with disk.installed(), pytest.raises(StorageError) as caught:
        Repo.discover(root).checkout(rev="HEAD~1")
    assert disk.full
    assert_disk_full_message(str(caught.value))
    assert_old_or_new(root, old, new)
    assert temp_leftovers(root) == []
    assert_store_sound(root)

    Repo.discover(root).checkout(rev="HEAD~1")
    assert files_of(root, ["data", "data.cas"]) == new
    git(root, "checkout", "-q", "HEAD~1")  # v1 through Git too: status agrees, from the cache
    assert [s.state for s in Repo.discover(root).status()] == ["unchanged"]


@pytest.mark.parametrize(
    "where",
    ["first", "buffered", "middle",
     "last"],
)  # fmt: skip
def test_disk_full_during_pull(tmp_path: Path, where: str) -> None:
    """A pull from a file:// remote: whole packs streamed into the local store's tmp/, index
    files, manifests, then the checkout."""
    src = pushed_source(tmp_path / "src", (tmp_path / "remote").as_uri())
    dry = clone_at_v1(src, tmp_path / "dry")
    ops = count_ops(dry, lambda: transfer.pull(Repo.discover(dry)))
    assert any("/packs/" in op for op in ops) and any("/data/" in op for op in ops), ops
    new = files_of(dry, EVERYTHING)

    root = clone_at_v1(src, tmp_path / "proj")
    old = files_of(root, EVERYTHING)
    disk = DiskFull(root, position(where, ops))
    with disk.installed(), pytest.raises(StorageError) as caught:
        transfer.pull(Repo.discover(root))
    assert disk.full
    assert_disk_full_message(str(caught.value))
    assert_old_or_new(root, old, new)
    assert temp_leftovers(root) == []
    assert_store_sound(root)

    transfer.pull(Repo.discover(root))
    assert files_of(root, EVERYTHING) == new == files_of(src, EVERYTHING)
    assert_store_sound(root)


@pytest.mark.parametrize(
    "where",
    ["parquet", "first",
     "buffered", "middle", "last"],
)  # fmt: skip
def test_disk_full_during_snapshot_query(
    tmp_path: Path, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Parquet file (pyarrow writes it from C++, so it goes to /dev/full: a real ENOSPC),
    or a Python-level write: the sidecar, the publishing links, then the add that versions
    the folder. A failure before publishing leaves nothing under snapshots/; after, the
    published snapshot is complete and the message says how to version it."""
    source = sqlite_source(tmp_path / "shop.db")
    dry = new_repo(tmp_path / "dry")
    ops = count_ops(dry, lambda: snapshot.snapshot_query(Repo.discover(dry), QUERY, source, "o"))
    assert any("os.link" in op for op in ops) and any("/packs/" in op for op in ops), ops

    root = new_repo(tmp_path / "proj")
    disk = DiskFull(root, 0 if where == "parquet" else position(where, ops))
    if where == "parquet":  # the temp Parquet file's name, made a link to /dev/full
        monkeypatch.setattr(snapshot.secrets, "token_hex", lambda n: "f" * 2 * n)
        (root / ".cas/tmp").mkdir()
        name = f"snapshot-{snapshot._HOST}-{os.getpid()}-ffffffffffff.parquet.tmp"
        (root / ".cas/tmp" / name).symlink_to("/dev/full")
    with disk.installed(), pytest.raises(StorageError) as caught:
        snapshot.snapshot_query(Repo.discover(root), QUERY, source, "o")
    monkeypatch.undo()
    message = str(caught.value)
    assert_disk_full_message(message)
    assert temp_leftovers(root) == []
    assert not list((root / ".cas/tmp").iterdir())
    assert_store_sound(root)
    files = snapshot_files(root)
    if "was written but not versioned" in message:  # failed in the add: the file is complete
        assert "cas add snapshots/o" in message
        (parquet,) = [p for p in files if p.endswith(".parquet")]
        meta = json.loads((root / parquet).with_suffix(".json").read_text())
        assert snapshot.file_hash(root / parquet) == meta["content_hash"]
        assert pq.read_table(root / parquet).num_rows == meta["rows"] == 20_000
        add(root, "snapshots/o")
    else:
        assert files == []
        snapshot.snapshot_query(Repo.discover(root), QUERY, source, "o")
    assert_store_sound(root)
    assert len(snapshot_files(root)) == 2  # one snapshot: its Parquet file and its sidecar
    assert_pointer_matches(root, "snapshots/o")


# -- disk full, through the CLI ----------------------------------------------------------------
def _cli_case(command: str, root: Path, tmp_path: Path) -> list[str]:
    """Build the repository a CLI case runs in; return the command's arguments."""
    if command == "add":
        v1_committed(root)
        return ["add", *TARGETS]
    if command == "checkout":
        v2_committed(root)
        return ["checkout", "--rev", "HEAD~1"]
    if command == "pull":
        url = (tmp_path / "remote").as_uri()
        if not (tmp_path / "src").exists():
            pushed_source(tmp_path / "src", url)
        clone_at_v1(tmp_path / "src", root)
        return ["pull"]
    source = sqlite_source(tmp_path / f"{root.name}.db")
    new_repo(root)
    return ["snapshot-query", QUERY, "--source", source, "--name", "o"]


@pytest.mark.parametrize(
    ("command", "where"),
    [("add", "first"), ("add", "last"), ("checkout", "first"),
     ("pull", "first"),
     ("snapshot-query", "first")],
)  # fmt: skip
def test_disk_full_from_the_cli_is_one_line(tmp_path: Path, command: str, where: str) -> None:
    """What a user sees: ``cas: error: ...`` on one line, exit 7, no traceback; then the same
    command without the fault completes. A dry run in a twin repository counts the calls."""
    fail_at = 1
    if where == "last":
        dry = tmp_path / "dry"
        args = _cli_case(command, dry, tmp_path)
        log = tmp_path / "ops.log"
        spec = json.dumps({"root": str(dry), "fail_at": 0, "log": str(log)})
        proc = hooked_cas(dry, "tests.test_faults:disk_full_from_env", *args,
                          env={"CAS_TEST_DISK_FULL": spec})  # fmt: skip
        code, _out, err = finish(proc)
        assert code == 0, err
        fail_at = len(log.read_text().splitlines())
    root = tmp_path / "proj"
    args = _cli_case(command, root, tmp_path)
    spec = json.dumps({"root": str(root), "fail_at": fail_at})
    proc = hooked_cas(root, "tests.test_faults:disk_full_from_env", *args,
                      env={"CAS_TEST_DISK_FULL": spec})  # fmt: skip
    code, _out, err = finish(proc)
    line = one_line(err)
    assert code == 7 and line.startswith("cas: error: "), err
    assert_disk_full_message(line)
    assert temp_leftovers(root) == []
    cas(root, *args)
    assert_store_sound(root, allow_dead_temps=True)


# -- permission denied -------------------------------------------------------------------------
def unprivileged() -> list[str]:
    """A command prefix under which file modes apply. Root ignores them, so as root the
    command runs without the capabilities that let it (setpriv, from util-linux, as in
    tests/test_bad_input.py); any other user meets them anyway."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]


def cas_unprivileged(cwd: Path, *args: str, code: int) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*unprivileged(), *CAS, *args], cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == code, f"cas {' '.join(args)} -> {proc.returncode}\n{proc.stderr}"
    return proc


def chmod_tree(folder: Path, mode: int) -> None:
    """Set the mode of ``folder`` and every folder under it (files keep theirs)."""
    for dirpath, _dirs, _files in os.walk(folder):
        os.chmod(dirpath, mode)


@pytest.fixture
def restore_modes() -> Iterator[list[Path]]:
    """Folders a test made read-only, made writable again even when it fails (or pytest
    could not remove its temp folder)."""
    folders: list[Path] = []
    yield folders
    for folder in folders:
        if folder.exists():
            chmod_tree(folder, 0o755)


def test_read_only_store(tmp_path: Path, restore_modes: list[Path]) -> None:
    """New chunks cannot enter a read-only store: the message names the store, nothing
    changes in the worktree, and once the mode is fixed the rerun completes."""
    root = v1_committed(tmp_path / "proj")
    store = Repo.discover(root).local.root
    pointer = (root / "data.cas").read_bytes()
    chmod_tree(store, 0o555)
    restore_modes.append(store)
    line = one_line(cas_unprivileged(root, "add", "data", code=7).stderr)
    assert "permission denied" in line and str(store) in line, line
    assert (root / "data.cas").read_bytes() == pointer
    chmod_tree(store, 0o755)
    cas_unprivileged(root, "add", "data", code=0)
    assert_store_sound(root)
    assert_pointer_matches(root, "data")


def test_read_only_store_during_pull(tmp_path: Path, restore_modes: list[Path]) -> None:
    """A download into a read-only local store is a local permission problem, not the
    remote's: the message must not send the user after credentials."""
    src = pushed_source(tmp_path / "src", (tmp_path / "remote").as_uri())
    root = tmp_path / "proj"
    git(src.parent, "clone", "-q", str(src), str(root))
    store = Repo.discover(root).local
    store.tmp.mkdir(parents=True)
    chmod_tree(store.root, 0o555)
    restore_modes.append(store.root)
    line = one_line(cas_unprivileged(root, "pull", code=7).stderr)
    assert "permission denied" in line and "credentials" not in line, line
    assert str(store.root) in line, line
    chmod_tree(store.root, 0o755)
    cas_unprivileged(root, "pull", code=0)
    assert files_of(root, EVERYTHING) == files_of(src, EVERYTHING)
    assert_store_sound(root)


def test_read_only_folder_during_checkout(tmp_path: Path, restore_modes: list[Path]) -> None:
    """Checking out v1 must delete a file in ``data/sub/`` and restore another there, and
    ``data/sub/`` is read-only: one line naming the folder's problem, every file old or new,
    then once the mode is fixed the rerun completes."""
    root = v2_committed(tmp_path / "proj")
    old = files_of(root, ["data", "data.cas"])
    twin = v2_committed(tmp_path / "twin")
    Repo.discover(twin).checkout(rev="HEAD~1")
    new = files_of(twin, ["data", "data.cas"])
    os.chmod(root / "data/sub", 0o555)
    restore_modes.append(root / "data/sub")
    line = one_line(cas_unprivileged(root, "checkout", "--rev", "HEAD~1", code=7).stderr)
    assert "permission denied" in line and "data/sub" in line, line
    assert_old_or_new(root, old, new)
    assert temp_leftovers(root) == []
    os.chmod(root / "data/sub", 0o755)
    cas_unprivileged(root, "checkout", "--rev", "HEAD~1", code=0)
    assert files_of(root, ["data", "data.cas"]) == new


def test_pointer_that_cannot_be_written(tmp_path: Path, restore_modes: list[Path]) -> None:
    """``sub/data.cas`` cannot be replaced while ``sub/`` is read-only: one line naming the
    pointer, the old pointer intact. A read-only pointer *file* in a writable folder is
    replaced atomically, as Git replaces read-only files it checks out."""
    root = new_repo(tmp_path / "proj")
    write(root / "sub/data/x.txt", "one")
    add(root, "sub/data")
    git(root, "commit", "-qm", "one")
    pointer = (root / "sub/data.cas").read_bytes()
    write(root / "sub/data/x.txt", "two")
    os.chmod(root / "sub", 0o555)
    restore_modes.append(root / "sub")
    line = one_line(cas_unprivileged(root, "add", "sub/data", code=7).stderr)
    assert "cannot write sub/data.cas: permission denied" in line, line
    assert (root / "sub/data.cas").read_bytes() == pointer
    assert temp_leftovers(root) == []
    assert_store_sound(root)

    os.chmod(root / "sub", 0o755)
    os.chmod(root / "sub/data.cas", 0o444)
    cas_unprivileged(root, "add", "sub/data", code=0)
    assert (root / "sub/data.cas").read_bytes() != pointer
    assert_pointer_matches(root, "sub/data")


# -- an S3 server that goes away ---------------------------------------------------------------
def pause_after_first_from_env() -> None:
    """Hook for a CLI subprocess: after the first pack moves (``CAS_TEST_PAUSE=push`` or
    ``pull``), create ``$CAS_TEST_DIR/paused`` and wait for ``$CAS_TEST_DIR/resume``, so the
    test can stop the server at a known point; then record in ``server`` whether the server
    answered when the transfer resumed ("down" proves the outage overlapped the transfer).
    For a push, cas's backoff starts at 1 s (then 2, 4, 4) so a restart fits in the window;
    for a pull, which is to give up, retries are cut short."""
    import socket
    from urllib.parse import urlsplit

    from cas.store import fsspec as store_fsspec

    folder = Path(os.environ["CAS_TEST_DIR"])
    endpoint = urlsplit(os.environ["AWS_ENDPOINT_URL"])
    done = threading.Event()

    def paused(fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            result = fn(*args, **kwargs)
            if not done.is_set():
                done.set()
                (folder / "paused").touch()
                deadline = time.monotonic() + 60
                while not (folder / "resume").exists() and time.monotonic() < deadline:
                    time.sleep(0.02)
                try:
                    socket.create_connection((endpoint.hostname, endpoint.port), 1).close()
                    state = "up"
                except OSError:
                    state = "down"
                (folder / "server").write_text(state)
            return result

        return wrapper

    if os.environ["CAS_TEST_PAUSE"] == "push":
        store_fsspec.BACKOFF_SECONDS = 1.0
        store_fsspec.FsspecStore.put_reader = paused(store_fsspec.FsspecStore.put_reader)
    else:
        # Giving up through every retry layer (cas x s3fs x botocore) takes ~20 s; two quick
        # attempts reach the same message. Riding out an outage is the push test's subject.
        import s3fs

        s3fs.S3FileSystem.retries = 1
        store_fsspec.BACKOFF_SECONDS = 0.01
        real_init = store_fsspec.FsspecStore.__init__

        def two_attempts(self: Any, *args: Any, **kwargs: Any) -> None:
            real_init(self, *args, **{**kwargs, "attempts": 2})

        store_fsspec.FsspecStore.__init__ = two_attempts  # type: ignore[method-assign]
        transfer._download_pack = paused(transfer._download_pack)


def wait_for(path: Path, proc: subprocess.Popen[str], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, f"cas ended before {path.name}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"no {path.name} after {seconds} s"
        time.sleep(0.02)


@pytest.fixture
def outage_repo(
    git_repo: Path, own_s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, S3Server]:
    """A repository with v1 of ``data`` in many small packs, committed, with an S3 remote on
    a private server (which the test may stop)."""
    server = own_s3_server
    server.create_bucket("outage")
    for key, value in server.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(objects, "PACK_TARGET_SIZE", 200_000)
    Repo.init(git_repo)
    remote.add(Repo.discover(git_repo), "origin", "s3://outage/cas")
    make_data(git_repo, 1)
    add(git_repo, "data")
    git(git_repo, "commit", "-qm", "v1")
    assert len(Repo.discover(git_repo).objects.pack_ids()) >= 5
    return git_repo, server


def test_server_outage_mid_push_is_retried_and_mid_pull_fails_clearly(
    outage_repo: tuple[Path, S3Server], tmp_path: Path
) -> None:
    """One private server, two outages. During a push, the server goes down after the first
    pack and comes back while the push retries: the push completes and verifies. During a
    pull in a fresh clone, it goes down after the first pack and stays down: one line naming
    the remote, its endpoint and the fix, exit 7, nothing partial; after a restart the rerun
    completes with exact data."""
    root, server = outage_repo
    control = tmp_path / "push"
    control.mkdir()
    env = {**server.env, "CAS_TEST_DIR": str(control), "CAS_TEST_PAUSE": "push"}
    proc = hooked_cas(root, "tests.test_faults:pause_after_first_from_env", "push", "--jobs",
                      "1", env=env)  # fmt: skip
    wait_for(control / "paused", proc)
    server.stop()
    (control / "resume").touch()
    wait_for(control / "server", proc)  # the push goes on, into the outage
    server.start()
    code, _out, err = finish(proc)
    assert code == 0, err
    assert (control / "server").read_text() == "down"  # the push resumed into the outage
    assert ": ok" in cas(root, "verify", "--remote", env=server.env).stdout

    other = tmp_path / "clone"
    git(root.parent, "clone", "-q", str(root), str(other))
    control = tmp_path / "pull"
    control.mkdir()
    env = {**server.env, "CAS_TEST_DIR": str(control), "CAS_TEST_PAUSE": "pull"}
    proc = hooked_cas(other, "tests.test_faults:pause_after_first_from_env", "pull", "--jobs",
                      "1", env=env)  # fmt: skip
    wait_for(control / "paused", proc)
    server.stop()
    (control / "resume").touch()
    code, _out, err = finish(proc)
    assert (control / "server").read_text() == "down"
    line = one_line(err)
    assert code == 7, err
    assert "cannot reach remote 'origin'" in line and server.endpoint in line, line
    assert "cas remote modify origin endpoint_url" in line, line
    assert not (other / "data").exists()
    assert_store_sound(other, allow_dead_temps=True)

    server.start()
    cas(other, "pull", env=server.env)
    assert tree(other / "data") == tree(root / "data")
    assert_store_sound(other)
    assert ": ok" in cas(other, "verify", "--remote", env=server.env).stdout


# -- wrong credentials -------------------------------------------------------------------------
WRONG_SECRET = "wrong-secret-Kq7-do-not-print"


def test_wrong_credentials_never_print_a_secret(
    git_repo: Path,
    tmp_path: Path,
    s3_server: S3Server,
    s3_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every command that talks to the remote, in text and --json, and with --verbose (which
    adds a traceback): exit 7, one line naming the remote and the fix, and neither the wrong
    secret nor the right one anywhere in the output. The wrong secret comes from the
    environment in one clone, from .cas/config.local (which wins over the right one in the
    environment) in another. The commands run at once: each mostly waits on imports."""
    Repo.init(git_repo)
    remote.add(Repo.discover(git_repo), "origin", f"s3://{s3_bucket}/cas")
    make_data(git_repo, 1)
    add(git_repo, "data")
    git(git_repo, "commit", "-qm", "v1")
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    transfer.push(Repo.discover(git_repo))
    by_env, by_file = tmp_path / "by-env", tmp_path / "by-file"
    for clone in (by_env, by_file):
        git(git_repo.parent, "clone", "-q", str(git_repo), str(clone))
    remote.modify(Repo.discover(by_file), "origin", "access_key_id", ACCESS_KEY, local=True)
    remote.modify(Repo.discover(by_file), "origin", "secret_access_key", WRONG_SECRET, local=True)
    wrong_env = {**os.environ, **s3_server.env, "AWS_SECRET_ACCESS_KEY": WRONG_SECRET}
    right_env = {**os.environ, **s3_server.env}
    runs = [(by_env, wrong_env, args) for args in (
        ["pull", "--json"], ["verify", "--remote", "--json"], ["status", "--remote", "--json"],
        ["--verbose", "fetch"])]  # fmt: skip
    runs += [(by_file, right_env, args) for args in (["pull"], ["push", "--json"])]
    procs = [
        subprocess.Popen([*CAS, *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for cwd, env, args in runs
    ]  # fmt: skip
    for (_cwd, _env, args), proc in zip(runs, procs):
        code, out, err = finish(proc)
        assert code == 7, (args, err)
        for secret in (WRONG_SECRET, SECRET_KEY):
            assert secret not in out + err, args
        if "--verbose" in args:
            assert "Traceback" in err
            continue
        line = one_line(err)
        assert "wrong credentials or permission denied for remote 'origin'" in line, line
        assert "AWS_SECRET_ACCESS_KEY" in line and "--local" in line, line  # the fix
    listing = cas(by_file, "remote", "list").stdout
    assert WRONG_SECRET not in listing and "secret_access_key" in listing
    for clone in (by_env, by_file):
        assert not (clone / "data").exists()
        assert_store_sound(clone)
