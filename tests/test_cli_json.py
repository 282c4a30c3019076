"""Every ``--json`` output keeps the shape docs/cli.md documents (keys and types), and an error
under ``--json`` is one JSON object on stderr.

The shapes are read from docs/cli.md itself (each ``<!-- shape: NAME -->`` marker and the
``json`` block after it), so the documentation and the test cannot drift apart. One scenario
runs every command once, on real git, a file:// remote and a SQLite source.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import cas, git, write

DOCS = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
_MARKER = re.compile(r"<!-- shape: ([\w .-]+) -->\s*```json\n(.*?)```", re.S)


def documented() -> dict[str, Any]:
    """``{name: shape}`` from docs/cli.md."""
    return {m.group(1): json.loads(m.group(2)) for m in _MARKER.finditer(DOCS.read_text())}


_TYPES = {
    bool: "bool", int: "int", float: "float", str: "str", type(None): "null",
    dict: "object", list: "array",
}  # fmt: skip


def mismatches(value: Any, shape: Any, where: str = "$") -> list[str]:
    """Where ``value`` departs from ``shape``: a type name (``"str|null"``; an int passes for
    ``float``), ``[element shape]``, ``{key: shape}`` with exactly those keys, or ``{"*": shape}``
    for a mapping whose keys are data (split names)."""
    if isinstance(shape, str):
        name = _TYPES.get(type(value), type(value).__name__)
        allowed = shape.split("|")
        ok = name in allowed or (name == "int" and "float" in allowed) or "any" in allowed
        return [] if ok else [f"{where}: {name}, documented {shape}"]
    if isinstance(shape, list):
        if not isinstance(value, list):
            return [f"{where}: not a list"]
        return [m for i, v in enumerate(value) for m in mismatches(v, shape[0], f"{where}[{i}]")]
    if not isinstance(value, dict):
        return [f"{where}: not an object"]
    if list(shape) == ["*"]:
        return [m for k, v in value.items() for m in mismatches(v, shape["*"], f"{where}.{k}")]
    problems = [f"{where}: key {k!r} not documented" for k in value if k not in shape]
    problems += [f"{where}: documented key {k!r} missing" for k in shape if k not in value]
    for k in shape:
        if k in value:
            problems += mismatches(value[k], shape[k], f"{where}.{k}")
    return problems


def _json(proc: Any) -> Any:
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Each documented command's --json output, from one realistic session."""
    base = tmp_path_factory.mktemp("cli-json")
    repo = base / "proj"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "T")
    got: dict[str, Any] = {}

    def run(name: str, *args: str, code: int = 0) -> Any:
        got[name] = _json(cas(repo, *args, "--json", code=code))
        return got[name]

    write(repo / "data" / "a.txt", "a")
    write(repo / "data" / "sub" / "b.txt", "b")
    cas(repo, "init")
    run("add", "add", "data")
    git(repo, "commit", "-qm", "v1")
    write(repo / "data" / "a.txt", "a2")
    write(repo / "data" / "c.txt", "c")
    run("status", "status", code=0)
    cas(repo, "add", "data")
    run("diff", "diff", "HEAD")
    git(repo, "commit", "-qm", "v2")
    run("ls", "ls")
    run("checkout", "checkout", "--rev", "HEAD~1")
    cas(repo, "checkout")
    run("fsck", "fsck")
    cas(repo, "remote", "add", "origin", (base / "remote").as_uri())
    run("remote list", "remote", "list")
    run("push", "push")
    run("status --remote", "status", "--remote")
    run("fetch", "fetch")
    run("pull", "pull")
    run("verify", "verify", "--remote")
    run("gc", "gc", "--dry-run")
    run("gc --remote", "gc", "--remote", "origin", "--older-than", "0s", "--dry-run")

    write(base / "corpus" / "x.jsonl", "{}\n")
    run("manifest create", "manifest", "create", "corpus.cas", str(base / "corpus"))
    write(base / "corpus" / "y.jsonl", "{}\n")
    run("manifest append", "manifest", "append", "corpus.cas")
    run("manifest verify", "manifest", "verify", "corpus.cas")
    git(repo, "commit", "-qm", "corpus")
    run("log", "log", "corpus.cas")
    write(repo / "logs" / "1.log", "one")
    run("add --append-only", "add", "--append-only", "logs")

    db = base / "shop.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, amount REAL)")
        conn.executemany("INSERT INTO orders VALUES (?, ?)", [(i, i / 2) for i in range(10)])
    query = "SELECT * FROM orders ORDER BY id"
    run("snapshot-query", "snapshot-query", query, "--source", f"sqlite:///{db}", "--name", "o")
    run("snapshots", "snapshots", "o")
    pq.write_table(pa.table({"id": list(range(100))}), base / "rows.parquet")
    split_args = ["--id-column", "id", "--seed", "1", "--fractions", "val=0.2,train=0.8"]
    run("split", "split", str(base / "rows.parquet"), *split_args)

    proc = cas(repo, "checkout", "data/typo", "--json", code=2)
    assert proc.stdout == ""
    got["error"] = json.loads(proc.stderr)
    return got


def test_docs_document_every_shape_the_scenario_produces(outputs: dict[str, Any]) -> None:
    assert sorted(documented()) == sorted(outputs)


@pytest.mark.parametrize("name", sorted(documented()))
def test_json_shape_is_stable(outputs: dict[str, Any], name: str) -> None:
    value = outputs[name]
    assert value not in ([], {}), f"{name}: the scenario printed nothing to check"
    assert mismatches(value, documented()[name]) == []


def test_the_shape_checker_can_fail() -> None:
    shape = {"a": "int", "b": ["str|null"], "c": {"*": "float"}}
    assert mismatches({"a": 1, "b": ["x", None], "c": {"k": 1.5, "j": 2}}, shape) == []
    assert mismatches({"a": "1", "b": [3], "c": {"k": "x"}, "d": 0}, shape) == [
        "$: key 'd' not documented",
        "$.a: str, documented int",
        "$.b[0]: int, documented str|null",
        "$.c.k: str, documented float",
    ]
    assert mismatches({}, shape)[0] == "$: documented key 'a' missing"


def test_split_keeps_bucket_order(outputs: dict[str, Any]) -> None:
    """The order of --fractions decides which bucket a hash falls in: JSON must keep it."""
    assert list(outputs["split"]["fractions"]) == ["val", "train"]
    assert list(outputs["split"]["counts"]) == ["val", "train"]
