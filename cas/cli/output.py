"""What every command module shares: global flags, JSON output, rich progress on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

    from cas.ops.checkout import CheckoutResult


@dataclass
class State:
    verbose: bool = False
    quiet: bool = False


state = State()
_consoles: dict[bool, Console] = {}


def console(stderr: bool = False) -> Console:
    """rich's console for stdout (or stderr), made on first use: importing rich is a tenth of
    a command's start-up. What cas prints holds file names, and "[/b]", "[red]" and ":cat:" are
    legal ones: markup=False (rich would raise MarkupError on the first and swallow the second)
    and emoji=False (it would print the third as a cat)."""
    if stderr not in _consoles:
        from rich.console import Console

        _consoles[stderr] = Console(
            stderr=stderr, highlight=False, soft_wrap=not stderr, markup=False, emoji=False
        )
    return _consoles[stderr]


def warn(message: str) -> None:
    """The one form of a warning on stderr (``cas.runs``' and the snapshot writer's Python
    warnings reach it through :func:`cas.cli.main.run`)."""
    print(f"cas: warning: {message}", file=sys.stderr)


def emit_json(data: Any) -> None:
    """Machine-readable output: one JSON document on stdout. Keys keep the order they were
    built in: some orders mean something (``cas split``'s fractions are in bucket order)."""
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def say(message: str) -> None:
    if not state.quiet:
        console().print(message)


def report(results: Sequence[Any], json_out: bool, line: Callable[[Any], str]) -> None:
    """What every per-target command prints: all results as one JSON document, or one
    summary line each."""
    if json_out:
        emit_json([asdict(r) for r in results])
        return
    for r in results:
        say(line(r))


class RichProgress:
    """A progress bar on stderr, only when stderr is a terminal and not --quiet."""

    def __init__(self) -> None:
        self.enabled = console(stderr=True).is_terminal and not state.quiet
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def start(self, description: str, total: int) -> None:
        if not self.enabled or total == 0:
            return
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._bar = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console(stderr=True),
            transient=True,
        )
        self._bar.start()
        self._task = self._bar.add_task(description, total=total)

    def advance(self, amount: int) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.advance(self._task, amount)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def human(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def checked_out(r: CheckoutResult) -> str:
    """The summary line of a checkout, whether ``checkout`` or ``pull`` ran it."""
    cloned = f", {human(r.bytes_cloned)} cloned" if r.bytes_cloned else ""
    return (
        f"{r.pointer}: {r.written} written ({human(r.bytes_written)}{cloned}), "
        f"{r.deleted} deleted, {r.unchanged} unchanged"
    )
