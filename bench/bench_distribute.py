"""``cas add --executor``: a 2-worker Dask ``LocalCluster`` against a plain local add.

    python bench/bench_distribute.py [--size small|full] [--repeat 3] [--data-dir DIR]

Each repetition adds the "mixed" set (bench/datasets.py; 2 GiB in 19,824 files at full size)
into a fresh repository and store, page cache warm, once locally and once on the cluster,
alternating, so machine noise hits both alike. The cluster (scheduler + 2 worker processes, one
thread each, on loopback) is started once, before any timing: it stands for a team's running
cluster. For each side it prints the wall time (min, median), the CPU time of the cas process
(the coordinator, for the cluster), the CPU time the workers spent (from their /proc stat), and
the coordinator's peak RSS. The ratio cluster/local of the median wall times is the goal's
figure (<= 1.3x); the per-file coordinator cost and per-worker throughput feed docs/scaling.md.
Also run on the "many-small" set (200,000 files at full size) for the coordinator's cost per file.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from datasets import ensure_dataset  # noqa: E402
from tools import measure  # noqa: E402

CAS = [sys.executable, "-m", "cas"]


def _cpu_of(pid: int) -> float:
    """User + system seconds a live process has used (its /proc stat), children excluded."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _run(argv: list[str], cwd: Path) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds and peak RSS (bytes) of one command (through bench.tools'
    launcher: this process, which holds a LocalCluster's client, would inflate the figure)."""
    found = measure(argv, cwd=cwd)
    if found.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed in {cwd}")
    return found.wall, found.cpu, found.rss_kib * 1024


def _fresh_repo(work: Path, data: Path) -> Path:
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    for args in (["init", "-q", "-b", "main"], ["config", "user.email", "b@example.com"],
                 ["config", "user.name", "bench"]):  # fmt: skip
        subprocess.run(["git", *args], cwd=work, check=True)
    subprocess.run(["cp", "-al", str(data), str(work / "data")], check=True)  # hard links: instant
    subprocess.run([*CAS, "init"], cwd=work, check=True, stdout=subprocess.DEVNULL)
    return work


def _stats(values: list[float]) -> str:
    return f"min {min(values):.2f} median {statistics.median(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("small", "full"), default="full")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "bench-data")
    args = parser.parse_args()

    from distributed import Client, LocalCluster

    work = Path(tempfile.mkdtemp(prefix="cas-bench-distribute-"))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:  # fmt: skip
        workers = list(client.run(os.getpid).values())
        for name in ("mixed", "many-small"):
            ds = ensure_dataset(args.data_dir, name, args.size, 1, log=lambda m: None)
            for f in ds.data.rglob("*"):  # warm the page cache
                if f.is_file():
                    f.read_bytes()
            walls: dict[str, list[float]] = {"local": [], "cluster": []}
            cpus: dict[str, list[float]] = {"local": [], "cluster": []}
            rss: dict[str, list[int]] = {"local": [], "cluster": []}
            worker_cpu: list[float] = []
            for _ in range(args.repeat):
                for side in ("local", "cluster"):
                    repo = _fresh_repo(work / side, ds.data)
                    extra = ["--executor", cluster.scheduler_address] if side == "cluster" else []
                    before = sum(_cpu_of(p) for p in workers)
                    wall, cpu, peak = _run([*CAS, "add", "data", *extra], repo)
                    if side == "cluster":
                        worker_cpu.append(sum(_cpu_of(p) for p in workers) - before)
                    walls[side].append(wall)
                    cpus[side].append(cpu)
                    rss[side].append(peak)
            files, size = ds.file_count, ds.total_bytes
            print(f"## {name} ({args.size}): {files} files, {size / 2**20:.0f} MiB")
            for side in ("local", "cluster"):
                print(
                    f"distribute_{name}_{side}_wall_s {_stats(walls[side])}; cas process CPU "
                    f"{_stats(cpus[side])} s; peak RSS {max(rss[side]) / 2**20:.0f} MiB"
                )
            ratio = statistics.median(walls["cluster"]) / statistics.median(walls["local"])
            per_file = statistics.median(cpus["cluster"]) / files * 1e6
            throughput = size / statistics.median(worker_cpu) / 2**20
            print(f"distribute_{name}_ratio {ratio:.2f} (cluster / local, median wall)")
            print(f"distribute_{name}_worker_cpu_s {_stats(worker_cpu)} (both workers)")
            print(f"distribute_{name}_coordinator_us_per_file {per_file:.0f} (CPU)")
            print(f"distribute_{name}_worker_MiB_per_cpu_s {throughput:.0f}")
            print(
                f"distribute_{name}_coordinator_rss_bytes_per_file "
                f"{max(rss['cluster']) / files:.0f} (peak RSS / files, interpreter included)"
            )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
