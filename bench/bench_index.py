"""Per-command cost against the size of the store (issue 17 part 1): adding one small file and
checking out a one-file dataset, with stores of three sizes.

- ``empty``: a fresh store.
- ``real``: a real store of ``--real`` small-file chunks (10-200 random bytes each, as
  reliability/load.py's files), written by cas's own PackWriter: valid packs, index files and
  (after the first command) a merged chunk index.
- ``synthetic``: a store whose merged chunk index names ``--chunks`` chunks (16,000,000 by
  default: what 1 TiB of data gives at 64 KiB a chunk) in ``--packs`` packs, built by
  :func:`build_synthetic` directly in the chunk index format. The packs are empty placeholder
  files (1 TiB of packs is not needed to measure lookups): such a store answers "is this chunk
  here?" exactly as a real one would, so adding and checking out *new* data is measured
  faithfully; ``fsck``, ``gc`` and reads of the synthetic chunks would fail, and are not run.

Each measurement is the real CLI in a Git repository whose ``core.store`` names the store: a
fresh folder holding one new 5 KB file is added (``cas add one``), then deleted and checked out
(``cas checkout one``). Commands alternate between the stores, ``--repeat`` times; the wall
time, CPU time (user+sys, from ``wait4``) and peak RSS of each are kept, and min and median
reported. The first command on each store (which may merge its index) is reported apart.

    python bench/bench_index.py [--chunks 16000000] [--real 1000000] [--repeat 5] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CAS = [sys.executable, "-m", "cas"]
_BLOCK = 1 << 20


def build_synthetic(store: Path, chunks: int, packs: int, seed: int = 0) -> None:
    """A store of ``packs`` empty placeholder packs and a merged chunk index of ``chunks``
    random ids spread over them (offsets and lengths as 64 KiB chunks back to back). Memory:
    the sorted key column (8 bytes a chunk) plus one block."""
    import numpy as np

    from cas import chunkindex
    from cas.objects import MERGED_INDEX_KEY, pack_key

    rng = np.random.default_rng(seed)
    pack_ids = sorted({rng.bytes(32).hex() for _ in range(packs)})
    for pack_id in pack_ids:
        path = store / pack_key(pack_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    keys = np.sort(rng.integers(0, 2**64 - 1, size=chunks, dtype=np.uint64, endpoint=True))
    numbers = rng.integers(0, len(pack_ids), size=chunks, dtype=np.uint32)
    layout = chunkindex.Layout(len(pack_ids), chunks)
    tmp = store / "tmp" / f"{os.getpid()}-synthetic"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, layout.size)
        for start in range(0, chunks, _BLOCK):
            stop = min(chunks, start + _BLOCK)
            n = stop - start
            part = keys[start:stop]
            ids = np.empty((n, 32), dtype=np.uint8)
            ids[:, :8] = part.astype(">u8").view(np.uint8).reshape(n, 8)
            ids[:, 8:] = rng.integers(0, 256, size=(n, 24), dtype=np.uint8)
            for base, width, column in (
                (layout.keys, 8, part.astype("<u8")),
                (layout.ids, 32, ids),
                (layout.pack_numbers, 4, numbers[start:stop].astype("<u4")),
                (layout.lengths, 4, np.full(n, 65536, "<u4")),
                (layout.offsets, 8, (np.arange(start, stop, dtype="<u8") % 512) * 65536),
            ):
                os.pwrite(fd, np.ascontiguousarray(column).tobytes(), base + start * width)
        counts = np.bincount(numbers, minlength=len(pack_ids))
        first = np.bincount((keys >> np.uint64(56)).astype(np.int64), minlength=256)
        chunkindex.finish(fd, list(zip(pack_ids, (int(c) for c in counts))), first)
    finally:
        os.close(fd)
    os.replace(tmp, store / MERGED_INDEX_KEY)


def build_real(store: Path, chunks: int, seed: int = 0) -> None:
    """``chunks`` distinct small chunks in real packs, through cas's PackWriter."""
    from cas import hashing
    from cas.objects import ObjectStore
    from cas.store.local import LocalStore

    rng = random.Random(seed)
    objects = ObjectStore(LocalStore(store, fsync=False))
    with objects.writer() as writer:
        for i in range(chunks):
            data = i.to_bytes(8, "little") + rng.randbytes(rng.randint(2, 192))
            writer.add(hashing.digest(data), data)
    objects.close()


def measure(argv: list[str], cwd: Path) -> dict[str, Any]:
    """Wall time, CPU time (user+sys) and peak RSS of one command. The child is forked from
    this process, whose RSS is the floor of the child's ``ru_maxrss`` until it execs: so this
    process imports neither numpy nor cas, and builds the stores in children."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    out = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {out.strip()}")
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss_mib": usage.ru_maxrss / 1024,
    }


def make_repo(base: Path, name: str, store: Path) -> Path:
    repo = base / name
    repo.mkdir()
    for args in (["init", "-q", "-b", "main"], ["config", "user.email", "b@example.com"],
                 ["config", "user.name", "bench"]):  # fmt: skip
        subprocess.run(["git", *args], cwd=repo, check=True)
    subprocess.run([*CAS, "init"], cwd=repo, check=True, capture_output=True)
    with open(repo / ".cas" / "config.local", "a", encoding="utf-8") as f:
        f.write(f"[core]\nstore = {store}\n")
    return repo


def one_round(repo: Path, rng: random.Random) -> dict[str, dict[str, Any]]:
    folder = repo / "one"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    (folder / "f.bin").write_bytes(rng.randbytes(5000))
    add = measure([*CAS, "add", "one"], repo)
    want = (folder / "f.bin").read_bytes()
    shutil.rmtree(folder)
    checkout = measure([*CAS, "checkout", "one"], repo)
    if (folder / "f.bin").read_bytes() != want:
        raise RuntimeError("checkout restored other bytes")
    return {"add": add, "checkout": checkout}


def summary(runs: list[dict[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key in ("wall", "cpu", "rss_mib"):
        values = [r[key] for r in runs]
        out[f"{key}_min"] = round(min(values), 3)
        out[f"{key}_median"] = round(statistics.median(values), 3)
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=16_000_000)
    parser.add_argument("--packs", type=int, default=32_768)
    parser.add_argument("--real", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--stores", default="empty,real,synthetic", help="main: empty,real")
    parser.add_argument("--build", nargs=2, metavar=("KIND", "STORE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.build:
        kind, store = args.build[0], Path(args.build[1])
        sys.path.insert(0, str(ROOT))
        if kind == "empty":
            store.mkdir()
        elif kind == "real":
            build_real(store, args.real)
        else:
            build_synthetic(store, args.chunks, args.packs)
        return 0
    kinds = args.stores.split(",")
    base = Path(tempfile.mkdtemp(prefix="cas-bench-index-"))
    try:
        stores = {kind: base / f"store-{kind}" for kind in kinds}
        built: dict[str, float] = {}
        for kind, store in stores.items():
            started = time.monotonic()
            build = [sys.executable, __file__, "--build", kind, str(store), *argv]
            subprocess.run(build, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
            built[kind] = time.monotonic() - started
        repos = {name: make_repo(base, name, store) for name, store in stores.items()}
        rng = random.Random(1)
        first = {name: measure([*CAS, "status"], repo) for name, repo in repos.items()}
        runs: dict[str, dict[str, list]] = {n: {"add": [], "checkout": []} for n in repos}
        for _ in range(args.repeat):
            for name, repo in repos.items():  # alternated, so load drifts hit each alike
                for cmd, result in one_round(repo, rng).items():
                    runs[name][cmd].append(result)
        report = {
            "chunks": {"real": args.real, "synthetic": args.chunks},
            "build_seconds": {k: round(v, 1) for k, v in built.items()},
            "first_command": {n: {k: round(v, 3) for k, v in r.items()} for n, r in first.items()},
            "results": {n: {c: summary(r) for c, r in cmds.items()} for n, cmds in runs.items()},
            "load": os.getloadavg(),
        }
    finally:
        shutil.rmtree(base, ignore_errors=True)
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
