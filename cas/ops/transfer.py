"""Push, fetch, pull, verify and status against a remote (layout and order: docs/remotes.md).

The remote is a Store with the local store's key layout, so a pack travels as one object and
200,000 small files cost ~30 requests, not 200,000. What makes it safe:

- What a pointer needs (metadata objects, then chunks) is walked by :mod:`cas.ops.needs`, the
  one description push, fetch, verify, status, the hooks and gc share.
- Only missing objects move: what the remote holds is learned from one listing per prefix
  (``packs/``, ``index/``, ``manifests/``, ``versions/``, ``segments/``), never from a request per
  object.
- Push order keeps the remote consistent at every instant: every pack, then its index file, then
  (after all packs) the manifests and segments, then the versions, parents before children. An
  object on the remote therefore always has everything it names there, and a pointer that names
  it can be fetched; an interrupted push leaves only unreferenced objects, which the rerun does
  not send again.
- Nothing fetched is trusted: a whole pack is checked as ``cas fsck`` checks it (trailer, pack id,
  every chunk) in a temp file before it is renamed into the local store; a range of chunks is
  hashed chunk by chunk before it enters a new local pack; a manifest, version or segment is
  checked in a temp file by the function that checks it on every local read. A remote serving
  wrong bytes gets an error naming the object, and the local store is left as it was.
- Concurrency is a pool of ``jobs`` threads over blocking store calls: each holds at most one
  pack (streamed to or from a file) or one range in flight, so memory and open files stay bounded.
"""

from __future__ import annotations

import re
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from cas import hashing
from cas import remote as remote_config
from cas.clone import BLOCK
from cas.errors import (
    CasError,
    CorruptObjectError,
    ManifestError,
    ObjectMissingError,
    StorageError,
)
from cas.objects import (
    INDEX_MAGIC,
    Location,
    PackReader,
    checked_body,
    checked_index,
    decode_entries,
    encode_entries,
    index_key,
    pack_key,
)
from cas.ops.needs import (
    MetaObject,
    Need,
    chunks_of,
    counts,
    objects_of,
    pointer_needs,
    prefixes,
    require_local,
    root_of,
)
from cas.ops.remote_index import RemoteIndex, remote_index
from cas.parallel import TRANSFER_JOBS as DEFAULT_JOBS
from cas.parallel import bounded_map
from cas.progress import Progress, Silent

if TYPE_CHECKING:
    from cas.ops.checkout import CheckoutResult
    from cas.repo import Repo
    from cas.store.fsspec import FsspecStore

T = TypeVar("T")
R = TypeVar("R")

_OBJECT_NAME = re.compile("[0-9a-f]{64}")  # anything else under a prefix is not ours
_LISTED = ("manifests", "versions", "segments", "packs", "index")  # the prefixes RemoteView knows
LAYOUT_KEY = "cas-remote"
LAYOUT = b"cas-remote 1\n"
#: Fetch a whole pack when at least this share of its bytes is needed; else range GETs.
WHOLE_PACK_SHARE = 0.5
#: Adjacent chunks are read in one range GET of at most this many bytes.
MAX_RANGE = 8 * 1024 * 1024
#: Remote index files are immutable (named by their pack id), so they are cached in the local
#: store under this prefix and verified against the pack id once, when downloaded.
REMOTE_INDEX_CACHE = "remote-index"
#: What a message about a damaged remote object tells the user to run (see repair_remote).
REMOTE_REPAIR = "run 'cas push --repair' from a clone that holds it"
#: How a push that found a corrupt local pack ends its error: it uploaded nothing of that pack.
PUSH_FIX = (
    "nothing of it was uploaded: run 'cas fsck' to list the damage, then 'cas fetch --repair' "
    "to repair it from a remote that holds its chunks"
)


# -- results ---------------------------------------------------------------------------------------
@dataclass
class Traffic:
    """What crossed the network: the figures tests and benchmarks assert on."""

    requests: int = 0
    bytes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count(self, nbytes: int, requests: int = 1) -> None:
        with self._lock:
            self.requests += requests
            self.bytes += nbytes


@dataclass
class TransferResult:
    """What moved in either direction, and what it cost in requests and bytes."""

    remote: str
    url: str
    manifests: int = 0
    versions: int = 0
    segments: int = 0
    packs: int = 0
    runs: int = 0  # run records (cas.runs.transfer)
    requests: int = 0
    bytes: int = 0


@dataclass
class PushResult(TransferResult):
    indexes: int = 0
    packs_present: int = 0
    replaced: int = 0


@dataclass
class FetchResult(TransferResult):
    ranges: int = 0
    chunks: int = 0


@dataclass
class Problem:
    """One missing or corrupt remote object and the pointers (``rev:path``) that need it."""

    object: str
    problem: str
    needed_by: list[str] = field(default_factory=list)


@dataclass
class VerifyResult:
    remote: str
    url: str
    manifests: int = 0
    versions: int = 0
    segments: int = 0
    chunks: int = 0
    packs_checked: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class RemoteStatus:
    """``manifest`` is the manifest or version id the pointer names; ``pushed`` and
    ``manifest_local`` cover every metadata object it needs (a version's chain and segments)."""

    pointer: str
    manifest: str
    pushed: bool
    missing_chunks: int
    manifest_local: bool


def download_meta(
    repo: Repo, store: FsspecStore, obj: MetaObject, traffic: Traffic, keep: bool
) -> None:
    """Download a metadata object into a temp file and check it with the function that checks
    it on every local read; then rename it into the local store (``keep``) or drop it (a deep
    verify that already holds it). Wrong bytes raise naming the object and the remote."""
    from cas import manifest, versions  # lazily: imports pyarrow

    tmp = repo.local.temp_path()
    try:
        store.get_file(obj.key, tmp)
        traffic.count(tmp.stat().st_size)
        if obj.prefix == "manifests":
            manifest.decode(tmp.read_bytes(), obj.id)  # re-derives the id
        elif obj.prefix == "versions":
            versions.decode_version(tmp.read_bytes(), obj.id)
        else:
            versions.verify_segment_file(tmp, obj.id, obj.kind)
    except KeyError:
        tmp.unlink(missing_ok=True)
        raise ObjectMissingError(
            f"{obj} is not on {store.label}", object_id=obj.id, remote=store.remote
        ) from None
    except (CorruptObjectError, ManifestError) as err:
        tmp.unlink(missing_ok=True)
        raise type(err)(
            f"{obj.key} on {store.label} was refused, nothing was stored: {err}",
            object_id=obj.id,
            remote=store.remote,
        ) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if keep:
        repo.local.put_file(obj.key, tmp)
    else:
        tmp.unlink()


# -- what the remote holds -------------------------------------------------------------------------


class RemoteView:
    """The remote's objects from one listing per prefix, plus its chunk index on demand."""

    def __init__(self, repo: Repo, store: FsspecStore, traffic: Traffic, what: Sequence[str]):
        self.repo = repo
        self.store = store
        self.traffic = traffic
        self.manifests: set[str] = set()
        self.versions: set[str] = set()
        self.segments: set[str] = set()
        self.packs: set[str] = set()
        self.indexes: set[str] = set()
        self.has_layout = self._check_layout()
        self.list(what)
        self._index: RemoteIndex | None = None

    def list(self, what: Sequence[str]) -> None:
        """List these prefixes (``manifests``, ``versions``, ``segments``, ``packs``,
        ``index``): one paginated request series each, whatever the number of objects."""
        for prefix in what:
            self.learn(self.store.list(prefix + "/"))
            self.traffic.count(0)

    def learn(self, keys: Iterable[str]) -> None:
        """Record objects from keys already listed (remote gc lists with times and sizes)."""
        for key in keys:
            prefix, _, rest = key.partition("/")
            name = rest.rsplit("/", 1)[-1]
            if prefix in _LISTED and _OBJECT_NAME.fullmatch(name):
                self._listing(prefix).add(name)

    def _listing(self, prefix: str) -> set[str]:
        return {"manifests": self.manifests, "versions": self.versions, "segments": self.segments,
                "packs": self.packs, "index": self.indexes}[prefix]  # fmt: skip

    def has(self, obj: MetaObject) -> bool:
        """Whether the listing of the object's prefix named it."""
        return obj.id in self._listing(obj.prefix)

    def _check_layout(self) -> bool:
        """False for a remote nothing was pushed to yet; refuses a layout from a newer cas."""
        try:
            data = self.store.get(LAYOUT_KEY)
        except KeyError:
            return False
        finally:
            self.traffic.count(0)
        if data != LAYOUT:
            raise StorageError(
                f"{self.store.label} has layout {data[:40]!r}, which this cas does not know; "
                "upgrade cas"
            )
        return True

    def index(self, jobs: int) -> RemoteIndex:
        """Which remote pack holds a chunk, asked in batches about the chunks a command handles:
        the remote's cached chunk index (:mod:`cas.ops.remote_index`), brought level with the
        listing of ``index/`` (list it, and ``packs/``, first). Index files of packs listed since
        the last command come from the local store or are downloaded, ``jobs`` at a time, and
        verified once; an up-to-date cache downloads nothing."""
        if self._index is None:

            def bodies(packs: list[str]) -> Iterable[tuple[str, memoryview]]:
                return bounded_map(lambda p: (p, self.index_body(p)), packs, workers=jobs,
                                   window=2 * max(1, jobs))  # fmt: skip

            self._index = remote_index(self.repo.local, self.store.url, self.indexes,
                                       self.packs, bodies)  # fmt: skip
        return self._index

    def index_of(self, pack_id: str) -> list[tuple[bytes, int, int]]:
        """A remote pack's entries (see :meth:`index_body`)."""
        return decode_entries(self.index_body(pack_id), index_key(pack_id))

    def index_body(self, pack_id: str) -> memoryview:
        """A remote pack's index entries: from a local index file of the same pack id or the
        cache of remote index files when one passes the check, else downloaded, checked and
        cached."""
        local = self.repo.local
        for key in (index_key(pack_id), f"{REMOTE_INDEX_CACHE}/{pack_id}"):
            try:
                return checked_body(local.get(key), pack_id, key, "")
            except (KeyError, CorruptObjectError):
                continue  # a damaged local copy: the remote's file decides
        data = self.store.get(index_key(pack_id))
        self.traffic.count(len(data))
        body = checked_body(data, pack_id, f"{index_key(pack_id)} on {self.store.label}",
                            REMOTE_REPAIR)  # fmt: skip
        cached = f"{REMOTE_INDEX_CACHE}/{pack_id}"
        local.delete(cached)  # a damaged cached copy is replaced
        local.put_bytes(cached, data)
        return body


def map_jobs(fn: Callable[[T], R], items: Iterable[T], jobs: int) -> list[R]:
    """Run ``fn`` over ``items`` on ``jobs`` threads; the first error cancels the rest."""
    items = list(items)
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="cas-net") as pool:
        futures = [pool.submit(fn, item) for item in items]
        try:
            return [f.result() for f in futures]
        finally:
            for f in futures:
                f.cancel()


# -- push --------------------------------------------------------------------------------------
def push(
    repo: Repo,
    targets: Sequence[str | Path] = (),
    revs: Sequence[str | None] = (),
    all_commits: bool = False,
    remote: str | None = None,
    jobs: int = DEFAULT_JOBS,
    progress: Progress | None = None,
    needs: list[Need] | None = None,
    repair: bool = False,
) -> PushResult:
    """Send what the pointers need and the remote lacks: packs + index files, then manifests
    and segments, then versions (parents first). ``needs`` (the pre-push hook's pointer blobs)
    replaces ``targets``, ``revs`` and ``all_commits``. ``repair`` first replaces what the
    pointers need that the remote serves damaged (:func:`_repair_remote`)."""
    progress = progress or Silent()
    spec = remote_config.resolve(repo, remote)
    store = spec.open()
    traffic = Traffic()
    result = PushResult(spec.name, spec.url)
    store.clean_tmp()  # a file:// remote: what a killed push left in tmp/
    if needs is None:
        needs = pointer_needs(repo, targets, revs, all_commits)
    from cas.runs import transfer as runs_transfer  # the run records: a step of their own

    needs = [*needs, *runs_transfer.output_needs(repo)]
    if repair:
        result.replaced = _repair_remote(repo, spec, store, needs, jobs, traffic)
    view = RemoteView(repo, store, traffic, prefixes(needs))
    where: dict[MetaObject, str] = {}  # object the remote lacks -> first pointer needing it
    walked: set[MetaObject] = set()  # --all-commits: most commits repeat the same pointers
    for need in needs:
        if root_of(need) in walked or view.has(root_of(need)):
            continue  # on the remote, an object has all it names there too (push order)
        walked.add(root_of(need))
        for obj in objects_of(repo, need, require_local(repo, need.where)):
            if not view.has(obj):
                where.setdefault(obj, need.where)
    to_send = list(where)  # push order: what an object names comes before it
    if to_send:  # an up-to-date remote costs the layout marker and one listing per prefix
        view.list(("packs", "index"))
        local_index = repo.objects.index
        uncovered: dict[bytes, str] = {}  # chunk -> pointer needing it, not yet on the remote
        for obj in to_send:
            for cid in chunks_of(repo, [obj]):
                loc = local_index.get(cid)
                if loc is None or loc.pack not in view.packs or loc.pack not in view.indexes:
                    uncovered.setdefault(cid, where[obj])
        if uncovered and (view.packs - set(repo.objects.pack_ids())):
            # After a partial pull, a chunk may be on the remote in a pack this clone lacks.
            lacking = view.index(jobs).missing(uncovered)
            uncovered = {c: w for c, w in uncovered.items() if c in lacking}
        absent = [(c, w) for c, w in uncovered.items() if c not in local_index]
        if absent:
            cid, need = absent[0]
            raise ObjectMissingError(
                f"{len(absent)} chunks that {need} needs (e.g. {cid.hex()}) are neither in the "
                f"local store nor on remote '{spec.name}'; push from the clone that added them"
            )
        packs = sorted({local_index[c].pack for c in uncovered})
        result.packs_present = len([p for p in packs if p in view.packs])
        if not view.has_layout:
            store.put_bytes(LAYOUT_KEY, LAYOUT)
            traffic.count(len(LAYOUT))
        total = sum(repo.local.size(pack_key(p)) for p in packs if p not in view.packs)
        progress.start(f"pushing to {spec.name}", total)
        lock = threading.Lock()

        def send_pack(pack_id: str) -> None:
            path = repo.local.path(pack_key(pack_id))
            sent, _index = send_local_pack(store, path, pack_id, pack_id not in view.packs,
                                   pack_id not in view.indexes, traffic)  # fmt: skip
            with lock:
                result.packs += pack_id not in view.packs
                result.indexes += pack_id not in view.indexes
            progress.advance(sent)

        map_jobs(send_pack, packs, jobs)
        progress.finish()

        def send(obj: MetaObject) -> None:
            path = repo.local.path(obj.key)
            size = path.stat().st_size
            store.put_file(obj.key, path)
            traffic.count(size)

        # Every chunk they name is on the remote now; versions go last, one at a time in push
        # order, since a version names its segments and its parent.
        map_jobs(send, [o for o in to_send if o.prefix != "versions"], jobs)
        for obj in to_send:
            if obj.prefix == "versions":
                send(obj)
        result.manifests, result.versions, result.segments = counts(to_send)
    result.runs = runs_transfer.push_runs(repo, store, traffic)  # after the outputs they name
    result.requests, result.bytes = traffic.requests, traffic.bytes
    return result


def _repair_remote(
    repo: Repo,
    spec: remote_config.Remote,
    store: FsspecStore,
    needs: list[Need],
    jobs: int,
    traffic: Traffic,
) -> int:
    """Overwrite each remote object the pointers need that fails its check (what ``cas verify
    --deep`` reports corrupt) with the local copy of the same id, itself verified first; how
    many were replaced. Index files come first: a wrong one would stop the deep check. Objects
    the remote lacks are left to the push that follows. A PUT replaces an object whole, so a
    kill -9 leaves the damaged copy or the sound one, and the rerun completes."""
    view = RemoteView(repo, store, traffic, ("index",))
    replaced = 0
    for pack_id in sorted(view.indexes & set(repo.objects.pack_ids())):
        key = index_key(pack_id)
        data = store.get(key)
        traffic.count(len(data))
        try:
            checked_index(data, pack_id, key, "")
        except CorruptObjectError:
            entries = repo.objects.pack_entries(pack_id)
            store.put_bytes(key, INDEX_MAGIC + encode_entries(entries))
            repo.local.delete(f"{REMOTE_INDEX_CACHE}/{pack_id}")
            replaced += 1
    found = verify(repo, remote=spec.name, deep=True, jobs=jobs, needs=needs)
    for problem in found.problems:
        if not problem.problem.startswith("corrupt"):
            continue  # missing: the push sends it
        prefix, _, rest = problem.object.partition("/")
        object_id = rest.rsplit("/", 1)[-1]
        path = repo.local.path(problem.object)
        if prefix == "packs":
            sound = path.exists() and _sound_pack(path, object_id)
        else:
            sound = path.exists() and _local_meta_ok(repo, MetaObject(prefix, object_id))
        if not sound:
            raise CorruptObjectError(
                f"{problem.object} on remote '{spec.name}' is damaged and this clone holds no "
                f"sound copy; {REMOTE_REPAIR}",
                object_id=object_id,
                remote=spec.name,
            )
        store.put_file(problem.object, path)
        traffic.count(path.stat().st_size)
        replaced += 1
    return replaced


def _sound_pack(path: Path, pack_id: str) -> bool:
    try:
        _verify_pack_file(path, pack_id, "the local store")
    except CorruptObjectError:
        return False
    return True


def send_local_pack(
    store: FsspecStore, path: Path, pack_id: str, pack: bool, index: bool, traffic: Traffic
) -> int:
    """Upload a local pack (if ``pack``) streamed through the verifier, so what leaves is what
    was checked, then (if ``index``) its index file built from the checked trailer, never the
    local index file, which nothing proves matches the pack; only after its pack, so a remote
    index never names a pack that is not there. Returns the pack bytes sent and the index."""
    with PackReader(path, pack_id, "in the local store", PUSH_FIX) as reader:
        if pack:
            store.put_reader(pack_key(pack_id), reader, reader.size)
            traffic.count(reader.size)
        data = INDEX_MAGIC + encode_entries(reader.entries)
        if index:
            store.put_bytes(index_key(pack_id), data)
            traffic.count(len(data))
        return (reader.size if pack else 0), data


class Staging:
    """The remote side of ``cas add --to-remote``: the add's :class:`PackWriter` hands each
    sealed pack to :meth:`upload` (pack, then index, as push sends them) and deletes it locally;
    :meth:`finish` pushes the manifest (and any local pack a killed earlier run left), before the
    pointer names it. A chunk the remote already holds (in a listed pack with an index) is not
    stored again."""

    def __init__(self, repo: Repo, remote: str | None, jobs: int = DEFAULT_JOBS) -> None:
        self.repo = repo
        self.spec = remote_config.resolve(repo, remote)
        self.store = self.spec.open()
        self.traffic = Traffic()
        self.store.clean_tmp()
        view = RemoteView(repo, self.store, self.traffic, ("packs", "index"))
        if not view.has_layout:
            self.store.put_bytes(LAYOUT_KEY, LAYOUT)
        self._remote = view.index(jobs)
        self.packs = 0

    def has_chunk(self, chunk_id: bytes) -> bool:
        return chunk_id in self._remote

    def upload(self, pack_id: str, path: Path) -> None:
        _sent, index = send_local_pack(self.store, path, pack_id, True, True, self.traffic)
        # what a later push or fetch reads of the remote's index, without downloading it
        self.repo.local.put_bytes(f"{REMOTE_INDEX_CACHE}/{pack_id}", index)
        self.packs += 1

    def finish(self, need: Need) -> PushResult:
        return push(self.repo, remote=self.spec.name, needs=[need])


# -- fetch ---------------------------------------------------------------------------------------
def fetch(
    repo: Repo,
    targets: Sequence[str | Path] = (),
    revs: Sequence[str | None] = (),
    subpath: str | None = None,
    remote: str | None = None,
    jobs: int = DEFAULT_JOBS,
    progress: Progress | None = None,
    repair: bool = False,
) -> FetchResult:
    """Bring the metadata objects of the pointers (manifests; versions with their chains and
    segments) and the chunks they need (only those under ``subpath`` of each target when given)
    into the local store. ``repair`` also checks the local copies of what the pointers need and
    replaces each one that fails its check from the remote (:func:`_repair_packs`)."""
    spec = remote_config.resolve(repo, remote)
    store = spec.open()
    traffic = Traffic()
    result = FetchResult(spec.name, spec.url)
    needs = pointer_needs(repo, targets, revs)
    fetched: list[MetaObject] = []

    def bring(objects: Sequence[tuple[MetaObject, str]]) -> None:
        """Download (verified) the objects the local store lacks, each with its pointer."""
        missing = {
            o: w
            for o, w in objects
            if not repo.local.exists(o.key) or (repair and not _local_meta_ok(repo, o))
        }

        def get(obj: MetaObject) -> None:
            try:
                download_meta(repo, store, obj, traffic, keep=True)
            except ObjectMissingError:
                raise ObjectMissingError(
                    f"{obj} that {missing[obj]} needs is not on remote '{spec.name}'; "
                    "push it from the clone that added it",
                    object_id=obj.id,
                    remote=spec.name,
                ) from None

        map_jobs(get, missing, jobs)
        fetched.extend(missing)

    bring([(root_of(n), n.where) for n in needs])  # every pointer's root at once, in parallel
    needed: dict[bytes, str] = {}
    for need in needs:
        objects = objects_of(repo, need, lambda objs, w=need.where: bring([(o, w) for o in objs]))
        for cid in chunks_of(repo, objects, subpath):
            needed.setdefault(cid, need.where)
    result.manifests, result.versions, result.segments = counts(fetched)
    if repair:
        _repair_packs(repo, spec, store, needed, jobs, traffic, result)
    missing = repo.objects.missing_chunks(needed)
    if missing:
        _fetch_chunks(repo, spec, store, missing, jobs, progress or Silent(), traffic, result,
                      lambda cid: needed[cid])  # fmt: skip
    from cas.runs import transfer as runs_transfer

    result.runs = runs_transfer.fetch_runs(repo, store, traffic)
    result.requests, result.bytes = traffic.requests, traffic.bytes
    return result


def fetch_chunks(
    repo: Repo,
    chunk_ids: Iterable[bytes],
    remote: str | None = None,
    progress: Progress | None = None,
    jobs: int = DEFAULT_JOBS,
    needed_by: str | None = None,
) -> FetchResult:
    """Fetch chunks the local store lacks from a remote (the default one unless named): the
    on-demand path of checkout and the training adapters. Raises ObjectMissingError naming
    ``needed_by`` when no remote is configured or the remote lacks a chunk."""
    missing = repo.objects.missing_chunks(chunk_ids)
    who = f"that {needed_by} needs " if needed_by else ""
    if remote is None and remote_config.default_name(repo) is None:
        if not missing:
            return FetchResult("", "")
        raise ObjectMissingError(
            f"{len(missing)} chunks {who}are not in the local store and no remote is "
            "configured; run `cas remote add origin s3://bucket/prefix`, then 'cas pull'"
        )
    spec = remote_config.resolve(repo, remote)
    result = FetchResult(spec.name, spec.url)
    if missing:
        traffic = Traffic()
        _fetch_chunks(repo, spec, spec.open(), missing, jobs, progress or Silent(), traffic,
                      result, lambda _cid: needed_by or "the caller")  # fmt: skip
        result.requests, result.bytes = traffic.requests, traffic.bytes
    return result


def _fetch_chunks(
    repo: Repo,
    spec: remote_config.Remote,
    store: FsspecStore,
    missing: set[bytes],
    jobs: int,
    progress: Progress,
    traffic: Traffic,
    result: FetchResult,
    needed_by: Callable[[bytes], str],
    replace: bool = False,
) -> None:
    """``replace``: the chunks are in the local index but in a damaged pack, so new copies are
    stored although the index knows them."""
    view = RemoteView(repo, store, traffic, ("packs", "index"))
    remote_chunks = view.index(jobs).locate(missing)
    unknown = [c for c in missing if c not in remote_chunks]
    if unknown:
        raise ObjectMissingError(
            f"{len(unknown)} chunks that {needed_by(unknown[0])} needs (e.g. {unknown[0].hex()}) "
            f"are not on remote '{spec.name}' either; push them from the clone that added them"
        )
    by_pack: dict[str, list[tuple[bytes, Location]]] = defaultdict(list)
    for cid in missing:
        loc = remote_chunks[cid]
        by_pack[loc.pack].append((cid, loc))
    # the chunk bytes of each pack a chunk comes from (its index file, kept locally)
    pack_bytes = {p: sum(n for _c, _o, n in view.index_of(p)) for p in by_pack}
    wanted = {p: sum(loc.length for _, loc in items) for p, items in by_pack.items()}
    whole = [p for p in sorted(by_pack) if wanted[p] >= WHOLE_PACK_SHARE * pack_bytes[p]]
    ranges = [r for p in sorted(by_pack) if p not in whole for r in _coalesce(by_pack[p])]
    total = sum(pack_bytes[p] for p in whole) + sum(r[2] for r in ranges)
    progress.start(f"fetching from {spec.name}", total)

    def get_pack(pack_id: str) -> None:
        size = _download_pack(repo, store, pack_id)
        traffic.count(size)
        progress.advance(size)

    map_jobs(get_pack, whole, jobs)
    result.packs += len(whole)
    result.chunks += sum(len(by_pack[p]) for p in whole)

    def get_range(
        item: tuple[str, int, int, list[tuple[bytes, Location]]],
    ) -> list[tuple[bytes, bytes]]:
        pack_id, start, length, chunks = item
        data = store.get_range(pack_key(pack_id), start, length)
        traffic.count(length)
        out = []
        for cid, loc in chunks:
            piece = data[loc.offset - start : loc.offset - start + loc.length]
            if hashing.digest(piece) != cid:
                raise CorruptObjectError(
                    f"chunk {cid.hex()} in pack {pack_id} on {store.label} has wrong bytes; "
                    f"nothing was stored; {REMOTE_REPAIR}"
                )
            out.append((cid, piece))
        return out

    if ranges:
        with repo.objects.writer(repack=replace) as writer:  # one new pack, on this thread
            for chunk_list in bounded_map(get_range, ranges, workers=jobs, window=2 * jobs):
                for cid, piece in chunk_list:
                    writer.add(cid, piece)
                    result.chunks += 1
                progress.advance(sum(len(p) for _, p in chunk_list))
        result.ranges += len(ranges)
    progress.finish()


def _coalesce(
    items: list[tuple[bytes, Location]],
) -> list[tuple[str, int, int, list[tuple[bytes, Location]]]]:
    """Adjacent chunks of one pack become one range GET (up to MAX_RANGE); a gap starts a new
    one, so only the needed bytes are read, bar the padding (under BLOCK) that aligns a large
    file's chunks."""
    out: list[tuple[str, int, int, list[tuple[bytes, Location]]]] = []
    for cid, loc in sorted(items, key=lambda item: item[1].offset):
        if out:
            pack, start, length, chunks = out[-1]
            end = loc.offset + loc.length
            if 0 <= loc.offset - (start + length) < BLOCK and end - start <= MAX_RANGE:
                out[-1] = (pack, start, end - start, [*chunks, (cid, loc)])
                continue
        out.append((loc.pack, loc.offset, loc.length, [(cid, loc)]))
    return out


def _verify_pack_file(path: Path, pack_id: str, where: str) -> list[tuple[bytes, int, int]]:
    """Check a downloaded pack as ``cas fsck`` does (trailer, pack id, every chunk), one piece
    at a time, so a 32 MiB pack is never whole in memory."""
    fix = f"nothing was stored; {REMOTE_REPAIR}"
    with PackReader(path, pack_id, f"on {where}", fix) as reader:
        return reader.check_all()


def _download_pack(repo: Repo, store: FsspecStore, pack_id: str) -> int:
    """Stream a remote pack into a local temp file, verify it, then rename it into the store."""
    local = repo.local
    tmp = local.temp_path()
    try:
        store.get_file(pack_key(pack_id), tmp)
        entries = _verify_pack_file(tmp, pack_id, store.label)
        size = tmp.stat().st_size
    except KeyError:
        tmp.unlink(missing_ok=True)
        raise ObjectMissingError(
            f"pack {pack_id} is listed on {store.label} but could not be read; rerun"
        ) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    local.put_file(pack_key(pack_id), tmp)  # replaces a damaged local copy (fetch --repair)
    try:
        checked_index(local.get(index_key(pack_id)), pack_id, index_key(pack_id), "")
    except (KeyError, CorruptObjectError):
        local.delete(index_key(pack_id))
        local.put_bytes(index_key(pack_id), INDEX_MAGIC + encode_entries(entries))
    repo.objects.register(pack_id, entries)
    return size


def _local_meta_ok(repo: Repo, obj: MetaObject) -> bool:
    """Whether the local copy of a metadata object passes the check every read makes."""
    from cas import manifest, versions  # lazily: imports pyarrow

    path = repo.local.path(obj.key)
    try:
        if obj.prefix == "manifests":
            manifest.decode(path.read_bytes(), obj.id)
        elif obj.prefix == "versions":
            versions.decode_version(path.read_bytes(), obj.id)
        else:
            versions.verify_segment_file(path, obj.id, obj.kind or None)
    except (CorruptObjectError, ManifestError):
        return False
    return True


def _repair_packs(
    repo: Repo,
    spec: remote_config.Remote,
    store: FsspecStore,
    needed: dict[bytes, str],
    jobs: int,
    traffic: Traffic,
    result: FetchResult,
) -> None:
    """Replace each local pack that holds a needed chunk and fails the check fsck makes (or
    whose chunk list cannot be verified at all) from the remote. A pack the remote holds under
    the same id is downloaded whole, verified, and renamed over the damaged one. Otherwise the
    pack's damaged chunks are fetched from whatever remote packs hold them, its sound chunks are
    copied (verified) into a new pack, and only once both are sealed is the damaged pack
    deleted: a kill -9 at any point leaves the damaged pack or its replacement, and the rerun
    completes."""
    objects = repo.objects
    damaged: dict[str, list[tuple[bytes, int, int]] | None] = {}
    for pack_id in objects.pack_ids():
        try:
            entries: list[tuple[bytes, int, int]] | None = objects.pack_entries(pack_id)
        except CorruptObjectError:
            entries = None  # neither its index nor its trailer is sound
        # every pack holding a needed chunk, not only the copy the index names: a rerun after a
        # kill may find the damaged pack beside its sealed replacement
        if entries is not None and not any(cid in needed for cid, _o, _n in entries):
            continue
        if entries is None or not _sound_pack(repo.local.path(pack_key(pack_id)), pack_id):
            damaged[pack_id] = entries
    if not damaged:
        return
    view = RemoteView(repo, store, traffic, ("packs", "index"))
    for pack_id, entries in damaged.items():
        if pack_id in view.packs:
            traffic.count(_download_pack(repo, store, pack_id))
            result.packs += 1
            continue
        if entries is None:
            raise CorruptObjectError(
                f"local pack {pack_id} is damaged beyond reading its chunk list and remote "
                f"'{spec.name}' does not hold it; run 'cas fsck', then delete it and 'cas fetch'"
            )
        key = pack_key(pack_id)
        sound: list[tuple[bytes, bytes]] = []
        bad: set[bytes] = set()
        for cid, off, length in entries:
            piece = repo.local.get_range(key, off, length)
            if hashing.digest(piece) == cid:
                sound.append((cid, piece))
            else:
                bad.add(cid)
        if bad:
            where = f"damaged local pack {pack_id}"
            _fetch_chunks(repo, spec, store, bad, jobs, Silent(), traffic, result,
                          lambda cid, w=where: needed.get(cid, w), replace=True)  # fmt: skip
        with objects.writer(repack=True) as writer:
            for cid, piece in sound:
                writer.add(cid, piece)
        objects.close()
        repo.local.delete(index_key(pack_id))
        repo.local.delete(key)


# -- pull ----------------------------------------------------------------------------------------
def pull(
    repo: Repo,
    targets: Sequence[str | Path] = (),
    rev: str | None = None,
    subpath: str | None = None,
    remote: str | None = None,
    jobs: int = DEFAULT_JOBS,
    force: bool = False,
    progress: Progress | None = None,
) -> tuple[FetchResult, list[CheckoutResult]]:
    """Fetch, then check out (only ``subpath`` of each target when given)."""
    fetched = fetch(repo, targets, [rev], subpath, remote, jobs, progress)
    if subpath:
        paths: list[str | Path] = [repo.root / t.path / subpath for t in repo.targets(targets, rev)]
    else:
        paths = [repo.root / t.pointer for t in repo.targets(targets, rev)] if targets else []
    # with several targets, --path may name a subtree only some of them hold
    several = len(paths) > 1
    checked = repo.checkout(
        paths, rev=rev, force=force, progress=progress, subtree_required=not several
    )
    return fetched, checked


# -- verify and status ---------------------------------------------------------------------------
def verify(
    repo: Repo,
    targets: Sequence[str | Path] = (),
    revs: Sequence[str | None] = (),
    remote: str | None = None,
    deep: bool = False,
    jobs: int = DEFAULT_JOBS,
    needs: list[Need] | None = None,
) -> VerifyResult:
    """Whether every object the pointers reach is on the remote: metadata objects and packs
    listed, every chunk in some remote index whose pack is there. A metadata object that must be
    read (a manifest, a version, an ``append`` segment) and is not local is downloaded, checked
    and kept, as fetch would. ``deep`` downloads and re-hashes everything the pointers use.
    ``needs`` (push --repair's pointers) replaces ``targets`` and ``revs``."""
    spec = remote_config.resolve(repo, remote)
    store = spec.open()
    traffic = Traffic()
    result = VerifyResult(spec.name, spec.url)
    if needs is None:
        needs = pointer_needs(repo, targets, revs)
    view = RemoteView(repo, store, traffic, ("packs", "index", *prefixes(needs)))
    problems: dict[str, Problem] = {}

    def report(obj: str, problem: str, where: str) -> None:
        entry = problems.setdefault(obj, Problem(obj, problem))
        if where not in entry.needed_by:
            entry.needed_by.append(where)

    def check(objects: list[MetaObject], where: str) -> None:
        """Report what the remote lacks or serves corrupt; bring in what must be read."""

        def problem(obj: MetaObject) -> str | None:
            if not view.has(obj):
                return "missing"
            local = repo.local.exists(obj.key)
            read = obj.prefix != "segments" or obj.kind == "append"  # rows name chunks
            if deep or (read and not local):
                try:
                    download_meta(repo, store, obj, traffic, keep=not local)
                except CasError as err:
                    return f"corrupt: {err}"
            return None

        for obj, found in zip(objects, map_jobs(problem, objects, jobs)):
            if found:
                report(obj.key, found, where)

    remote_index = view.index(jobs)
    local_index = repo.objects.index
    used_packs: set[str] = set()
    reached: dict[str, list[MetaObject]] = {}  # pointer -> the objects its walk could read
    for need in needs:
        try:
            objects = objects_of(repo, need, lambda objs, w=need.where: check(objs, w))
            chunks = list(chunks_of(repo, objects))
        except ObjectMissingError:
            continue  # missing on both sides: the object itself is reported
        except CasError as err:  # corrupt in the local store, and the remote copy not needed
            report(root_of(need).key, f"unreadable: {err}", need.where)
            continue
        reached[need.where] = objects
        manifests, versions, segments = counts(objects)
        result.manifests += manifests
        result.versions += versions
        result.segments += segments
        held = remote_index.locate(chunks)
        unheld = remote_index.locate((c for c in chunks if c not in held), listed=True)
        for cid in chunks:
            result.chunks += 1
            loc = held.get(cid)
            if loc is not None:
                used_packs.add(loc.pack)
                continue
            local = local_index.get(cid)
            loc = unheld.get(cid)  # an index file names it, but its pack is not listed
            if loc is not None:
                report(pack_key(loc.pack), "missing (its index file is there)", need.where)
            elif local is not None:
                report(pack_key(local.pack), "missing", need.where)
            else:
                report(f"chunk {cid.hex()}", "in no remote index", need.where)
    if deep:
        users: dict[str, list[str]] = defaultdict(list)
        for where, objects in reached.items():
            for loc in remote_index.locate(chunks_of(repo, objects)).values():
                if where not in users[loc.pack]:
                    users[loc.pack].append(where)

        def check_pack(pack_id: str) -> str | None:
            tmp = repo.local.temp_path()
            try:
                store.get_file(pack_key(pack_id), tmp)
                traffic.count(tmp.stat().st_size)
                _verify_pack_file(tmp, pack_id, store.label)
            except CorruptObjectError as err:
                return str(err)
            finally:
                tmp.unlink(missing_ok=True)
            return None

        checked = sorted(used_packs)
        for pack_id, error in zip(checked, map_jobs(check_pack, checked, jobs)):
            result.packs_checked += 1
            if error:
                for where in users[pack_id]:
                    report(pack_key(pack_id), f"corrupt: {error}", where)
    result.problems = list(problems.values())
    return result


def remote_status(
    repo: Repo, targets: Sequence[str | Path] = (), remote: str | None = None
) -> list[RemoteStatus]:
    """Per worktree pointer: are its metadata objects on the remote (pushed), and how many
    chunks it needs are not in the local store (to fetch). One listing per prefix; no object is
    downloaded."""
    spec = remote_config.resolve(repo, remote)
    needs = pointer_needs(repo, targets, [None])
    view = RemoteView(repo, spec.open(), Traffic(), prefixes(needs))
    out = []
    for need in needs:
        try:
            objects = objects_of(repo, need, require_local(repo, need.where))
        except ObjectMissingError:  # not fetched: the walk stops at the first absent object
            local, pushed, missing = False, view.has(root_of(need)), 0
        else:
            local, pushed = True, all(view.has(o) for o in objects)
            missing = len(repo.objects.missing_chunks(set(chunks_of(repo, objects))))
        out.append(RemoteStatus(need.pointer, need.manifest, pushed, missing, local))
    return out
