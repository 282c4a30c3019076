"""Split suite: runs ``bench/bench_split.py`` (owned separately) and checks its goal.

That script prints a line containing ``split_10M_string_ids_s`` followed by seconds;
it runs under the project's python because it imports cas.
"""

from __future__ import annotations

import re

from harness import BenchContext, Collector, SuiteResult
from report import Goal

METRIC = "split_10M_string_ids_s"
PATTERN = re.compile(rf"{METRIC}\W*?([0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)")
METRICS = {METRIC: (METRIC, "s"), "_all": ("(all)", "")}


def run(ctx: BenchContext) -> SuiteResult:
    """Entry point registered as suite ``split``; n/a (not an error) if the script is absent."""
    col = Collector("split", METRICS)
    script = ctx.bench_dir / "bench_split.py"
    result = SuiteResult()
    if not script.exists():
        result.notes.append(f"{script.name} does not exist yet: split goal not measured")
        col.error("-", "cas", METRIC, f"{script.name} not present")
    else:
        ctx.log(f"[split] running {script.name}")
        res = ctx.runner.run([str(ctx.project_python), str(script)], cwd=ctx.repo_root,
                             label="split", timeout=max(ctx.runner.default_timeout, 600))
        out_path = res.log_prefix.with_name(res.log_prefix.name + ".out")
        text = out_path.read_text(errors="replace") if out_path.exists() else ""
        match = PATTERN.search(text)
        if res.ok and match:
            col.add("-", "cas", METRIC, float(match.group(1)))
        elif res.ok:
            col.error("-", "cas", METRIC, f"no `{METRIC}` line in output: {text[-200:]!r}")
        else:
            col.error("-", "cas", METRIC, res.describe_failure())
    result.records = col.records()
    why = "" if col.median("-", "cas", METRIC) is not None else col.why_missing(
        "-", "cas", METRIC)
    result.goals.append(Goal("split", "-", "split 10M string ids",
                             col.median("-", "cas", METRIC), "s", "<=", 3.0, why))
    return result
