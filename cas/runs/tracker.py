"""Runs logged to MLflow as well, so a team whose dashboards live there sees cas runs side by
side with its others. The cas record stays the source of truth; MLflow gets a copy.

Terms:

- *tracking URI*: where MLflow keeps runs (``MLFLOW_TRACKING_URI``, else ``[mlflow]
  tracking_uri`` in ``.cas/config``; ``sqlite:///mlflow.db``, ``http://host:5000``, ...).
  Without one, nothing is logged and ``mlflow`` is never imported.
- *copy*: one MLflow run per cas run: the record's id and four fingerprints as tags, the config
  files' keys as params, the metrics (each logged step of a series), each input pointer as an
  MLflow dataset input whose digest is its manifest id (MLflow's digests hold 36 characters: the
  id's first 36 hex digits; the whole id is in the dataset's source), the run's status and times.

A copy that MLflow refuses (server down, bad credentials) never fails or loses the run: it is a
one-line warning naming the fix, ``cas runs mlflow RUN`` logs it later, and copies are found by
their ``cas.run_id`` tag, so logging twice makes one copy.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cas.errors import StorageError, UsageError, missing_extra
from cas.pointer import target_of

if TYPE_CHECKING:
    from cas.config import Config

ENV_URI = "MLFLOW_TRACKING_URI"
TAG_ID = "cas.run_id"
DIGEST_SIZE = 36  # MLflow's limit (its datasets table: String(36))
_STATUS = {"succeeded": "FINISHED", "reused": "FINISHED", "failed": "FAILED", "killed": "KILLED"}
_BAD_NAME = re.compile(r"[^\w./\- :]")  # what MLflow accepts in param, metric and tag keys
_MAX_PARAM = 6000
_MAX_TAG = 5000
# Quick failures: MLflow's client retries a dead server for minutes by default. A user's own
# settings win.
_CLIENT_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


@dataclass(frozen=True)
class Target:
    uri: str
    experiment: str | None  # a name; None: MLflow's default experiment

    def exported(self) -> dict[str, str]:
        """What the command's own ``mlflow`` calls need to reach the same store."""
        env = {ENV_URI: self.uri}
        if self.experiment:
            env["MLFLOW_EXPERIMENT_NAME"] = self.experiment
        return env


def target(config: Config, root: Path, environ: Mapping[str, str] | None = None) -> Target | None:
    """Where runs are copied, or None when MLflow logging is off. A relative local store
    (``sqlite:///mlflow.db``, ``./mlruns``) is made absolute, against the current folder for
    the environment variable (as MLflow reads it) and the repository root for ``.cas/config``, so
    a command started elsewhere (a repro's temporary worktree) logs to the same store."""
    environ = os.environ if environ is None else environ
    if not config.get_bool("mlflow", "enabled", True):
        return None
    if environ.get(ENV_URI):
        uri = _absolute(environ[ENV_URI], Path.cwd())
    elif config.get("mlflow", "tracking_uri"):
        uri = _absolute(str(config.get("mlflow", "tracking_uri")), root)
    else:
        return None
    experiment = environ.get("MLFLOW_EXPERIMENT_NAME") or config.get("mlflow", "experiment")
    return Target(uri, experiment or None)


def _absolute(uri: str, base: Path) -> str:
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(base / uri[len("sqlite:///") :])
    if uri.startswith("file:") or "://" in uri:
        return uri
    return str(base / uri)  # a bare path: MLflow's file store


def local_files(where: Target, root: Path) -> list[str]:
    """What a run's code must leave out: a local tracking store inside the worktree (an
    SQLite file and its journals, a file store's folder) and MLflow's default artifact folder."""
    uri = where.uri
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        paths = [db.with_name(db.name + end) for end in ("", "-journal", "-wal", "-shm")]
    elif uri.startswith("file:"):
        paths = [Path(urllib.parse.urlparse(uri).path)]
    elif "://" not in uri:
        paths = [Path(uri)]
    else:
        paths = []
    inside = ["mlruns"]
    for path in paths:
        with contextlib.suppress(ValueError):
            inside.append(path.resolve().relative_to(root.resolve()).as_posix())
    return inside


class Tracker:
    """An MLflow client bound to one tracking URI and experiment."""

    def __init__(self, where: Target) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise missing_extra("mlflow", "mlflow") from None
        for key, value in _CLIENT_ENV.items():
            os.environ.setdefault(key, value)
        self.where = where
        self.client = MlflowClient(tracking_uri=where.uri)
        self._experiment: str | None = None

    def experiment_id(self) -> str:
        if self._experiment is None:
            if self.where.experiment is None:
                self._experiment = "0"
            else:
                found = self.client.get_experiment_by_name(self.where.experiment)
                self._experiment = (
                    found.experiment_id
                    if found is not None
                    else self.client.create_experiment(self.where.experiment)
                )
        return self._experiment

    def start(self, record: Mapping[str, Any]) -> str:
        """Open the MLflow run of a cas run that is starting; returns its MLflow run id."""
        name = record.get("name")
        run = self.client.create_run(
            self.experiment_id(),
            start_time=_millis(record.get("started")),
            tags=dict(_start_tags(record)),
            run_name=str(name) if name else None,
        )
        return str(run.info.run_id)

    def finish(self, mlflow_id: str, run_id: str, record: Mapping[str, Any]) -> None:
        """Log what the finished record holds into the MLflow run and close it."""
        from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag

        logged = self.client.get_run(mlflow_id).data.params  # the command's own mlflow calls
        params = [Param(k, v) for k, v in _params(record) if k not in logged]
        tags = [RunTag(k, v) for k, v in _end_tags(run_id, record)]
        ended = (
            _millis(record.get("ended"))
            or _millis(record.get("started"))
            or int(time.time() * 1000)  # a record without a time: the copy's own
        )
        metrics = [Metric(k, v, ended, step) for k, v, step in _metrics(record)]
        for batch in _batches(metrics, 1000):
            self.client.log_batch(mlflow_id, metrics=batch)
        for batch in _batches(params, 100):
            self.client.log_batch(mlflow_id, params=batch)
        for batch in _batches(tags, 100):
            self.client.log_batch(mlflow_id, tags=batch)
        inputs = [
            DatasetInput(Dataset(**fields), [InputTag("mlflow.data.context", "training")])
            for fields in _datasets(record)
        ]
        if inputs:
            self.client.log_inputs(mlflow_id, datasets=inputs)
        self.client.set_terminated(
            mlflow_id, status=_STATUS.get(record.get("status", ""), "FAILED"), end_time=ended
        )

    def copy_of(self, run_id: str) -> str | None:
        """The MLflow run already holding cas run ``run_id``, in any experiment."""
        experiments = [e.experiment_id for e in self.client.search_experiments()]
        found = self.client.search_runs(
            experiments, filter_string=f"tags.`{TAG_ID}` = '{run_id}'", max_results=1
        )
        return str(found[0].info.run_id) if found else None

    def log(self, run_id: str, record: Mapping[str, Any]) -> tuple[str, bool]:
        """Copy a stored record (once): (its MLflow run id, whether it was logged now)."""
        existing = self.copy_of(run_id)
        if existing is not None:
            return existing, False
        mlflow_id = self.start(record)
        self.finish(mlflow_id, run_id, record)
        return mlflow_id, True


def export(
    config: Config, root: Path, records: Iterable[tuple[str, Mapping[str, Any]]]
) -> list[tuple[str, str, bool]]:
    """Copy stored records to MLflow, once each: (cas id, MLflow run id, logged now)."""
    where = target(config, root)
    if where is None:
        raise UsageError(
            "no MLflow tracking URI: set MLFLOW_TRACKING_URI, or tracking_uri under [mlflow] in "
            ".cas/config (and enabled = true)"
        )
    client = Tracker(where)
    results = []
    for run_id, record in records:
        try:
            mlflow_id, new = client.log(run_id, record)
        except Exception as err:  # any: see failure()
            raise StorageError(f"{failure(err, where)}; check it and run this again") from err
        results.append((run_id, mlflow_id, new))
    return results


def failure(err: BaseException, where: Target) -> str:
    """One line for a copy MLflow refused. Any exception: the MLflow client raises its own,
    requests', SQLAlchemy's and the OS's, and none of them may cost the user the run."""
    first = (str(err).strip().splitlines() or [""])[0][:300]
    return f"MLflow at {where.uri} refused the run ({type(err).__name__}: {first})"


# -- what a record becomes -------------------------------------------------------------------
# A record may be a teammate's, fetched: decode() checked the fields every reader relies on, and
# what is copied beyond them is skipped where it is not of the shape cas writes, never a crash
# that would read as MLflow refusing the run.
def _millis(stamp: Any) -> int | None:
    """A record's UTC time in MLflow's milliseconds; None (MLflow's "now") if it is not one."""
    try:
        moment = datetime.datetime.strptime(str(stamp), "%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError:
        return None
    return int(moment.replace(tzinfo=datetime.UTC).timestamp() * 1000)


def _key(name: str) -> str:
    return _BAD_NAME.sub("_", name)[:250] or "_"


def _start_tags(record: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    for name, value in sorted(record["fingerprint"].items()):
        yield f"cas.fingerprint.{name}", value
    commit = record["code"].get("commit")
    if isinstance(commit, str) and commit:
        yield "mlflow.source.git.commit", commit
        yield "cas.code.commit", commit
    yield "mlflow.source.type", "LOCAL"
    yield "mlflow.source.name", " ".join(record["config"]["argv"])[:_MAX_TAG]
    if record["config"].get("seed") is not None:
        yield "cas.seed", str(record["config"]["seed"])
    if record.get("reproduces"):
        yield "cas.reproduces", str(record["reproduces"])[:_MAX_TAG]
    if record.get("host"):
        yield "cas.host", str(record["host"])[:_MAX_TAG]


def _end_tags(run_id: str, record: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    yield TAG_ID, run_id
    yield "cas.status", str(record.get("status"))
    if record.get("reused"):
        yield "cas.reused", str(record["reused"])[:_MAX_TAG]
    for out in record["outputs"]:
        yield _key(f"cas.output.{out['path']}"), str(out.get("manifest"))[:_MAX_TAG]


def _params(record: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """The config files' keys (a key two files share is prefixed by its file), the seed."""
    files = [f for f in record["config"]["files"] if isinstance(f.get("keys"), dict)]
    counts: dict[str, int] = {}
    for item in files:
        for key in item["keys"]:
            counts[key] = counts.get(key, 0) + 1
    seen: set[str] = set()
    for item in files:
        for key, value in item["keys"].items():
            name = _key(key if counts[key] == 1 else f"{item['path']}:{key}")
            if name in seen:
                continue
            seen.add(name)
            text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
            yield name, text[:_MAX_PARAM]
    seed = record["config"].get("seed")
    if seed is not None and "seed" not in seen:
        yield "seed", str(seed)


def _float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)  # "nan" and "inf", as records hold them, too
    except (TypeError, ValueError):
        return None


def _metrics(record: Mapping[str, Any]) -> Iterator[tuple[str, float, int]]:
    """Every step of a logged series; a final value (a metrics file's) at step 0."""
    series = record.get("series")
    series = series if isinstance(series, dict) else {}
    for name, points in series.items():
        for point in points if isinstance(points, list) else ():
            if not (isinstance(point, list) and len(point) == 2):
                continue
            step, number = _float(point[0]), _float(point[1])
            if number is not None and step is not None and abs(step) < 2**63:  # NaN: False
                yield _key(name), number, int(step)
    for name, value in record["metrics"].items():
        number = _float(value)
        if name not in series and number is not None:
            yield _key(name), number, 0


def _datasets(record: Mapping[str, Any]) -> Iterator[dict[str, str]]:
    commit = record["code"].get("commit")
    for item in record["data"]["pointers"]:
        pointer, manifest = item["pointer"], str(item.get("manifest"))
        path = target_of(pointer)
        source = {
            "uri": f"cas://@{commit}/{path}" if commit else f"cas://{path}",
            "pointer": pointer,
            "manifest": manifest,
            "kind": str(item.get("kind")),
        }
        yield {
            "name": path[:500],
            "digest": manifest[:DIGEST_SIZE],
            "source_type": "cas",
            "source": json.dumps(source, sort_keys=True),
        }


def _batches(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
