"""Result records and their rendering as plain-text and Markdown tables.

Kept independent of any particular suite: a suite hands back a list of
:class:`Record` (measurements) and :class:`Goal` (targets), and this module turns any
mix of them into tables, so new suites (remote push/pull, manifests, snapshots) only
produce records and never touch the formatting.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

PASS = "PASS"
FAIL = "FAIL"
NA = "n/a"


@dataclass
class Record:
    """One measured quantity: all repetitions for (suite, dataset, tool, metric).

    ``values`` holds every successful repetition so median/min/max stay honest;
    ``error`` is set when no repetition succeeded (or to note partial failures).
    """

    suite: str
    dataset: str
    tool: str
    metric: str
    unit: str
    values: list[float] = field(default_factory=list)
    error: str | None = None
    ref: float | None = None
    order: int = 0

    @property
    def ok(self) -> bool:
        """True when at least one repetition produced a value."""
        return bool(self.values)

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    @property
    def min(self) -> float | None:
        return min(self.values) if self.values else None

    @property
    def max(self) -> float | None:
        return max(self.values) if self.values else None


@dataclass
class Goal:
    """A target for one derived quantity; ``measured`` is None when it can't be computed."""

    suite: str
    dataset: str
    name: str
    measured: float | None
    unit: str
    op: str  # "<=" or ">="
    target: float
    note: str = ""

    @property
    def status(self) -> str:
        if self.measured is None:
            return NA
        ok = self.measured <= self.target if self.op == "<=" else self.measured >= self.target
        return PASS if ok else FAIL


def fmt_value(value: float | None, unit: str) -> str:
    """Human formatting per unit; sizes in decimal units like ``du``/DVC docs use."""
    if value is None:
        return "-"
    if unit == "s":
        return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "%":
        return f"{value:.3f} %" if value < 10 else f"{value:.1f} %"
    if unit == "MiB":
        return f"{value:.0f} MiB" if value >= 10 else f"{value:.1f} MiB"
    if unit == "B":
        for div, name in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
            if abs(value) >= div:
                return f"{value / div:.2f} {name}"
        return f"{value:.0f} B"
    return f"{value:g} {unit}".rstrip()


class Table:
    """A list of rows with headers, renderable as aligned text or as Markdown."""

    def __init__(self, headers: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
        self.headers = list(headers)
        self.rows = [list(r) for r in rows]

    def to_text(self) -> str:
        widths = [len(h) for h in self.headers]
        for row in self.rows:
            widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
        lines = ["  ".join(h.ljust(w) for h, w in zip(self.headers, widths, strict=True))]
        lines.append("  ".join("-" * w for w in widths))
        for row in self.rows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
        return "\n".join(line.rstrip() for line in lines)

    def to_markdown(self) -> str:
        def esc(cell: str) -> str:
            return cell.replace("|", "\\|").replace("\n", " ")

        lines = ["| " + " | ".join(esc(h) for h in self.headers) + " |"]
        lines.append("|" + "|".join("---" for _ in self.headers) + "|")
        for row in self.rows:
            lines.append("| " + " | ".join(esc(c) for c in row) + " |")
        return "\n".join(lines)


def _short(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def results_table(records: Sequence[Record], *, full_errors: bool = False) -> Table:
    """Long-format table (one row per record): generic over suites, tools and metrics."""
    show_ref = any(r.ref is not None for r in records)
    headers = ["dataset", "metric", "tool", "median", "min", "max", "n"]
    if show_ref:
        headers.append("ref")
    rows = []
    for r in sorted(records, key=lambda r: (r.order, r.dataset, r.metric, r.tool)):
        if r.ok:
            cells = [
                fmt_value(r.median, r.unit),
                fmt_value(r.min, r.unit),
                fmt_value(r.max, r.unit),
                str(len(r.values)),
            ]
            if r.error:
                cells[3] += " (+errors)"
        else:
            msg = r.error or "no data"
            cells = [f"error: {msg if full_errors else _short(msg)}", "", "", "0"]
        row = [r.dataset, r.metric, r.tool, *cells]
        if show_ref:
            row.append(fmt_value(r.ref, r.unit) if r.ref is not None else "")
        rows.append(row)
    return Table(headers, rows)


def goals_table(goals: Sequence[Goal], note_limit: int = 70) -> Table:
    """One row per goal with measured value, target and PASS/FAIL/n/a."""
    rows = []
    for g in goals:
        rows.append(
            [
                g.dataset,
                g.name,
                fmt_value(g.measured, g.unit),
                f"{g.op} {fmt_value(g.target, g.unit)}",
                g.status,
                _short(g.note, note_limit),
            ]
        )
    return Table(["dataset", "goal", "measured", "target", "status", "note"], rows)


def errors_of(records: Sequence[Record]) -> list[str]:
    """Full error texts, for a footnote list under the compact tables."""
    return [f"{r.dataset} / {r.tool} / {r.metric}: {r.error}" for r in records if r.error]


def render_text(suite: str, records: Sequence[Record], goals: Sequence[Goal]) -> str:
    """Console rendering of one suite."""
    parts = [f"== suite: {suite} =="]
    if records:
        parts += ["", results_table(records).to_text()]
    if goals:
        parts += ["", "Goals:", goals_table(goals).to_text()]
    errs = errors_of(records)
    if errs:
        parts += ["", "Errors:"] + [f"  - {_short(e, 300)}" for e in errs]
    return "\n".join(parts)


def render_markdown(
    meta: dict[str, str],
    notes: Sequence[str],
    sections: Sequence[tuple[str, Sequence[Record], Sequence[Goal]]],
) -> str:
    """Whole report: provenance header, then one section per suite."""
    out = ["# Benchmarks", "", "Generated by the benchmark harness; do not edit by hand.", ""]
    out.append("| | |")
    out.append("|---|---|")
    for key, value in meta.items():
        shown = f"`{value}`" if key == "command" else value
        out.append(f"| {key} | {shown} |")
    out.append("")
    for note in notes:
        out.append(f"> {note}")
        out.append("")
    for suite, records, goals in sections:
        out += [f"## Suite `{suite}`", ""]
        if goals:
            out += ["### Goals", "", goals_table(goals, 200).to_markdown(), ""]
        if records:
            out += ["### Measurements", "", results_table(records).to_markdown(), ""]
        errs = errors_of(records)
        if errs:
            out += ["Errors:", ""] + [f"- {_short(e, 400)}" for e in errs] + [""]
    return "\n".join(out).rstrip() + "\n"


def to_json(
    meta: dict[str, str], sections: Sequence[tuple[str, Sequence[Record], Sequence[Goal]]]
) -> str:
    """Machine-readable dump, so results can be diffed or plotted later."""
    doc: dict[str, Any] = {"meta": meta, "suites": {}}
    for suite, records, goals in sections:
        doc["suites"][suite] = {
            "records": [asdict(r) | {"median": r.median} for r in records],
            "goals": [asdict(g) | {"status": g.status} for g in goals],
        }
    return json.dumps(doc, indent=2) + "\n"
