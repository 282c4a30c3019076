"""Every runnable example of README.md and docs/*.md runs as written.

A fenced block tagged ``python`` runs as Python; one tagged ``console``, ``sh``, ``bash`` or
``shell`` runs its commands (``$ `` lines, with ``\\`` continuations, in a ``console`` block;
every line otherwise) in bash, each of which must exit 0. Output lines are not compared: they
show times and hashes that differ on every run. The blocks of one file run in order in one
sandbox and, for Python, one namespace, as a reader follows the page. A block without a
language is text (formats, layouts, summaries of commands) and is not run.

The sandbox is a Git repository with what the pages name: ``data/`` (tags v1 and v2, four
commits so ``HEAD~3`` exists), a snapshot ``snapshots/orders/2026-11-26T21-15-03Z.parquet``
made by ``cas snapshot-query`` with its JSON sidecar, a corpus ``corpus.cas`` and a SQLite
``app.db``. Names a page uses without defining them (``ids`` for "your ids") are given per page
in PRELUDE. To extend: a new page needing more gets it in ``sandbox``; a block that cannot run
here goes in SKIP with the reason.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import cas, git, write

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob("docs/*.md"))]
PYTHON = {"python", "py"}
SHELL = {"console", "sh", "bash", "shell"}
_FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```", re.S | re.M)

#: (page, first line of the block) -> why it cannot run in the sandbox.
SKIP: dict[tuple[str, str], str] = {
    (
        "docs/snapshots.md",
        "$ cas snapshot-query \"SELECT * FROM orders WHERE ts < '2026-11-01' ORDER BY id\" \\",
    ): "needs a PostgreSQL server named db and raw/events.csv; the same commands run against "
    "real PostgreSQL, SQLite and DuckDB in tests/test_snapshot.py",
    ("docs/scaling.md", "from distributed import Client"): "needs a Dask scheduler at "
    "tcp://scheduler:8786; tests/test_distribute.py runs the same call on a real LocalCluster",
}

#: Names a page uses as placeholders for the reader's own values.
PRELUDE: dict[str, str] = {
    "README.md": "ids = [f'row-{i}' for i in range(1000)]",
    "docs/splits.md": (
        "ids = list(range(1000))\n"
        "fractions = {'train': 0.8, 'val': 0.1, 'test': 0.1}\n"
        "patient_ids = [i // 3 for i in ids]"
    ),
    "docs/snapshots.md": ("query = 'SELECT * FROM users ORDER BY id'\nsource = 'sqlite:///app.db'"),
    "docs/corpus.md": (
        "from pathlib import Path as _Path\n"
        "from cas.pointer import read as _read\n"
        "base_id = ours_id = theirs_id = _read(_Path('corpus.cas')).manifest"
    ),
    "docs/training.md": "from torch.utils.data import DataLoader",
}


def blocks(page: str) -> list[tuple[str, str]]:
    """``(language, text)`` of every runnable block of ``page``, skipped ones left out."""
    found = []
    for lang, text in _FENCE.findall((ROOT / page).read_text()):
        lang = lang.strip().lower()
        first = text.splitlines()[0] if text.strip() else ""
        if (lang in PYTHON or lang in SHELL) and (page, first) not in SKIP:
            found.append((lang, text))
    return found


def commands(lang: str, text: str) -> list[str]:
    """The shell commands of a block: ``$ `` lines (joined over ``\\``) in a console block."""
    if lang != "console":
        return [text]
    out: list[str] = []
    joining = False
    for line in text.splitlines():
        if joining:
            out[-1] += "\n" + line
        elif line.startswith("$ "):
            out.append(line[2:])
        else:
            continue
        joining = line.endswith("\\")
    return out


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository every page's examples run in (copied per page)."""
    base = tmp_path_factory.mktemp("docs")
    repo = base / "proj"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "docs@example.com")
    git(repo, "config", "user.name", "Docs")
    write(repo / "data" / "images" / "cat.png", b"\x89PNG" + bytes(range(200)))
    write(repo / "data" / "images" / "cats" / "1.png", b"\x89PNG one")
    write(repo / "data" / "labels.csv", "path,label\nimages/cat.png,cat\n")
    with sqlite3.connect(repo / "app.db") as db:
        db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        db.executemany("INSERT INTO users VALUES (?, ?)", [(i, f"u{i}") for i in range(20)])
        db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, amount REAL)")
        db.executemany("INSERT INTO orders VALUES (?, ?)", [(i, i / 2) for i in range(100)])
    (repo / ".gitignore").write_text("app.db\n")
    cas(repo, "init")
    cas(repo, "add", "data")
    source = f"sqlite:///{repo / 'app.db'}"
    cas(repo, "snapshot-query", "SELECT * FROM orders ORDER BY id", "-s", source, "--name", "o")
    _rename_snapshot(repo / "snapshots" / "o", repo / "snapshots" / "orders")
    cas(repo, "add", "snapshots/orders")
    write(base / "corpus" / "shard-0.jsonl", '{"text": "a"}\n')
    cas(repo, "manifest", "create", "corpus.cas", str(base / "corpus"))
    git(repo, "add", ".gitignore")
    git(repo, "commit", "-qm", "v1")
    git(repo, "tag", "v1")
    write(repo / "data" / "labels.csv", "path,label\nimages/cat.png,kitten\n")
    cas(repo, "add", "data")
    git(repo, "commit", "-qm", "v2")
    git(repo, "tag", "v2")
    for n in (3, 4):
        write(repo / "data" / "notes.txt", f"edit {n}")
        cas(repo, "add", "data")
        git(repo, "commit", "-qm", f"v{n}")
    return repo


def _rename_snapshot(made: Path, folder: Path) -> None:
    """The snapshot ``cas snapshot-query`` made, under the name the pages use."""
    folder.mkdir(parents=True)
    parquet = next(made.glob("*.parquet"))
    shutil.move(parquet, folder / "2026-11-26T21-15-03Z.parquet")
    meta = json.loads(parquet.with_suffix(".json").read_text())
    meta["file"], meta["name"] = "2026-11-26T21-15-03Z.parquet", "orders"
    (folder / "2026-11-26T21-15-03Z.json").write_text(json.dumps(meta))
    shutil.rmtree(made)
    (made.parent / "o.cas").unlink()
    gitignore = made.parent.parent / ".gitignore"
    gitignore.write_text(gitignore.read_text().replace("/snapshots/o\n", ""))


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p)])
def test_examples_run(page: str, sandbox: Path, tmp_path: Path, monkeypatch: Any) -> None:
    repo = tmp_path / "proj"
    shutil.copytree(sandbox, repo, symlinks=True)
    monkeypatch.chdir(repo)
    namespace: dict[str, Any] = {"__name__": "__docs__"}
    exec(PRELUDE.get(page, ""), namespace)
    for i, (lang, text) in enumerate(blocks(page)):
        where = f"{page}, runnable block {i + 1}"
        if lang in PYTHON:
            try:
                exec(compile(text, where, "exec"), namespace)
            except Exception as err:
                raise AssertionError(f"{where} fails: {err!r}\n{text}") from err
            continue
        for command in commands(lang, text):
            proc = subprocess.run(
                ["bash", "-e", "-c", command], cwd=repo, capture_output=True, text=True
            )
            assert proc.returncode == 0, f"{where}: {command}\n{proc.stdout}\n{proc.stderr}"


def test_the_harness_sees_the_examples() -> None:
    """The extraction is not vacuous: the pages' Python and console blocks are found."""
    assert len(blocks("docs/training.md")) >= 4 and len(blocks("README.md")) >= 2
    assert commands("console", "$ a \\\n  b\nout\n$ c\n") == ["a \\\n  b", "c"]
