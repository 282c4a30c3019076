"""Remote suite: cas push/pull vs DVC push/pull vs a plain concurrent s3fs upload, against one
local SeaweedFS server (a real S3 implementation, on loopback: the 2 cores, not a network, are
the limit here).

Per data set: a fresh repo tracks the data with each tool; then push (timed), push again with
nothing new (timed), a fresh ``git clone`` and pull (timed, verified against the source). The
plain upload (``s3fs.put`` of the folder, 64 requests in flight) is the transfer limit the push
is compared with. Each tool gets its own bucket, so no tool finds another's objects.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from datasets import Dataset, ensure_dataset, verify_tree, warm
from harness import BenchContext, Collector, SuiteResult
from report import Goal
from tools import StepError, make_git_repo, rm_tree

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from tests.s3_server import S3Server

METRICS: dict[str, tuple[str, str]] = {
    "_all": ("(all)", ""),
    "push": ("push", "s"),
    "push_again": ("push (nothing new)", "s"),
    "pull": ("pull into a fresh clone", "s"),
    "upload": ("plain s3fs upload (64 in flight)", "s"),
    "add": ("add (before push)", "s"),
    "add_to_remote": ("add --to-remote (no push)", "s"),
    "push_rss": ("peak RSS (push)", "MiB"),
    "pull_rss": ("peak RSS (pull)", "MiB"),
    "staged": ("peak local packs (add --to-remote)", "MiB"),
}
MiB = 1 << 20

# The transfer limit: every file PUT by s3fs's own concurrent put, nothing else.
PLAIN_UPLOAD = """
import sys, s3fs
fs = s3fs.S3FileSystem()
fs.put(sys.argv[1], sys.argv[2], recursive=True, batch_size=64)
"""


def _server(ctx: BenchContext) -> AbstractContextManager[S3Server]:
    """The tests' server helper; the repository root is not on the bench's import path."""
    sys.path.insert(0, str(ctx.repo_root))
    from tests.s3_server import running_server

    return running_server()


def _ensure_dvc_s3(ctx: BenchContext) -> str | None:
    """DVC talks S3 only with the ``dvc-s3`` plugin: install it into the DVC venv if missing."""
    if ctx.dvc is None or ctx.dvc.unavailable:
        return ctx.dvc.unavailable if ctx.dvc else "dvc not selected"
    python = ctx.dvc.exe.parent / "python"
    if subprocess.run([python, "-c", "import dvc_s3"], capture_output=True).returncode == 0:
        return None
    res = ctx.runner.run([python, "-m", "pip", "install", "-q", "dvc-s3"], cwd=ctx.bench_dir,
                         label="dvc-s3-install", timeout=1800)  # fmt: skip
    return None if res.ok else f"dvc-s3 could not be installed: {res.describe_failure()}"


def measure(
    ctx: BenchContext, tool: str, ds: Dataset, rep: int, server: S3Server, col: Collector
) -> None:
    """push, push again, clone + pull for one tool; errors land in the table, not the run."""
    name = ds.spec.name
    base = ctx.work_dir / f"remote-{tool}-{name}"
    repo, clone = base / "repo", base / "clone"
    bucket = f"bench-{tool}-{name}-r{rep}-{os.getpid()}"
    server.create_bucket(bucket)
    env = dict(server.env)
    run = ctx.runner
    step = "setup"
    rm_tree(base)
    try:
        make_git_repo(repo)
        run.check(["cp", "-r", str(ds.data), str(repo / "data")], cwd=repo, label=f"{tool}-cp")
        if tool == "plain":
            warm(repo / "data")
            step = "upload"
            argv = [str(ctx.project_python), "-c", PLAIN_UPLOAD, str(repo / "data"),
                    f"s3://{bucket}/data"]  # fmt: skip
            res = run.check(argv, cwd=repo, env=env, label=f"plain-upload-{name}")
            col.add(name, "s3fs", "upload", res.seconds)
            return
        vcs = ctx.cas if tool == "cas" else ctx.dvc
        assert vcs is not None
        env.update(vcs.prepare(base))
        for cmd in vcs.setup:
            run.check(vcs.argv(cmd), cwd=repo, env=env, label=f"{tool}-setup")
        res = run.check(vcs.argv(vcs.add), cwd=repo, env=env, label=f"{tool}-add")
        if tool == "cas":
            col.add(name, tool, "add", res.seconds)
        if tool == "cas":
            run.check(vcs.argv(["remote", "add", "origin", f"s3://{bucket}/cas"]), cwd=repo,
                      env=env, label="cas-remote-add")  # fmt: skip
        else:
            for cmd in (
                ["remote", "add", "-d", "s3", f"s3://{bucket}/dvc"],
                ["remote", "modify", "s3", "endpointurl", server.endpoint],
            ):
                run.check(vcs.argv(cmd), cwd=repo, env=env, label="dvc-remote")  # fmt: skip
        subprocess.run(["git", "add", "-A"], cwd=repo, check=True, capture_output=True)
        subprocess.run(["git", "commit", "-qm", "data"], cwd=repo, check=True, capture_output=True)
        warm(repo / "data")
        os.sync()
        # each tool at its default concurrency, as a user runs it (cas: 8; 16 cost cas more CPU)
        for step in ("push", "push_again"):
            res = run.check(vcs.argv(["push"]), cwd=repo, env=env, label=f"{tool}-{step}-{name}")
            col.add(name, tool, step, res.seconds)
            if tool == "cas" and step == "push":
                col.add(name, tool, "push_rss", res.maxrss_bytes / MiB)
        step = "pull"
        subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True,
                       capture_output=True)  # fmt: skip
        os.sync()
        res = run.check(vcs.argv(["pull"]), cwd=clone, env=env, label=f"{tool}-pull-{name}")
        problem = verify_tree(clone / "data", ds)
        if problem:
            raise StepError(f"pull produced a wrong tree: {problem}")
        col.add(name, tool, "pull", res.seconds)
        if tool == "cas":
            col.add(name, tool, "pull_rss", res.maxrss_bytes / MiB)
            step = "add_to_remote"
            rm_tree(clone)
            _add_to_remote(ctx, ds, base / "direct", f"{bucket}-direct", server, env, col)
    except (StepError, OSError, subprocess.CalledProcessError) as exc:
        message = str(exc) if isinstance(exc, StepError) else f"{type(exc).__name__}: {exc}"
        col.error(name, tool if tool != "plain" else "s3fs", step, message)
        ctx.log(f"  remote {tool} {name}: {step} failed: {message[:300]}")
    finally:
        rm_tree(base)


def _add_to_remote(
    ctx: BenchContext, ds: Dataset, repo: Path, bucket: str, server: S3Server,
    env: dict[str, str], col: Collector,
) -> None:  # fmt: skip
    """``cas add data --to-remote`` in a fresh repo (to a fresh bucket), against add + push;
    the local store's packs and temp packs are sampled every 50 ms for the staging bound."""
    assert ctx.cas is not None
    name, run = ds.spec.name, ctx.runner
    server.create_bucket(bucket)
    make_git_repo(repo)
    run.check(["cp", "-r", str(ds.data), str(repo / "data")], cwd=repo, label="cas-cp-direct")
    for cmd in [*ctx.cas.setup, ["remote", "add", "origin", f"s3://{bucket}/cas"]]:
        run.check(ctx.cas.argv(cmd), cwd=repo, env=env, label="cas-setup-direct")
    warm(repo / "data")
    os.sync()
    peak, stop = [0], threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            peak[0] = max(peak[0], _staged_bytes(repo / ".cas" / "store"))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        res = run.check(ctx.cas.argv(["add", "data", "--to-remote"]), cwd=repo, env=env,
                        label=f"cas-add-to-remote-{name}")  # fmt: skip
    finally:
        stop.set()
        sampler.join()
    col.add(name, "cas", "add_to_remote", res.seconds)
    col.add(name, "cas", "staged", peak[0] / MiB)


def _staged_bytes(store: Path) -> int:
    """Bytes of packs (sealed or being filled) in a local store."""
    total = 0
    for sub in ("packs", "tmp"):
        for root, _dirs, files in os.walk(store / sub):
            for file in files:
                with contextlib.suppress(FileNotFoundError):  # sealed, or uploaded and gone
                    total += os.stat(os.path.join(root, file)).st_size
    return total


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def goals(ds: str, col: Collector) -> list[Goal]:
    med = col.median
    mixed = ds == "mixed"
    out = [
        Goal("remote", ds, "dvc push / cas push", _ratio(med(ds, "dvc", "push"),
             med(ds, "cas", "push")), "x", ">=", 3.0 if mixed else 5.0,
             col.why_missing(ds, "dvc", "push") if med(ds, "dvc", "push") is None else ""),
        Goal("remote", ds, "cas push (nothing new)", med(ds, "cas", "push_again"), "s", "<=",
             1.0, ""),
        Goal("remote", ds, "dvc pull / cas pull", _ratio(med(ds, "dvc", "pull"),
             med(ds, "cas", "pull")), "x", ">=", 3.0,
             col.why_missing(ds, "dvc", "pull") if med(ds, "dvc", "pull") is None else ""),
    ]  # fmt: skip
    add_push = (med(ds, "cas", "add") or 0) + (med(ds, "cas", "push") or 0)
    out += [
        Goal("remote", ds, "cas push peak RSS (--jobs 8)", med(ds, "cas", "push_rss"), "MiB",
             "<=", 300, ""),
        Goal("remote", ds, "cas pull peak RSS (--jobs 8)", med(ds, "cas", "pull_rss"), "MiB",
             "<=", 300, ""),
        Goal("remote", ds, "add --to-remote / (add + push)",
             _ratio(med(ds, "cas", "add_to_remote"), add_push), "x", "<=", 1.2, ""),
        Goal("remote", ds, "local packs during add --to-remote", med(ds, "cas", "staged"), "MiB",
             "<=", 66, "two packs of 32 MiB + a chunk"),
    ]  # fmt: skip
    if mixed:
        out.append(Goal("remote", ds, "cas push / plain s3fs upload",
                        _ratio(med(ds, "cas", "push"), med(ds, "s3fs", "upload")), "x", "<=",
                        1.5, ""))  # fmt: skip
    return out


def run(ctx: BenchContext) -> SuiteResult:
    """Entry point registered as suite ``remote``."""
    col = Collector("remote", METRICS)
    result = SuiteResult()
    dvc_problem = _ensure_dvc_s3(ctx)
    tools = ["plain", "cas"] + ([] if dvc_problem else ["dvc"])
    if dvc_problem:
        result.notes.append(f"remote suite: DVC skipped: {dvc_problem}")
    with _server(ctx) as server:
        for name in ctx.datasets:
            ds = ensure_dataset(ctx.data_dir, name, ctx.size, ctx.seed, log=ctx.log)
            result.notes.append(f"remote `{name}`: {ds.file_count} files, "
                                f"{ds.total_bytes / 1e9:.2f} GB, one repetition, SeaweedFS "
                                "on loopback")  # fmt: skip
            for rep in range(ctx.repeat_for(name)):
                for tool in tools:
                    ctx.log(f"[remote/{name}] rep {rep + 1}: {tool}")
                    measure(ctx, tool, ds, rep, server, col)
            result.goals += goals(name, col)
    result.records = col.records()
    return result
