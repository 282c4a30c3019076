"""Benchmark ``cas snapshot-query`` against a real PostgreSQL server.

    .venv/bin/python bench/bench_snapshot.py [--rows 1000000] [--big-rows 10000000] [--repeat 3]

Starts a throwaway server (``tests/pg_server.py``), loads an ``orders`` table (bigint, int, text,
numeric(12,2), timestamptz, text; ~90 bytes a row) and measures, on the same 1M-row ordered query:

* ``adbc_plus_parquet_1M_s``: the floor -- ADBC ``fetch_arrow_table()`` then a plain
  ``pq.write_table`` (the whole result in memory, pyarrow's default options);
* ``snapshot_1M_s``: ``cas.snapshot.write_snapshot`` (streamed, type-normalised, re-chunked,
  pinned zstd options, BLAKE3 hash, fsync, sidecar, atomic publish) -- *without* ``repo.add``,
  which is the generic store's cost, not the snapshot's;
* ``snapshot_query_with_add_1M_s`` (information only): the whole command, with ``repo.add``;
* ``pandas_1M_s``: ``pandas.read_sql`` (SQLAlchemy + psycopg 3) then ``DataFrame.to_parquet``;

and, for 10M rows, ``snapshot_10M_peak_rss_mib``: the max RSS of a child process that runs only
``write_snapshot`` (from ``wait4``), next to the same for ADBC ``fetch_arrow_table``.

Goals: snapshot <= 1.3 x (ADBC + plain write), >= 5x faster than pandas, 10M peak RSS <= 500 MiB.
pandas, SQLAlchemy and psycopg are bench-only dependencies. Times are medians of ``--repeat``.

Deduplication (``--dedup-rows``, default 1,000,000; 0 skips it) needs no server: the same
``orders`` columns in a SQLite file, one ``cas snapshot-query`` of it into a fresh project, then
a change to the table and a second snapshot; the store's growth (bytes of ``.cas/store``) over
the first snapshot's Parquet size is printed per change: a 1% append, a contiguous 1% insert and
a contiguous 1% delete in the middle, a contiguous 5,000-row update, and 0.5% of rows deleted
scattered through the first half. Goal: growth <= 2x the changed fraction of rows for the first
four (a change must cost about what changed). ``--compare-with DIR`` also times
``write_snapshot`` of the SQLite table with the cas source tree at DIR (today's main, say) and
with this one, alternately, each in a fresh interpreter: min and median of wall and CPU seconds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from tests.pg_server import PgServer, psql, running_server  # noqa: E402

GOAL_RATIO = 1.3
GOAL_PANDAS_SPEEDUP = 5.0
GOAL_PEAK_MIB = 500.0
GOAL_GROWTH_PER_CHANGE = 2.0


def load_orders(server: PgServer, rows: int) -> None:
    """An ordered ``orders`` table; the primary key makes ``ORDER BY id`` an index scan."""
    psql(
        server,
        f"""
        CREATE UNLOGGED TABLE orders AS
        SELECT g::bigint AS id,
               (g % 10007)::int AS customer_id,
               (ARRAY['new', 'paid', 'shipped', 'done', 'cancelled'])[1 + g % 5] AS status,
               round((g % 100000) * 0.37, 2)::numeric(12, 2) AS amount,
               timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second' AS created_at,
               md5(g::text) AS note
        FROM generate_series(1, {rows}) g;
        ALTER TABLE orders ADD PRIMARY KEY (id);
        """,
    )
    psql(server, "VACUUM ANALYZE orders")


def query_for(rows: int) -> str:
    return f"SELECT * FROM orders WHERE id <= {rows} ORDER BY id"


def median_of(repeat: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def median_of_pair(
    repeat: int, first: Callable[[], object], second: Callable[[], object]
) -> tuple[float, float]:
    a, b = [], []
    for _ in range(repeat):
        a.append(median_of(1, first))
        b.append(median_of(1, second))
    return statistics.median(a), statistics.median(b)


def run_adbc_plus_parquet(url: str, query: str, out: Path) -> None:
    import adbc_driver_postgresql.dbapi as pg
    import pyarrow.parquet as pq

    with pg.connect(url) as conn, conn.cursor() as cur:
        cur.execute(query)
        table = cur.fetch_arrow_table()
    pq.write_table(table, out)


def run_snapshot(url: str, query: str, root: Path) -> None:
    from cas.snapshot import write_snapshot

    write_snapshot(query, url, "orders", root=root)


def run_snapshot_with_add(url: str, query: str, project: Path) -> None:
    """The whole command: write_snapshot plus repo.add (chunking into the store, staging)."""
    from cas.repo import Repo
    from cas.snapshot import snapshot_query

    snapshot_query(Repo.discover(project), query, url, "orders")


def make_project(path: Path) -> Path:
    from cas.repo import Repo

    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    Repo.init(path)
    return path


def run_pandas(url: str, query: str, out: Path) -> None:
    import pandas as pd
    import sqlalchemy

    engine = sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            frame = pd.read_sql(sqlalchemy.text(query), conn)
        frame.to_parquet(out)
    finally:
        engine.dispose()


# Each child reports its own VmHWM (peak RSS of its address space). wait4's ru_maxrss is no good
# here: Linux carries the parent's high-water mark across the vfork+exec that subprocess uses.
_PEAK = """
def _peak_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
"""
_CHILD = {
    "snapshot": """
        from pathlib import Path
        from cas.snapshot import write_snapshot
        info = write_snapshot({query!r}, {url!r}, "orders", root=Path({root!r}))
        print(info.rows, _peak_mib())
    """,
    "adbc_fetch_table": """
        import adbc_driver_postgresql.dbapi as pg
        with pg.connect({url!r}) as conn, conn.cursor() as cur:
            cur.execute({query!r})
            rows = cur.fetch_arrow_table().num_rows
        print(rows, _peak_mib())
    """,
}


def peak_rss_of_child(kind: str, url: str, query: str, root: Path) -> tuple[float, float, int]:
    """(peak RSS in MiB, seconds, rows) of a fresh interpreter doing only ``kind``."""
    code = _PEAK + textwrap.dedent(_CHILD[kind]).format(query=query, url=url, root=str(root))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONWARNINGS": "ignore"}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{kind} child failed ({proc.returncode}): {proc.stderr.strip()}")
    rows, peak = proc.stdout.split()
    return float(peak), elapsed, int(rows)


def label_of(rows: int) -> str:
    return f"{rows // 1_000_000}M" if rows % 1_000_000 == 0 else str(rows)


def verdict(ok: bool) -> str:
    return "OK" if ok else "MISSED"


# -- deduplication across snapshots (SQLite, no server) -----------------------------------------

#: Base ids are spaced so that a block of new rows can go between two of them (ORDER BY id).
_ID_STEP = 1_000_000


def _order_rows(gs: range) -> Iterator[tuple[object, ...]]:
    import hashlib

    statuses = ("new", "paid", "shipped", "done", "cancelled")
    for g in gs:
        yield (
            g * _ID_STEP,
            g % 10007,
            statuses[g % 5],
            round((g % 100000) * 0.37, 2),
            1_767_225_600 + g,
            hashlib.md5(str(g).encode()).hexdigest(),
        )


def make_sqlite_orders(path: Path, rows: int) -> None:
    import sqlite3

    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER, status TEXT,"
            " amount REAL, created_at INTEGER, note TEXT)"
        )
        db.executemany(
            "INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?)", _order_rows(range(1, rows + 1))
        )


def dedup_changes(rows: int) -> list[tuple[str, float, str, bool]]:
    """(name, changed fraction of rows, SQL applied to the base table, held to the goal)."""
    mid, pct, block = rows // 2, rows // 100, 5_000
    inserted = ", ".join(
        f"({mid * _ID_STEP + 1 + j}, {j % 10007}, 'new', 1.5, 0, 'inserted {j}')"
        for j in range(pct)
    )
    return [
        (
            "append_1pct",
            pct / rows,
            f"INSERT INTO orders SELECT id + {rows} * {_ID_STEP}, customer_id, status,"
            f" amount, created_at, note FROM orders WHERE id <= {pct} * {_ID_STEP}",
            True,
        ),
        ("insert_1pct_middle", pct / rows, f"INSERT INTO orders VALUES {inserted}", True),
        (
            "delete_1pct_middle",
            pct / rows,
            f"DELETE FROM orders WHERE id > {mid * _ID_STEP} AND id <= {(mid + pct) * _ID_STEP}",
            True,
        ),
        (
            "update_5000_block",
            block / rows,
            "UPDATE orders SET status = 'refunded', amount = amount + 1"
            f" WHERE id > {rows // 3 * _ID_STEP} AND id <= {(rows // 3 + block) * _ID_STEP}",
            True,
        ),
        (
            "delete_0.5pct_scattered_first_half",
            (rows // 200) / rows,
            f"DELETE FROM orders WHERE id <= {mid * _ID_STEP} AND (id / {_ID_STEP}) % 100 = 7",
            False,
        ),
    ]


def store_bytes(project: Path) -> int:
    return sum(p.stat().st_size for p in (project / ".cas" / "store").rglob("*") if p.is_file())


def run_dedup(work: Path, rows: int) -> None:
    import sqlite3

    from cas.repo import Repo
    from cas.snapshot import snapshot_query

    base = work / "orders.db"
    make_sqlite_orders(base, rows)
    query = "SELECT * FROM orders ORDER BY id"
    for name, fraction, sql, goal in dedup_changes(rows):
        case = work / f"dedup-{name}"
        db = case / "orders.db"
        project = make_project(case / "project")
        shutil.copy(base, db)
        with Repo.discover(project) as repo:
            first = snapshot_query(repo, query, f"sqlite:///{db}", "orders")
            before = store_bytes(project)
            with sqlite3.connect(db) as conn:
                conn.execute(sql)
            snapshot_query(repo, query, f"sqlite:///{db}", "orders")
            grown = store_bytes(project) - before
        ratio = grown / first.bytes / fraction
        shown = f"{name} changed {100 * fraction:.1f}% of rows: store +{grown / 1e6:.3f} MB"
        shown += f" = {100 * grown / first.bytes:.2f}% of {first.bytes / 1e6:.1f} MB"
        if goal:
            shown += f" ({ratio:.2f}x, goal <= {GOAL_GROWTH_PER_CHANGE:.0f}x) "
            shown += verdict(ratio <= GOAL_GROWTH_PER_CHANGE)
        print(f"dedup_{shown}", flush=True)
        shutil.rmtree(case)


_TIMED = """
import resource, sys, time, warnings
from pathlib import Path
warnings.simplefilter("ignore")
from cas.snapshot import write_snapshot
started = time.perf_counter()
write_snapshot({query!r}, {url!r}, "orders", root=Path({root!r}))
usage = resource.getrusage(resource.RUSAGE_SELF)
print(time.perf_counter() - started, usage.ru_utime + usage.ru_stime)
"""


def timed_snapshot(src: Path, url: str, root: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of one write_snapshot in a fresh interpreter importing cas from src.

    CPU includes the interpreter's start-up and imports, which both sides pay alike."""
    code = _TIMED.format(query="SELECT * FROM orders ORDER BY id", url=url, root=str(root))
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    shutil.rmtree(root, ignore_errors=True)
    return float(out[0]), float(out[1])


def run_throughput_comparison(work: Path, baseline: Path, rows: int, repeat: int) -> None:
    db = work / "orders.db"
    if not db.exists():
        make_sqlite_orders(db, rows)
    url = f"sqlite:///{db}"
    timed_snapshot(REPO_ROOT, url, work / "warm")
    runs: dict[str, list[tuple[float, float]]] = {"baseline": [], "this": []}
    for _ in range(repeat):
        runs["baseline"].append(timed_snapshot(baseline, url, work / "t"))
        runs["this"].append(timed_snapshot(REPO_ROOT, url, work / "t"))
    for label, pairs in runs.items():
        walls, cpus = [w for w, _ in pairs], [c for _, c in pairs]
        print(
            f"sqlite_snapshot_{label_of(rows)}_{label}_s wall min {min(walls):.3f} median "
            f"{statistics.median(walls):.3f}, cpu min {min(cpus):.3f} median "
            f"{statistics.median(cpus):.3f}",
            flush=True,
        )
    ratio = statistics.median(w for w, _ in runs["this"]) / statistics.median(
        w for w, _ in runs["baseline"]
    )
    print(f"ratio_snapshot_vs_baseline {ratio:.2f} (goal <= 1.2) {verdict(ratio <= 1.2)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--big-rows", type=int, default=10_000_000, help="0 skips the RSS run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pandas-repeat", type=int, default=1)
    parser.add_argument("--dedup-rows", type=int, default=1_000_000, help="0 skips dedup")
    parser.add_argument("--compare-with", type=Path, help="a cas source tree to time against")
    parser.add_argument("--no-postgres", action="store_true", help="only the SQLite figures")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # ORDER BY is there; keep the output to the figures

    work = Path(tempfile.mkdtemp(prefix="cas-bench-snapshot-"))
    try:
        if args.dedup_rows:
            run_dedup(work, args.dedup_rows)
        if args.compare_with:
            run_throughput_comparison(work, args.compare_with, args.dedup_rows, args.repeat)
        if args.no_postgres:
            return
        with running_server() as server:
            started = time.perf_counter()
            load_orders(server, max(args.rows, args.big_rows))
            print(
                f"# loaded {max(args.rows, args.big_rows):,} rows in "
                f"{time.perf_counter() - started:.1f} s",
                flush=True,
            )
            url, query = server.url, query_for(args.rows)
            run_snapshot(url, query, work / "warmup")  # warm the server's cache and imports
            run_adbc_plus_parquet(url, query, work / "warmup.parquet")
            label = label_of(args.rows)

            # interleaved, median of each: a busy machine then slows both alike
            adbc, snap = median_of_pair(
                args.repeat,
                lambda: run_adbc_plus_parquet(url, query, work / "a.pq"),
                lambda: run_snapshot(url, query, work / "snap"),
            )
            print(f"adbc_plus_parquet_{label}_s {adbc:.3f}", flush=True)
            print(f"snapshot_{label}_s {snap:.3f}", flush=True)
            project = make_project(work / "project")
            with_add = median_of(args.repeat, lambda: run_snapshot_with_add(url, query, project))
            print(f"snapshot_query_with_add_{label}_s {with_add:.3f} (information: + cas add)")
            pandas_s = median_of(args.pandas_repeat, lambda: run_pandas(url, query, work / "p.pq"))
            print(f"pandas_{label}_s {pandas_s:.3f}", flush=True)

            ratio = snap / adbc
            speedup = pandas_s / snap
            print(
                f"ratio_snapshot_vs_adbc_plus_parquet {ratio:.2f} "
                f"(goal <= {GOAL_RATIO}) {verdict(ratio <= GOAL_RATIO)}"
            )
            print(
                f"speedup_vs_pandas {speedup:.1f}x "
                f"(goal >= {GOAL_PANDAS_SPEEDUP:.0f}x) {verdict(speedup >= GOAL_PANDAS_SPEEDUP)}"
            )

            if args.big_rows:
                big_label = label_of(args.big_rows)
                big_query = query_for(args.big_rows)
                shutil.rmtree(work / "snap", ignore_errors=True)
                peak, seconds, rows = peak_rss_of_child("snapshot", url, big_query, work / "big")
                assert rows == args.big_rows, rows
                print(f"snapshot_{big_label}_s {seconds:.3f}")
                print(
                    f"snapshot_{big_label}_peak_rss_mib {peak:.1f} "
                    f"(goal <= {GOAL_PEAK_MIB:.0f}) {verdict(peak <= GOAL_PEAK_MIB)}"
                )
                shutil.rmtree(work / "big", ignore_errors=True)
                peak, seconds, _ = peak_rss_of_child("adbc_fetch_table", url, big_query, work)
                print(
                    f"adbc_fetch_table_{big_label}_peak_rss_mib {peak:.1f} "
                    f"(for comparison: whole result in memory, {seconds:.1f} s)"
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
