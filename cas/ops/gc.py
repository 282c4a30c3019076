"""``cas gc``: delete what no root reaches, locally or (explicitly) on a remote.

Live is what the pointers of :mod:`cas.ops.roots` need, walked by :mod:`cas.ops.needs` (the walk
push and verify use). A root whose objects are missing keeps what of it could be read and is
reported (``unresolved``); gc never guesses. What some commit reaches (any ref or reflog) beyond
the scope stays live unless a configured remote's listing shows it there (``delete_unpushed``
overrides): the scope chooses what may be dropped locally, never what may be lost.

What a pack holds comes from :meth:`ObjectStore.pack_entries` (index file or trailer, verified
against the pack id), never from an index file alone: a corrupt index file must not make live
chunks look absent. A live chunk in no local pack and on no remote stops gc before it deletes.

Local gc holds the store lock exclusively, so no add, checkout or fetch runs meanwhile. It deletes
dead metadata objects first (a stat cache trusting a manifest checks that it still exists), then
packs: a pack with no live chunk goes (index file first: a pack without one is re-indexed from
its trailer, never left half-known); a pack whose dead share is at least ``REPACK_DEAD_SHARE`` is
rewritten (its live chunks copied, each verified, into new fsynced packs, then the old one is
deleted); a pack mostly live stays, and its dead bytes are reported as ``left``. A kill -9 at any
point leaves extra objects, never a missing one.

Remote gc cannot lock other machines out, so it is made safe by time, in two runs: a run deletes
only objects that runs have found unused continuously for at least ``grace`` and that were not
modified within ``grace``; what is unused but not yet due is recorded, with the time it was first
found unused, in a *mark* (``gc/<time>-<id>`` on the remote, docs/format.md). A push from
another machine that uploaded an object, or relied on one already there, is therefore safe as
long as its commits reach the Git remote within the grace period. Packs without an index file
(an interrupted push that a rerun will complete) are never deleted; partly live remote packs are
kept whole (repacking would mean downloading them).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cas import remote as remote_config
from cas.errors import CasError, ObjectMissingError
from cas.objects import index_key, manifest_key, pack_key, segment_key, version_key
from cas.ops import roots as roots_op
from cas.ops.needs import PREFIXES, MetaObject, Need, chunks_of, objects_of, root_of
from cas.ops.roots import Scope
from cas.ops.transfer import DEFAULT_JOBS, RemoteView, Traffic, download_meta, map_jobs

if TYPE_CHECKING:
    from cas.repo import Repo
    from cas.store.fsspec import FsspecStore

#: A pack at least this share dead is rewritten; below it, its dead bytes wait for more company.
REPACK_DEAD_SHARE = 0.2
MARK_PREFIX = "gc/"
MARK_HEADER = "cas-gc-mark 1"
_BATCH = 256  # chunks read per batch while repacking


@dataclass
class GcResult:
    """What was (with ``dry_run``: would be) deleted, and how many bytes that frees."""

    dry_run: bool
    roots: int = 0
    live_chunks: int = 0
    manifests: int = 0
    versions: int = 0
    segments: int = 0
    packs_deleted: int = 0
    packs_repacked: int = 0
    chunks_deleted: int = 0
    bytes_freed: int = 0
    bytes_left: int = 0
    unresolved: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    kept_unpushed: int = 0
    remote_errors: list[str] = field(default_factory=list)


@dataclass
class RemoteGcResult(GcResult):
    remote: str = ""
    url: str = ""
    grace_seconds: float = 0
    marked: int = 0
    young: int = 0
    unindexed_packs: int = 0


@dataclass
class _Live:
    keys: set[str] = field(default_factory=set)
    chunks: set[bytes] = field(default_factory=set)


def _live(
    repo: Repo,
    needs: list[Need],
    fetch: Callable[[MetaObject], None] | None,
    result: GcResult,
) -> _Live:
    """Every metadata key and chunk the roots need. Objects missing locally are fetched with
    ``fetch`` (remote gc) or, locally, mark their root unresolved: what was read stays live."""
    live = _Live()
    walked: set[MetaObject] = set()
    for need in needs:
        if root_of(need) in walked:
            continue
        walked.add(root_of(need))
        seen: list[MetaObject] = []

        def ensure(
            objects: list[MetaObject], where: str = need.where, seen: list[MetaObject] = seen
        ) -> None:
            for obj in objects:
                if not repo.local.exists(obj.key):
                    if fetch is None:
                        raise ObjectMissingError(f"{obj} that {where} needs is not local")
                    fetch(obj)
                seen.append(obj)

        try:
            objects = objects_of(repo, need, ensure)
        except ObjectMissingError as err:
            result.unresolved.append(f"{need.where}: {err}")
            objects = [o for o in seen if repo.local.exists(o.key)]
        live.keys.update(o.key for o in objects)
        live.chunks.update(chunks_of(repo, objects))
    result.roots = len(needs)
    result.live_chunks = len(live.chunks)
    return live


def _count(result: GcResult, key: str) -> None:
    prefix = key.split("/", 1)[0]
    setattr(result, prefix, getattr(result, prefix) + 1)


# -- local -----------------------------------------------------------------------------------------
def gc(
    repo: Repo, scope: Scope = Scope(), dry_run: bool = False, delete_unpushed: bool = False
) -> GcResult:
    """Delete what no root of ``scope`` reaches. What some commit reaches (any ref or reflog)
    but the scope does not is deleted only when a configured remote holds it (its listing says
    so), unless ``delete_unpushed``: history stays recoverable, as with git-lfs's prune."""
    result = GcResult(dry_run)
    local = repo.local
    with local.exclusive():
        found = roots_op.collect(repo, scope)
        result.skipped = found.skipped
        live = _live(repo, found.needs, None, result)
        # What each pack holds, from verified index files or trailers, never from an index file
        # alone: a corrupt one must not make live chunks look absent (and their pack dead).
        held = {pack_id: repo.objects.pack_entries(pack_id) for pack_id in repo.objects.pack_ids()}
        owner = {cid: pack_id for pack_id, entries in held.items() for cid, _o, _n in entries}
        missing = live.chunks - owner.keys()
        history = _Live()
        if not scope.all_commits and not delete_unpushed:
            # every commit's pointers; what of them is not local is not at stake
            every = roots_op.collect(repo, Scope(all_commits=True)).needs
            history = _live(repo, every, None, GcResult(dry_run))
            history.keys = {k for k in history.keys - live.keys if local.exists(k)}
            history.chunks = (history.chunks - live.chunks) & owner.keys()
        if missing or history.keys or history.chunks:
            pushed = _remote_holdings(repo, result, missing | history.chunks)
            unpushed = _Live(history.keys - pushed.keys, history.chunks - pushed.chunks)
            result.kept_unpushed = len(unpushed.keys) + len(unpushed.chunks)
            live.keys |= unpushed.keys
            live.chunks |= unpushed.chunks
            lost = missing - pushed.chunks
            if lost:
                raise ObjectMissingError(
                    f"{len(lost)} chunks the roots need (e.g. {next(iter(lost)).hex()}) are in "
                    "no local pack and on no remote; gc deleted nothing: run 'cas fsck'"
                )
        for prefix in PREFIXES:
            for key in list(local.list(prefix + "/")):
                if key not in live.keys:
                    _count(result, key)
                    result.bytes_freed += local.size(key)
                    if not dry_run:
                        local.delete(key)
        repack: dict[str, list[tuple[bytes, int, int]]] = {}
        for pack_id, entries in held.items():
            # a chunk held twice is live in one pack (the owner) and dead in the others
            alive = [e for e in entries if e[0] in live.chunks and owner[e[0]] == pack_id]
            dead_bytes = sum(e[2] for e in entries) - sum(e[2] for e in alive)
            size = local.size(pack_key(pack_id))
            if not alive:
                result.packs_deleted += 1
                result.chunks_deleted += len(entries)
                result.bytes_freed += size
                if not dry_run:
                    local.delete(index_key(pack_id))
                    local.delete(pack_key(pack_id))
            elif dead_bytes >= REPACK_DEAD_SHARE * max(1, sum(e[2] for e in entries)):
                repack[pack_id] = sorted(alive, key=lambda e: e[1])
                result.packs_repacked += 1
                result.chunks_deleted += len(entries) - len(alive)
                result.bytes_freed += dead_bytes
            else:
                result.bytes_left += dead_bytes
        for key in list(local.list("index/")):  # index files of packs that are gone name nothing
            if key.rsplit("/", 1)[1] not in held:
                result.bytes_freed += local.size(key)
                if not dry_run:
                    local.delete(key)
        if repack and not dry_run:
            _repack(repo, repack)
        if not dry_run:
            local.clean_tmp()
    return result


def _remote_holdings(repo: Repo, result: GcResult, chunks: set[bytes]) -> _Live:
    """Every metadata key that some configured remote holds, and which of ``chunks`` (those gc
    would drop or lacks) one does: one listing per prefix, and each remote's chunk index asked
    about these chunks only. A remote that cannot be read holds nothing here, so gc keeps
    more; it is named in ``result.remote_errors``."""
    held = _Live()
    for name, spec in remote_config.remotes(repo).items():
        try:
            view = RemoteView(repo, spec.open(), Traffic(), (*PREFIXES, "packs", "index"))
            asked = chunks - held.chunks
            lacking = view.index(DEFAULT_JOBS).missing(asked) if asked else set()
        except CasError as err:
            result.remote_errors.append(f"remote '{name}': {err}")
            continue
        held.keys.update(manifest_key(i) for i in view.manifests)
        held.keys.update(version_key(i) for i in view.versions)
        held.keys.update(segment_key(i) for i in view.segments)
        held.chunks.update(asked - lacking)
    return held


def _repack(repo: Repo, packs: dict[str, list[tuple[bytes, int, int]]]) -> None:
    """Copy the live chunks of each pack (``packs``: pack -> its live entries) into new packs,
    every chunk verified as it is read, seal them, and only then delete the old ones."""
    with repo.objects.writer(repack=True) as writer:
        for alive in packs.values():
            wanted = [cid for cid, _off, _len in alive]
            for start in range(0, len(wanted), _BATCH):
                batch = wanted[start : start + _BATCH]
                for cid, data in zip(batch, repo.objects.read_chunks(batch)):
                    writer.add(cid, data)
    repo.objects.close()  # no fd may keep a deleted pack's space
    for pack_id in packs:
        if pack_id not in writer.sealed:
            repo.local.delete(index_key(pack_id))
            repo.local.delete(pack_key(pack_id))


# -- remote ----------------------------------------------------------------------------------------
def gc_remote(
    repo: Repo,
    scope: Scope = Scope(),
    remote: str | None = None,
    grace_seconds: float = 7 * 86400,
    dry_run: bool = False,
    jobs: int = DEFAULT_JOBS,
    now: float | None = None,
) -> RemoteGcResult:
    """``now`` (epoch seconds; default: the clock) is what ages are measured from."""
    spec = remote_config.resolve(repo, remote)
    store = spec.open()
    traffic = Traffic()
    result = RemoteGcResult(dry_run, remote=spec.name, url=spec.url, grace_seconds=grace_seconds)
    now = time.time() if now is None else now
    found = roots_op.collect(repo, scope)
    result.skipped = found.skipped

    def fetch(obj: MetaObject) -> None:
        download_meta(repo, store, obj, traffic, keep=True)

    live = _live(repo, found.needs, fetch, result)
    info = {
        k: v for p in (*PREFIXES, "packs", "index") for k, v in store.list_info(p + "/").items()
    }
    view = RemoteView(repo, store, traffic, ())
    view.learn(info)  # the listing above: packs and index files are not listed twice
    dead = {k for k in info if k.split("/", 1)[0] in PREFIXES and k not in live.keys}
    for pack_id in view.packs:
        if pack_id not in view.indexes:
            result.unindexed_packs += 1
        elif not any(cid in live.chunks for cid, _o, _l in view.index_of(pack_id)):
            dead.add(pack_key(pack_id))
    for pack_id in view.indexes - view.packs:  # an index naming a pack that is gone
        dead.add(index_key(pack_id))
    old = {k for k in dead if now - info[k][0] >= grace_seconds}
    result.young = len(dead) - len(old)
    marks = _marks(store)
    first_seen: dict[str, float] = {}  # a key found unused in an earlier run, and since when
    for keys in marks.values():
        for key, seen in keys.items():
            first_seen[key] = min(seen, first_seen.get(key, seen))
    doomed = sorted(k for k in old if now - first_seen.get(k, now) >= grace_seconds)
    for key in doomed:
        if key.startswith("packs/"):
            result.packs_deleted += 1
        elif not key.startswith("index/"):
            _count(result, key)
        result.bytes_freed += info[key][1]
    pending = {k: first_seen.get(k, now) for k in old.difference(doomed)}
    result.marked = len(pending)
    if not dry_run:
        packs = [k for k in doomed if k.startswith("packs/")]
        rest = [k for k in doomed if not k.startswith("packs/")]

        def drop_pack(key: str) -> None:  # its index first: no index ever names a gone pack
            pack_id = key.rsplit("/", 1)[1]
            store.delete(index_key(pack_id))
            store.delete(key)

        map_jobs(store.delete, rest, jobs)
        map_jobs(drop_pack, packs, jobs)
        # One mark replaces the earlier ones: a key used again since is forgotten, so its
        # grace starts over the next time it is found unused.
        if pending:
            lines = "".join(f"{t:.3f} {k}\n" for k, t in sorted(pending.items()))
            mark = f"{MARK_PREFIX}{int(now)}-{uuid.uuid4().hex[:8]}"
            store.put_bytes(mark, f"{MARK_HEADER}\n{lines}".encode())
        for name in marks:
            store.delete(name)
    return result


def _marks(store: FsspecStore) -> dict[str, dict[str, float]]:
    """Earlier runs' marks: ``{mark key: {unused key: since}}``. A line that does not parse is
    skipped (a mark from a newer cas): skipping one only delays a deletion."""
    marks: dict[str, dict[str, float]] = {}
    for name in store.list(MARK_PREFIX):
        lines = store.get(name).decode("utf-8", errors="replace").splitlines()
        keys: dict[str, float] = {}
        if lines and lines[0] == MARK_HEADER:
            for line in lines[1:]:
                since, _, key = line.partition(" ")
                with contextlib.suppress(ValueError):  # a malformed line delays nothing else
                    keys[key] = float(since)
        marks[name] = keys
    return marks
