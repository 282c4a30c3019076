"""CLI conventions (docs/cli.md): --version, global options anywhere, completion, one meaning
per short flag, --exit-code, errors as JSON, a subtree that names nothing, start-up imports."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from cas.cli.main import command
from tests.conftest import CAS, cas, git, write


@pytest.fixture
def repo(git_repo: Path) -> Path:
    write(git_repo / "data" / "a.txt", "a")
    write(git_repo / "data" / "sub" / "b.txt", "b")
    cas(git_repo, "init")
    cas(git_repo, "add", "data")
    git(git_repo, "commit", "-qm", "v1")
    return git_repo


def test_version(git_repo: Path) -> None:
    out = cas(git_repo, "--version").stdout
    assert out.startswith("cas-data ") and out.split()[1][0].isdigit()


def test_global_options_after_the_subcommand(repo: Path) -> None:
    (repo / "data" / "a.txt").unlink()
    assert cas(repo, "checkout", "-q").stdout == ""
    assert (repo / "data" / "a.txt").read_text() == "a"
    assert "d" in cas(repo, "checkout").stdout  # without -q it speaks
    write(repo / "data" / "a.txt", "a2")
    assert cas(repo, "add", "-q", "data").stdout == ""
    assert cas(repo, "-q", "status").stdout == ""
    bad = cas(repo, "checkout", "nowhere", "-v", code=2).stderr
    assert "Traceback" in bad and "nowhere is not tracked" in bad  # -v: the traceback too
    assert "Traceback" not in cas(repo, "checkout", "nowhere", code=2).stderr


def test_completion_is_installable(git_repo: Path) -> None:
    # The shell named, not detected: detection walks the parent processes for a shell, and a
    # test run whose parent is gone (a detached job) has none.
    named = {"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    script = cas(git_repo, "--show-completion", "bash", env=named).stdout
    assert "_CAS_COMPLETE" in script
    words = cas(
        git_repo,
        env={"_CAS_COMPLETE": "complete_bash", "COMP_WORDS": "cas chec", "COMP_CWORD": "1"},
    ).stdout.split()
    assert words == ["checkout"]


def test_one_meaning_per_short_flag() -> None:
    """Every short flag of every command means one thing (docs/cli.md's table); -r is a
    remote's name wherever it appears. Registrations added later are walked too."""
    meanings: dict[str, set[str]] = {}
    todo = [("cas", command())]
    while todo:
        name, cmd = todo.pop()
        todo.extend((f"{name} {n}", c) for n, c in getattr(cmd, "commands", {}).items())
        for param in cmd.params:
            flags = [*getattr(param, "opts", []), *getattr(param, "secondary_opts", [])]
            longs = sorted(f for f in flags if f.startswith("--"))
            for short in (f for f in flags if len(f) == 2):
                meanings.setdefault(short, set()).add(f"{param.name}")
                if short == "-r":
                    assert any("remote" in f for f in longs), f"{name}: -r is {longs}"
    clashes = {s: m for s, m in meanings.items() if len(m) > 1 and m != {"remote", "remote_name"}}
    assert clashes == {}
    assert {"-r", "-j", "-q", "-v", "-f"} <= set(meanings)  # the walk did reach the commands


def test_status_and_diff_exit_code(repo: Path, tmp_path: Path) -> None:
    cas(repo, "status", "--exit-code")
    cas(repo, "diff", "HEAD", "--exit-code")
    write(repo / "data" / "a.txt", "changed")
    cas(repo, "status")  # without --exit-code a difference is not a failure
    cas(repo, "status", "--exit-code", code=1)
    assert json.loads(cas(repo, "status", "--exit-code", "--json", code=1).stdout)[0]["modified"]
    cas(repo, "add", "data")
    cas(repo, "diff", "HEAD", "--exit-code", code=1)
    cas(repo, "diff", "HEAD", "--exit-code", "--json", code=1)
    cas(repo, "status", "--exit-code")
    git(repo, "commit", "-qm", "v2")
    cas(repo, "diff", "HEAD~1", "HEAD", "--exit-code", code=1)
    cas(repo, "diff", "HEAD", "HEAD", "--exit-code")
    cas(repo, "remote", "add", "origin", (tmp_path / "remote").as_uri())
    cas(repo, "status", "--remote", "--exit-code", code=1)
    cas(repo, "push")
    cas(repo, "status", "--remote", "--exit-code", "-r", "origin")
    cas(repo, "status", "HEAD", "--exit-code", code=2)  # an error keeps its own code


def test_errors_are_one_json_object_on_stderr(repo: Path) -> None:
    write(repo / "data" / "a.txt", "unsaved")
    proc = cas(repo, "checkout", "--rev", "HEAD", "--json", code=5)
    assert proc.stdout == ""
    err = json.loads(proc.stderr)["error"]
    assert err["class"] == "ConflictError" and err["exit_code"] == 5
    assert err["paths"] == ["data/a.txt"] and "--force" in err["message"]
    assert (repo / "data" / "a.txt").read_text() == "unsaved"
    bad_option = json.loads(cas(repo, "status", "--json", "--nope", code=2).stderr)["error"]
    assert bad_option["class"] == "UsageError" and "--nope" in bad_option["message"]
    missing = json.loads(cas(repo, "ls", "--rev", "no-such-rev", "--json", code=2).stderr)
    assert missing["error"]["class"] == "UsageError"
    assert "no-such-rev" in missing["error"]["message"]
    # without --json, the one-line text form
    assert cas(repo, "ls", "--rev", "no-such-rev", code=2).stderr.startswith("cas: error: ")
    # a path named --json after -- is a path, not the option
    assert cas(repo, "checkout", "--", "--json", code=2).stderr.startswith("cas: error: --json")


def test_checkout_of_a_subtree_that_names_nothing(repo: Path) -> None:
    for args in (["data/typo/path"], ["data/typo", "--rev", "HEAD"], ["data/sub/b.txt/x"]):
        err = cas(repo, "checkout", *args, code=2).stderr
        assert "no tracked file there or below" in err and "cas ls data.cas" in err
    (repo / "data" / "a.txt").unlink()  # the slow path (the tree differs from the pointer)
    assert "data/typo" in cas(repo, "checkout", "data/typo", code=2).stderr
    assert not (repo / "data" / "a.txt").exists()
    cas(repo, "checkout", "data/sub")  # real subtrees still work
    cas(repo, "checkout", "data/a.txt")
    assert (repo / "data" / "a.txt").read_text() == "a"


HEAVY = {"pyarrow", "numpy", "git", "fsspec", "pandas"}


def _imports(cwd: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``python -X importtime ARGS`` in ``cwd``: the process and every module it imported."""
    proc = subprocess.run(
        [*CAS[:1], "-X", "importtime", *args], cwd=cwd, capture_output=True, text=True,
        env={**os.environ},
    )  # fmt: skip
    return proc, {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()}


def test_plain_status_imports_no_heavy_module(repo: Path) -> None:
    """An unchanged ``cas status`` starts without pyarrow, numpy or GitPython: shell
    completion and the global options must not change that."""
    proc, imported = _imports(repo, *CAS[1:], "status")
    assert proc.returncode == 0 and proc.stdout == "data.cas: unchanged\n", proc.stderr
    assert "cas.cli.main" in imported  # the measurement saw cas's own imports
    assert imported & HEAVY == set()


def test_import_cas_is_cheap(repo: Path) -> None:
    """``import cas`` loads the run helpers and the standard library only; the API's names are
    imported on first use (PEP 562), and ``Repo`` with the errors is still light."""
    proc, imported = _imports(repo, "-c", "import cas")
    assert proc.returncode == 0, proc.stderr
    assert "cas.runs.api" in imported
    assert imported & {*HEAVY, "cas.repo", "cas.errors", "cas.fs"} == set()
    # sys.modules, not -X importtime: importlib.import_module (what __getattr__ calls) is not
    # timed, only the imports below it
    code = (
        "import sys, cas; cas.Repo.open().status(); cas.CorruptObjectError; "
        "print(' '.join(sorted(sys.modules)))"
    )
    proc = subprocess.run([CAS[0], "-c", code], cwd=repo, capture_output=True, text=True)
    loaded = set(proc.stdout.split())
    assert proc.returncode == 0, proc.stderr
    assert {"cas.repo", "cas.errors"} <= loaded and loaded & HEAVY == set()


def test_a_command_that_builds_tables_imports_no_pandas(repo: Path) -> None:
    """pyarrow imports pandas (when installed, as here) on its first array: 0.35 s of a
    one-file add. The command's process goes without it; Python callers keep theirs."""
    write(repo / "data" / "new.txt", "new")
    proc = subprocess.run(
        [*CAS[:1], "-X", "importtime", *CAS[1:], "add", "data"],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()}
    assert "pyarrow" in imported  # the tables were built
    assert not [m for m in imported if m.startswith("pandas.")]  # tried (refused), not loaded
    assert cas(repo, "status").stdout == "data.cas: unchanged\n"  # the add was complete
    probe = "import pandas, cas.manifest; print(pandas.__name__)"
    out = subprocess.run([*CAS[:1], "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout == "pandas\n"


def test_pull_path_over_several_targets(repo: Path, tmp_path: Path) -> None:
    """``cas pull --path sub`` checks out that subtree of each target holding it; a target
    without it is no error (it is checked out of nothing). Naming one target, a typo is."""
    write(repo / "other" / "x.txt", "x")
    cas(repo, "add", "other")
    git(repo, "commit", "-qm", "other")
    cas(repo, "remote", "add", "origin", (tmp_path / "remote").as_uri())
    cas(repo, "push")
    (repo / "data" / "sub" / "b.txt").unlink()
    (repo / "data" / "a.txt").unlink()
    cas(repo, "pull", "--path", "sub")
    assert (repo / "data" / "sub" / "b.txt").read_text() == "b"
    assert not (repo / "data" / "a.txt").exists()  # only the subtree
    assert "data/typo" in cas(repo, "pull", "data.cas", "--path", "typo", code=2).stderr
