"""Time ``cas.split.assign`` on 10,000,000 string ids held in a Python list.

A Python list is the slowest input (it must be converted to Arrow first), so this is the figure
to hold against the 3 s goal. Prints one line, ``split_10M_string_ids_s <median of 3 seconds>``,
for the bench harness; ``--n`` and ``--repeat`` shrink it for a quick look.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cas.split import assign

FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--arrow", action="store_true", help="pass a pyarrow array instead")
    args = parser.parse_args()

    ids: object = [f"user-{i}" for i in range(args.n)]
    if args.arrow:
        import pyarrow as pa

        ids = pa.array(ids, pa.string())
    timings = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        labels = assign(ids, seed=42, fractions=FRACTIONS)
        timings.append(time.perf_counter() - start)
        if len(labels) != args.n:
            raise SystemExit(f"assign returned {len(labels)} labels for {args.n} ids")
        del labels
    name = (
        "split_10M_string_ids_s"
        if args.n == 10_000_000 and not args.arrow
        else (f"split_{args.n}_{'arrow' if args.arrow else 'list'}_string_ids_s")
    )
    print(f"{name} {statistics.median(timings):.3f}")
    print("timings: " + " ".join(f"{t:.3f}" for t in timings), file=sys.stderr)


if __name__ == "__main__":
    main()
