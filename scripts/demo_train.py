"""The demo's training job: logistic regression (numpy) on the newest snapshot of ``users``.

Reads ``snapshots/users/`` (frozen from SQLite by ``cas snapshot-query``) and the label
vocabulary in ``data/labels.json`` (tracked by ``cas add``), splits the rows by id with
``cas.split.assign`` (seeded: a row never changes split when rows are added), trains for a fixed
number of epochs, and writes ``metrics.json`` and ``model/weights.npy``. Seeded through
``cas.seed_everything``, so two runs on the same inputs give the same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

import cas
from cas.split import assign

EPOCHS = 200
LR = 0.5


def main() -> None:
    cas.seed_everything()  # CAS_SEED from `cas run --seed`; also PYTHONHASHSEED for children
    newest = sorted(Path("snapshots/users").glob("*.parquet"))[-1]
    table = pq.read_table(newest)
    labels = json.loads(Path("data/labels.json").read_text())
    x = np.column_stack([table.column(c).to_numpy().astype(float) for c in ("age", "visits")])
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    y = np.array([labels[v] for v in table.column("plan").to_pylist()], dtype=float)
    split = assign(table.column("id").to_pylist(), seed=42, fractions={"train": 0.8, "test": 0.2})
    train, test = split == "train", split == "test"

    w, b = np.random.normal(scale=0.01, size=2), 0.0  # seeded by seed_everything

    for epoch in range(EPOCHS):
        p = 1 / (1 + np.exp(-(x[train] @ w + b)))
        w -= LR * x[train].T @ (p - y[train]) / train.sum()
        b -= LR * float(np.mean(p - y[train]))
        if epoch % 50 == 0:
            loss = -np.mean(y[train] * np.log(p) + (1 - y[train]) * np.log(1 - p))
            cas.log_metric("train_loss", float(loss), step=epoch)
    accuracy = float(np.mean(((x[test] @ w + b) > 0) == (y[test] == 1)))
    Path("metrics.json").write_text(json.dumps({"test_accuracy": accuracy, "rows": len(y)}))
    Path("model").mkdir(exist_ok=True)
    np.save("model/weights.npy", np.append(w, b))
    print(f"trained on {int(train.sum())} rows of {newest.name}: test accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
