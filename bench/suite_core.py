"""Core suite: cas vs DVC vs ``cp -r`` on the same generated data, in one run.

Per data set and repetition (repetitions interleave the tools so background load
drifts hit all of them alike): a fresh git repo whose copy of the data is made by
``cp -r`` (timed separately: it is the baseline sample), warm page cache, ``sync``
before every timed step so write-back of earlier steps doesn't leak into it, then add
(cold), add (unchanged), status, checkout into an empty data dir (verified against the
source), and, on the first repetition of data sets marked for it, the realistic edit
followed by add to measure store growth.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from datasets import Dataset, EditPlan, apply_edit, ensure_dataset, plan_edit, verify_tree, warm
from harness import BenchContext, Collector, SuiteResult
from report import Goal
from tools import StepError, VcsTool, du_bytes, make_git_repo, rm_tree

MiB = 1024 * 1024

METRICS: dict[str, tuple[str, str]] = {
    "_all": ("(all)", ""),
    "copy": ("cp -r", "s"),
    "add_cold": ("add (cold)", "s"),
    "add_unchanged": ("add (unchanged)", "s"),
    "status": ("status", "s"),
    "checkout": ("checkout (empty dir)", "s"),
    "add_edit": ("add after edit", "s"),
    "store_size": ("store size after add", "B"),
    "store_growth": ("store growth after edit", "B"),
    "peak_rss": ("peak RSS (add, cold)", "MiB"),
    "copy_cpu": ("cp -r CPU (user+sys)", "s"),
    "add_cold_cpu": ("add (cold) CPU (user+sys)", "s"),
    "checkout_cpu": ("checkout CPU (user+sys)", "s"),
}
STEPS = ("add_cold", "add_unchanged", "status", "checkout", "add_edit")

# Reference figures for --size full, measured on this machine type (sanity check only).
REFS: dict[tuple[str, str, str], float] = {
    ("mixed", "cp", "copy"): 4.6,
    ("mixed", "dvc", "add_cold"): 13.8,
    ("mixed", "dvc", "add_unchanged"): 2.5,
    ("mixed", "dvc", "status"): 2.0,
    ("mixed", "dvc", "checkout"): 7.6,
    ("mixed", "dvc", "store_growth"): 1.1e9,
    ("mixed", "dvc", "peak_rss"): 130,
    ("many-small", "cp", "copy"): 33.0,
    ("many-small", "dvc", "add_cold"): 59.5,
    ("many-small", "dvc", "add_unchanged"): 15.0,
    ("many-small", "dvc", "status"): 9.1,
    ("many-small", "dvc", "checkout"): 43.4,
    ("many-small", "dvc", "peak_rss"): 628,
}


def measure_cp(ctx: BenchContext, name: str, src: Path, rep: int, col: Collector) -> None:
    """Baseline: ``cp -r`` of the (warm) source tree to a fresh directory."""
    base = ctx.work_dir / f"cp-{name}-r{rep}"
    rm_tree(base)
    base.mkdir(parents=True)
    try:
        os.sync()
        res = ctx.runner.run(
            ["cp", "-r", str(src), str(base / "data")], cwd=base, label=f"cp-{name}-r{rep}"
        )
        if res.ok:
            col.add(name, "cp", "copy", res.seconds)
            col.add(name, "cp", "copy_cpu", res.cpu_seconds)
            col.add(name, "cp", "peak_rss", res.maxrss_bytes / MiB)
        else:
            col.error(name, "cp", "copy", res.describe_failure())
    finally:
        rm_tree(base)


def measure_tool(
    ctx: BenchContext, tool: VcsTool, ds: Dataset, rep: int, plan: EditPlan | None, col: Collector
) -> None:
    """One repetition of the full command sequence for ``tool`` in a fresh repository."""
    ds_name = ds.spec.name
    base = ctx.work_dir / f"{tool.name}-{ds_name}-r{rep}"
    repo = base / "repo"
    run = ctx.runner
    label = f"{tool.name}-{ds_name}-r{rep}"
    step = "setup"
    rm_tree(base)
    try:
        env = tool.prepare(base)
        make_git_repo(repo)
        # The repo's copy of the data doubles as a `cp -r` baseline sample (same command,
        # same conditions), which saves one full copy per repetition and tool.
        os.sync()
        res = run.check(
            ["cp", "-r", str(ds.data), str(repo / "data")], cwd=repo, label=f"{label}-cp"
        )
        if "cp" in ctx.tools:
            col.add(ds_name, "cp", "copy", res.seconds)
            col.add(ds_name, "cp", "copy_cpu", res.cpu_seconds)
            col.add(ds_name, "cp", "peak_rss", res.maxrss_bytes / MiB)
        for cmd in tool.setup:
            res = run.run(tool.argv(cmd), cwd=repo, env=env, label=f"{label}-setup")
            if not res.ok:
                # A tool that can't even initialise is skipped for the rest of the run.
                tool.unavailable = f"{tool.name} not available: {res.describe_failure()}"
                col.error(ds_name, tool.name, "_all", tool.unavailable)
                return
        warm(repo / "data")
        os.sync()

        step = "add_cold"
        res = run.check(tool.argv(tool.add), cwd=repo, env=env, label=f"{label}-add-cold")
        col.add(ds_name, tool.name, "add_cold", res.seconds)
        col.add(ds_name, tool.name, "add_cold_cpu", res.cpu_seconds)
        col.add(ds_name, tool.name, "peak_rss", res.maxrss_bytes / MiB)
        col.add(ds_name, tool.name, "store_size", du_bytes(repo / tool.store))
        os.sync()

        step = "add_unchanged"
        res = run.check(tool.argv(tool.add), cwd=repo, env=env, label=f"{label}-add-again")
        col.add(ds_name, tool.name, "add_unchanged", res.seconds)
        os.sync()

        step = "status"
        res = run.check(tool.argv(tool.status), cwd=repo, env=env, label=f"{label}-status")
        col.add(ds_name, tool.name, "status", res.seconds)

        step = "checkout"
        rm_tree(repo / "data")
        for cmd in tool.before_checkout:
            run.check(tool.argv(cmd), cwd=repo, env=env, label=f"{label}-pre-checkout")
        os.sync()
        res = run.check(tool.argv(tool.checkout), cwd=repo, env=env, label=f"{label}-checkout")
        problem = verify_tree(repo / "data", ds)
        if problem:
            raise StepError(f"checkout produced a wrong tree: {problem}")
        col.add(ds_name, tool.name, "checkout", res.seconds)
        col.add(ds_name, tool.name, "checkout_cpu", res.cpu_seconds)

        if plan is not None:
            step = "add_edit"
            apply_edit(repo / "data", plan)
            os.sync()
            before = du_bytes(repo / tool.store)
            res = run.check(tool.argv(tool.add), cwd=repo, env=env, label=f"{label}-add-edit")
            col.add(ds_name, tool.name, "add_edit", res.seconds)
            col.add(ds_name, tool.name, "store_growth", du_bytes(repo / tool.store) - before)
    except (StepError, OSError, ValueError, subprocess.CalledProcessError) as exc:
        message = str(exc) if isinstance(exc, StepError) else f"{type(exc).__name__}: {exc}"
        if step == "setup":
            col.error(ds_name, tool.name, "_all", f"setup failed: {message}")
            return
        col.error(ds_name, tool.name, step, message)
        if step == "add_cold":
            for key in ("peak_rss", "store_size"):
                col.error(ds_name, tool.name, key, "add (cold) failed")
        later = STEPS[STEPS.index(step) + 1 :]
        for key in later:
            if key != "add_edit" or plan is not None:
                col.error(ds_name, tool.name, key, f"skipped: {METRICS[step][0]} failed")
        if plan is not None and "add_edit" in (step, *later):
            col.error(ds_name, tool.name, "store_growth", f"{METRICS[step][0]} failed")
        ctx.log(f"  {tool.name} {ds_name} rep {rep}: {step} failed: {message[:300]}")
    finally:
        rm_tree(base)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def core_goals(ds: str, col: Collector) -> list[Goal]:
    """The project's targets, computed from medians (peak memory: worst repetition)."""
    med = col.median

    def note(*missing: tuple[str, str]) -> str:
        return "; ".join(col.why_missing(ds, t, k) for t, k in missing if med(ds, t, k) is None)

    cas_add, cp, dvc_add = (
        med(ds, "cas", "add_cold"),
        med(ds, "cp", "copy"),
        med(ds, "dvc", "add_cold"),
    )
    cas_co, dvc_co = med(ds, "cas", "checkout"), med(ds, "dvc", "checkout")
    add_n = [("cas", "add_cold"), ("cp", "copy")]
    dvc_n = [("dvc", "add_cold"), ("cas", "add_cold")]
    co_n = [("dvc", "checkout"), ("cas", "checkout")]
    mixed = ds == "mixed"
    quick = 0.5 if mixed else 1.5
    goals = [
        Goal(
            "core",
            ds,
            "cas add (cold) / cp -r",
            _ratio(cas_add, cp),
            "x",
            "<=",
            1.0 if mixed else 0.5,
            note(*add_n),
        ),
        Goal(
            "core",
            ds,
            "dvc add / cas add (cold)",
            _ratio(dvc_add, cas_add),
            "x",
            ">=",
            3.0 if mixed else 4.0,
            note(*dvc_n),
        ),
        Goal(
            "core",
            ds,
            "cas add (unchanged)",
            med(ds, "cas", "add_unchanged"),
            "s",
            "<=",
            quick,
            note(("cas", "add_unchanged")),
        ),
        Goal(
            "core",
            ds,
            "cas status",
            med(ds, "cas", "status"),
            "s",
            "<=",
            quick,
            note(("cas", "status")),
        ),
    ]
    if mixed:
        growth = _ratio(med(ds, "cas", "store_growth"), med(ds, "dvc", "store_growth"))
        goals.append(
            Goal(
                "core",
                ds,
                "cas store growth / DVC cache growth (edit)",
                None if growth is None else 100 * growth,
                "%",
                "<=",
                1.0,
                note(("cas", "store_growth"), ("dvc", "store_growth")),
            )
        )
        goals.append(
            Goal(
                "core",
                ds,
                "cas checkout / cp -r",
                _ratio(cas_co, cp),
                "x",
                "<=",
                1.2,
                note(("cas", "checkout"), ("cp", "copy")),
            )
        )
    goals.append(
        Goal(
            "core",
            ds,
            "dvc checkout / cas checkout",
            _ratio(dvc_co, cas_co),
            "x",
            ">=",
            1.5,
            note(*co_n),
        )
    )
    goals.append(
        Goal(
            "core",
            ds,
            "cas peak RSS (add)",
            col.maximum(ds, "cas", "peak_rss"),
            "MiB",
            "<=",
            300 if mixed else 500,
            note(("cas", "peak_rss")),
        )
    )
    return goals


def run(ctx: BenchContext) -> SuiteResult:
    """Entry point registered as suite ``core``."""
    col = Collector("core", METRICS)
    result = SuiteResult()
    tools = [t for t in (ctx.dvc, ctx.cas) if t is not None and t.name in ctx.tools]
    for name in ctx.datasets:
        ds = ensure_dataset(ctx.data_dir, name, ctx.size, ctx.seed, log=ctx.log)
        plan = plan_edit(ds) if ds.spec.edit else None
        reps = ctx.repeat_for(name)
        ctx.log(
            f"[core/{name}] {ds.file_count} files, {ds.total_bytes / 1e9:.2f} GB, "
            f"{reps} repetition(s); warming page cache"
        )
        result.notes.append(
            f"`{name}`: {ds.file_count} files, {ds.total_bytes / 1e9:.2f} GB "
            f"(data set `{ds.spec.key}`), {reps} repetition(s)"
            + (f"; edit: {plan.describe()}" if plan else "")
        )
        warm(ds.data)
        for rep in range(reps):
            live = [t for t in tools if not t.unavailable]
            if "cp" in ctx.tools and not live:
                ctx.log(f"[core/{name}] rep {rep + 1}/{reps}: cp -r")
                measure_cp(ctx, name, ds.data, rep, col)
            for tool in live:
                ctx.log(f"[core/{name}] rep {rep + 1}/{reps}: {tool.name}")
                measure_tool(ctx, tool, ds, rep, plan if rep == 0 else None, col)
        for tool in tools:
            if tool.unavailable and not col.errors.get((name, tool.name, "_all")):
                col.error(name, tool.name, "_all", tool.unavailable)
        result.goals += core_goals(name, col)
    if ctx.size == "full":
        result.notes.append(
            "`ref` column: DVC and `cp -r` figures measured earlier on this "
            "machine type, to tell a slow tool from a loaded machine."
        )
    result.records = col.records(REFS if ctx.size == "full" else None)
    return result
