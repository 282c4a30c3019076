"""``make reliability``: run the reliability tests, the kill -9 loop and the load test, and write
docs/reliability.md with what was tried and what held. Exits 1 if anything failed, so CI fails.

    python reliability/report.py --out docs/reliability.md [--trials 200] [--files N] [--seed 1]

The pytest files are the ones of the reliability suite that exist; each file's test cases are
counted from the JUnit XML, and the inputs Hypothesis generated from its statistics output
(``--hypothesis-show-statistics``), since a property test is one test case but many inputs.

``reliability/audit.tsv`` maps each case of the issue-14 audit to the pytest node ids that cover
it (``file::test``, which covers every parametrisation, or ``file::test[param]``). Those outside
the suite's files run too; the report lists every row, and fails when a row names no test, a node
id that does not exist, or a test that did not pass.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TEST_FILES = (
    "tests/test_bad_input.py",
    "tests/test_faults.py",
    "tests/test_concurrency.py",
    "tests/test_hostile.py",
)
# A fuzz loop inside a test reports its input count as a JUnit property of this prefix
# (tests/test_hostile.py's ``fuzz``): Hypothesis prints no statistics for an inner function.
FUZZ_PROPERTY = "fuzzed_inputs."
AUDIT = ROOT / "reliability" / "audit.tsv"
_TEST_HEADER = re.compile(r"^(\S+\.py)::\S+:$")
_EXAMPLES = re.compile(r"- (\d+) passing\D+(\d+) failing")


def read_audit(path: Path = AUDIT) -> list[dict[str, Any]]:
    """The rows of audit.tsv (``id``, ``case``, ``tests``); ``#`` lines are comments."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        ident, case, *rest = [*line.split("\t"), ""]
        rows.append({"id": ident, "case": case, "tests": " ".join(rest).split()})
    return rows


def audit_nodes(rows: list[dict[str, Any]], files: list[str]) -> list[str]:
    """The node ids of the audit to run besides ``files`` (those inside them run anyway)."""
    listed = dict.fromkeys(node for row in rows for node in row["tests"])
    return [node for node in listed if node.split("::", 1)[0] not in files]


def existing(nodes: list[str]) -> list[str]:
    """The node ids pytest can collect: one that does not exist would stop the whole run."""
    if not nodes:
        return []
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--collect-only",
         *sorted({n.split("::", 1)[0] for n in nodes if (ROOT / n.split("::", 1)[0]).is_file()})],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    collected = [line for line in proc.stdout.splitlines() if "::" in line]
    return [n for n in nodes if any(covers(n, c) for c in collected)]


def covers(node: str, case: str) -> bool:
    """Whether a listed node id names this collected test case (all its parameters, unless
    the node id gives one)."""
    return case == node or case.startswith(node + "[")


def audit_results(rows: list[dict[str, Any]], outcomes: dict[str, str]) -> list[dict[str, Any]]:
    """Each row with, per listed node id, ``passed``, ``failed`` or ``not found``; ``ok`` when
    the row names tests and every one passed."""
    out = []
    for row in rows:
        results = {}
        for node in row["tests"]:
            seen = [o for case, o in outcomes.items() if covers(node, case)]
            if not seen:
                results[node] = "not found"
            else:
                results[node] = "passed" if all(o == "passed" for o in seen) else "failed"
        ok = bool(results) and all(r == "passed" for r in results.values())
        out.append({**row, "results": results, "ok": ok})
    return out


def run_tests(files: list[str], work: Path, nodes: Sequence[str] = ()) -> dict[str, Any]:
    """pytest on ``files`` and the node ids ``nodes``: per file, test cases, outcomes and
    Hypothesis examples; per fuzz target, the inputs it ran; per test case, its outcome."""
    xml = work / "junit.xml"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "--hypothesis-show-statistics",
            f"--junitxml={xml}",
            *files,
            *nodes,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    print(proc.stdout + proc.stderr)
    every = [*files, *dict.fromkeys(n.split("::", 1)[0] for n in nodes)]
    per_file: dict[str, Counter[str]] = {name: Counter() for name in every}
    fuzzed: Counter[str] = Counter()
    outcomes: dict[str, str] = {}
    modules = {name.removesuffix(".py").replace("/", "."): name for name in every}
    if xml.exists():
        suite = ET.parse(xml).getroot()
        for prop in suite.iter("property"):
            name = prop.get("name", "")
            if name.startswith(FUZZ_PROPERTY):
                fuzzed[name.removeprefix(FUZZ_PROPERTY)] += int(prop.get("value", "0"))
        for case in suite.iter("testcase"):
            classname = case.get("classname", "")
            module = next(m for m in modules if classname == m or classname.startswith(m + "."))
            counts = per_file[modules[module]]
            counts["cases"] += 1
            outcome = next(
                (c.tag for c in case if c.tag in ("failure", "error", "skipped")), "passed"
            )
            counts[outcome] += 1
            inner = classname[len(module) + 1 :].replace(".", "::")
            node = "::".join(p for p in (modules[module], inner, case.get("name", "")) if p)
            outcomes[node] = outcome
    current = None
    for line in proc.stdout.splitlines():
        header = _TEST_HEADER.match(line)
        if header:
            current = header[1]
        examples = _EXAMPLES.search(line)
        if examples and current:
            per_file[current]["examples"] += int(examples[1]) + int(examples[2])
    failed = [line for line in proc.stdout.splitlines() if line.startswith(("FAILED ", "ERROR "))]
    if proc.returncode and not failed:  # e.g. a usage error, or no test collected
        failed.append(f"pytest exited {proc.returncode}: {proc.stdout.strip()[-300:]}")
    return {
        "exit": proc.returncode,
        "files": {name: dict(counts) for name, counts in per_file.items()},
        "fuzzed": dict(fuzzed),
        "failed": failed,
        "outcomes": outcomes,
        "ok": proc.returncode == 0,
    }


def run_json(script: str, args: list[str], work: Path) -> dict[str, Any]:
    """Run a sibling script with ``--json``; its console output goes straight to ours."""
    out = work / f"{script}.json"
    argv = [sys.executable, str(ROOT / "reliability" / script), *args, "--json", str(out)]
    proc = subprocess.run(argv, cwd=ROOT)
    if not out.exists():
        return {"ok": False, "crashed": f"{script} exited {proc.returncode} without results"}
    return json.loads(out.read_text())


def machine() -> str:
    with open("/proc/meminfo") as f:
        kib = int(next(line for line in f if line.startswith("MemTotal:")).split()[1])
    return (
        f"{os.cpu_count()} CPUs, {kib / (1 << 20):.1f} GiB RAM, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}"
    )


def revision() -> str:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return commit + (" with uncommitted changes" if dirty else "")


def held(ok: bool, problems: int) -> str:
    return "yes" if ok else f"**no**: {problems} failed"


def render(
    command: str,
    tests: dict[str, Any],
    missing: list[str],
    kill: dict[str, Any],
    load: dict[str, Any],
    audit: Sequence[dict[str, Any]] = (),
) -> str:
    lines = [
        "# Reliability",
        "",
        "What cas promises under crashes, bad and hostile input, faults and load, and the",
        "figures of the last run that checked it. Generated by `reliability/report.py`",
        "(`make reliability`); do not edit by hand.",
        "",
        "- **kill -9** (`reliability/kill.py`): `add`, `checkout`, `push`, `pull`, `gc` and",
        "  `snapshot-query` are killed at random moments (seeded); after each kill `cas fsck` must",
        "  be clean and every data file its old or its new version, and the rerun of the command",
        "  must complete with exactly the new data (push: `cas verify --remote --deep` passes;",
        "  gc: a dry run finds nothing left and the data checks out from what gc kept) and leave",
        "  no temp file behind.",
        "- **tests** (pytest): bad input, faults, concurrency and hostile input; a Hypothesis",
        "  test counts as one test case and as the inputs it generated.",
        "- **load** (`reliability/load.py`): `cas add`, `cas status` and `cas checkout` of many",
        "  small files, each under a soft limit of 1,024 open files, with peak memory measured.",
        "",
        f"Command: `{command}`  ",
        f"Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC  ",
        f"Machine: {machine()}  ",
        f"cas: commit {revision()}",
        "",
        "## Summary",
        "",
        "| area | tried | held |",
        "| --- | --- | --- |",
    ]
    ops = kill.get("ops", {})
    tried = ", ".join(f"{name} {op['trials']}" for name, op in ops.items() if op["available"])
    kill_failed = sum(op["failed"] for op in ops.values())
    killed = sum(op["killed"] for op in ops.values())
    lines.append(
        f"| kill -9 (seed {kill.get('seed')}) | {kill.get('trials', 0)} trials "
        f"({killed} killed mid-run): {tried} | "
        f"{held(kill['ok'], kill_failed)} |"
    )
    for name, counts in tests["files"].items():
        examples = f" ({counts['examples']:,} Hypothesis inputs)" if counts.get("examples") else ""
        skipped = f", {counts['skipped']} skipped" if counts.get("skipped") else ""
        bad = counts.get("failure", 0) + counts.get("error", 0)
        lines.append(
            f"| `{name}` | {counts['cases']} test cases{examples}{skipped} | {held(not bad, bad)} |"
        )
    if tests["fuzzed"]:
        targets = ", ".join(f"{name} {n:,}" for name, n in sorted(tests["fuzzed"].items()))
        total = sum(tests["fuzzed"].values())
        lines.append(
            f"| fuzzed inputs (`{FUZZ_PROPERTY}*` JUnit properties) | {total:,}: {targets} | "
            + ("yes" if tests["ok"] else "see the test files above")
            + " |"
        )
    if load.get("steps"):
        lines.append(
            f"| load | {load['files']:,} files: add, status, checkout | "
            f"{held(load['ok'], len(load['problems']))} |"
        )
    if missing:
        lines += ["", "Not run (the file does not exist yet): " + ", ".join(missing) + "."]
    if audit:
        bad = sum(not row["ok"] for row in audit)
        lines.append(f"| audit cases (issue 14) | {len(audit)} | {held(not bad, bad)} |")
    lines += audit_section(audit) + kill_section(kill) + load_section(load)
    problems = tests["failed"] + [kill.get("crashed", ""), load.get("crashed", "")]
    problems = [p for p in problems if p]
    if problems:
        lines += ["", "## Failures", "", *(f"- {p}" for p in problems)]
    return "\n".join(lines) + "\n"


def audit_section(audit: Sequence[dict[str, Any]]) -> list[str]:
    """Every case of reliability/audit.tsv with the tests that cover it and how they did."""
    if not audit:
        return []
    lines = [
        "",
        "## Audit cases (issue 14)",
        "",
        "Each case of the hostile-input audit and the tests that cover it",
        "(`reliability/audit.tsv`); a case holds when it names tests and every one passed in",
        "this run.",
        "",
        "| case | what must hold | tests | held |",
        "| --- | --- | --- | --- |",
    ]
    for row in audit:
        tests = "<br>".join(
            f"`{node}`" + ("" if r == "passed" else f" ({r})") for node, r in row["results"].items()
        )
        verdict = "yes" if row["ok"] else ("**no test**" if not row["results"] else "**no**")
        lines.append(f"| {row['id']} | {row['case']} | {tests} | {verdict} |")
    return lines


def kill_section(kill: dict[str, Any]) -> list[str]:
    if "ops" not in kill:
        return []
    lines = [
        "",
        f"## kill -9: {kill['trials']} trials in {kill['seconds']:.0f} s "
        f"({kill['jobs']} side by side)",
        "",
        "The delay before the kill is uniform between the CLI start-up and the command's",
        "duration (its fastest warm-up run, lowered each time a command finished before its",
        "kill; the final range is shown). A command that finished first is counted apart (its",
        "rerun is checked all the same).",
        "",
        "| command | trials | killed mid-run | finished first | failed | delay range (s) |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    details = []
    for name, op in kill["ops"].items():
        if not op["available"]:
            lines.append(f"| {name} | not in this cas | | | | |")
            continue
        low, high = op["delay_range_s"]
        lines.append(
            f"| {name} | {op['trials']} | {op['killed']} | {op['finished_before_kill']} | "
            f"{op['failed']} | {low:.2f}-{high:.2f} |"
        )
        details += [
            f"- {name} trial {f['trial']}"
            + (f" (killed after {f['delay_s']} s)" if "delay_s" in f else "")
            + ": "
            + "; ".join(f["problems"])
            for f in op["failures"]
        ]
    if details:
        lines += ["", "Failed trials:", "", *details]
    orphans = sum(op["remote_orphans"] for op in kill["ops"].values() if op["available"])
    if orphans:
        lines += [
            "",
            f"Killed uploads left {orphans} orphan temp files in the `file://` remote's `tmp/`",
            "(not counted as failures: a folder remote has no atomic put, and only an age-based",
            "sweep can tell a dead upload's temp file from a live one on another machine).",
        ]
    return lines


def load_section(load: dict[str, Any]) -> list[str]:
    if "steps" not in load:
        return []
    lines = [
        "",
        f"## Load: {load['files']:,} files of 10-200 bytes ({load['bytes'] / (1 << 20):.1f} MiB)",
        "",
        f"Each command ran with a soft limit of {load['fd_soft_limit']:,} open files and must stay",
        f"under {load['rss_limit_mib']:,} MiB of RSS; the checkout was compared by file count,",
        f"total size and {load['sampled_files']:,} sampled files.",
        "",
        "| command | wall time (s) | peak RSS (MiB) | peak open fds | exit |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| `{s['command']}` | {s['seconds']:.1f} | {s['peak_rss_mib']:.0f} | {s['peak_fds']} | "
        f"{s['exit']} |"
        for s in load["steps"]
    ]
    if load["problems"]:
        lines += ["", *(f"- **failed**: {p}" for p in load["problems"])]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--files", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args()
    command = shlex.join(["python", "reliability/report.py", *sys.argv[1:]])
    files = [name for name in TEST_FILES if (ROOT / name).exists()]
    missing = [name for name in TEST_FILES if name not in files]
    rows = read_audit()
    with tempfile.TemporaryDirectory(prefix="cas-reliability-") as tmp:
        work = Path(tmp)
        tests = run_tests(files, work, existing(audit_nodes(rows, files)))
        seed = ["--seed", str(args.seed)]
        kill = run_json(
            "kill.py", ["--trials", str(args.trials), "--jobs", str(args.jobs), *seed], work
        )
        load = run_json("load.py", ["--files", str(args.files), *seed], work)
    audit = audit_results(rows, tests["outcomes"])
    args.out.write_text(render(command, tests, missing, kill, load, audit))
    ok = tests["ok"] and kill["ok"] and load["ok"] and all(row["ok"] for row in audit)
    print(f"wrote {args.out}: " + ("everything held" if ok else "FAILURES (see the file)"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
