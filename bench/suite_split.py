"""Split suite: runs ``bench/bench_split.py`` (owned separately) and checks its goal.

That script prints one line ``split_<what>_s <seconds>`` (``split_10M_string_ids_s``
for the default 10M ids, the figure the 3 s goal is about); it runs under the
project's python because it imports cas. ``--size small`` runs it on 1M ids once, so
the goal is then reported as n/a.
"""

from __future__ import annotations

import re

from harness import BenchContext, Collector, SuiteResult
from report import Goal

GOAL_METRIC = "split_10M_string_ids_s"
PATTERN = re.compile(r"^(split_\w+_s)\s+([0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)\s*$", re.M)


def run(ctx: BenchContext) -> SuiteResult:
    """Entry point registered as suite ``split``; n/a (not an error) if the script is absent."""
    col = Collector("split", {GOAL_METRIC: (GOAL_METRIC, "s"), "_all": ("(all)", "")})
    script = ctx.bench_dir / "bench_split.py"
    result = SuiteResult()
    small = ctx.size == "small"
    if not script.exists():
        result.notes.append(f"{script.name} does not exist yet: split goal not measured")
        col.error("-", "cas", GOAL_METRIC, f"{script.name} not present")
    else:
        extra = ["--n", "1000000", "--repeat", "1"] if small else []
        ctx.log(f"[split] running {script.name} {' '.join(extra)}")
        res = ctx.runner.run(
            [str(ctx.project_python), str(script), *extra],
            cwd=ctx.repo_root,
            label="split",
            timeout=max(ctx.runner.default_timeout, 600),
        )
        out_path = res.log_prefix.with_name(res.log_prefix.name + ".out")
        text = out_path.read_text(errors="replace") if out_path.exists() else ""
        matches = PATTERN.findall(text)
        if res.ok and matches:
            for name, value in matches:
                col.metrics.setdefault(name, (name, "s"))
                col.add("-", "cas", name, float(value))
        elif res.ok:
            col.error("-", "cas", GOAL_METRIC, f"no `split_..._s` line in output: {text[-200:]!r}")
        else:
            col.error("-", "cas", GOAL_METRIC, res.describe_failure())
    result.records = col.records()
    measured = col.median("-", "cas", GOAL_METRIC)
    if measured is not None:
        why = ""
    elif small and script.exists():
        why = "--size small measures 1M ids only; the goal is for 10M"
    else:
        why = col.why_missing("-", "cas", GOAL_METRIC)
    result.goals.append(Goal("split", "-", "split 10M string ids", measured, "s", "<=", 3.0, why))
    return result
