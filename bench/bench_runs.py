"""Benchmark ``cas run`` / ``cas runs`` / ``cas runs diff`` / ``cas repro`` (issue 15's figures).

    .venv/bin/python bench/bench_runs.py [--runs 10000] [--data-mib 1024] [--repeat 5]

* ``run_overhead_s``: ``cas run -- python -c pass`` minus the bare ``python -c pass`` (medians of
  alternating runs; environment capture included). Goal <= 0.3 s.
* ``runs_list_s``: ``cas runs --json`` with ``--runs`` records in the catalog. Goal <= 0.5 s.
* ``runs_diff_s``: ``cas runs diff A B``. Goal <= 0.3 s.
* ``repro_overhead_ratio``: (``cas repro`` - the rerun command's own time) / (``cas checkout``
  of the dataset into an empty folder), warm store. Goal <= 1.5.
* ``record_bytes``: the size of a real record (no stored source changes). Goal <= 16 KiB.

CPU time (user+sys of the child processes) is printed beside wall time: on a loaded machine the
wall figures are noisy. Every figure is the median of ``--repeat`` runs (min also printed).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
CAS = [sys.executable, "-m", "cas"]
ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}


def timed(argv: list[str], cwd: Path) -> tuple[float, float]:
    """Wall and CPU (user+sys of the child) seconds of one command, which must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=ENV, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def series(argv: list[str], cwd: Path, repeat: int) -> tuple[list[float], list[float]]:
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = timed(argv, cwd)
        walls.append(wall)
        cpus.append(cpu)
    return walls, cpus


def line(name: str, walls: list[float], cpus: list[float] | None = None, unit: str = "s") -> None:
    cpu = f"  cpu median {statistics.median(cpus):.3f}" if cpus else ""
    print(f"{name:28} median {statistics.median(walls):.3f} {unit}  min {min(walls):.3f}{cpu}")


def project(root: Path, data_mib: int) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    git("config", "user.email", "b@example.com")
    git("config", "user.name", "B")
    data = root / "data"
    data.mkdir()
    block = os.urandom(1 << 20)
    for i in range(data_mib):  # 1 MiB files, each distinct
        (data / f"f{i:05d}.bin").write_bytes(i.to_bytes(8, "little") + block[8:])
    (root / "train.py").write_text("import cas\ncas.log_metric('acc', 0.5)\n")
    subprocess.run([*CAS, "init"], cwd=root, env=ENV, check=True, capture_output=True)
    subprocess.run([*CAS, "add", "data"], cwd=root, env=ENV, check=True, capture_output=True)
    git("add", "-A")
    git("commit", "-qm", "bench")


def fill_catalog(root: Path, n: int) -> None:
    """``n`` records: copies of a real one with other names and metrics, each a real object in
    the store and a row in the catalog (as ``cas runs`` would index them)."""
    sys.path.insert(0, str(REPO_ROOT))
    from cas.repo import Repo
    from cas.runs import record as rec
    from cas.runs.catalog import Catalog, summary

    repo = Repo.discover(root)
    base = rec.get(repo.local, rec.ids(repo.local)[0])
    catalog = Catalog(repo)
    with catalog.db:
        catalog.db.execute("BEGIN IMMEDIATE")
        for i in range(n):
            record = {
                **base,
                "name": f"sweep-{i % 100}",
                "metrics": {"acc": i / n, "loss": 1 - i / n},
            }
            run_id = rec.put(repo.local, record)
            catalog._insert(run_id, summary(run_id, record), None, record)
    catalog.close()
    repo.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--data-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cas-bench-runs-"))
    try:
        root = tmp / "proj"
        root.mkdir()
        project(root, args.data_mib)
        bare = [sys.executable, "train.py"]
        run = [*CAS, "run", "--name", "b", "--", sys.executable, "train.py"]
        walls_bare, cpu_bare, walls_run, cpu_run = [], [], [], []
        for _ in range(args.repeat):  # alternate, so load spikes hit both
            w, c = timed(bare, root)
            walls_bare.append(w)
            cpu_bare.append(c)
            w, c = timed(run, root)
            walls_run.append(w)
            cpu_run.append(c)
        print(f"machine loaded (2 cores shared); load average {os.getloadavg()[0]:.1f}")
        line("bare command", walls_bare, cpu_bare)
        line("cas run", walls_run, cpu_run)
        overhead = statistics.median(walls_run) - statistics.median(walls_bare)
        cpu_overhead = statistics.median(cpu_run) - statistics.median(cpu_bare)
        print(f"run_overhead_s               {overhead:.3f}  (cpu {cpu_overhead:.3f}; goal <= 0.3)")
        out = subprocess.run(
            [*CAS, "runs", "show", "b"],
            cwd=root,
            env=ENV,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        record = json.loads(out)
        size = len(
            (root / ".cas" / "store" / "runs" / record["id"][:2] / record["id"]).read_bytes()
        )
        print(f"record_bytes                 {size}  (goal <= 16384)")
        walls, cpus = series([*CAS, "runs", "--help"], root, args.repeat)
        line("cas start-up (runs --help)", walls, cpus)  # what every command pays first
        fill_catalog(root, args.runs)
        walls, cpus = series([*CAS, "runs", "--json"], root, args.repeat)
        line(f"runs_list_s ({args.runs} runs)", walls, cpus)
        walls, cpus = series([*CAS, "runs"], root, args.repeat)
        line("runs table", walls, cpus)
        walls, cpus = series([*CAS, "runs", "diff", "b", "sweep-1"], root, args.repeat)
        line("runs_diff_s", walls, cpus)
        # repro vs checkout of the dataset into an empty folder, warm store
        checkout, repro = [], []
        for _ in range(args.repeat):
            shutil.rmtree(root / "data")
            checkout.append(timed([*CAS, "checkout", "data"], root)[0])
            w_repro, _ = timed([*CAS, "repro", "b"], root)
            w_bare, _ = timed(bare, root)
            repro.append(w_repro - w_bare)
        line(f"checkout {args.data_mib} MiB", checkout)
        line("repro overhead", repro)
        ratio = statistics.median(repro) / statistics.median(checkout)
        print(f"repro_overhead_ratio         {ratio:.2f}  (goal <= 1.5)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
