"""``cas run`` / ``cas runs``: the four fingerprints of a real training run, the catalog, the
in-process helpers, secrets, kill -9 and concurrent runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import CAS, cas, git, write
from tests.runs_support import RUN, dataset, make_project, runs, show, train


@pytest.fixture
def project(git_repo: Path) -> Path:
    return make_project(git_repo)


def _venv(where: Path, version: str) -> str:
    """A virtual environment that sees the test venv's packages (a .pth file) plus one
    distribution of its own, ``casprobe`` at ``version``."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    site = next((where / "lib").glob("python*/site-packages"))
    import sysconfig

    # addsitedir, not a bare path: the parent's own .pth files must run too (an editable
    # install of cas is one: its import hook)
    purelib = sysconfig.get_paths()["purelib"]
    (site / "parent.pth").write_text(f"import site; site.addsitedir({purelib!r})\n")
    info = site / f"casprobe-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: casprobe\nVersion: {version}\n")
    (info / "RECORD").write_text("")
    return str(where / "bin" / "python")


def test_two_runs_same_fingerprints_and_metrics(project: Path) -> None:
    train(project, "--name", "base")
    train(project, "--name", "again")
    a, b = runs(project)
    assert a["status"] == b["status"] == "succeeded"
    assert a["fingerprint"] == b["fingerprint"]
    assert a["metrics"] == b["metrics"] and 0.5 < a["metrics"]["val_acc"] <= 1.0
    ra, rb = show(project, "base"), show(project, "again")
    assert ra["outputs"][0]["manifest"] == rb["outputs"][0]["manifest"]  # bit for bit
    assert len(ra["series"]["loss"]) == 5 and ra["series"]["loss"][-1][0] == 4
    assert ra["metrics"]["loss"] == ra["series"]["loss"][-1][1]
    assert len(json.dumps(ra)) < 16 * 1024
    diff = cas(project, "runs", "diff", "base", "again").stdout
    assert "same inputs, same metrics" in diff
    assert cas(project, "runs", "diff", "base", a["id"][:8], "--json").returncode == 0


def test_each_input_changes_exactly_its_fingerprint(project: Path, tmp_path: Path) -> None:
    py1 = _venv(tmp_path / "venv1", "1.0")
    py2 = _venv(tmp_path / "venv2", "2.0")
    train(project, "--name", "base", python=py1)
    base = runs(project)[-1]["fingerprint"]

    def changed(name: str, python: str = py1) -> set[str]:
        train(project, "--name", name, python=python)
        fp = runs(project)[-1]["fingerprint"]
        assert fp["inputs"] != base["inputs"]
        return {k for k in ("code", "data", "config", "env") if fp[k] != base[k]}

    script = (project / "train.py").read_text()
    (project / "train.py").write_text(script + "# an uncommitted edit\n")
    assert changed("code") == {"code"}
    (project / "train.py").write_text(script)
    write(project / "data" / "points.csv", dataset(shift=0.3))
    cas(project, "add", "data")
    assert changed("data") == {"data"}
    git(project, "checkout", "-q", "HEAD", "--", "data.cas")
    cas(project, "checkout", "data")
    write(project / "configs" / "train.json", json.dumps({"optimizer": {"lr": 0.05}, "epochs": 5}))
    assert changed("config") == {"config"}
    diff = cas(project, "runs", "diff", "base", "config").stdout
    assert "optimizer.lr: 0.1 -> 0.05" in diff
    git(project, "checkout", "-q", "HEAD", "--", "configs/train.json")
    assert changed("env", py2) == {"env"}
    assert "casprobe: 1.0 -> 2.0" in cas(project, "runs", "diff", "base", "env").stdout
    # back to the base inputs: the same fingerprint again, though outputs were re-added since
    train(project, "--name", "back", python=py1)
    assert runs(project)[-1]["fingerprint"] == base


def test_committing_an_edit_keeps_the_code_fingerprint(project: Path) -> None:
    with (project / "train.py").open("a") as f:
        f.write("# edit\n")
    write(project / "helper.py", "X = 1\n")  # untracked, not ignored: recorded
    train(project, "--name", "dirty")
    record = show(project, "dirty")
    assert {f["path"]: f["untracked"] for f in record["code"]["files"]} == {
        "helper.py": True,
        "train.py": False,
    }
    git(project, "add", "train.py", "helper.py")
    git(project, "commit", "-qm", "edit")
    train(project, "--name", "clean", "--require-clean")
    assert show(project, "clean")["fingerprint"]["code"] == record["fingerprint"]["code"]
    write(project / "scratch.py", "y = 2\n")
    proc = train(project, "--require-clean", code=2)
    assert "scratch.py" in proc.stderr


def test_large_untracked_file_is_named_and_left_out(project: Path) -> None:
    write(project / "big.bin", os.urandom(10 * 1024 * 1024 + 1))
    proc = train(project, "--name", "big")
    assert "big.bin" in proc.stderr and "not recorded" in proc.stderr
    assert "big.bin" not in {f["path"] for f in show(project, "big")["code"]["files"]}


def test_secrets_never_reach_a_record(project: Path) -> None:
    env = {
        "AWS_SECRET_ACCESS_KEY": "s3cr3t-env-value",
        "OMP_NUM_THREADS": "1",
        "MY_TOKEN": "tok-env-value",
    }
    cas(
        project,
        "run",
        "--name",
        "s",
        "--",
        sys.executable,
        "-c",
        "pass",
        "--api-key",
        "hunter2-argv",
        "--password=pw-argv-value",
        "TOKEN=ghp_" + "a" * 36,
        env=env,
    )
    record = show(project, "s")
    text = json.dumps(record)
    for secret in ("s3cr3t-env-value", "tok-env-value", "hunter2-argv", "pw-argv-value", "ghp_"):
        assert secret not in text
    assert record["config"]["env"] == {"OMP_NUM_THREADS": "1"}
    store = project / ".cas" / "store" / "runs"
    for path in store.rglob("*"):
        if path.is_file():
            assert b"hunter2" not in path.read_bytes()
    # a config file holding a credential is refused, naming it, unless --allow-secrets
    write(project / "configs" / "creds.json", json.dumps({"db": {"password": "x1"}}))
    proc = cas(project, "run", "-c", "configs/creds.json", "--", "true", code=2)
    assert "configs/creds.json" in proc.stderr and "db.password" in proc.stderr
    cas(project, "run", "-c", "configs/creds.json", "--allow-secrets", "--", "true")
    (project / ".cas" / "config").write_text("[core]\n[runs]\nenv = SERVICE_TOKEN\n")
    assert "SERVICE_TOKEN" in cas(project, "run", "--", "true", code=2).stderr


def test_failed_run_is_recorded_with_its_exit_code(project: Path) -> None:
    cas(
        project,
        "run",
        "--name",
        "bad",
        "--out",
        "model",
        "--",
        sys.executable,
        "-c",
        "import sys; sys.exit(3)",
        code=3,
    )
    record = show(project, "bad")
    assert record["status"] == "failed" and record["exit_code"] == 3 and record["outputs"] == []
    assert not (project / "model.cas").exists()


def test_kill_9_leaves_the_catalog_readable_and_the_run_not_finished(project: Path) -> None:
    proc = subprocess.Popen(
        [*CAS, "run", "--name", "long", "--", sys.executable, "-c", "import time; time.sleep(60)"],
        cwd=project,
        start_new_session=True,
    )
    try:
        for _ in range(600):
            if any(r["status"] == "running" for r in runs(project)):
                break
            time.sleep(0.1)
        else:
            pytest.fail("the run never showed as running")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    (row,) = runs(project)
    assert row["name"] == "long" and row["status"] == "killed" and row["id"] is None
    cas(project, "run", "--name", "next", "--", "true")  # the catalog still takes runs
    assert [r["status"] for r in runs(project)] == ["killed", "succeeded"]


def test_concurrent_runs_lose_no_record_and_the_catalog_rebuilds(project: Path) -> None:
    procs = [
        subprocess.Popen(
            [
                *CAS,
                "run",
                "--name",
                f"c{i}",
                "--",
                sys.executable,
                "-c",
                "import cas; cas.log_metric('i', 1)",
            ],
            cwd=project,
        )
        for i in range(4)
    ]
    assert [p.wait() for p in procs] == [0] * 4
    names = sorted(r["name"] for r in runs(project))
    assert names == ["c0", "c1", "c2", "c3"]
    (project / ".cas" / "state" / "runs.sqlite").unlink()
    for extra in ("-wal", "-shm"):
        (project / ".cas" / "state" / f"runs.sqlite{extra}").unlink(missing_ok=True)
    assert sorted(r["name"] for r in runs(project)) == names  # rebuilt from the records


def test_run_refs_and_their_errors(project: Path) -> None:
    cas(project, "run", "--name", "x", "--", "true")
    cas(project, "run", "--name", "x", "--", sys.executable, "-c", "pass")
    latest = runs(project)[-1]["id"]
    assert show(project, "x")["config"]["argv"][0] == sys.executable  # a name: its latest run
    assert show(project, latest[:10])["config"]["argv"][0] == sys.executable
    assert "no run named" in cas(project, "runs", "show", "nosuch", code=2).stderr
    cas(project, "run", "--", "no-such-command-xyz", code=2)


def test_in_process_helpers(project: Path) -> None:
    script = (
        "import cas, json, os, random\n"
        "run = cas.current_run()\n"
        "assert run['fingerprint']['inputs'] and run['name'] == 'api'\n"
        "assert cas.seed_everything() == 5 and os.environ['PYTHONHASHSEED'] == '5'\n"
        "cas.log_metrics({'a': 1.5, 'b': float('nan')}, step=0)\n"
        "cas.log_metric('a', 2.5, step=1)\n"
    )
    cas(project, "run", "--name", "api", "--seed", "5", "--", sys.executable, "-c", script)
    record = show(project, "api")
    assert record["metrics"] == {"a": 2.5, "b": "nan"}
    assert record["series"]["a"] == [[0, 1.5], [1, 2.5]]
    assert record["env"]["runtime"]["seed"] == 5 and record["config"]["seed"] == 5
    # outside a run: no-ops, and seeding still works
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import cas; cas.log_metric('a', 1); print(cas.current_run(), cas.seed_everything(3))",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=project,
        env={k: v for k, v in os.environ.items() if not k.startswith("CAS_")},
    )
    assert out.stdout.split() == ["None", "3"]


def test_import_cas_stays_cheap() -> None:
    code = (
        "import sys, cas; print(sorted(m for m in ('numpy', 'pyarrow', 'git') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_start_run_in_a_notebook(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cas

    monkeypatch.chdir(project)
    with cas.start_run(name="nb", seed=9) as run:
        assert cas.current_run()["name"] == "nb"
        cas.log_metric("score", 0.75)
    assert cas.current_run() is None and "CAS_RUN_DIR" not in os.environ
    record = show(project, "nb")
    assert record["id"] == run["id"] and record["metrics"] == {"score": 0.75}
    with pytest.raises(ZeroDivisionError), cas.start_run(name="nb-bad"):
        1 / 0  # noqa: B018
    assert show(project, "nb-bad")["status"] == "failed"
    assert RUN  # the shared command line is importable for the other runs tests


def test_yaml_config_keys_are_flattened_for_diff(project: Path) -> None:
    write(project / "c.yaml", "optimizer:\n  name: sgd\n  lr: 0.1\nlayers: [1, 2]\n")
    cas(project, "run", "--name", "y1", "-c", "c.yaml", "--", "true")
    write(project / "c.yaml", "optimizer:\n  name: adam\n  lr: 0.1\nlayers: [1, 2]\n")
    cas(project, "run", "--name", "y2", "-c", "c.yaml", "--", "true")
    keys = show(project, "y1")["config"]["files"][0]["keys"]
    assert keys == {"optimizer.name": "sgd", "optimizer.lr": 0.1, "layers": [1, 2]}
    out = cas(project, "runs", "diff", "y1", "y2").stdout
    assert "optimizer.name: 'sgd' -> 'adam'" in out and "code: same" in out
    write(project / "c.yaml", "a: [unclosed\n")
    assert (
        "c.yaml is not valid YAML"
        in cas(project, "run", "-c", "c.yaml", "--", "true", code=2).stderr
    )


def test_what_a_run_reads_through_cas_urls_is_recorded(project: Path) -> None:
    script = "import fsspec\nwith fsspec.open('cas://data/points.csv', 'rb') as f:\n    f.read()\n"
    cas(project, "run", "--name", "reads", "--", sys.executable, "-c", script)
    (read,) = show(project, "reads")["data"]["read"]
    expected = cas(project, "ls", "data", "--json").stdout
    assert read["path"] == "data/points.csv" and read["rev"] is None
    assert read["hash"] == json.loads(expected)[0]["hash"]
