"""Bounded parallel map: both cores for work that releases the GIL (hashing, chunking, I/O).

Only a window of tasks is in flight, so memory stays bounded for 10^6 files; results come back in
input order, so callers stay deterministic.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

WORKERS = min(4, os.cpu_count() or 1)


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
