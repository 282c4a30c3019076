"""A run from start to record: capture the inputs, hand the command its channel, then fold what
it logged, its metrics file and its outputs into the record and index it.

The order makes a kill -9 harmless: the catalog's live row is committed before the command
starts (so a killed run shows as ``killed``, never vanishes), the record is written to the store
before the catalog row that names it, and the run's folder under ``.cas/tmp/`` holds only the
command's event log.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import subprocess
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cas import pointer
from cas.errors import CasError, UsageError
from cas.runs import api, capture, tracker
from cas.runs import record as rec
from cas.runs.catalog import Catalog

if TYPE_CHECKING:
    from cas.repo import Repo


@dataclass
class Options:
    """What the user asked for: paths as given (relative to ``cwd``)."""

    name: str | None = None
    argv: list[str] = field(default_factory=list)
    config: list[str] = field(default_factory=list)
    metrics: str | None = None
    out: list[str] = field(default_factory=list)
    data: list[str] = field(default_factory=list)
    seed: int | None = None
    image_digest: str | None = None
    allow_secrets: bool = False
    require_clean: bool = False
    reproduces: str | None = None
    cwd: Path | None = None
    mlflow: bool = True  # copy the run to MLflow when a tracking URI is set (cas.runs.tracker)


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Session:
    def __init__(self, repo: Repo, options: Options, catalog_repo: Repo | None = None) -> None:
        self.repo = repo
        self.catalog_repo = catalog_repo or repo  # a repro's temp worktree: the user's catalog
        self.options = options
        self.cwd = Path(options.cwd or Path.cwd())
        self.record: dict[str, Any] = {}
        self.info: dict[str, Any] = {}
        self.key: str | None = None
        self.dir: Path | None = None
        self.warnings: list[str] = []
        self._metrics_before: tuple[int, int] | None = None
        self._t0 = 0.0
        self.tracker: tracker.Tracker | None = None
        self.mlflow_id: str | None = None

    # -- start -----------------------------------------------------------------------------------
    def begin(self) -> dict[str, Any]:
        """Capture the four inputs, write the live catalog row and the run's folder."""
        repo, opts = self.repo, self.options
        cwd_rel = "" if self.cwd.resolve() == repo.root else repo.relpath(self.cwd, self.cwd)
        outs = [repo.target(o, self.cwd).path for o in opts.out]
        configs = [repo.relpath(c, self.cwd) for c in opts.config]
        metrics = repo.relpath(opts.metrics, self.cwd) if opts.metrics else None
        data = capture.capture_data(repo, opts.data, outs, self.cwd)
        targets = [pointer.target_of(d["pointer"]) for d in data]  # data, not code
        exclude = [*configs, *outs, *([metrics] if metrics else []), *targets]
        where = tracker.target(self.catalog_repo.config, self.catalog_repo.root)
        if where is not None and opts.mlflow:
            self.tracker = tracker.Tracker(where)  # mlflow missing: refused before anything runs
            exclude += tracker.local_files(where, repo.root)
        code, self.warnings = capture.capture_code(repo, exclude)
        if opts.require_clean and capture.is_dirty(code):
            changed = [f["path"] for f in code["files"]] + code["deleted"]
            raise UsageError(
                f"--require-clean: the worktree has uncommitted or untracked files "
                f"({', '.join(changed[:5])}{', ...' if len(changed) > 5 else ''}); commit them"
            )
        config = capture.capture_config(
            repo, opts.argv, configs, opts.seed, cwd_rel, opts.allow_secrets
        )
        env = capture.capture_env(repo, opts.argv, opts.image_digest)
        self.record = {
            "name": opts.name,
            "started": utc_now(),
            "host": capture.host(),
            "status": "running",
            "code": code,
            "data": {"pointers": data, "read": []},
            "config": config,
            "env": env,
            "fingerprint": capture.fingerprints(code, data, config, env),
            "out": outs,
            "metrics_file": metrics,
            "reproduces": opts.reproduces,
            "reused": None,
        }
        if metrics:
            with contextlib.suppress(OSError):
                st = (repo.root / metrics).stat()
                self._metrics_before = (st.st_mtime_ns, st.st_size)
        self.dir = repo.cas_dir / "tmp" / f"run-{uuid.uuid4().hex}"
        self.dir.mkdir(parents=True)
        self.info = {"name": opts.name, "fingerprint": self.record["fingerprint"]}
        (self.dir / api.RUN_INFO).write_text(json.dumps(self.info), encoding="utf-8")
        catalog = Catalog(self.catalog_repo)
        try:
            self.key = catalog.begin(self.record)
        finally:
            catalog.close()
        self._start_copy()
        self._t0 = time.monotonic()
        return self.record

    def _start_copy(self) -> None:
        if self.tracker is None:
            return
        try:
            self.mlflow_id = self.tracker.start(self.record)
        except Exception as err:  # any: see tracker.failure; the run goes on
            warnings.warn(
                f"{tracker.failure(err, self.tracker.where)}; the run is recorded in "
                "cas only: log it later with 'cas runs mlflow'",
                RuntimeWarning,
                stacklevel=2,
            )
            self.tracker = None

    def exported(self) -> dict[str, str]:
        """The variables the command gets: its channel, and the seed."""
        env = {api.RUN_DIR: str(self.dir)}
        if self.options.seed is not None:
            env[api.SEED] = env["PYTHONHASHSEED"] = str(self.options.seed)
        if self.tracker is not None and self.mlflow_id is not None:
            # the command's own mlflow.start_run() resumes this run: one run in MLflow's UI
            env.update(self.tracker.where.exported(), MLFLOW_RUN_ID=self.mlflow_id)
        return env

    # -- end -------------------------------------------------------------------------------------
    def finish(self, exit_code: int) -> str:
        """Write the record of a command that exited with ``exit_code``; returns its id. A
        failure to store the outputs is recorded (status ``failed``) and then raised."""
        record = self.record
        record["ended"] = utc_now()
        record["duration"] = round(time.monotonic() - self._t0, 6)
        record["exit_code"] = exit_code
        record["status"] = "succeeded" if exit_code == 0 else "failed"
        self._fold_events()
        error: CasError | None = None
        if exit_code == 0:
            try:
                self._read_metrics_file()
                record["outputs"] = self._add_outputs()
            except CasError as err:
                record["status"], record["error"], error = "failed", str(err), err
        return self._commit(error)

    def _commit(self, error: CasError | None = None) -> str:
        record = self.record
        record.setdefault("outputs", [])
        record.setdefault("metrics", {})
        run_id = rec.put(self.repo.local, record)
        catalog = Catalog(self.catalog_repo)
        try:
            catalog.finish(self.key, run_id, record)
        finally:
            catalog.close()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.info["id"] = run_id
        self._finish_copy(run_id)
        if error is not None:
            raise error
        return run_id

    def _finish_copy(self, run_id: str) -> None:
        if self.tracker is None or self.mlflow_id is None:
            return
        try:
            self.tracker.finish(self.mlflow_id, run_id, self.record)
        except Exception as err:  # any: see tracker.failure; the record is stored
            warnings.warn(
                f"{tracker.failure(err, self.tracker.where)}; the run is recorded in "
                f"cas: log it with 'cas runs mlflow {run_id[:12]}'",
                RuntimeWarning,
                stacklevel=2,
            )

    def _fold_events(self) -> None:
        """Metric series, data reads and the runtime settings the helpers logged."""
        series: dict[str, list[list[Any]]] = {}
        reads: list[dict[str, Any]] = []
        runtime: dict[str, Any] = {}
        path = self.dir / api.EVENTS if self.dir else None
        lines = path.read_text(encoding="utf-8").splitlines() if path and path.exists() else []
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a line cut by a kill of the command: the others stand
            kind = event.pop("t", None)
            if kind == "metric":
                series.setdefault(event["name"], []).append([event["step"], event["value"]])
            elif kind == "read" and event not in reads:
                reads.append(event)
            elif kind == "runtime":
                runtime.update(event)
        self.record["series"] = series
        self.record["metrics"] = {name: points[-1][1] for name, points in series.items()}
        self.record["data"]["read"] = reads
        self.record["env"]["runtime"] = runtime

    def _read_metrics_file(self) -> None:
        rel = self.record["metrics_file"]
        if not rel:
            return
        path = self.repo.root / rel
        try:
            st = path.stat()
            data = path.read_bytes()
        except FileNotFoundError:
            raise UsageError(f"the command did not write its metrics file {rel}") from None
        if self._metrics_before == (st.st_mtime_ns, st.st_size):
            raise UsageError(
                f"the command did not rewrite its metrics file {rel} (it is the previous run's)"
            )
        value = capture.parse_structured(data, rel)
        if not isinstance(value, dict):
            raise UsageError(f"metrics file {rel} must hold a JSON or YAML mapping")
        for key, item in capture.flatten(value).items():
            if isinstance(item, (int, float)) and not isinstance(item, bool):
                self.record["metrics"][key] = rec.finite(float(item))

    def _add_outputs(self) -> list[dict[str, Any]]:
        outs = self.record["out"]
        if not outs:
            return []
        found = []
        for result in self.repo.add([self.repo.root / o for o in outs]):  # cwd may be the user's
            text = (self.repo.root / result.pointer).read_text(encoding="ascii")
            found.append(
                {
                    "path": result.target,
                    "pointer": result.pointer,
                    "text": text,
                    "manifest": result.manifest,
                    "files": result.files,
                    "size": result.size,
                }
            )
        return found


def run_command(session: Session, environ: dict[str, str] | None = None) -> int:
    """Run the session's command with the run's variables and record it; returns its exit
    status (128 + N for a signal, the shell's convention). Ctrl-C is recorded as a failed run
    and re-raised. The session must have begun."""
    argv = session.options.argv
    env = {**(os.environ if environ is None else environ), **session.exported()}
    try:
        proc = subprocess.Popen(argv, cwd=session.cwd, env=env)
    except OSError as err:
        session.finish(127)
        raise UsageError(f"cannot start {argv[0]}: {err.strerror}; check the command") from None
    try:
        code = proc.wait()
    except KeyboardInterrupt:  # Ctrl-C reached the command too; a SIGTERM (repro) did not
        try:
            code = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.terminate()
            code = proc.wait()
        session.finish(130 if code >= 0 else 128 - code)
        raise
    status = 128 - code if code < 0 else code
    session.finish(status)
    return status
