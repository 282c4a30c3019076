"""What every suite receives (:class:`BenchContext`) and hands back (:class:`SuiteResult`).

Suites are plain functions ``run(ctx) -> SuiteResult`` registered in ``run.py``; this
module is the only contract between them and the entry point.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from report import Goal, Record
from tools import DvcTool, Runner, VcsTool


@dataclass
class BenchContext:
    """Run-wide settings and shared services (paths, runner, tool adapters)."""

    repo_root: Path
    bench_dir: Path
    data_dir: Path
    work_dir: Path
    size: str
    seed: int
    datasets: list[str]
    repeats: dict[str, int]
    tools: set[str]
    runner: Runner
    project_python: Path
    dvc: DvcTool | None = None
    cas: VcsTool | None = None
    started: float = field(default_factory=time.monotonic)

    def repeat_for(self, dataset: str) -> int:
        return max(1, self.repeats.get(dataset, self.repeats.get("*", 1)))

    def log(self, message: str) -> None:
        """Progress to stderr so stdout stays the results."""
        elapsed = time.monotonic() - self.started
        print(f"[{elapsed:7.1f}s] {message}", file=sys.stderr, flush=True)


@dataclass
class SuiteResult:
    """Records and goals of one suite, plus free-text notes for the report."""

    records: list[Record] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Collector:
    """Accumulates per-repetition values and errors, keyed by (dataset, tool, metric key).

    Metric keys map to a display label and unit through ``metrics``; the dict order is
    the display order.
    """

    def __init__(self, suite: str, metrics: dict[str, tuple[str, str]]) -> None:
        self.suite = suite
        self.metrics = metrics
        self.values: dict[tuple[str, str, str], list[float]] = defaultdict(list)
        self.errors: dict[tuple[str, str, str], list[str]] = defaultdict(list)
        self._seen: dict[str, dict[str, int]] = {"dataset": {}, "tool": {}}

    def _note(self, dataset: str, tool: str) -> None:
        """Remember first-seen order of datasets and tools for a stable display order."""
        for kind, name in (("dataset", dataset), ("tool", tool)):
            self._seen[kind].setdefault(name, len(self._seen[kind]))

    def add(self, dataset: str, tool: str, key: str, value: float) -> None:
        self._note(dataset, tool)
        self.values[(dataset, tool, key)].append(float(value))

    def error(self, dataset: str, tool: str, key: str, message: str) -> None:
        self._note(dataset, tool)
        self.errors[(dataset, tool, key)].append(message)

    def median(self, dataset: str, tool: str, key: str) -> float | None:
        vals = self.values.get((dataset, tool, key))
        return statistics.median(vals) if vals else None

    def maximum(self, dataset: str, tool: str, key: str) -> float | None:
        vals = self.values.get((dataset, tool, key))
        return max(vals) if vals else None

    def why_missing(self, dataset: str, tool: str, key: str) -> str:
        """The first error explaining why a value is absent (for n/a goal notes)."""
        for k in ((dataset, tool, key), (dataset, tool, "_all")):
            if self.errors.get(k):
                return f"{tool}: {self.errors[k][0]}"
        return f"{tool}: not measured"

    def records(self, refs: dict[tuple[str, str, str], float] | None = None) -> list[Record]:
        keys = set(self.values) | set(self.errors)
        order = {k: i for i, k in enumerate(self.metrics)}
        out = []
        for dataset, tool, key in keys:
            label, unit = self.metrics.get(key, (key, ""))
            errs = self.errors.get((dataset, tool, key), [])
            vals = self.values.get((dataset, tool, key), [])
            error = None
            if errs:
                error = errs[0] if not vals else f"{len(errs)} repetition(s) failed: {errs[0]}"
            rank = (
                self._seen["dataset"][dataset] * 10_000
                + order.get(key, 99) * 100
                + self._seen["tool"][tool]
            )
            out.append(
                Record(
                    self.suite,
                    dataset,
                    tool,
                    label,
                    unit,
                    list(vals),
                    error,
                    (refs or {}).get((dataset, tool, key)),
                    rank,
                )
            )
        return out
