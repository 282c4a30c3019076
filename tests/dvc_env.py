"""A real DVC for the import tests, in its own venv (DVC 3.67.1 pins fsspec versions that clash
with ours). Created once per machine under ``~/.cache/cas-tests/`` (or ``$CAS_DVC_VENV``);
``python -m tests.dvc_env`` creates it ahead of the tests (``.ci/run`` does)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

DVC_VERSION = "3.67.1"
CONSTRAINTS = Path(__file__).with_name("dvc-constraints.txt")  # one resolution, no backtracking


def venv_path() -> Path:
    default = Path.home() / ".cache" / "cas-tests" / f"dvc-{DVC_VERSION}"
    return Path(os.environ.get("CAS_DVC_VENV") or default)


def ensure() -> tuple[Path | None, str]:
    """(the dvc executable, "") once the venv is ready, or (None, why it could not be made).
    A marker written last tells a finished install from one that was interrupted."""
    venv = venv_path()
    exe, ready = venv / "bin" / "dvc", venv / ".cas-ready"
    if ready.exists() and exe.exists():
        return exe, ""
    venv.parent.mkdir(parents=True, exist_ok=True)
    import fcntl

    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two pytest sessions must not install at once
        if ready.exists() and exe.exists():
            return exe, ""
        steps = [
            [sys.executable, "-m", "venv", "--clear", str(venv)],
            [
                str(venv / "bin" / "pip"),
                "install",
                "-q",
                "-c",
                str(CONSTRAINTS),
                f"dvc=={DVC_VERSION}",
            ],
        ]
        for step in steps:
            proc = subprocess.run(step, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                return None, f"{' '.join(step[:3])} failed: {proc.stderr.strip()[-300:]}"
        ready.touch()
    return exe, ""


if __name__ == "__main__":
    found, why = ensure()
    print(found or why)
    sys.exit(0 if found else 1)
