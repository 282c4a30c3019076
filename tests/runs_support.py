"""A real training project for the runs tests: numpy logistic regression on a cas-tracked CSV,
split with ``cas.split``, seeded with ``cas.seed_everything``, config in JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import cas, git, write

TRAIN = r"""
import json, os, sys
from pathlib import Path
import numpy as np
import cas
from cas import split

cas.seed_everything()
config = json.loads(Path("configs/train.json").read_text())
rows = np.loadtxt("data/points.csv", delimiter=",", skiprows=1)
ids = [int(i) for i in rows[:, 0]]
names = split.assign(ids, seed=7, fractions={"train": 0.8, "val": 0.2})
x, y = rows[:, 1:3], rows[:, 3]
train, val = names == "train", names == "val"
w = np.zeros(3)
X = np.hstack([x, np.ones((len(x), 1))])
lr = config["optimizer"]["lr"]
for epoch in range(config["epochs"]):
    order = np.random.permutation(np.flatnonzero(train))
    for batch in np.array_split(order, 8):
        p = 1 / (1 + np.exp(-X[batch] @ w))
        w -= lr * X[batch].T @ (p - y[batch]) / len(batch)
    cas.log_metric("loss", float(np.mean((1 / (1 + np.exp(-X[train] @ w)) - y[train]) ** 2)),
                   step=epoch)
val_acc = float(np.mean(((X[val] @ w) > 0) == (y[val] > 0.5)))
NOISE
Path("model").mkdir(exist_ok=True)
np.save("model/weights.npy", w)
Path("metrics.json").write_text(json.dumps({"val_acc": val_acc, "epochs": config["epochs"]}))
"""


def dataset(n: int = 400, shift: float = 0.0) -> str:
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 2))
    y = (x[:, 0] + 0.5 * x[:, 1] + shift + rng.normal(scale=0.5, size=n) > 0).astype(int)
    lines = [
        "id,a,b,label",
        *(f"{i},{a:.6f},{b:.6f},{c}" for i, ((a, b), c) in enumerate(zip(x, y))),
    ]
    return "\n".join(lines) + "\n"


def make_project(root: Path, noise: str = "") -> Path:
    """Committed code and config, the dataset tracked by cas."""
    write(root / "train.py", TRAIN.replace("NOISE", noise))
    write(root / "configs" / "train.json", json.dumps({"optimizer": {"lr": 0.1}, "epochs": 5}))
    write(root / "data" / "points.csv", dataset())
    write(root / ".gitignore", "/metrics.json\n")
    cas(root, "init")
    cas(root, "add", "data")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "project")
    return root


RUN = (
    "run",
    "--config",
    "configs/train.json",
    "--metrics",
    "metrics.json",
    "--out",
    "model",
    "--seed",
    "42",
)


def train(
    root: Path,
    *extra: str,
    python: str = sys.executable,
    code: int = 0,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    return cas(root, *RUN, *extra, "--", python, "train.py", code=code, env=env)


def runs(root: Path) -> list[dict[str, Any]]:
    return json.loads(cas(root, "runs", "--json").stdout)


def show(root: Path, ref: str) -> dict[str, Any]:
    return json.loads(cas(root, "runs", "show", ref).stdout)
