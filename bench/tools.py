"""Running tools under measurement, and the per-tool adapters (cp, DVC, cas).

Every invocation goes through :class:`Runner`: a subprocess in its own session with a
timeout, output captured to log files (never pipes, so a chatty tool can't block),
wall time from spawn to reap, and peak memory as ``/usr/bin/time -f %M`` reports it
(max RSS of the largest process in the tool's tree).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

TIME_BIN = Path("/usr/bin/time")

# Fallback when GNU time is absent: a tiny launcher that forks the tool, reaps it with
# wait4 and writes "<maxrss KiB> <user s> <sys s> <wall s>" to argv[1]. Its own start-up
# is excluded from the wall time.
LAUNCHER = """
import os, sys, time
out, argv = sys.argv[1], sys.argv[2:]
t = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        print(f"cannot run {argv[0]}: {exc}", file=sys.stderr, flush=True)
    os._exit(127)
_, status, ru = os.wait4(pid, 0)
dt = time.perf_counter() - t
with open(out, "w") as f:
    f.write(f"{ru.ru_maxrss} {ru.ru_utime} {ru.ru_stime} {dt}")
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


@dataclass
class Measured:
    """One command run through :data:`LAUNCHER`: its own peak RSS and CPU, not its parent's."""

    returncode: int
    rss_kib: int
    cpu: float  # user + system seconds
    wall: float  # from the launcher's fork to the reap


def measure(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    stdout: int | object = subprocess.DEVNULL,
    stderr: int | object = subprocess.DEVNULL,
) -> Measured:
    """Run ``argv`` through the small launcher (see :class:`Runner` for why a measured command
    is never forked from a large process) and return its figures; what measures a command
    anywhere (benches, tests) goes through here."""
    import tempfile

    with tempfile.NamedTemporaryFile(prefix="cas-measure-", suffix=".rss", delete=False) as f:
        out = Path(f.name)
    try:
        proc = subprocess.run(
            [sys.executable, "-S", "-c", LAUNCHER, str(out), *map(str, argv)],
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdout=stdout,
            stderr=stderr,
            check=False,
        )
        fields = out.read_text().split() if out.stat().st_size else ["0", "0", "0", "0"]
    finally:
        out.unlink(missing_ok=True)
    rss, user, system, wall = fields
    return Measured(proc.returncode, int(rss), float(user) + float(system), float(wall))


class StepError(Exception):
    """A tool step failed; the message ends up in the results table instead of aborting."""


@dataclass
class RunResult:
    """Outcome of one subprocess: timing, memory, exit status and where its output went."""

    argv: list[str]
    returncode: int | None
    seconds: float
    maxrss_bytes: int
    cpu_seconds: float
    timed_out: bool
    log_prefix: Path
    spawn_error: str | None = None

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and self.spawn_error is None

    def tail(self, limit: int = 400) -> str:
        """Last lines of stderr (or stdout), to explain a failure in one table cell."""
        for suffix in (".err", ".out"):
            path = self.log_prefix.with_name(self.log_prefix.name + suffix)
            try:
                text = path.read_text(errors="replace").strip()
            except OSError:
                continue
            if text:
                return text[-limit:]
        return ""

    def describe_failure(self) -> str:
        cmd = shlex.join(self.argv)
        if self.spawn_error:
            return f"`{cmd}` could not start: {self.spawn_error}"
        if self.timed_out:
            return f"`{cmd}` timed out after {self.seconds:.1f} s"
        return f"`{cmd}` exited {self.returncode}: {self.tail()}"


class Runner:
    """Spawns measured commands; numbers each one so its logs are easy to find.

    Peak memory can't come from the harness's own ``wait4``: on exec Linux folds the
    parent's high-water RSS into the child's ``ru_maxrss``, so every tool would inherit
    the harness's ~100 MiB. A small intermediate process (GNU ``time``, else
    :data:`LAUNCHER`) forks the tool and reports the tool's own figure.
    """

    def __init__(self, log_dir: Path, default_timeout: float) -> None:
        self.log_dir = log_dir
        self.default_timeout = default_timeout
        self.seq = 0
        self.use_time = TIME_BIN.exists()
        log_dir.mkdir(parents=True, exist_ok=True)

    def run(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        label: str,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> RunResult:
        """Run ``argv`` to completion (or timeout); never raises for tool failures."""
        self.seq += 1
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)
        prefix = self.log_dir / f"{self.seq:04d}-{safe}"
        rss_file = Path(f"{prefix}.rss")
        timeout = self.default_timeout if timeout is None else timeout
        full_env = {**os.environ, **(env or {})}
        argv = [str(a) for a in argv]
        if self.use_time:
            wrapped = [str(TIME_BIN), "-f", "%M %U %S", "-o", str(rss_file), *argv]
        else:
            wrapped = [sys.executable, "-S", "-c", LAUNCHER, str(rss_file), *argv]
        with open(f"{prefix}.out", "wb") as out, open(f"{prefix}.err", "wb") as err:
            start = time.perf_counter()
            try:
                proc = subprocess.Popen(
                    wrapped,
                    cwd=cwd,
                    env=full_env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                )
            except OSError as exc:
                return RunResult(argv, None, 0.0, 0, 0.0, False, prefix, spawn_error=str(exc))
            box: dict[str, object] = {}

            def reap() -> None:
                # wait4 in a thread: exact end time, unlike Popen.wait's polling sleeps.
                box["wait"] = os.wait4(proc.pid, 0)
                box["end"] = time.perf_counter()

            waiter = threading.Thread(target=reap, daemon=True)
            waiter.start()
            waiter.join(timeout)
            timed_out = waiter.is_alive()
            if timed_out:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                waiter.join()
            _, status, _ = box["wait"]  # type: ignore[misc]
            seconds = box["end"] - start  # type: ignore[operator]
            proc.returncode = os.waitstatus_to_exitcode(status)  # already reaped by wait4
        maxrss_kib, cpu = 0, 0.0
        with contextlib.suppress(OSError, ValueError, IndexError):
            # GNU time may prefix "Command exited with non-zero status N": use the last line.
            fields = rss_file.read_text().strip().splitlines()[-1].split()
            maxrss_kib, cpu = int(fields[0]), float(fields[1]) + float(fields[2])
            if not self.use_time:
                seconds = float(fields[3])
        with open(self.log_dir / "commands.tsv", "a") as index:
            index.write(
                f"{prefix.name}\t{proc.returncode}\t{seconds:.3f}\t{cpu:.2f}\t"
                f"{maxrss_kib}\t{shlex.join(argv)}\n"
            )
        return RunResult(argv, proc.returncode, seconds, maxrss_kib * 1024, cpu, timed_out, prefix)

    def check(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        label: str,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> RunResult:
        """Like :meth:`run` but raises :class:`StepError` when the command fails."""
        res = self.run(argv, cwd=cwd, label=label, env=env, timeout=timeout)
        if not res.ok:
            raise StepError(res.describe_failure())
        return res


def du_bytes(path: Path) -> int:
    """Apparent size in bytes like ``du -sb`` (0 when the path doesn't exist yet)."""
    if not path.exists():
        return 0
    out = subprocess.run(["du", "-sb", str(path)], check=True, capture_output=True, text=True)
    return int(out.stdout.split()[0])


def rm_tree(path: Path) -> None:
    """Remove a tree fast (``rm -rf`` beats shutil on 200k files) and make sure it's gone."""
    if path.exists() or path.is_symlink():
        subprocess.run(["rm", "-rf", "--", str(path)], check=False)
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)


def make_git_repo(path: Path) -> None:
    """A fresh git repository with an identity, as the tools expect to run inside one."""
    path.mkdir(parents=True)
    for args in (
        ["init", "-q"],
        ["config", "user.email", "bench@example.com"],
        ["config", "user.name", "bench"],
        ["config", "commit.gpgsign", "false"],
    ):
        subprocess.run(["git", *args], cwd=path, check=True, capture_output=True)


def command_version(argv: Sequence[str], env: Mapping[str, str] | None = None) -> str | None:
    """First line of ``argv``'s output, or None if it fails (used for report metadata)."""
    try:
        res = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (res.stdout or res.stderr).strip()
    return text.splitlines()[0] if res.returncode == 0 and text else None


@dataclass
class VcsTool:
    """A data-versioning CLI measured by the core suite (DVC, cas).

    Commands are argv lists run in the repository root; ``setup`` runs once per fresh
    repository, untimed. ``unavailable`` holds the reason when the tool can't run, so
    the suite records "not available" instead of failing.
    """

    name: str
    exe: Path
    setup: list[list[str]]
    add: list[str]
    status: list[str]
    checkout: list[str]
    store: str
    before_checkout: list[list[str]] = field(default_factory=list)
    env_vars: dict[str, str] = field(default_factory=dict)
    unavailable: str | None = None
    version: str = "?"

    def prepare(self, base: Path) -> dict[str, str]:
        """Create per-repository side state under ``base``; returns the tool's environment."""
        return dict(self.env_vars)

    def argv(self, cmd: list[str]) -> list[str]:
        return [str(self.exe), *cmd]


@dataclass
class DvcTool(VcsTool):
    """DVC with analytics/updater off, ``cache.type copy``, and state kept per repo.

    Settings go in a private global config (one ``dvc config`` call costs ~1 s of
    start-up). DVC keeps hash/state databases in a site cache dir keyed by repo path;
    pointing it into the per-repo work dir makes every "cold" add really cold and leaves
    /var/tmp clean.
    """

    config: str = (
        "[core]\n    analytics = false\n    check_update = false\n[cache]\n    type = copy\n"
    )

    def prepare(self, base: Path) -> dict[str, str]:
        conf = base / "dvc-global-config"
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "config").write_text(self.config)
        return {
            **self.env_vars,
            "DVC_GLOBAL_CONFIG_DIR": str(conf),
            "DVC_SITE_CACHE_DIR": str(base / "dvc-site-cache"),
        }


def dvc_tool(venv: Path) -> DvcTool:
    exe = venv / "bin" / "dvc"
    tool = DvcTool(
        name="dvc",
        exe=exe,
        setup=[["init", "-q"]],
        add=["add", "data"],
        status=["status"],
        checkout=["checkout"],
        store=".dvc/cache",
        env_vars={"DVC_NO_ANALYTICS": "1"},
    )
    if not exe.exists():
        tool.unavailable = f"dvc not installed at {exe}"
    else:
        tool.version = command_version([str(exe), "--version"], tool.env_vars) or "?"
    return tool


def cas_tool(exe: Path, project_python: Path | None) -> VcsTool:
    tool = VcsTool(
        name="cas",
        exe=exe,
        setup=[["init"]],
        add=["add", "data"],
        status=["status"],
        checkout=["checkout"],
        store=".cas/store",
    )
    if not exe.exists():
        tool.unavailable = f"cas not available ({exe} does not exist)"
        return tool
    version = command_version([str(exe), "--version"])
    if version is None and project_python is not None:
        version = command_version([str(project_python), "-c", "import cas; print(cas.__version__)"])
    tool.version = version or "?"
    return tool


def ensure_dvc_venv(venv: Path, log_file: Path) -> str | None:
    """Create ``bench/.venv-dvc`` with ``dvc==3.*`` if missing; returns an error or None.

    DVC lives in its own venv so its large dependency tree never touches the project's.
    """
    if (venv / "bin" / "dvc").exists():
        return None
    python = shutil.which("python3") or sys.executable
    print(f"installing dvc==3.* into {venv} (one-time, logs in {log_file}) ...", flush=True)
    with open(log_file, "wb") as out:
        for argv in (
            [python, "-m", "venv", str(venv)],
            [str(venv / "bin" / "pip"), "install", "-q", "dvc==3.*"],
        ):
            try:
                res = subprocess.run(
                    argv,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=1800,
                    stdin=subprocess.DEVNULL,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                return f"`{shlex.join(argv)}` failed: {exc}"
            if res.returncode != 0:
                return f"`{shlex.join(argv)}` exited {res.returncode} (see {log_file})"
    return None
