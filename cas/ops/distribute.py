"""Hashing on a cluster: ``cas add --executor`` and ``cas manifest create|append --executor``.

Terms:

- *coordinator*: the process running the cas command. It scans and plans, and it alone builds the
  manifest and writes the pointer, so a cluster of any size still makes one commit.
- *executor*: any :class:`concurrent.futures.Executor` whose workers see the data and the store
  at the same paths: Dask's (``tcp://scheduler:8786``, through ``Client.get_executor()``), a local
  process pool (``processes:N``), or one a caller builds (Ray's, say) and passes to the API.
- *task*: a batch of files (about ``TASK_BYTES``, at most ``TASK_FILES``) that one worker chunks,
  hashes and packs into the shared store; it returns the files' manifest rows.

Why it stays correct: chunk ids, rows and so the manifest id depend only on file content, never
on which worker read a file or in which order tasks finished (the coordinator sorts rows, as a
local add does), so the result is the manifest id a single-machine add gives. A worker writes
packs exactly as a local add does (temp file, seal, rename, index file), so a worker killed
mid-task leaves at most a temp pack (swept like any) or sealed packs no manifest names yet
(garbage for ``cas gc``, never data): Dask reruns the task elsewhere and the rows are the same.
Workers never share an in-memory index: each task opens the store afresh, so a chunk two tasks
find new at once may be stored twice (gc's repack drops the spare copy), and no task can trust a
pack that gc removed since an earlier command.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from cas.errors import UsageError, missing_extra
from cas.ops.hashfile import hash_file
from cas.rows import Row
from cas.workspace import Entry

if TYPE_CHECKING:
    from contextlib import AbstractContextManager as ContextManager

    from cas.config import Config

T = TypeVar("T")
R = TypeVar("R")

#: A task's share of the data: big enough that scheduling costs little beside hashing it
#: (a Dask task costs ~1 ms of scheduler time; 64 MiB take ~0.1 s to chunk and hash), small
#: enough that a killed worker loses little and the last tasks do not leave workers idle.
TASK_BYTES = 64 << 20
TASK_FILES = 2_000
#: Tasks in flight per worker: the coordinator holds their results, so memory stays O(window).
WINDOW_PER_WORKER = 4
#: What an executor handed in through the API is assumed to have, to size the window.
DEFAULT_WORKERS = 8
LOCAL = "local"
#: How long to try reaching a Dask scheduler: a live one answers within a second.
CONNECT_SECONDS = 10


@dataclass(frozen=True)
class FileTask:
    """Files for one worker: ``items`` are (index in the coordinator's listing, path relative to
    the repository root, path inside the target, size, mtime_ns, inode, executable)."""

    root: str
    store: str
    fsync: bool
    items: tuple[tuple[int, str, str, int, int, int, bool], ...]


@dataclass(frozen=True)
class FileResult:
    """(index, row, time the file was last seen unchanged) per file, and the bytes stored."""

    rows: list[tuple[int, Row, int]]
    new_bytes: int


def hash_file_task(task: FileTask) -> FileResult:
    """Run on a worker: chunk, hash and pack the task's files into the shared store."""
    from cas.objects import ObjectStore  # on the worker: imported once per process
    from cas.store.local import LocalStore

    _require_visible(task.root, "repository")
    _require_visible(task.store, "store")
    local = LocalStore(Path(task.store), fsync=task.fsync)
    objects = ObjectStore(local)
    out: list[tuple[int, Row, int]] = []
    try:
        with objects.writer() as writer:
            for i, shown, rel, size, mtime_ns, ino, executable in task.items:
                entry = Entry(rel, size, mtime_ns, ino, executable)
                out.append((i, *hash_file(f"{task.root}/{shown}", entry, shown, writer)))
        return FileResult(out, writer.new_bytes)
    finally:
        objects.close()
        local.close()  # the store lock: gc must not wait for an idle worker


def _require_visible(path: str, what: str) -> None:
    if not os.path.isdir(path):
        raise UsageError(
            f"worker {socket.gethostname()} cannot see the {what} at {path}: with --executor, "
            "the data and the store (core.store) must be on a filesystem every worker mounts "
            "at the same path"
        )


@dataclass(frozen=True)
class HashTask:
    """Corpus files for one worker: the corpus URL, where the batch starts in the listing, and
    its (path, size) pairs. Credentials come from the worker's environment, as locally."""

    url: str
    start: int
    items: tuple[tuple[str, int], ...]


def hash_corpus_task(task: HashTask) -> tuple[int, list[bytes]]:
    """Run on a worker: the BLAKE3 of each corpus file, read where it lies."""
    from cas.ops.corpus import hash_checked, open_source

    src = open_source(task.url)
    return task.start, [hash_checked(src, rel, size) for rel, size in task.items]


def batches(sizes: Sequence[int]) -> Iterator[range]:
    """Consecutive index ranges of about ``TASK_BYTES`` (a larger file is a task alone) and at
    most ``TASK_FILES`` files: consecutive, so a task reads neighbouring files."""
    max_bytes, max_files = TASK_BYTES, TASK_FILES
    start, total = 0, 0
    for i, size in enumerate(sizes):
        if i > start and (total + size > max_bytes or i - start >= max_files):
            yield range(start, i)
            start, total = i, 0
        total += size
    if start < len(sizes):
        yield range(start, len(sizes))


def run_windowed(executor: Executor, fn: Any, tasks: Iterable[T], window: int) -> Iterator[R]:
    """``fn`` over ``tasks`` on the executor, at most ``window`` in flight, results as they
    complete (the caller's results must not depend on the order). The first failure cancels
    what has not started and is raised here."""
    pending: set[Future[R]] = set()
    source = iter(tasks)
    exhausted = False
    try:
        while True:
            while not exhausted and len(pending) < window:
                try:
                    pending.add(executor.submit(fn, next(source)))
                except StopIteration:
                    exhausted = True
            if not pending:
                return
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                yield fut.result()
    finally:
        for fut in pending:
            fut.cancel()


@dataclass
class Cluster:
    """An executor and how many workers it has: the window of tasks kept in flight is
    ``WINDOW_PER_WORKER`` per worker."""

    executor: Executor
    workers: int = 1

    @property
    def window(self) -> int:
        return WINDOW_PER_WORKER * max(1, self.workers)


def executor_for(config: Config, executor: str | Executor | None) -> ContextManager[Cluster | None]:
    """The cluster a command hashes on: ``executor`` (an address or spec, or an executor a
    caller built), else ``core.executor`` of .cas/config, else none (this process)."""
    if executor is not None and not isinstance(executor, str):
        return contextlib.nullcontext(Cluster(executor, DEFAULT_WORKERS))
    return open_executor(executor or config.get("core", "executor") or LOCAL)


@contextlib.contextmanager
def open_executor(spec: str) -> Iterator[Cluster | None]:
    """The executor ``spec`` names: ``tcp://host:port`` (or ``tls://``, ``ucx://``) a Dask
    scheduler, ``processes`` or ``processes:N`` a local process pool, ``local`` none (hash in
    this process, as without --executor)."""
    if spec == LOCAL:
        yield None
        return
    if spec == "processes" or spec.startswith("processes:"):
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        count = spec.partition(":")[2]
        if count and not (count.isdigit() and int(count) > 0):
            raise UsageError(f"--executor {spec!r}: the process count must be a positive number")
        # spawn: a forked child would inherit this process's store lock and open packs
        workers = int(count) if count else (os.cpu_count() or 1)
        with ProcessPoolExecutor(workers, get_context("spawn")) as pool:
            yield Cluster(pool, workers)
        return
    if "://" in spec:
        try:
            from distributed import Client
        except ModuleNotFoundError as err:
            if (err.name or "").partition(".")[0] not in ("distributed", "dask"):
                raise
            raise missing_extra("distributed", "dask") from None
        try:
            client = Client(spec, timeout=CONNECT_SECONDS, set_as_default=False)
        except OSError as err:
            raise UsageError(
                f"cannot reach the Dask scheduler at {spec}: {err}; check the address "
                "(tcp://host:8786) and that 'dask scheduler' is running"
            ) from None
        try:
            yield Cluster(client.get_executor(), len(client.scheduler_info().get("workers", {})))
        finally:
            client.close()
        return
    raise UsageError(
        f"--executor {spec!r} is not an executor: use tcp://host:port (a Dask scheduler), "
        "processes[:N] or local"
    )
