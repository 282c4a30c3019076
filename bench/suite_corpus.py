"""Corpus suite: versioned manifests at 10^7 entries, and hashing a remote corpus over S3.

Figures (goals from the corpus issue):
- append 100,000 entries to a 10,000,000-entry manifest (10 segments of 10^6, random hashes,
  generated directly with pyarrow) through ``cas.versions.append``: <= 2 s;
- open and iterate every entry in a child process: <= 5 s, peak RSS <= 1 GiB;
- the pointer stays < 1 KiB and an append changes one line of it;
- ``cas manifest create`` over SeaweedFS (200 x 4 MiB) reaches >= 70 % of the throughput of a
  plain concurrent s3fs read of the same files with the same number of threads.

Each measurement runs as a child (``python bench/suite_corpus.py MODE ...``, under the project's
python since it imports cas) through the harness runner, which records its max RSS. ``--size
small`` uses 10^6 entries and 40 files, so the goals are then indicative only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from harness import BenchContext, Collector, SuiteResult
from report import Goal

MiB = 1024 * 1024
METRICS: dict[str, tuple[str, str]] = {
    "_all": ("(all)", ""),
    "generate": ("generate manifest (not a goal)", "s"),
    "append": ("append 100k entries", "s"),
    "iterate": ("open + iterate all entries", "s"),
    "iterate_rss": ("peak RSS (iterate)", "MiB"),
    "pointer_bytes": ("pointer size", "B"),
    "pointer_diff": ("pointer lines changed by an append", ""),
    "s3_plain": ("plain s3fs concurrent read", "MiB/s"),
    "s3_cas": ("cas manifest create", "MiB/s"),
    "s3_ratio": ("create / plain read", "%"),
    "s3_op": ("cas.ops.corpus.create, in-process", "MiB/s"),
    "s3_op_ratio": ("in-process create / plain read", "%"),
}
APPEND_ROWS = 100_000


def run(ctx: BenchContext) -> SuiteResult:
    """Entry point registered as suite ``corpus``."""
    col = Collector("corpus", METRICS)
    small = ctx.size == "small"
    rows = 1_000_000 if small else 10_000_000
    files = 40 if small else 200
    work = ctx.work_dir / "corpus"
    work.mkdir(parents=True, exist_ok=True)
    label = f"{rows // 1_000_000}M entries"

    made = _child(ctx, col, label, "manifest", ["--rows", str(rows), "--dir", str(work / "m")])
    if made:
        for key in ("generate", "append", "pointer_bytes", "pointer_diff"):
            col.add(label, "cas", key, made[key])
        it = _child(ctx, col, label, "iterate", ["--dir", str(work / "m")])
        if it:
            col.add(label, "cas", "iterate", it["iterate"])
            col.add(label, "cas", "iterate_rss", it["maxrss"] / MiB)
    s3_label = f"{files} x 4 MiB"
    s3 = _child(ctx, col, s3_label, "s3", ["--files", str(files), "--dir", str(work / "s3")])
    if s3:
        col.add(s3_label, "cas", "s3_plain", s3["plain"])
        col.add(s3_label, "cas", "s3_cas", s3["cas"])
        col.add(s3_label, "cas", "s3_ratio", 100 * s3["cas"] / s3["plain"])
        col.add(s3_label, "cas", "s3_op", s3["op"])
        col.add(s3_label, "cas", "s3_op_ratio", 100 * s3["op"] / s3["plain"])

    note = "--size small: 1M entries / 40 files; goals are for 10M / 200" if small else ""

    def goal(ds: str, name: str, key: str, unit: str, op: str, target: float) -> Goal:
        value = col.median(ds, "cas", key)
        why = note or ("" if value is not None else col.why_missing(ds, "cas", key))
        return Goal("corpus", ds, name, value, unit, op, target, why)

    result = SuiteResult(records=col.records())
    result.goals = [
        goal(label, "append 100k entries to 10M", "append", "s", "<=", 2.0),
        goal(label, "open + iterate 10M entries", "iterate", "s", "<=", 5.0),
        goal(label, "peak RSS of the iteration", "iterate_rss", "MiB", "<=", 1024),
        goal(label, "pointer size", "pointer_bytes", "B", "<=", 1023),
        goal(label, "pointer lines changed by an append", "pointer_diff", "", "<=", 1),
        goal(s3_label, "manifest create vs plain s3fs read", "s3_ratio", "%", ">=", 70),
    ]
    result.notes.append(
        "corpus: appends and iteration read segments from the page cache; the S3 figures share "
        "the 2 cores with the SeaweedFS server, so they are noisy. The CLI figure includes "
        "interpreter start-up, Git staging and the segment write (about a second), which "
        "dominates at --size small; the in-process figure is the hashing itself."
    )
    return result


def _child(
    ctx: BenchContext, col: Collector, dataset: str, mode: str, args: list[str]
) -> dict | None:
    """Run one measurement child; its last stdout line is a JSON object."""
    ctx.log(f"[corpus] {mode} {' '.join(args)}")
    res = ctx.runner.run(
        [str(ctx.project_python), str(Path(__file__).resolve()), mode, *args],
        cwd=ctx.repo_root,
        label=f"corpus-{mode}",
        timeout=max(ctx.runner.default_timeout, 900),
    )
    out = res.log_prefix.with_name(res.log_prefix.name + ".out")
    lines = out.read_text(errors="replace").strip().splitlines() if out.exists() else []
    if not res.ok or not lines:
        col.error(dataset, "cas", "_all", f"{mode}: {res.describe_failure()}")
        return None
    found = json.loads(lines[-1])
    found["maxrss"] = res.maxrss_bytes
    return found


# -- the children (run under the project's python) -------------------------------------------
def _repo(folder: Path):  # -> cas.repo.Repo, imported lazily: the harness may lack cas
    from cas.repo import Repo

    if not (folder / ".git").exists():
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "init", "-q", str(folder)], check=True)
        return Repo.init(folder)
    return Repo.discover(folder)


def synthetic(count: int, prefix: str, seed: int):  # -> pyarrow.Table of corpus entries
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    paths = pa.array([f"{prefix}/part-{i:08d}.jsonl.zst" for i in range(count)], pa.string())
    hashes = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(32), count, [None, pa.py_buffer(rng.bytes(32 * count))]
    )
    sizes = pa.array(rng.integers(1, 1 << 28, count, dtype=np.uint64))
    markers = pa.array([f"{i:x}" for i in range(count)], pa.string())
    return pa.table({"path": paths, "size": sizes, "hash": hashes, "marker": markers})


def child_manifest(rows: int, folder: Path) -> dict:
    from cas import versions
    from cas.pointer import Pointer

    repo = _repo(folder)
    start = time.perf_counter()
    version = None
    per = rows // 10
    for shard in range(10):
        entries = synthetic(per, f"shard-{shard:03d}", shard)
        version = versions.append(repo, version, entries, base="s3://corpus/web")
    generate = time.perf_counter() - start
    new = synthetic(APPEND_ROWS, "shard-new", 99)
    versions._verified.clear()  # the append pays for verifying what it reads, as a CLI run would
    start = time.perf_counter()
    grown = versions.append(repo, version, new)
    append = time.perf_counter() - start
    before, after = Pointer("corpus", version).encode(), Pointer("corpus", grown).encode()
    diff = sum(a != b for a, b in zip(before.splitlines(), after.splitlines()))
    (folder / "version").write_text(grown)
    return {"generate": generate, "append": append, "pointer_bytes": len(after),
            "pointer_diff": diff}  # fmt: skip


def child_iterate(folder: Path) -> dict:
    from cas import versions

    repo = _repo(folder)
    start = time.perf_counter()
    version = versions.load_version(repo, (folder / "version").read_text())
    count = 0
    for batch in versions.iter_batches(versions.dataset_of(repo, version)):
        count += batch.num_rows
    assert count == version.files, (count, version.files)
    return {"iterate": time.perf_counter() - start, "rows": count}


def child_s3(files: int, folder: Path, jobs: int = 8) -> dict:
    import os
    from concurrent.futures import ThreadPoolExecutor

    import boto3
    import s3fs

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.s3_server import running_server

    with running_server() as server:
        server.create_bucket("corpus")
        env = server.env
        client = boto3.client(
            "s3", endpoint_url=server.endpoint, aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1",
        )  # fmt: skip
        keys = [f"web/f{i:04d}.bin" for i in range(files)]
        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(lambda k: client.put_object(Bucket="corpus", Key=k,
                                                      Body=os.urandom(4 * MiB)), keys))  # fmt: skip
        total = files * 4 * MiB
        fs = s3fs.S3FileSystem(
            key=env["AWS_ACCESS_KEY_ID"], secret=env["AWS_SECRET_ACCESS_KEY"],
            client_kwargs={"endpoint_url": server.endpoint}, skip_instance_cache=True,
        )  # fmt: skip
        start = time.perf_counter()
        with ThreadPoolExecutor(jobs) as pool:
            read = sum(pool.map(lambda k: len(fs.cat_file(f"corpus/{k}")), keys))
        plain = time.perf_counter() - start
        assert read == total
        repo = _repo(folder)
        argv = [sys.executable, "-m", "cas", "manifest", "create", "corpus.cas",
                "s3://corpus/web", "--jobs", str(jobs)]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(argv, cwd=repo.root, env={**os.environ, **env}, check=True)
        cas_s = time.perf_counter() - start
        from cas.ops import corpus

        os.environ.update(env)
        start = time.perf_counter()
        corpus.create(repo, str(repo.root / "again.cas"), "s3://corpus/web", jobs=jobs)
        op_s = time.perf_counter() - start
    return {"plain": total / MiB / plain, "cas": total / MiB / cas_s, "op": total / MiB / op_s}


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description="one corpus-suite measurement (a child process)")
    p.add_argument("mode", choices=("manifest", "iterate", "s3"))
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--files", type=int, default=200)
    p.add_argument("--dir", type=Path, required=True)
    args = p.parse_args(argv)
    if args.mode == "manifest":
        found = child_manifest(args.rows, args.dir)
    elif args.mode == "iterate":
        found = child_iterate(args.dir)
    else:
        found = child_s3(args.files, args.dir)
    print(json.dumps(found), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
