"""reliability/report.py's audit table: every row of audit.tsv must name tests that exist and
passed, or the report fails."""

from __future__ import annotations

from pathlib import Path

from reliability import report


def test_the_audit_table_fails_rows_without_a_passing_test(tmp_path: Path) -> None:
    audit = tmp_path / "audit.tsv"
    audit.write_text(
        "# id\tcase\ttests\n"
        "1\tcovered\ttests/a.py::test_ok tests/a.py::test_param\n"
        "2\tno test\t\n"
        "3\ta failing test\ttests/a.py::test_bad\n"
        "4\ta test that does not exist\ttests/a.py::test_gone\n",
        encoding="utf-8",
    )
    rows = report.read_audit(audit)
    assert [r["id"] for r in rows] == ["1", "2", "3", "4"]
    outcomes = {
        "tests/a.py::test_ok": "passed",
        "tests/a.py::test_param[x]": "passed",
        "tests/a.py::test_param[y]": "passed",
        "tests/a.py::test_bad": "failure",
        "tests/a.py::test_gone_too_far": "passed",  # a prefix is not the test
    }
    results = report.audit_results(rows, outcomes)
    assert [r["ok"] for r in results] == [True, False, False, False]
    assert results[2]["results"] == {"tests/a.py::test_bad": "failed"}
    assert results[3]["results"] == {"tests/a.py::test_gone": "not found"}
    text = report.audit_section(results)
    assert "| 2 | no test |  | **no test** |" in text
    assert "`tests/a.py::test_gone` (not found)" in "\n".join(text)


def test_every_listed_node_id_of_the_real_audit_is_collected() -> None:
    """audit.tsv names tests that exist (rows not yet filled are the lead's to complete)."""
    rows = report.read_audit()
    nodes = [n for row in rows for n in row["tests"]]
    assert nodes, "audit.tsv lists no test at all"
    assert report.existing(nodes) == nodes
