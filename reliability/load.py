"""A dataset of many small files: add, status and checkout within 1 GiB and 1,024 open files.

Generates ``--files`` files of 10-200 random bytes, 1,000 to a folder, in a fresh Git repository
under /tmp, then runs the real CLI: ``cas add data``, ``cas status``, and, after deleting
``data/``, ``cas checkout``. Each command runs with the soft limit of open files lowered to 1,024,
so a command that held a descriptor per file (or per folder) would fail rather than pass on a
machine with a generous limit; a thread also samples ``/proc/<pid>/fd`` for the peak actually
used. The peak RSS is the child's ``ru_maxrss`` from ``wait4``. The checkout must restore the
exact bytes: the file count and total size are compared, and every 997th file byte for byte.

    python reliability/load.py --files 1000000 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

CAS = [sys.executable, "-m", "cas"]
FILES_PER_FOLDER = 1000
SIZES = (10, 200)
SAMPLE_EVERY = 997
FD_LIMIT = 1024
RSS_LIMIT_MIB = 1024
SAMPLE_SECONDS = 0.02


def generate(data: Path, files: int, seed: int) -> tuple[int, dict[str, bytes]]:
    """Write the files; return their total size and a sample of paths with their bytes."""
    rng = random.Random(seed)
    total = 0
    sample: dict[str, bytes] = {}
    for start in range(0, files, FILES_PER_FOLDER):
        folder = data / f"d{start // FILES_PER_FOLDER:04d}"
        folder.mkdir(parents=True)
        count = min(FILES_PER_FOLDER, files - start)
        sizes = [rng.randint(*SIZES) for _ in range(count)]
        blob = rng.randbytes(sum(sizes))
        offset = 0
        for i, size in enumerate(sizes):
            content = blob[offset : offset + size]
            offset += size
            name = f"f{i:03d}.bin"
            fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, content)
            os.close(fd)
            if (start + i) % SAMPLE_EVERY == 0:
                sample[f"{folder.name}/{name}"] = content
        total += offset
    return total, sample


def count_files(data: Path) -> tuple[int, int]:
    files = size = 0
    for dirpath, _dirs, names in os.walk(data):
        files += len(names)
        size += sum(os.stat(os.path.join(dirpath, n)).st_size for n in names)
    return files, size


def low_fd_limit() -> None:
    """In the child, before exec: the soft limit goes down, the hard one stays."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, hard))


def measure(argv: list[str], cwd: Path, log: Path) -> dict[str, Any]:
    """Run one command: wall time, exit code, peak RSS (wait4) and peak open descriptors."""
    peak_fds = 0
    done = threading.Event()

    def sample(pid: int) -> None:
        nonlocal peak_fds
        while not done.is_set():
            try:
                peak_fds = max(peak_fds, len(os.listdir(f"/proc/{pid}/fd")))
            except (FileNotFoundError, ProcessLookupError):
                return  # the process has exited: its last count was sampled already
            time.sleep(SAMPLE_SECONDS)

    with log.open("w") as out:
        started = time.monotonic()
        proc = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=out, preexec_fn=low_fd_limit)
        sampler = threading.Thread(target=sample, args=(proc.pid,))
        sampler.start()
        _pid, status, usage = os.wait4(proc.pid, 0)
        seconds = time.monotonic() - started
        done.set()
        sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    result = {
        "command": " ".join(["cas", *argv[len(CAS) :]]),
        "exit": proc.returncode,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "peak_fds": peak_fds,
    }
    if proc.returncode != 0:
        result["error"] = log.read_text().strip().splitlines()[-1:]
    return result


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def run_load(
    files: int, seed: int, base: Path, rss_limit_mib: float = RSS_LIMIT_MIB
) -> dict[str, Any]:
    repo = base / "proj"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    log = base / "command.log"
    started = time.monotonic()
    total, sample = generate(repo / "data", files, seed)
    generated = time.monotonic() - started
    steps = [measure([*CAS, "init"], repo, log)]
    steps.append(measure([*CAS, "add", "data"], repo, log))
    steps.append(measure([*CAS, "status"], repo, log))
    shutil.rmtree(repo / "data")
    steps.append(measure([*CAS, "checkout"], repo, log))
    problems = [f"{s['command']} exited {s['exit']}: {s.get('error')}" for s in steps if s["exit"]]
    problems += [
        f"{s['command']}: peak RSS {s['peak_rss_mib']} MiB over {rss_limit_mib} MiB"
        for s in steps
        if s["peak_rss_mib"] > rss_limit_mib
    ]
    if not problems:
        restored = count_files(repo / "data")
        if restored != (files, total):
            problems.append(f"checkout restored (files, bytes) {restored}, not {(files, total)}")
        problems += [
            f"checkout restored data/{rel} wrong"
            for rel, content in sample.items()
            if (repo / "data" / rel).read_bytes() != content
        ]
    return {
        "files": files,
        "bytes": total,
        "seed": seed,
        "fd_soft_limit": FD_LIMIT,
        "rss_limit_mib": rss_limit_mib,
        "generate_seconds": round(generated, 1),
        "sampled_files": len(sample),
        "steps": steps[1:],  # init is set-up, not load
        "problems": problems,
        "ok": not problems,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--rss-limit-mib", type=float, default=RSS_LIMIT_MIB,
                        help="fail a command that peaks above this (10M files: 2048)")  # fmt: skip
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="cas-load-"))
    try:
        result = run_load(args.files, args.seed, base, args.rss_limit_mib)
    finally:
        shutil.rmtree(base)
    print(f"{result['files']:,} files, {result['bytes']:,} bytes")
    print(f"{'command':<14} {'seconds':>8} {'peak RSS MiB':>13} {'peak fds':>9}  exit")
    for step in result["steps"]:
        print(
            f"{step['command']:<14} {step['seconds']:>8} {step['peak_rss_mib']:>13} "
            f"{step['peak_fds']:>9}  {step['exit']}"
        )
    for problem in result["problems"]:
        print(f"FAILED: {problem}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
