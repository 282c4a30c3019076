"""``make demo`` is one of the two setup commands a new user runs: it must work as written.

Runs scripts/demo.sh end to end with this interpreter's venv first on PATH (what ``make demo``
does): add, snapshot-query from SQLite, two ``cas run``s,
``cas runs diff`` naming the data as the difference, and ``cas repro`` of the first run passing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_runs_the_whole_loop(tmp_path: Path) -> None:
    venv_bin = Path(sys.executable).parent  # holds the cas console script, as make demo's does
    assert (venv_bin / "cas").exists(), "cas is not installed in this interpreter's venv"
    env = {**os.environ, "PATH": f"{venv_bin}:{os.environ['PATH']}", "TMPDIR": str(tmp_path)}
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "demo.sh")], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "data: differs" in out and "snapshots/users.cas" in out
    assert "output model: bitwise identical" in out
    assert "reproduced (rerun recorded as" in out
