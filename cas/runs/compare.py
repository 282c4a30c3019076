"""Comparing runs: which of the four inputs differ and how (``cas runs diff``), and whether a
rerun's metrics reproduce a record's within a tolerance (``cas repro``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

INPUTS = ("code", "data", "config", "env")


@dataclass
class RunDiff:
    """``inputs``: for each input that differs, lines saying how; ``metrics``: name -> (a, b)."""

    inputs: dict[str, list[str]] = field(default_factory=dict)
    metrics: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    @property
    def nondeterministic(self) -> bool:
        """No input differs, yet a metric does: the command is not deterministic."""
        return not self.inputs and bool(self.metrics)


def _changes(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    lines = []
    for key in sorted(set(a) | set(b)):
        if key not in a:
            lines.append(f"{key}: added ({b[key]!r})")
        elif key not in b:
            lines.append(f"{key}: removed (was {a[key]!r})")
        elif a[key] != b[key]:
            lines.append(f"{key}: {a[key]!r} -> {b[key]!r}")
    return lines


def _code(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    lines = []
    if a["tree"] != b["tree"]:
        lines.append(
            f"commit {str(a['commit'])[:12]} -> {str(b['commit'])[:12]} "
            f"(tree differs: git diff {str(a['commit'])[:12]} {str(b['commit'])[:12]})"
        )
    fa = {f["path"]: f["git"] for f in a["files"]}
    fb = {f["path"]: f["git"] for f in b["files"]}
    for path in sorted(set(fa) | set(fb)):
        if fa.get(path) != fb.get(path):
            state = "uncommitted in B" if path not in fa else "not in B" if path not in fb else ""
            lines.append(f"{path}: {state or 'changed'}")
    for path in sorted(set(a["deleted"]) ^ set(b["deleted"])):
        lines.append(f"{path}: deleted in {'A' if path in a['deleted'] else 'B'}")
    return lines


def _data(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    pa = {p["pointer"]: p["manifest"] for p in a["pointers"]}
    pb = {p["pointer"]: p["manifest"] for p in b["pointers"]}
    return [line.replace("'", "") for line in _changes(pa, pb)]


def _config(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    lines = []
    if a["argv"] != b["argv"]:
        lines.append(f"command: {' '.join(a['argv'])} -> {' '.join(b['argv'])}")
    keys_a = {f"{f['path']}:{k}": v for f in a["files"] for k, v in f["keys"].items()}
    keys_b = {f"{f['path']}:{k}": v for f in b["files"] for k, v in f["keys"].items()}
    lines += [
        line.split(":", 1)[1] if line.count(":") > 1 else line for line in _changes(keys_a, keys_b)
    ]
    blobs_a = {f["path"]: f["blob"] for f in a["files"]}
    blobs_b = {f["path"]: f["blob"] for f in b["files"]}
    if blobs_a != blobs_b and not lines:
        lines.append("config file bytes differ (" + ", ".join(sorted(blobs_a)) + ")")
    if a["seed"] != b["seed"]:
        lines.append(f"seed: {a['seed']} -> {b['seed']}")
    lines += [f"${line}" for line in _changes(a["env"], b["env"])]
    if a["cwd"] != b["cwd"]:
        lines.append(f"working directory: {a['cwd']!r} -> {b['cwd']!r}")
    return lines


def _packages(items: list[str]) -> dict[str, str]:
    return dict(item.partition("==")[::2] for item in items)


def env_changes(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """What differs between two environments, package versions one per line."""
    skip = {"packages", "packages_hash", "runtime"}
    lines = _changes(
        {k: v for k, v in a.items() if k not in skip}, {k: v for k, v in b.items() if k not in skip}
    )
    pa, pb = _packages(a["packages"]), _packages(b["packages"])
    for name in sorted(set(pa) | set(pb)):
        if pa.get(name) != pb.get(name):
            lines.append(f"{name}: {pa.get(name, 'absent')} -> {pb.get(name, 'absent')}")
    lines += [
        f"runtime {line}"
        for line in _changes(a.get("runtime", {}), b.get("runtime", {}))
        if not line.startswith("seed:")
    ]
    return lines


def diff(a: dict[str, Any], b: dict[str, Any]) -> RunDiff:
    result = RunDiff()
    how = {"code": _code, "data": _data, "config": _config, "env": env_changes}
    for name in INPUTS:
        if a["fingerprint"][name] != b["fingerprint"][name]:
            result.inputs[name] = how[name](a[name], b[name]) or ["(differs)"]
    ma, mb = a.get("metrics", {}), b.get("metrics", {})
    for name in sorted(set(ma) | set(mb)):
        if ma.get(name) != mb.get(name):
            result.metrics[name] = (ma.get(name), mb.get(name))
    return result


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float


@dataclass
class MetricCheck:
    name: str
    old: Any
    new: Any
    tolerance: Tolerance
    ok: bool

    def line(self) -> str:
        verdict = "ok" if self.ok else "NOT REPRODUCED"
        if self.new is None:
            return f"{self.name}: {self.old} -> missing: {verdict}"
        return (
            f"{self.name}: {self.old} -> {self.new} (|diff| {_delta(self.old, self.new)}, "
            f"allowed {self.tolerance.atol} + {self.tolerance.rtol} x |old|): {verdict}"
        )


def _delta(old: Any, new: Any) -> str:
    try:
        return f"{abs(float(new) - float(old)):.6g}"
    except (TypeError, ValueError):
        return "n/a"


def isclose(old: Any, new: Any, tol: Tolerance) -> bool:
    """numpy.isclose's rule, ``|new - old| <= atol + rtol * |old|``; NaN equals NaN (both
    recorded as "nan"), since a run that diverged the same way reproduced."""
    if new is None:
        return False
    try:
        o, n = float(old), float(new)
    except (TypeError, ValueError):
        return old == new
    if math.isnan(o) or math.isnan(n):
        return math.isnan(o) and math.isnan(n)
    if math.isinf(o) or math.isinf(n):
        return o == n
    return abs(n - o) <= tol.atol + tol.rtol * abs(o)


def check_metrics(
    old: dict[str, Any], new: dict[str, Any], default: Tolerance, per_metric: dict[str, float]
) -> list[MetricCheck]:
    """Every recorded metric against the rerun's. A per-metric tolerance is a relative one."""
    checks = []
    for name in sorted(old):
        tol = Tolerance(per_metric[name], default.atol) if name in per_metric else default
        checks.append(
            MetricCheck(name, old[name], new.get(name), tol, isclose(old[name], new.get(name), tol))
        )
    return checks
