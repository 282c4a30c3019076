"""The in-process helpers ``import cas`` exposes: seeding, metrics, the current run.

Inside a command started by ``cas run`` the environment names the run's folder
(``CAS_RUN_DIR``); the helpers append one JSON line per event to ``events.jsonl`` there (a single
``O_APPEND`` write each, so the command's subprocesses and DataLoader workers may log too), and
``cas run`` folds them into the record when the command exits. Outside a run they are no-ops
(``seed_everything`` still seeds). Standard library only: ``import cas`` stays cheap.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
from collections.abc import Iterator, Mapping
from importlib.util import find_spec
from typing import Any

RUN_DIR = "CAS_RUN_DIR"
SEED = "CAS_SEED"
EVENTS = "events.jsonl"
RUN_INFO = "run.json"


def _run_dir() -> str | None:
    return os.environ.get(RUN_DIR) or None


def emit(event: Mapping[str, Any]) -> None:
    """Append an event to the current run's log; nothing outside a run."""
    folder = _run_dir()
    if folder is None:
        return
    line = (json.dumps(event, sort_keys=True, allow_nan=True) + "\n").encode()
    fd = os.open(os.path.join(folder, EVENTS), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def log_metric(name: str, value: float, step: int | None = None) -> None:
    """Record a metric value (a series when logged with steps; the last value is the run's)."""
    if not isinstance(name, str) or not name:
        raise ValueError("a metric needs a non-empty name")
    number = float(value)
    emit(
        {
            "t": "metric",
            "name": name,
            "value": number if math.isfinite(number) else str(number),
            "step": None if step is None else int(step),
        }
    )


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    for name, value in metrics.items():
        log_metric(name, value, step)


def current_run() -> dict[str, Any] | None:
    """The running run's name and fingerprints (its id exists once it ends: it is the hash of
    the finished record), or None outside a run."""
    folder = _run_dir()
    if folder is None:
        return None
    try:
        with open(os.path.join(folder, RUN_INFO), encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def note_read(what: Mapping[str, Any]) -> None:
    """What a ``cas.torch`` dataset or a ``cas://`` file read: added to the record's data."""
    emit({"t": "read", **what})


def seed_everything(seed: int | None = None, deterministic: bool = False) -> int | None:
    """Seed ``random``, NumPy and torch (when installed) and set PYTHONHASHSEED for
    subprocesses; ``deterministic`` also turns on torch's deterministic algorithms (with the
    CUBLAS_WORKSPACE_CONFIG they need) and turns off cuDNN autotuning and TF32. Without a seed,
    ``CAS_SEED`` (set by ``cas run --seed``) is used; with neither nothing is seeded."""
    if seed is None:
        text = os.environ.get(SEED)
        if not text:
            return None
        seed = int(text)
    seed = int(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    runtime: dict[str, Any] = {"seed": seed, "deterministic": deterministic}
    if find_spec("numpy") is not None:
        import numpy as np

        np.random.seed(seed % 2**32)
        runtime["numpy"] = np.__version__
    if find_spec("torch") is not None:
        runtime.update(_seed_torch(seed, deterministic))
    emit({"t": "runtime", **runtime})
    return seed


def _seed_torch(seed: int, deterministic: bool) -> dict[str, Any]:
    import torch

    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "tf32": torch.backends.cuda.matmul.allow_tf32,
    }


@contextlib.contextmanager
def start_run(
    name: str | None = None,
    *,
    config: list[str] | None = None,
    metrics: str | None = None,
    out: list[str] | None = None,
    seed: int | None = None,
    path: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Record a run of the code inside the block (a notebook's cells), without a subprocess:
    the inputs are captured on entry, the record written on exit (``failed`` if it raised)."""
    from cas.repo import Repo
    from cas.runs.session import Options, Session

    with Repo.discover(path) as repo:
        session = Session(
            repo,
            Options(
                name=name,
                argv=["<in-process>"],
                config=config or [],
                metrics=metrics,
                out=out or [],
                seed=seed,
            ),
        )
        session.begin()
        exported = session.exported()
        previous = {k: os.environ.get(k) for k in exported}
        os.environ.update(exported)
        try:
            yield session.info
        except BaseException:
            session.finish(1)
            raise
        else:
            session.finish(0)
        finally:
            for key, value in previous.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
