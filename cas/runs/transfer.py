"""Run records on remotes: pushed and fetched with the data, kept by gc.

A record names blobs (source changes, config files) and output manifests. Push sends, after the
data (the outputs are pointers like any other, see :func:`output_needs`), the blobs a remote
lacks, then the records: a record on a remote has everything it names there. Fetch brings every
record the local store lacks, and their blobs, each checked against its id before it is stored;
output data is fetched when a repro or a reuse needs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cas import hashing, pointer
from cas.errors import CorruptObjectError, PointerError
from cas.ops.needs import Need
from cas.runs import record as rec

if TYPE_CHECKING:
    from cas.ops.transfer import Traffic
    from cas.repo import Repo
    from cas.store.fsspec import FsspecStore


def output_needs(repo: Repo) -> list[Need]:
    """The outputs of every local record whose manifest or version is in the local store, as
    pointers: what push sends and gc keeps. A fetched record's outputs stay on the remote until
    a repro or reuse needs them."""
    from cas.ops.needs import root_of

    needs = []
    for run_id in rec.ids(repo.local):
        for out in rec.get(repo.local, run_id).get("outputs", []):
            where = f"run {run_id[:12]} output {out['pointer']}"
            try:
                ptr = pointer.parse(out["text"].encode("ascii"), where)
            except (PointerError, UnicodeEncodeError):
                continue  # a hostile record names nothing
            need = Need(where, out["pointer"], ptr.kind, ptr.manifest)
            if repo.local.exists(root_of(need).key):
                needs.append(need)
    return needs


def _blobs_of(record: dict) -> set[str]:
    named = {f["blob"] for f in record["code"]["files"]}
    return named | {f["blob"] for f in record["config"]["files"]}


def _listed(store: FsspecStore, prefix: str) -> set[str]:
    names = (key.rsplit("/", 1)[1] for key in store.list(prefix + "/"))
    return {name for name in names if hashing.is_hex_id(name)}


def push_runs(repo: Repo, store: FsspecStore, traffic: Traffic) -> int:
    """Send the records (and blobs) the remote lacks; returns how many records."""
    local = rec.ids(repo.local)
    if not local:
        return 0
    remote_runs = _listed(store, rec.RUNS)
    traffic.count(0)
    missing = [r for r in local if r not in remote_runs]
    if not missing:
        return 0
    remote_blobs = _listed(store, rec.BLOBS)
    traffic.count(0)
    for run_id in missing:
        for blob_id in sorted(_blobs_of(rec.get(repo.local, run_id)) - remote_blobs):
            data = rec.get_blob(repo.local, blob_id)
            store.put_bytes(rec.blob_key(blob_id), data)
            traffic.count(len(data))
            remote_blobs.add(blob_id)
    for run_id in missing:  # last: what a record names is on the remote before it
        data = repo.local.get(rec.run_key(run_id))
        store.put_bytes(rec.run_key(run_id), data)
        traffic.count(len(data))
    return len(missing)


def _download(repo: Repo, store: FsspecStore, key: str, obj_id: str, traffic: Traffic) -> bytes:
    data = store.get(key)
    traffic.count(len(data))
    if hashing.digest(data).hex() != obj_id:
        raise CorruptObjectError(f"{key} on {store.label} does not hash to its id; nothing stored")
    return data


def fetch_runs(repo: Repo, store: FsspecStore, traffic: Traffic) -> int:
    """Bring the records (and their blobs) the local store lacks; returns how many records."""
    have = set(rec.ids(repo.local))
    missing = sorted(_listed(store, rec.RUNS) - have)
    traffic.count(0)
    for run_id in missing:
        data = _download(repo, store, rec.run_key(run_id), run_id, traffic)
        record = rec.decode(data, run_id)
        for blob_id in sorted(_blobs_of(record)):
            if not repo.local.exists(rec.blob_key(blob_id)):
                blob = _download(repo, store, rec.blob_key(blob_id), blob_id, traffic)
                repo.local.put_bytes(rec.blob_key(blob_id), blob)
        repo.local.put_bytes(rec.run_key(run_id), data)  # after its blobs, as on the remote
    return len(missing)
