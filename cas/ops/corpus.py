"""Corpus manifests: files pinned where they lie (a folder, ``s3://``, any fsspec URL).

The corpus is too large to copy into any store, so cas records only what pins it: each file's
path relative to the manifest's base URL, size, BLAKE3 hash and the store's change marker (ETag, or
mtime in ns), in versioned segments (:mod:`cas.versions`). Files are hashed where they are, in
8 MiB ranges on ``jobs`` threads, so memory stays bounded and the transfer is the limit.

The corpus is append-only: ``append`` refuses when a recorded file changed (size or marker) or
vanished, naming it, unless ``allow_removals`` says the rewrite is intended.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from cas import hashing, versions
from cas.errors import (
    ConflictError,
    DependencyError,
    FileChangedError,
    StorageError,
    UsageError,
)
from cas.parallel import bounded_map
from cas.pointer import Pointer
from cas.progress import Progress, Silent
from cas.store.fsspec import FsspecStore

if TYPE_CHECKING:
    from cas.ops.distribute import Cluster
    from cas.repo import Repo, Target

T = TypeVar("T")
DEFAULT_JOBS = 8
HINTS = {
    "auth": "permission denied for {url}: check the credentials "
    "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or a profile)",
    "missing_root": "{url}: the bucket does not exist; create it or fix the URL",
    "unreachable": "cannot reach {url}: check the endpoint (AWS_ENDPOINT_URL) and the network",
}
LISTING = pa.schema([("path", pa.string()), ("size", pa.uint64()), ("marker", pa.string())])
_SHOWN = 20


@dataclass(frozen=True)
class Source:
    """A corpus location: ``base`` is the normalised URL (``file:///abs``, ``s3://bucket/p``)."""

    store: FsspecStore
    base: str

    def url(self, rel: str) -> str:
        return f"{self.base}/{rel}"


@dataclass
class CorpusResult:
    pointer: str
    version: str
    files_added: int
    bytes_added: int
    files: int
    bytes: int
    pointer_changed: bool
    removed: list[str] = field(default_factory=list)


@dataclass
class VerifyResult:
    pointer: str
    checked: int
    drifted: list[dict[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.drifted


# -- the corpus location -----------------------------------------------------------------
def open_source(url: str) -> Source:
    """An fsspec location; an unknown protocol or a missing driver is one clear error."""
    try:
        store = FsspecStore(url, label=url, hints=HINTS)
    except ValueError as err:
        raise UsageError(
            f"{url}: {err}; use a local folder, s3://bucket/prefix or another fsspec URL"
        ) from err
    except ImportError as err:
        raise DependencyError(f"reading {url} needs a package that is missing: {err}") from err
    if not store.root or store.root == "/":
        raise UsageError(f"{url}: name a folder or bucket, not the root of the storage")
    return Source(store, store.fs.unstrip_protocol(store.root).rstrip("/"))


def _call(src: Source, what: str, key: str, fn: Callable[[], T]) -> T:
    """The store's retrying call, plus the one failure it does not classify: botocore finds
    no credentials at all before any request is made."""
    from botocore.exceptions import NoCredentialsError

    try:
        return src.store._call(what, key, fn)
    except NoCredentialsError as err:
        raise StorageError(
            f"no credentials for {src.base}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(or AWS_PROFILE)"
        ) from err


def list_files(src: Source, prefix: str = "") -> pa.Table:
    """Every file under ``prefix`` (relative to the base, "" or ending in "/"): path, size and
    change marker, sorted by path. One paginated listing, not a request per file."""
    root = src.store.root
    top = f"{root}/{prefix}".rstrip("/")
    try:
        found = _call(src, "listing", prefix, lambda: src.store.fs.find(top, detail=True))
    except KeyError:
        found = {}
    paths, sizes, markers = [], [], []
    cut = len(root) + 1
    for name, info in found.items():
        if info.get("type") != "file":
            continue
        paths.append(name[cut:])
        sizes.append(int(info["size"]))
        markers.append(_marker(info))
    table = pa.table([paths, sizes, markers], schema=LISTING).sort_by("path")
    versions.check_paths(table.column("path"), f"the listing of {src.base}")
    return table


def _marker(info: dict) -> str:
    """The store's own change marker: the ETag of an object store, else mtime in ns."""
    etag = info.get("ETag") or info.get("etag")
    if etag:
        return str(etag).strip('"')
    mtime = info.get("mtime")
    return str(round(float(mtime) * 1e9)) if mtime is not None else ""


def matching(listing: pa.Table, glob: str | None) -> pa.Table:
    """Rows whose path matches ``glob`` (fnmatch, where ``*`` also crosses ``/``; a leading
    ``**/`` also matches at the top level)."""
    if not glob:
        return listing
    patterns = [glob, glob[3:]] if glob.startswith("**/") else [glob]
    keep = [any(fnmatch.fnmatchcase(p, g) for g in patterns) for p in listing["path"].to_pylist()]
    return listing.filter(pa.array(keep, pa.bool_()))


def hash_one(src: Source, rel: str, size: int) -> bytes:
    """BLAKE3 of one file, read in ``versions.HASH_BLOCK`` ranges; a short read means it
    changed under us. A missing file raises ``KeyError``."""
    fs, path = src.store.fs, f"{src.store.root}/{rel}"
    h = hashing.hasher()
    offset = 0
    while offset < size:
        end = min(offset + versions.HASH_BLOCK, size)
        block = _call(
            src, "reading", rel, lambda o=offset, e=end: fs.cat_file(path, start=o, end=e)
        )
        if len(block) != end - offset:
            raise FileChangedError(
                f"{src.url(rel)} changed while cas read it (shorter than listed); rerun"
            )
        h.update(block)
        offset = end
    return h.digest()


def hash_checked(src: Source, rel: str, size: int) -> bytes:
    """:func:`hash_one`, with a file that vanished since the listing named as such."""
    try:
        return hash_one(src, rel, size)
    except KeyError:
        raise FileChangedError(f"{src.url(rel)} vanished while cas read it; rerun") from None


def hash_listing(
    src: Source,
    listing: pa.Table,
    jobs: int | None,
    progress: Progress,
    cluster: Cluster | None = None,
) -> pa.Table:
    """Entries (path, size, hash, marker) for a listing, ``jobs`` files at a time (None: the
    default, enough requests in flight to hide S3 latency on two cores), or on ``cluster``'s
    workers, which then read the files where they lie."""
    rows = list(zip(listing["path"].to_pylist(), listing["size"].to_pylist()))
    progress.start(f"hashing {src.base}", sum(s for _, s in rows))
    if cluster is not None:
        hashes = _hash_on(cluster, src, rows, progress)
    else:
        jobs = jobs or DEFAULT_JOBS
        hashes = []
        for (_, size), digest in zip(
            rows, bounded_map(lambda row: hash_checked(src, *row), rows, jobs, 4 * jobs)
        ):
            hashes.append(digest)
            progress.advance(size)
    progress.finish()
    return listing.append_column("hash", pa.array(hashes, pa.binary(32))).select(
        versions.CORPUS_SCHEMA.names
    )


def _hash_on(
    cluster: Cluster, src: Source, rows: list[tuple[str, int]], progress: Progress
) -> list[bytes]:
    """The hashes of ``rows``, in order, computed by the cluster's workers in batches."""
    from cas.ops.distribute import HashTask, batches, hash_corpus_task, run_windowed

    tasks = (
        HashTask(src.base, part.start, tuple(rows[part.start : part.stop]))
        for part in batches([size for _, size in rows])
    )
    hashes: list[bytes] = [b""] * len(rows)
    for start, found in run_windowed(cluster.executor, hash_corpus_task, tasks, cluster.window):
        hashes[start : start + len(found)] = found
        progress.advance(sum(size for _, size in rows[start : start + len(found)]))
    return hashes


# -- the operations ----------------------------------------------------------------------
def create(
    repo: Repo,
    pointer_arg: str,
    url: str,
    glob: str | None = None,
    jobs: int | None = None,
    progress: Progress | None = None,
    cluster: Cluster | None = None,
) -> CorpusResult:
    """Hash every file under ``url`` (matching ``glob``) into a first version; stage the
    pointer like ``cas add`` does. ``cluster``: hash on its workers."""
    target = repo.target(pointer_arg)
    if repo.pointer_exists(target):
        raise UsageError(f"{target.pointer} exists; run 'cas manifest append {target.pointer}'")
    src = open_source(url)
    listing = matching(list_files(src), glob)
    if listing.num_rows == 0:
        raise UsageError(f"no files under {src.base}" + (f" match {glob!r}" if glob else ""))
    entries = hash_listing(src, listing, jobs, progress or Silent(), cluster)
    version_id = versions.append(repo, None, entries, "corpus", src.base, glob)
    return _finish(repo, target, version_id, None)


def append(
    repo: Repo,
    pointer_arg: str,
    url: str | None = None,
    glob: str | None = None,
    jobs: int | None = None,
    allow_removals: bool = False,
    progress: Progress | None = None,
    cluster: Cluster | None = None,
) -> CorpusResult:
    """Add the files under ``url`` (default: the whole base) that the manifest lacks.

    Only recorded rows under ``url``'s prefix are read, and only their row groups: appending a
    new shard reads the footers of the existing segments and nothing else."""
    target = repo.target(pointer_arg)
    ptr, version = versions.resolve(repo, pointer_arg)
    if ptr.kind != "corpus" or version.base is None:
        raise UsageError(f"{pointer_arg} is not a corpus manifest; see 'cas manifest create'")
    base = open_source(version.base)
    prefix = _prefix_of(open_source(url).base if url else base.base, base.base)
    listing = list_files(base, prefix)
    existing = versions.collect(
        "corpus",
        ["path", "size", "marker"],
        (
            g.filter(pc.starts_with(g.column("path"), prefix)) if prefix else g
            for g in versions.scan(
                repo, version, ["path", "size", "marker"], versions.prefix_range(prefix)
            )
        ),
    )
    vanished, changed = _drift(existing, listing)
    if (vanished or changed) and not allow_removals:
        problems = [f"{p} (changed)" for p in changed] + [f"{p} (vanished)" for p in vanished]
        raise ConflictError(
            f"{ptr.kind} manifest {pointer_arg} is append-only but {len(problems)} recorded "
            f"files changed or vanished under {base.base}: {_list(problems)}; restore them, or "
            "pass --allow-removals to record the change",
            problems,
        )
    known = pc.is_in(listing.column("path"), value_set=existing.column("path"))
    fresh = matching(listing.filter(pc.invert(known)), glob or version.glob)
    redo = listing.filter(
        pc.is_in(listing.column("path"), value_set=pa.array(changed, pa.string()))
    )
    todo = pa.concat_tables([fresh, redo])
    if todo.num_rows == 0 and not vanished:
        return _finish(repo, target, ptr.manifest, ptr.manifest)
    entries = hash_listing(base, todo, jobs, progress or Silent(), cluster)
    if vanished or changed:
        drop = pa.array(vanished + changed, pa.string())
        version_id = versions.rewrite(repo, ptr.manifest, drop, entries)
    else:
        version_id = versions.append(repo, ptr.manifest, entries, glob=glob)
    result = _finish(repo, target, version_id, ptr.manifest)
    result.removed = vanished
    return result


def _prefix_of(url: str, base: str) -> str:
    if url == base:
        return ""
    if not url.startswith(base + "/"):
        raise UsageError(f"{url} is not under the manifest's base {base}; name a folder inside it")
    return url[len(base) + 1 :] + "/"


def _drift(existing: pa.Table, listing: pa.Table) -> tuple[list[str], list[str]]:
    """Recorded paths that vanished from the listing, and those whose size or marker changed
    (a marker only counts when both sides have one)."""
    idx = pc.index_in(existing.column("path"), value_set=listing.column("path"))
    vanished = existing.column("path").filter(pc.is_null(idx)).to_pylist()
    present = existing.filter(pc.is_valid(idx))
    at = idx.filter(pc.is_valid(idx))
    old_marker, new_marker = present.column("marker"), listing.column("marker").take(at)
    moved = pc.or_(
        pc.not_equal(present.column("size"), listing.column("size").take(at)),
        pc.and_(
            pc.and_(pc.not_equal(old_marker, ""), pc.not_equal(new_marker, "")),
            pc.not_equal(old_marker, new_marker),
        ),
    )
    return vanished, present.column("path").filter(moved).to_pylist()


def _list(items: list[str]) -> str:
    more = f" (+{len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more


def _finish(repo: Repo, target: Target, version_id: str, parent: str | None) -> CorpusResult:
    """Write and stage the pointer (no .gitignore: a corpus has no local data)."""
    version = versions.load_version(repo, version_id)
    before = versions.load_version(repo, parent) if parent else None
    with repo.lock():
        changed = repo.write_pointer(target, Pointer(version.kind, version_id))
        repo.git.stage([target.pointer])
    return CorpusResult(
        target.pointer,
        version_id,
        version.files - (before.files if before else 0),
        version.bytes - (before.bytes if before else 0),
        version.files,
        version.bytes,
        changed,
    )


def verify(
    repo: Repo,
    pointer_arg: str,
    sample: float = 1.0,
    seed: int = 0,
    jobs: int | None = None,
    rev: str | None = None,
    progress: Progress | None = None,
) -> VerifyResult:
    """Re-hash every recorded file, or a seeded random ``sample`` fraction of them (the same
    seed picks the same files), and report each that is missing, resized or changed."""
    if not 0 < sample <= 1:
        raise UsageError(f"--sample {sample}: give a fraction in (0, 1]")
    ptr, version = versions.resolve(repo, pointer_arg, rev)
    if ptr.kind != "corpus" or version.base is None:
        raise UsageError(f"{pointer_arg} is not a corpus manifest; 'cas status' checks local data")
    src = open_source(version.base)
    jobs = jobs or DEFAULT_JOBS
    picked = _sample(versions.dataset_of(repo, version), sample, seed)
    versions.check_paths(picked.column("path"), pointer_arg)
    rows = list(zip(*(picked[c].to_pylist() for c in ("path", "size", "hash"))))
    progress = progress or Silent()
    progress.start(f"verifying {src.base}", sum(r[1] for r in rows))

    def check(row: tuple[str, int, bytes]) -> str | None:
        rel, size, digest = row
        try:
            actual = _call(
                src, "checking", rel, lambda: int(src.store.fs.size(f"{src.store.root}/{rel}"))
            )
            if actual != size:
                return f"size changed ({size} -> {actual})"
            return None if hash_one(src, rel, size) == digest else "content changed"
        except KeyError:
            return "missing"

    result = VerifyResult(repo.target(pointer_arg).pointer, len(rows))
    for row, why in zip(rows, bounded_map(check, rows, jobs, 4 * jobs)):
        progress.advance(row[1])
        if why:
            result.drifted.append({"url": src.url(row[0]), "problem": why})
    progress.finish()
    return result


def _sample(dataset: ds.Dataset, fraction: float, seed: int) -> pa.Table:
    """Stream the manifest, keeping each row with probability ``fraction`` from one seeded
    generator: memory is bounded by the sample, not the corpus. Batches come in a fixed order,
    so a seed always picks the same files."""
    columns = ["path", "size", "hash"]
    if fraction >= 1:
        return dataset.to_table(columns=columns)
    rng = np.random.default_rng(seed)
    kept = (
        pa.Table.from_batches([b.filter(pa.array(rng.random(b.num_rows) < fraction))])
        for b in versions.iter_batches(dataset, columns)
    )
    return versions.collect("corpus", columns, kept)


def log(repo: Repo, pointer_arg: str, rev: str | None = None) -> list[dict]:
    """The versions behind a pointer, newest first: when, what each added, the totals."""
    ptr, _version = versions.resolve(repo, pointer_arg, rev)
    chain = list(versions.history(repo, ptr.manifest))
    out = []
    for i, (version_id, v) in enumerate(chain):
        parent = chain[i + 1][1] if i + 1 < len(chain) else None
        out.append(
            {
                "version": version_id,
                "created": v.created,
                "segments": len(v.segments),
                "files_added": v.files - (parent.files if parent else 0),
                "bytes_added": v.bytes - (parent.bytes if parent else 0),
                "files": v.files,
                "bytes": v.bytes,
            }
        )
    return out
