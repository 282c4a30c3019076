"""Benchmark harness entry point (``make bench``).

    python bench/run.py [--size full|small] [--suite core] [--out docs/benchmarks.md]

Suites are registered in :data:`SUITES`; each is a function ``run(ctx) -> SuiteResult``.
Add a suite (remote push/pull, manifests, snapshots, ...) by writing a ``suite_*.py``
module and adding one line to the registry; the report writer needs no change.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
PROJECT_PYTHON = REPO_ROOT / ".venv" / "bin" / "python"

try:  # the harness needs numpy: fall back to the project venv if run with a bare python
    import numpy
except ImportError:
    if PROJECT_PYTHON.exists() and Path(sys.executable) != PROJECT_PYTHON:
        os.execv(str(PROJECT_PYTHON), [str(PROJECT_PYTHON), *sys.argv])
    raise

import argparse  # noqa: E402
import datetime  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable  # noqa: E402

import suite_core  # noqa: E402
import suite_corpus  # noqa: E402
import suite_remote  # noqa: E402
import suite_split  # noqa: E402
import suite_training  # noqa: E402
from datasets import DATASET_NAMES  # noqa: E402
from harness import BenchContext, SuiteResult  # noqa: E402
from report import render_markdown, render_text, to_json  # noqa: E402
from tools import Runner, cas_tool, command_version, dvc_tool, ensure_dvc_venv  # noqa: E402

SUITES: dict[str, Callable[[BenchContext], SuiteResult]] = {
    "core": suite_core.run,
    "split": suite_split.run,
    "corpus": suite_corpus.run,
    "remote": suite_remote.run,
    "training": suite_training.run,
}
TOOLS = ("cp", "dvc", "cas")
DEFAULT_REPEATS = {"mixed": 3, "many-small": 1}
SMALL_REPEATS = {"mixed": 1, "many-small": 1}  # the smoke run must stay under 2 minutes


def parse_repeats(items: list[str] | None, size: str) -> dict[str, int]:
    """``--repeat 3`` sets every data set; ``--repeat many-small=2`` sets one."""
    repeats = dict(DEFAULT_REPEATS if size == "full" else SMALL_REPEATS)
    for item in items or []:
        name, sep, count = item.rpartition("=")
        if not sep:
            repeats = {k: int(count) for k in repeats} | {"*": int(count)}
        elif name in DATASET_NAMES:
            repeats[name] = int(count)
        else:
            raise SystemExit(f"--repeat: unknown data set {name!r}")
    return repeats


def csv_choice(allowed: tuple[str, ...] | list[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [x.strip() for x in text.split(",") if x.strip()]
        bad = [x for x in items if x not in allowed]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {list(allowed)}")
        return items

    return parse


def default_data_dir() -> Path:
    """``$CAS_BENCH_DATA``, else a ``bench-data`` dir beside the checkout (never committed)."""
    if env := os.environ.get("CAS_BENCH_DATA"):
        return Path(env)
    beside = REPO_ROOT.parent / "bench-data"
    if os.access(REPO_ROOT.parent, os.W_OK):
        return beside
    import tempfile

    return Path(tempfile.gettempdir()) / "cas-bench-data"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--size",
        choices=("full", "small"),
        default="full",
        help="full (~2 GiB mixed, 200k-file many-small) or small (~20x smaller)",
    )
    p.add_argument(
        "--suite",
        type=csv_choice(list(SUITES)),
        action="extend",
        help=f"comma-separated suites to run (default: all of {list(SUITES)})",
    )
    p.add_argument("--out", type=Path, help="write a Markdown report here")
    p.add_argument("--json", type=Path, help="also write the raw records as JSON here")
    p.add_argument(
        "--tools",
        type=csv_choice(TOOLS),
        default=list(TOOLS),
        help="comma-separated tools for the core suite (default: cp,dvc,cas)",
    )
    p.add_argument(
        "--datasets",
        type=csv_choice(DATASET_NAMES),
        default=list(DATASET_NAMES),
        help="comma-separated data sets for the core suite",
    )
    p.add_argument(
        "--repeat",
        action="append",
        metavar="N|DATASET=N",
        help="repetitions (default: mixed=3, many-small=1; 1 each for --size small)",
    )
    p.add_argument("--seed", type=int, default=1, help="data generation seed")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where data sets are cached and repos are made "
        "(default: $CAS_BENCH_DATA or ../bench-data)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="per-command timeout in seconds (default: 3600 full, 300 small)",
    )
    p.add_argument(
        "--cas-bin",
        type=Path,
        default=REPO_ROOT / ".venv" / "bin" / "cas",
        help="cas executable (default: .venv/bin/cas)",
    )
    p.add_argument(
        "--dvc-venv",
        type=Path,
        default=BENCH_DIR / ".venv-dvc",
        help="venv holding DVC; created with dvc==3.* if missing",
    )
    return p.parse_args(argv)


def _meminfo_gib() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _fs_type(path: Path) -> str:
    res = subprocess.run(["df", "-T", str(path)], capture_output=True, text=True, check=False)
    lines = res.stdout.strip().splitlines()
    return lines[-1].split()[1] if res.returncode == 0 and len(lines) > 1 else "?"


def _command_line() -> str:
    exe = Path(sys.executable)
    try:
        shown = str(exe.relative_to(Path.cwd()))
    except ValueError:
        shown = "python" if shutil.which("python") == str(exe) else str(exe)
    return shlex.join([shown, *sys.argv])


def gather_meta(
    ctx: BenchContext, suites: list[str], load: tuple[float, float, float]
) -> dict[str, str]:
    """Provenance for the report: how, when and where the numbers were produced."""
    head = command_version(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"])
    meta = {
        "command": _command_line(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores ({_cpu_model()}), {_meminfo_gib():.1f} GiB RAM, "
        f"{platform.system()} {platform.release()}",
        "filesystem": f"{_fs_type(ctx.data_dir)} ({ctx.data_dir})",
        "python": f"{platform.python_version()} ({sys.executable})",
        "numpy": numpy.__version__,
        "git": command_version(["git", "--version"]) or "?",
        "dvc": ctx.dvc.version if ctx.dvc else "not selected",
        "cas": (ctx.cas.unavailable or ctx.cas.version) if ctx.cas else "not selected",
        "repo commit": head or "none",
        "size / seed": f"{ctx.size} / {ctx.seed}",
        "suites": ", ".join(suites),
        "load average at start": " ".join(f"{x:.2f}" for x in load),
    }
    return meta


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    suites = args.suite or list(SUITES)
    data_dir = (args.data_dir or default_data_dir()).resolve()
    run_id = datetime.datetime.now().strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
    work_dir = data_dir / "work" / run_id
    log_dir = data_dir / "logs" / run_id
    timeout = args.timeout or (3600.0 if args.size == "full" else 300.0)
    runner = Runner(log_dir, timeout)
    ctx = BenchContext(
        repo_root=REPO_ROOT,
        bench_dir=BENCH_DIR,
        data_dir=data_dir,
        work_dir=work_dir,
        size=args.size,
        seed=args.seed,
        datasets=args.datasets,
        repeats=parse_repeats(args.repeat, args.size),
        tools=set(args.tools),
        runner=runner,
        project_python=PROJECT_PYTHON if PROJECT_PYTHON.exists() else Path(sys.executable),
    )
    load = os.getloadavg()
    free_gb = shutil.disk_usage(data_dir if data_dir.exists() else data_dir.parent).free / 1e9
    ctx.log(f"data dir {data_dir} ({free_gb:.0f} GB free), logs in {log_dir}")
    if args.size == "full" and free_gb < 20:
        ctx.log("warning: the full benchmark needs ~15-20 GB of scratch space")

    if ("core" in suites or "remote" in suites) and "dvc" in ctx.tools:
        error = ensure_dvc_venv(args.dvc_venv, log_dir / "dvc-install.log")
        ctx.dvc = dvc_tool(args.dvc_venv)
        if error:
            ctx.dvc.unavailable = f"dvc not available: {error}"
    if "cas" in ctx.tools:
        ctx.cas = cas_tool(args.cas_bin, ctx.project_python)

    sections = []
    notes = []
    crashed = False
    t0 = time.monotonic()
    try:
        for name in suites:
            ctx.log(f"suite {name}")
            try:
                res = SUITES[name](ctx)
            except Exception:  # a harness bug in one suite must not lose the others
                crashed = True
                tb = traceback.format_exc()
                ctx.log(f"suite {name} crashed:\n{tb}")
                res = SuiteResult(notes=[f"suite `{name}` crashed: {tb.splitlines()[-1]}"])
            sections.append((name, res.records, res.goals))
            notes += res.notes
            print("\n" + render_text(name, res.records, res.goals), flush=True)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    total = time.monotonic() - t0

    meta = gather_meta(ctx, suites, load)
    meta["bench wall time"] = f"{total:.0f} s"
    meta["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    notes = [
        *(
            [
                "`--size small`: a smoke run on ~20x smaller data; the targets are defined for "
                "`--size full`, so PASS/FAIL here is indicative only."
            ]
            if args.size == "small"
            else []
        ),
        "Method: each tool runs in a fresh git repo; its copy of the data is made with "
        "`cp -r` and timed as a baseline sample; the page cache is warm (data read once "
        "before timing); `sync` before each timed step; times are wall-clock medians over "
        "repetitions (min/max shown) and ratios use medians; peak RSS is the max RSS of the "
        "largest process of the tool (as `/usr/bin/time -f %M`), worst repetition; CPU is "
        "user+sys of the tool's process tree, a less load-sensitive view than wall time; "
        "checkouts are verified (paths, sizes, sampled content) against the source; DVC runs "
        "with `cache.type copy` and analytics off. Other work on the machine makes wall "
        "times noisy: see the load averages in the table above.",
        *notes,
    ]
    print(f"\ntotal bench time {total:.0f} s; logs in {log_dir}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(render_markdown(meta, notes, sections))
        print(f"wrote {args.out}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(to_json(meta, sections))
        print(f"wrote {args.json}")
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
