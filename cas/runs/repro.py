"""``cas repro``: rerun a recorded run where it ran, and check that its metrics reproduce.

The rerun happens in a temporary linked Git worktree at the recorded commit (so it shares the
local store, see :func:`cas.gitio.main_worktree`), with the recorded uncommitted and untracked
files and config files restored from their blobs and the recorded pointers checked out (what
the store lacks is fetched from the default remote). The user's checkout is never written; the
temporary worktree is removed however the rerun ends (a failure, Ctrl-C, or SIGTERM, which is
how CI cancels a job).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cas import remote as remote_config
from cas.errors import CorruptObjectError, ObjectMissingError, RerunFailedError, UsageError
from cas.gitio import GitRepo
from cas.repo import Repo
from cas.runs import capture
from cas.runs import record as rec
from cas.runs.catalog import open_synced
from cas.runs.compare import MetricCheck, Tolerance, check_metrics, env_changes
from cas.runs.session import Options, Session, run_command

DEFAULT_RTOL = 0.005


@dataclass
class ReproResult:
    original: str
    rerun: str | None = None
    env: list[str] = field(default_factory=list)
    metrics: list[MetricCheck] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)  # path -> identical / statistical
    strict_env_failed: bool = False

    @property
    def reproduced(self) -> bool:
        return not self.strict_env_failed and all(c.ok for c in self.metrics)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reproduced": self.reproduced}


def tolerances(
    repo: Repo, rtol: float | None, atol: float | None, metric: Sequence[str]
) -> tuple[Tolerance, dict[str, float]]:
    """Flags first, then ``[repro]`` in .cas/config (``rtol``, ``atol``, ``metric.NAME``)."""

    def number(text: str, what: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise UsageError(f"{what} must be a number, not {text!r}") from None
        if not value >= 0:
            raise UsageError(f"{what} must be a number >= 0, not {text!r}")
        return value

    cfg = repo.config
    default = Tolerance(
        rtol
        if rtol is not None
        else number(cfg.get("repro", "rtol", str(DEFAULT_RTOL)) or "", "[repro] rtol"),
        atol if atol is not None else number(cfg.get("repro", "atol", "0") or "", "[repro] atol"),
    )
    per: dict[str, float] = {}
    if cfg.parser.has_section("repro"):
        for key, value in cfg.parser.items("repro"):
            if key.startswith("metric."):
                per[key[len("metric.") :]] = number(value, f"[repro] {key}")
    for item in metric:
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise UsageError(f"--metric takes NAME=RTOL (e.g. val_acc=0.002), not {item!r}")
        per[name] = number(value, f"--metric {name}")
    return default, per


@contextlib.contextmanager
def temp_worktree(repo: Repo, commit: str) -> Iterator[Path]:
    """A detached linked worktree at ``commit``, removed on the way out whatever happens."""
    if repo.git.probe("cat-file", "-e", f"{commit}^{{commit}}") is None:
        raise UsageError(
            f"commit {commit[:12]} of the run is not in this repository; 'git fetch' it"
        )
    parent = Path(tempfile.mkdtemp(prefix="cas-repro-"))
    where = parent / "wt"

    def terminated(signum: int, _frame: object) -> None:  # a CI job cancelled: clean up too
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        repo.git.run("worktree", "add", "--detach", "--quiet", str(where), commit)
        yield where
    finally:
        signal.signal(signal.SIGTERM, previous)
        repo.git.probe("worktree", "remove", "--force", str(where))
        shutil.rmtree(parent, ignore_errors=True)
        repo.git.probe("worktree", "prune")


def _restore_file(root: Path, rel: str, mode: str, data: bytes) -> None:
    path = root / rel
    parts = rel.split("/")
    # A hostile record: a path out of the worktree, or into what Git and cas own (a .cas/config
    # there could point the store anywhere). Recorded code never has such paths.
    if not path.resolve().is_relative_to(root.resolve()) or ".git" in parts or parts[0] == ".cas":
        raise CorruptObjectError(f"the run record names {rel!r}, outside the source tree; refused")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.exists():
        path.unlink()
    if mode == "120000":
        os.symlink(os.fsdecode(data), path)
        return
    path.write_bytes(data)
    path.chmod(0o755 if mode == "100755" else 0o644)


def restore(repo: Repo, root: Path, record: dict[str, Any], say: Callable[[str], None]) -> Repo:
    """Make the temp worktree hold the run's code, config and data; returns its Repo."""
    code = record["code"]
    for item in code["files"]:
        _restore_file(root, item["path"], item["mode"], rec.get_blob(repo.local, item["blob"]))
    for rel in code["deleted"]:
        (root / rel).unlink(missing_ok=True)
    for item in code["skipped"]:
        say(f"warning: {item['path']} ({item['size']} bytes) was not recorded (too large)")
    for item in record["config"]["files"]:
        _restore_file(root, item["path"], "100644", rec.get_blob(repo.local, item["blob"]))
    (root / ".cas").mkdir(exist_ok=True)
    for name in ("config", "config.local"):  # the remote and its credentials, as the user's
        src = repo.cas_dir / name
        if src.is_file() and not (name == "config" and (root / ".cas" / name).is_file()):
            shutil.copyfile(src, root / ".cas" / name)
    temp = Repo(GitRepo(root))
    targets = []
    for item in record["data"]["pointers"]:
        _restore_file(root, item["pointer"], "100644", item["text"].encode("ascii"))
        targets.append(item["pointer"])
    paths = [str(root / t) for t in targets]  # absolute: the process's cwd is the user's
    if paths:
        try:
            temp.checkout(paths, force=True)
        except ObjectMissingError:
            if remote_config.default_name(temp) is None:
                raise
            from cas.ops import transfer

            transfer.fetch(temp, paths)
            temp.checkout(paths, force=True)
    return temp


def repro(
    repo: Repo,
    ref: str,
    rtol: float | None = None,
    atol: float | None = None,
    metric: Sequence[str] = (),
    strict_env: bool = False,
    say: Callable[[str], None] = print,
) -> ReproResult:
    default, per = tolerances(repo, rtol, atol, metric)
    catalog = open_synced(repo)
    try:
        run_id = catalog.resolve(ref)
    finally:
        catalog.close()
    old = rec.get(repo.local, run_id)
    result = ReproResult(run_id)
    if old["code"]["commit"] is None:
        raise UsageError(
            f"run {run_id[:12]} was recorded before the first commit; nothing to check out"
        )
    if old["status"] != "succeeded":
        raise UsageError(f"run {run_id[:12]} {old['status']}; only a succeeded run reproduces")
    if any(capture.REDACTED in a for a in old["config"]["argv"]):
        say("warning: the command line had secrets, rerun with them redacted")
    now = capture.capture_env(repo, old["config"]["argv"], old["env"].get("image_digest"))
    result.env = env_changes({k: v for k, v in old["env"].items() if k != "runtime"}, now)
    say("environment: same" if not result.env else "environment differs:")
    for line in result.env:
        say(f"    {line}")
    if strict_env and result.env:
        result.strict_env_failed = True
        say("--strict-env: not rerun")
        return result
    with temp_worktree(repo, old["code"]["commit"]) as root:
        temp = restore(repo, root, old, say)
        environ = {k: v for k, v in os.environ.items() if k not in capture.env_allow_list(repo)}
        environ.update(old["config"]["env"])
        session = Session(
            temp,
            Options(
                name=old["name"],
                argv=old["config"]["argv"],
                config=[str(root / f["path"]) for f in old["config"]["files"]],
                metrics=str(root / old["metrics_file"]) if old["metrics_file"] else None,
                out=[str(root / o) for o in old["out"]],
                data=[str(root / p["pointer"]) for p in old["data"]["pointers"]],
                seed=old["config"]["seed"],
                reproduces=run_id,
                cwd=root / old["config"]["cwd"],
                image_digest=old["env"].get("image_digest"),
                allow_secrets=True,
            ),
            catalog_repo=repo,
        )
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(environ)  # the capture sees what the command will
        try:
            session.begin()
        finally:
            os.environ.clear()
            os.environ.update(saved)
        say(f"rerunning {' '.join(old['config']['argv'])} at {old['code']['commit'][:12]}")
        status = run_command(session, environ)
        result.rerun = session.info["id"]
        if status != 0:
            raise RerunFailedError(
                f"the rerun of run {run_id[:12]} exited with status {status} (recorded as "
                f"{result.rerun[:12]}); see its output above"
            )
        new = session.record
    result.metrics = check_metrics(old["metrics"], new["metrics"], default, per)
    for check in result.metrics:
        say(check.line())
    new_outputs = {o["path"]: o["manifest"] for o in new["outputs"]}
    for out in old["outputs"]:
        same = new_outputs.get(out["path"]) == out["manifest"]
        result.outputs[out["path"]] = "identical" if same else "statistical"
        say(
            f"output {out['path']}: "
            + (
                "bitwise identical"
                if same
                else "not bitwise identical (reproduced only through its metrics)"
            )
        )
    say(
        f"run {run_id[:12]} "
        + ("reproduced" if result.reproduced else "NOT reproduced")
        + f" (rerun recorded as {result.rerun[:12]})"
    )
    return result
