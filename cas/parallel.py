"""Bounded parallel map: both cores for work that releases the GIL (hashing, chunking, I/O).

Only a window of tasks is in flight, so memory stays bounded for 10^6 files; results come back in
input order, so callers stay deterministic.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

WORKERS = min(4, os.cpu_count() or 1)
#: Requests in flight to a remote (--jobs): network-bound, so more than the cores.
TRANSFER_JOBS = 8


def bounded_map(
    fn: Callable[[T], R], items: Iterable[T], workers: int = WORKERS, window: int = 64
) -> Iterator[R]:
    if workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cas-work") as pool:
        pending: deque[Future[R]] = deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= window:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()


class _Stopped(Exception):
    """Raised in the heavy thread once the light side has failed: no point finishing."""


def overlapped_map(
    fn: Callable[[T], R], heavy: Iterable[T], light: Iterable[T], workers: int = WORKERS
) -> Iterator[R]:
    """``fn`` over ``heavy`` items on a pool (work that releases the GIL: chunking and hashing
    large files) while this thread maps ``fn`` over ``light`` items (many small files, where
    extra threads only fight over the GIL). Light results come first, as they are made; heavy
    ones once both sides are done. An error on either side is raised here."""
    results: list[R] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def guarded(item: T) -> R:
        if stop.is_set():
            raise _Stopped
        return fn(item)

    def drain() -> None:
        try:
            results.extend(bounded_map(guarded, heavy, workers))
        except BaseException as exc:  # handed to the caller's thread below
            errors.append(exc)

    thread = threading.Thread(target=drain, name="cas-heavy")
    thread.start()
    try:
        yield from map(fn, light)
    except BaseException:
        stop.set()
        raise
    finally:
        thread.join()
    if errors:
        raise errors[0]
    yield from results
