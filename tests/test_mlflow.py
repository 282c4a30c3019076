"""``cas run`` copies its runs to a real MLflow tracking store (SQLite backend): tags, params,
metrics, dataset inputs; the command's own ``mlflow`` calls land in the same MLflow run; a
tracking server that refuses costs no run, and ``cas runs mlflow`` logs it later, once."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient  # the mlflow extra: make setup installs it

from tests.conftest import cas, git, write
from tests.runs_support import make_project, runs, show, train


@pytest.fixture
def project(git_repo: Path) -> Path:
    return make_project(git_repo)


@pytest.fixture
def uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tracking' / 'mlflow.db'}"


def _env(uri: str) -> dict[str, str]:
    (Path(uri[len("sqlite:///") :]).parent).mkdir(parents=True, exist_ok=True)
    return {"MLFLOW_TRACKING_URI": uri}


def _copies(uri: str) -> list[Any]:
    client = MlflowClient(tracking_uri=uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return list(client.search_runs(experiments))


def test_a_run_is_copied_with_its_fingerprints_params_metrics_and_data(
    project: Path, uri: str
) -> None:
    train(project, "--name", "baseline", env=_env(uri))
    record = runs(project)[-1]
    full = show(project, record["id"])
    [copy] = _copies(uri)
    tags, params, metrics = copy.data.tags, copy.data.params, copy.data.metrics
    assert copy.info.status == "FINISHED" and copy.info.run_name == "baseline"
    assert tags["cas.run_id"] == record["id"]
    for name in ("code", "data", "config", "env", "inputs"):
        assert tags[f"cas.fingerprint.{name}"] == record["fingerprint"][name]
    assert tags["mlflow.source.git.commit"] == full["code"]["commit"]
    assert params == {"optimizer.lr": "0.1", "epochs": "5", "seed": "42"}
    assert metrics["val_acc"] == record["metrics"]["val_acc"]
    history = MlflowClient(tracking_uri=uri).get_metric_history(copy.info.run_id, "loss")
    assert [m.step for m in history] == [0, 1, 2, 3, 4]
    assert [m.value for m in history] == [v for _, v in full["series"]["loss"]]
    [dataset] = copy.inputs.dataset_inputs
    manifest = full["data"]["pointers"][0]["manifest"]
    assert dataset.dataset.name == "data" and dataset.dataset.source_type == "cas"
    assert dataset.dataset.digest == manifest[:36]
    source = json.loads(dataset.dataset.source)
    assert (
        source["manifest"] == manifest and source["uri"] == f"cas://@{full['code']['commit']}/data"
    )
    assert tags["cas.output.model"] == full["outputs"][0]["manifest"]


def test_a_tracking_store_in_the_worktree_is_not_code(project: Path) -> None:
    """``[mlflow] tracking_uri = sqlite:///mlflow.db`` in .cas/config: the database lands at
    the root (not in the command's folder) and never enters the code fingerprint."""
    train(project, env={"MLFLOW_TRACKING_URI": ""})
    write(project / ".cas" / "config", "[core]\n[mlflow]\ntracking_uri = sqlite:///mlflow.db\n")
    git(project, "add", ".cas/config")
    git(project, "commit", "-qm", "mlflow")
    train(project, env={"MLFLOW_TRACKING_URI": ""})
    train(project, env={"MLFLOW_TRACKING_URI": ""})
    assert (project / "mlflow.db").is_file()
    second, third = runs(project)[-2:]
    assert second["fingerprint"]["code"] == third["fingerprint"]["code"]
    assert not any(
        f["path"].startswith("mlflow.db") for f in show(project, third["id"])["code"]["files"]
    )
    assert {c.data.tags["cas.run_id"] for c in _copies(f"sqlite:///{project / 'mlflow.db'}")} == {
        second["id"],
        third["id"],
    }


def test_the_commands_own_mlflow_calls_join_the_same_run(project: Path, uri: str) -> None:
    write(
        project / "own.py",
        "import mlflow\n"
        "with mlflow.start_run():\n"
        "    mlflow.log_param('optimizer.lr', '0.1')\n"
        "    mlflow.log_param('note', 'mine')\n"
        "    mlflow.log_metric('mine', 3.0)\n",
    )
    cas(
        project,
        "run",
        "--config",
        "configs/train.json",
        "--",
        sys.executable,
        "own.py",
        env=_env(uri),
    )
    [copy] = _copies(uri)
    assert copy.data.metrics["mine"] == 3.0
    assert copy.data.params == {"optimizer.lr": "0.1", "note": "mine", "epochs": "5"}
    assert copy.data.tags["cas.run_id"] == runs(project)[-1]["id"]
    assert copy.info.status == "FINISHED"


def test_a_failed_run_is_failed_in_mlflow(project: Path, uri: str) -> None:
    write(project / "fail.py", "import sys\nsys.exit(3)\n")
    cas(project, "run", "--", sys.executable, "fail.py", code=3, env=_env(uri))
    [copy] = _copies(uri)
    assert copy.info.status == "FAILED" and copy.data.tags["cas.status"] == "failed"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_refusing_server_costs_no_run_and_runs_mlflow_logs_it_once(
    project: Path, uri: str
) -> None:
    down = {
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{_closed_port()}",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    }
    proc = train(project, env=down)
    [line] = [x for x in proc.stderr.splitlines() if "MLflow" in x]
    assert (
        line.startswith("cas: warning: MLflow at http://127.0.0.1:") and "cas runs mlflow" in line
    )
    [record] = runs(project)
    assert record["status"] == "succeeded"

    refused = cas(project, "runs", "mlflow", env=down, code=7)
    assert "refused" in refused.stderr and "run this again" in refused.stderr
    first = json.loads(cas(project, "runs", "mlflow", "--json", env=_env(uri)).stdout)
    again = json.loads(
        cas(project, "runs", "mlflow", record["id"][:10], "--json", env=_env(uri)).stdout
    )
    [copy] = _copies(uri)
    assert first == [{"id": record["id"], "mlflow_run": copy.info.run_id, "logged": True}]
    assert again == [{"id": record["id"], "mlflow_run": copy.info.run_id, "logged": False}]
    assert copy.data.metrics["val_acc"] == record["metrics"]["val_acc"]


def test_off_switches(project: Path, uri: str) -> None:
    train(project, "--no-mlflow", env=_env(uri))
    write(project / ".cas" / "config.local", "[mlflow]\nenabled = false\n")
    train(project, env=_env(uri))
    assert _copies(uri) == []
    none = cas(project, "runs", "mlflow", env=_env(uri), code=2)
    assert "no MLflow tracking URI" in none.stderr


def test_mlflow_missing_is_refused_before_the_command_runs(project: Path, tmp_path: Path) -> None:
    blocker = write(tmp_path / "block" / "mlflow" / "__init__.py", "raise ImportError('blocked')\n")
    path = os.pathsep.join([str(blocker.parent.parent), os.environ.get("PYTHONPATH", "")])
    env = {"MLFLOW_TRACKING_URI": "sqlite:///x.db", "PYTHONPATH": path}
    proc = train(project, env=env, code=9)
    assert "pip install 'cas-data[mlflow]'" in proc.stderr
    assert runs(project) == [] and not (project / "metrics.json").exists()


def test_repro_is_copied_and_names_what_it_reproduces(project: Path, uri: str) -> None:
    train(project, env=_env(uri))
    original = runs(project)[-1]["id"]
    cas(project, "repro", original, env=_env(uri))
    copies = {c.data.tags["cas.run_id"]: c for c in _copies(uri)}
    [rerun] = [c for rid, c in copies.items() if rid != original]
    assert rerun.data.tags["cas.reproduces"] == original
    assert rerun.data.metrics["val_acc"] == copies[original].data.metrics["val_acc"]


def test_a_fetched_record_of_odd_shape_is_copied_as_far_as_it_goes(project: Path, uri: str) -> None:
    """A teammate's record passes decode()'s checks but holds what cas never writes (a series
    that is not pairs, config keys that are a list, times that are not times, an output with
    no path): what has cas's shape is copied, the rest left out, and nothing reads as MLflow
    refusing the run."""
    from cas.repo import Repo
    from cas.runs import record as rec

    train(project, "--no-mlflow")
    with Repo.open(project) as repo:
        run_id = runs(project)[-1]["id"]
        odd = rec.get(repo.local, run_id)
        odd.update(
            series={"loss": [[0, 1.5], "x", [1], [2**70, 2.0], ["2", "0.5"]], "bad": 7},
            started="yesterday",
            ended=None,
        )
        odd["config"]["files"][0]["keys"] = ["lr", 0.1]
        odd.pop("format"), odd.pop("version")
        odd_id = rec.put(repo.local, odd)
        # what readers index by, or the catalog stores in a column: refused by name
        bad = {
            "outputs": rec.put(repo.local, {**odd, "outputs": [{"text": "", "manifest": "m"}]}),
            "name": rec.put(repo.local, {**odd, "name": ["not", "a", "name"]}),
        }
    for field, bad_id in bad.items():
        refused = cas(project, "runs", "mlflow", bad_id, env=_env(uri), code=4)
        assert f"run record {bad_id} is malformed ({field}); refused" in refused.stderr
    listed = cas(project, "runs", "--json")  # the catalog names them and lists the rest
    assert all(i in listed.stderr for i in bad.values()) and odd_id in listed.stdout
    [copied] = json.loads(cas(project, "runs", "mlflow", odd_id, "--json", env=_env(uri)).stdout)
    assert copied["logged"] and copied["id"] == odd_id
    [copy] = _copies(uri)
    client = MlflowClient(tracking_uri=uri)
    history = client.get_metric_history(copy.info.run_id, "loss")
    assert sorted((m.step, m.value) for m in history) == [(0, 1.5), (2, 0.5)]
    assert copy.data.params == {"seed": "42"} and copy.info.status == "FINISHED"
    assert [d.dataset.name for d in copy.inputs.dataset_inputs] == ["data"]
    assert list(copy.data.tags).count("cas.output.model") == 1
