"""Deterministic benchmark data sets, the "realistic edit", and tree checks.

Content is incompressible random data that is still cheap to make: one big random
buffer is generated once and every file is a slice of it at a seeded offset, XORed
with a per-file 64-bit key. The key makes every file (and every region of every large
file) unique, so a content-defined chunker can't dedupe across files and get an
unfair head start, while generation stays I/O bound.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

GEN_VERSION = 1  # bump when the layout or content algorithm changes (invalidates caches)
KiB = 1024
MiB = 1024 * KiB
PIECE_WORDS = 4 * MiB // 8  # write large files in 4 MiB pieces to bound memory


@dataclass(frozen=True)
class FileGroup:
    """``count`` files with sizes uniform in [min_size, max_size] under ``prefix``.

    ``fanout`` gives the nested directory shape: (8, 5) spreads files round-robin over
    8 x 5 leaf directories ``prefix/a000/b000``, ...
    """

    prefix: str
    count: int
    min_size: int
    max_size: int
    fanout: tuple[int, ...] = ()

    def rel_path(self, index: int) -> str:
        leaves = int(np.prod(self.fanout)) if self.fanout else 1
        leaf = index % leaves
        parts = [self.prefix]
        for level, width in enumerate(self.fanout):
            leaf, digit = divmod(leaf, width)
            parts.append(f"{'abcdefgh'[level]}{digit:03d}")
        parts.append(f"f{index:06d}.bin")
        return "/".join(parts)


@dataclass(frozen=True)
class DatasetSpec:
    """A named data set at one size; ``edit`` marks the sets the realistic edit applies to."""

    name: str
    size: str
    seed: int
    groups: tuple[FileGroup, ...]
    edit: bool = False

    @property
    def key(self) -> str:
        return f"{self.name}-{self.size}-seed{self.seed}-v{GEN_VERSION}"


def spec_for(name: str, size: str, seed: int) -> DatasetSpec:
    """The data set definitions; ``small`` is every set ~20x smaller for smoke runs."""
    small = size == "small"
    if name == "mixed":
        big = (256 * MiB) // 20 if small else 256 * MiB
        groups = (
            FileGroup(
                "small", 1_000 if small else 20_000, 4 * KiB, 64 * KiB, (4, 2) if small else (8, 5)
            ),
            FileGroup("medium", 9 if small else 180, 1 * MiB, 8 * MiB, (3,)),
            FileGroup("large", 4, big, big),
        )
        return DatasetSpec(name, size, seed, groups, edit=True)
    if name == "many-small":
        if small:
            groups = (FileGroup("shards", 10_000, 1 * KiB, 8 * KiB, (5, 2)),)
        else:
            groups = (FileGroup("shards", 200_000, 1 * KiB, 8 * KiB, (20, 10)),)
        return DatasetSpec(name, size, seed, groups)
    raise ValueError(f"unknown data set {name!r}")


DATASET_NAMES = ("mixed", "many-small")


@dataclass
class Dataset:
    """A generated data set on disk: ``data`` is the tree that the tools version."""

    spec: DatasetSpec
    root: Path
    manifest: dict[str, int]

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def total_bytes(self) -> int:
        return sum(self.manifest.values())

    @property
    def file_count(self) -> int:
        return len(self.manifest)


def _write_slice(
    path: Path, buf: np.ndarray, word_off: int, size: int, key: np.uint64, scratch: np.ndarray
) -> None:
    """Write ``size`` bytes of ``buf[word_off:] ^ key`` to ``path`` in bounded pieces."""
    words = -(-size // 8)
    remaining = size
    with open(path, "wb", buffering=0) as f:
        for start in range(0, words, PIECE_WORDS):
            n = min(PIECE_WORDS, words - start)
            out = np.bitwise_xor(buf[word_off + start : word_off + start + n], key, out=scratch[:n])
            raw = memoryview(out.view(np.uint8))[: min(remaining, n * 8)]
            f.write(raw)
            remaining -= len(raw)


def _generate(spec: DatasetSpec, dest: Path, log: Callable[[str], None]) -> dict[str, int]:
    """Write all files of ``spec`` under ``dest/data``; returns the manifest."""
    max_size = max(g.max_size for g in spec.groups)
    buf_words = (max(max_size, 32 * MiB) + 32 * MiB) // 8
    buf = np.random.default_rng([spec.seed, 0]).bit_generator.random_raw(buf_words)
    scratch = np.empty(min(PIECE_WORDS, buf_words), dtype=np.uint64)
    manifest: dict[str, int] = {}
    made_dirs: set[Path] = set()
    for gi, group in enumerate(spec.groups):
        rng = np.random.default_rng([spec.seed, 1, gi])
        sizes = rng.integers(group.min_size, group.max_size, size=group.count, endpoint=True)
        keys = rng.integers(1, 2**63, size=group.count, dtype=np.uint64)
        for i in range(group.count):
            size = int(sizes[i])
            words = -(-size // 8)
            off = int(rng.integers(0, buf_words - words, endpoint=True))
            rel = group.rel_path(i)
            path = dest / "data" / rel
            if path.parent not in made_dirs:
                path.parent.mkdir(parents=True, exist_ok=True)
                made_dirs.add(path.parent)
            _write_slice(path, buf, off, size, keys[i], scratch)
            manifest[rel] = size
        log(f"  {spec.key}: wrote {group.count} files under {group.prefix}/")
    return manifest


def ensure_dataset(
    data_dir: Path, name: str, size: str, seed: int, log: Callable[[str], None] = print
) -> Dataset:
    """Return the cached data set, generating it (atomically, via rename) if missing."""
    spec = spec_for(name, size, seed)
    root = data_dir / "datasets" / spec.key
    manifest_path = root / "manifest.json"
    if manifest_path.exists():
        return Dataset(spec, root, json.loads(manifest_path.read_text()))
    tmp = root.with_name(root.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    log(f"generating data set {spec.key} in {root} ...")
    manifest = _generate(spec, tmp, log)
    (tmp / "manifest.json").write_text(json.dumps(manifest, sort_keys=True))
    os.sync()
    if root.exists():
        shutil.rmtree(root)
    tmp.rename(root)
    return Dataset(spec, root, manifest)


def iter_files(root: Path) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """All regular files below ``root`` as (posix relative path, entry), via scandir."""
    stack = [("", str(root))]
    while stack:
        prefix, path = stack.pop()
        with os.scandir(path) as it:
            for entry in it:
                rel = f"{prefix}{entry.name}"
                if entry.is_dir(follow_symlinks=False):
                    stack.append((rel + "/", entry.path))
                else:
                    yield rel, entry


def warm(root: Path) -> int:
    """Read every file once so timings start with a warm page cache; returns bytes read."""
    total = 0
    buf = bytearray(1 * MiB)
    for _, entry in iter_files(root):
        with open(entry.path, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                total += n
    return total


def verify_tree(tree: Path, ds: Dataset, sample: int = 24) -> str | None:
    """Check that ``tree`` holds exactly the data set (paths, sizes, sampled content).

    Returns a problem description, or None when the tree matches.
    """
    if not tree.is_dir():
        return f"{tree} is missing"
    found = {rel: e.stat(follow_symlinks=True).st_size for rel, e in iter_files(tree)}
    missing = sorted(set(ds.manifest) - set(found))
    extra = sorted(set(found) - set(ds.manifest))
    wrong = sorted(r for r in set(found) & set(ds.manifest) if found[r] != ds.manifest[r])
    problems = []
    for label, items in (("missing", missing), ("extra", extra), ("size mismatch", wrong)):
        if items:
            problems.append(f"{len(items)} {label} (e.g. {', '.join(items[:3])})")
    if problems:
        return "; ".join(problems)
    rels = sorted(ds.manifest)
    rng = np.random.default_rng([ds.spec.seed, 7])
    picks = {
        rels[int(i)] for i in rng.choice(len(rels), size=min(sample, len(rels)), replace=False)
    }
    picks.add(max(rels, key=lambda r: ds.manifest[r]))  # always one of the largest files
    bad = [r for r in sorted(picks) if not filecmp.cmp(tree / r, ds.data / r, shallow=False)]
    if bad:
        return f"{len(bad)} of {len(picks)} sampled files differ in content (e.g. {bad[0]})"
    return None


@dataclass
class EditPlan:
    """The "realistic edit": inserts in large files, appends, deletions, new files."""

    inserts: list[str]
    appends: list[str]
    deletes: list[str]
    new_files: list[tuple[str, int]]
    seed: int

    def describe(self) -> str:
        return (
            f"{len(self.inserts)} x 100-byte mid-file inserts, {len(self.appends)} x 1 KiB "
            f"appends, {len(self.deletes)} deletions, {len(self.new_files)} new files"
        )


def plan_edit(
    ds: Dataset, *, n_large: int = 10, n_append: int = 50, n_delete: int = 100, n_new: int = 100
) -> EditPlan:
    """Pick the files to edit, deterministically from the manifest and seed.

    Inserts go to every file of the largest size (the four "large" ones) plus randomly
    chosen 1-8 MiB ones up to ``n_large``; appends, deletes and new files are small ones.
    """
    rng = np.random.default_rng([ds.spec.seed, 42])
    by_size = sorted(ds.manifest, key=lambda r: (-ds.manifest[r], r))
    biggest = ds.manifest[by_size[0]]
    huge = [r for r in by_size if ds.manifest[r] == biggest][:n_large]
    mids = sorted(r for r in by_size if MiB <= ds.manifest[r] < biggest)
    n_mid = min(len(mids), n_large - len(huge))
    inserts = huge + [mids[int(i)] for i in rng.choice(len(mids), size=n_mid, replace=False)]
    smalls = sorted(r for r in ds.manifest if ds.manifest[r] < MiB)
    chosen = [
        smalls[int(i)] for i in rng.choice(len(smalls), size=n_append + n_delete, replace=False)
    ]
    appends, deletes = chosen[:n_append], chosen[n_append:]
    new_files = []
    for i in range(n_new):
        parent = smalls[int(rng.integers(0, len(smalls)))].rsplit("/", 1)[0]
        new_files.append((f"{parent}/new-{i:03d}.bin", int(rng.integers(4 * KiB, 64 * KiB))))
    return EditPlan(sorted(inserts), sorted(appends), sorted(deletes), new_files, ds.spec.seed)


def _replace_with(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write a new file next to ``path`` and rename it over.

    Never mutates the old inode, which matters if a tool hard-linked or reflinked
    workspace files to its store (editing in place would corrupt the store).
    """
    tmp = path.with_name(path.name + ".edit-tmp")
    with open(tmp, "wb") as dst:
        write(dst)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _copy_range(src: BinaryIO, dst: BinaryIO, count: int) -> None:
    while count > 0:
        chunk = src.read(min(count, 8 * MiB))
        if not chunk:
            break
        dst.write(chunk)
        count -= len(chunk)


def apply_edit(tree: Path, plan: EditPlan) -> None:
    """Apply ``plan`` to the data tree ``tree`` (the tool's working copy)."""
    rng = np.random.default_rng([plan.seed, 43])

    def rand_bytes(n: int) -> bytes:
        return rng.bit_generator.random_raw(-(-n // 8)).tobytes()[:n]

    for rel in plan.inserts:
        path = tree / rel
        size = path.stat().st_size
        insert = rand_bytes(100)

        def write_insert(
            dst: BinaryIO, path: Path = path, size: int = size, insert: bytes = insert
        ) -> None:
            with open(path, "rb") as src:
                _copy_range(src, dst, size // 2)
                dst.write(insert)
                _copy_range(src, dst, size)

        _replace_with(path, write_insert)
    for rel in plan.appends:
        path = tree / rel
        content = path.read_bytes() + rand_bytes(1 * KiB)
        _replace_with(path, lambda dst, content=content: dst.write(content))
    for rel in plan.deletes:
        (tree / rel).unlink()
    for rel, size in plan.new_files:
        path = tree / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rand_bytes(size))
