"""``cas repro`` and ``cas run --reuse`` on a real training project."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import cas, git, tree, write
from tests.runs_support import RUN, make_project, runs, show, train
from tests.s3_server import S3Server

COUNT = (
    "import os\nif os.environ.get('RUN_LOG'):\n    open(os.environ['RUN_LOG'], 'a').write('x')\n"
)


def _user_files(root: Path) -> dict[str, bytes]:
    """The user's checkout as they see it: everything but Git's and cas's own folders."""
    return {p: b for p, b in tree(root).items() if not p.startswith((".git/", ".cas/"))}


@pytest.fixture
def project(git_repo: Path) -> Path:
    return make_project(git_repo)


def test_repro_restores_untracked_files_and_never_touches_the_checkout(project: Path) -> None:
    script = (project / "train.py").read_text()
    (project / "train.py").write_text(
        "import helper\n" + script.replace('config["epochs"]', "helper.EPOCHS")
    )
    write(project / "helper.py", "EPOCHS = 4\n")  # untracked: only the record has it
    train(project, "--name", "base")
    base = show(project, "base")
    # the user goes on editing: unsaved changes everywhere
    write(project / "helper.py", "EPOCHS = 1  # unsaved\n")
    write(project / "configs" / "train.json", '{"optimizer": {"lr": 9}, "epochs": 1}')
    write(project / "notes.txt", "scratch\n")
    before = _user_files(project)
    head = git(project, "rev-parse", "HEAD")
    proc = cas(project, "repro", "base")
    assert "reproduced" in proc.stdout and "model: bitwise identical" in proc.stdout
    assert f"val_acc: {base['metrics']['val_acc']} -> {base['metrics']['val_acc']}" in proc.stdout
    assert _user_files(project) == before
    assert git(project, "rev-parse", "HEAD") == head
    assert len(git(project, "worktree", "list").splitlines()) == 1
    rerun = runs(project)[-1]
    assert rerun["reproduces"] == base["id"] and rerun["metrics"] == base["metrics"]
    assert rerun["fingerprint"] == base["fingerprint"]
    assert len(show(project, rerun["id"])["series"]["loss"]) == 4  # helper.EPOCHS was 4


def test_repro_of_a_nondeterministic_run_exits_1_with_both_values(project: Path) -> None:
    make_noisy = (
        (project / "train.py")
        .read_text()
        .replace(
            "val_acc = float(", "val_acc = int.from_bytes(os.urandom(4), 'little') / 2**32 + float("
        )
    )
    (project / "train.py").write_text(make_noisy)
    git(project, "commit", "-qam", "noisy")
    train(project, "--name", "noisy")
    old = show(project, "noisy")["metrics"]["val_acc"]
    proc = cas(project, "repro", "noisy", code=1)
    line = next(x for x in proc.stdout.splitlines() if x.startswith("val_acc:"))
    assert str(old) in line and "NOT REPRODUCED" in line and "0.005 x |old|" in line
    new = runs(project)[-1]["metrics"]["val_acc"]
    assert str(new) in line
    assert (
        "nondeterministic" in cas(project, "runs", "diff", "noisy", runs(project)[-1]["id"]).stdout
    )
    cas(project, "repro", "noisy", "--atol", "2")  # a loose enough policy passes
    (project / ".cas" / "config").write_text("[core]\n[repro]\nmetric.val_acc = 10\n")
    cas(project, "repro", "noisy")
    assert "allowed 0.0 + 10.0 x |old|" in cas(project, "repro", "noisy").stdout


def test_repro_exits_10_when_the_rerun_fails(project: Path) -> None:
    text = (project / "train.py").read_text()
    (project / "train.py").write_text(
        "import os, sys\nif os.environ.get('BREAK'):\n    sys.exit(4)\n" + text
    )
    train(project, "--name", "base")
    proc = cas(project, "repro", "base", code=10, env={"BREAK": "1"})
    assert "exited with status 4" in proc.stderr
    assert len(git(project, "worktree", "list").splitlines()) == 1
    assert runs(project)[-1]["status"] == "failed"
    assert "no run named" in cas(project, "repro", "nosuch", code=2).stderr
    assert "NAME=RTOL" in cas(project, "repro", "base", "--metric", "x", code=2).stderr


def test_strict_env_fails_on_a_package_version_change(project: Path, tmp_path: Path) -> None:
    from tests.test_runs import _venv

    py = _venv(tmp_path / "venv", "1.0")
    train(project, "--name", "base", python=py)
    site = next((tmp_path / "venv" / "lib").glob("python*/site-packages"))
    (site / "casprobe-1.0.dist-info").rename(site / "casprobe-1.1.dist-info")
    meta = site / "casprobe-1.1.dist-info" / "METADATA"
    meta.write_text(meta.read_text().replace("1.0", "1.1"))
    proc = cas(project, "repro", "base", "--strict-env", code=1)
    assert "casprobe: 1.0 -> 1.1" in proc.stdout and "not rerun" in proc.stdout
    assert len(runs(project)) == 1
    proc = cas(project, "repro", "base")  # without --strict-env: printed, then rerun
    assert "casprobe: 1.0 -> 1.1" in proc.stdout and "reproduced" in proc.stdout


def test_reuse_skips_an_identical_run_and_restores_its_outputs(
    project: Path, tmp_path: Path
) -> None:
    (project / "train.py").write_text(COUNT + (project / "train.py").read_text())
    git(project, "commit", "-qam", "count runs")
    log = tmp_path / "log"
    env = {"RUN_LOG": str(log)}
    train(project, "--reuse", "--name", "first", env=env)
    assert log.read_text() == "x"
    weights = (project / "model" / "weights.npy").read_bytes()
    shutil.rmtree(project / "model")
    proc = cas(
        project,
        RUN[0],
        "--reuse",
        *RUN[1:],
        "--",
        sys.executable,
        "train.py",
        env=env,
    )
    assert "reused run" in proc.stdout
    assert log.read_text() == "x"  # not run again
    assert (project / "model" / "weights.npy").read_bytes() == weights
    hit = runs(project)[-1]
    assert hit["status"] == "reused" and hit["reused"] == runs(project)[0]["id"]
    assert hit["metrics"] == runs(project)[0]["metrics"]
    write(project / "configs" / "train.json", json.dumps({"optimizer": {"lr": 0.2}, "epochs": 5}))
    train(project, "--reuse", env=env)  # a changed input reruns
    assert log.read_text() == "xx" and runs(project)[-1]["status"] == "succeeded"


def test_records_travel_through_seaweedfs_and_repro_in_a_fresh_clone(
    project: Path, tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    env = s3_server.env
    cas(project, "remote", "add", "origin", f"s3://{s3_bucket}/cas", env=env)
    train(project, "--name", "base", env=env)
    git(project, "commit", "-qam", "remote and model")
    base = show(project, "base")
    assert "1 run records" in cas(project, "push", env=env).stdout
    assert "already" in cas(project, "push", env=env).stdout  # records are not sent twice
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(project), str(clone))
    git(clone, "config", "user.email", "t@example.com")
    git(clone, "config", "user.name", "T")
    assert "1 run records" in cas(clone, "pull", env=env).stdout
    assert [r["id"] for r in runs(clone)] == [base["id"]]
    assert show(clone, "base") == base
    proc = cas(clone, "repro", "base", env=env)
    assert "reproduced" in proc.stdout and "model: bitwise identical" in proc.stdout
    assert runs(clone)[-1]["reproduces"] == base["id"]


def test_gc_keeps_what_run_records_name(project: Path) -> None:
    train(project, "--name", "base")
    weights = (project / "model" / "weights.npy").read_bytes()
    git(project, "rm", "-q", "--cached", "model.cas")  # the output is in no commit or index
    (project / "model.cas").unlink()
    shutil.rmtree(project / "model")
    cas(project, "gc")
    assert "ok" in cas(project, "fsck").stdout
    proc = cas(project, "run", "--reuse", "--config", "configs/train.json", "--metrics",
               "metrics.json", "--out", "model", "--seed", "42", "--", sys.executable,
               "train.py")  # fmt: skip
    assert "reused run" in proc.stdout
    assert (project / "model" / "weights.npy").read_bytes() == weights


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_interrupted_repro_removes_the_temp_worktree(project: Path, how: str) -> None:
    """Ctrl-C signals the whole process group; a cancelled CI job may SIGTERM cas alone, which
    must then stop the rerun itself."""
    import os
    import signal
    import subprocess
    import time

    from tests.conftest import CAS

    text = (project / "train.py").read_text()
    (project / "train.py").write_text(
        "import os, time\nif os.environ.get('SLOW'):\n    time.sleep(120)\n" + text
    )
    git(project, "commit", "-qam", "slow when asked")
    train(project, "--name", "base")
    # SIGINT back to its default: a shell starts background jobs (this suite, in CI) with it
    # ignored, and Python then never turns it into KeyboardInterrupt.
    proc = subprocess.Popen([*CAS, "repro", "base"], cwd=project, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                            env={**os.environ, "SLOW": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        for _ in range(1200):
            if len(git(project, "worktree", "list").splitlines()) == 2 and any(
                r["status"] == "running" for r in runs(project)
            ):
                break
            time.sleep(0.1)
        else:
            pytest.fail("the rerun never started")
        temp = Path(git(project, "worktree", "list").splitlines()[1].split()[0])
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        else:
            os.kill(proc.pid, signal.SIGTERM)
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert len(git(project, "worktree", "list").splitlines()) == 1
    assert not temp.exists()
    assert runs(project)[-1]["status"] == "failed"


def test_hostile_records_are_refused_by_name(project: Path) -> None:
    """A record is input (a teammate's remote): one that writes into .cas/ or .git, or lacks
    its fields, is refused naming it; the other records still list."""
    from cas.repo import Repo
    from cas.runs import record as rec

    train(project, "--name", "base")
    with Repo.discover(project) as repo:
        good = rec.get(repo.local, runs(project)[0]["id"])
        blob = rec.put_blob(repo.local, b"[core]\nstore = /tmp/elsewhere\n")
        evil = {**good, "name": "evil"}
        evil["code"] = {**good["code"], "files": [{"path": ".cas/config", "mode": "100644",
                        "git": "0" * 40, "blob": blob, "untracked": True}]}  # fmt: skip
        evil_id = rec.put(repo.local, evil)
        broken = {k: v for k, v in good.items() if k != "fingerprint"} | {"name": "broken"}
        broken_id, data = rec.encode(broken)
        repo.local.put_bytes(rec.run_key(broken_id), data)
    proc = cas(project, "runs")
    assert f"run record {broken_id} is malformed (fingerprint)" in proc.stderr
    assert {r["name"] for r in runs(project)} == {"base", "evil"}
    assert "malformed" in cas(project, "runs", "show", broken_id, code=4).stderr
    proc = cas(project, "repro", evil_id[:12], code=4)
    assert "'.cas/config', outside the source tree; refused" in proc.stderr
    assert len(git(project, "worktree", "list").splitlines()) == 1
