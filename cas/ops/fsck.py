"""``cas fsck``: re-hash every object in the local store and report what is damaged.

Every pack is read whole and checked three ways (its id is the hash of its trailer, its trailer
parses, each chunk hashes to its id), then its index file is checked against it (a wrong one is
reported and rebuilt from the trailer; one whose pack is gone is reported: its chunks are lost),
and every manifest is decoded, which re-derives its canonical
id. Every version object and segment is checked by the functions of :mod:`cas.versions` that
check them on every read (id, format, schema), so fsck and readers cannot disagree. Chunks that
manifests name but the store lacks are reported separately: after a partial pull that is normal,
so it is not corruption.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cas import hashing
from cas.errors import CasError, CorruptObjectError, StorageError
from cas.objects import (
    LOCAL_REPAIR,
    checked_index,
    index_key,
    pack_key,
    pack_trailer,
    trailer_bytes,
)

if TYPE_CHECKING:
    from cas.repo import Repo


@dataclass
class FsckResult:
    packs: int = 0
    chunks: int = 0
    manifests: int = 0
    versions: int = 0
    segments: int = 0
    bytes_checked: int = 0
    corrupt: list[str] = field(default_factory=list)
    missing_chunks: int = 0

    @property
    def ok(self) -> bool:
        return not self.corrupt


def fsck(repo: Repo) -> FsckResult:
    result = FsckResult()
    local = repo.local
    packs = repo.objects.pack_ids()
    for pack_id in packs:
        _check_pack(repo, pack_id, result)
    for key in local.list("index/"):
        pack_id = key.rsplit("/", 1)[1]
        if pack_id not in packs:
            result.corrupt.append(
                f"pack {pack_id} is gone but {key} remains: its chunks are lost locally; "
                "'cas fetch' brings back what the pointers need, 'cas gc' drops the index"
            )
    from cas import manifest  # lazily: see cas.rows

    damaged_index = repo.objects.verify_index()
    if damaged_index is not None:
        result.corrupt.append(damaged_index)
    known = repo.objects.index  # verified entries only (ObjectStore.pack_entries)
    for manifest_id in repo.objects.manifest_ids():
        result.manifests += 1
        try:
            table = repo.load_manifest(manifest_id)
        except CasError as err:
            result.corrupt.append(f"manifest {manifest_id}: {err}; {LOCAL_REPAIR}")
            continue
        for row in manifest.to_rows(table):
            result.missing_chunks += sum(1 for cid, _ in row.chunks if cid not in known)
    _check_versions(repo, result)
    local.clean_tmp()
    return result


def _check_pack(repo: Repo, pack_id: str, result: FsckResult) -> None:
    """A pack read whole (trailer, pack id, every chunk), then its index file against it: a
    wrong index file (the pack is the truth) is reported and rebuilt from the pack's trailer."""
    local = repo.local
    result.packs += 1
    try:
        data = local.get(pack_key(pack_id))
    except CasError as err:  # unreadable: a StorageError naming the fix
        result.corrupt.append(str(err))
        return
    result.bytes_checked += len(data)
    try:
        entries = pack_trailer(data, pack_id)
    except CasError as err:
        result.corrupt.append(f"{err}; {LOCAL_REPAIR}")
        return
    if hashing.digest(trailer_bytes(data, len(entries))).hex() != pack_id:
        result.corrupt.append(f"pack {pack_id}: trailer does not hash to its name; {LOCAL_REPAIR}")
        return
    for cid, off, length in entries:
        result.chunks += 1
        if hashing.digest(data[off : off + length]) != cid:
            result.corrupt.append(
                f"chunk {cid.hex()} in pack {pack_id}: wrong bytes; {LOCAL_REPAIR}"
            )
    key = index_key(pack_id)
    try:
        checked_index(local.get(key), pack_id, key, "rebuilt it from the pack's trailer")
    except KeyError:  # a pack sealed by a killed process: indexed on next use, not damage
        pass
    except StorageError as err:
        result.corrupt.append(str(err))
        return
    except CorruptObjectError as err:
        result.corrupt.append(str(err))
        local.delete(key)
    repo.objects.pack_entries(pack_id)  # writes the index file from the verified trailer


def _check_versions(repo: Repo, result: FsckResult) -> None:
    """Version objects and segments. A segment is checked against the kind it declares: the
    versions listing it may be gone or damaged, and each reader checks the kind again anyway."""
    from cas import versions  # lazily: imports pyarrow

    local = repo.local
    for key in local.list("versions/"):
        version_id = key.rsplit("/", 1)[1]
        result.versions += 1
        try:
            versions.decode_version(local.get(key), version_id)
        except CasError as err:
            result.corrupt.append(str(err))
    for key in local.list("segments/"):
        segment_id = key.rsplit("/", 1)[1]
        result.segments += 1
        result.bytes_checked += local.size(key)
        try:
            versions.verify_segment_file(local.path(key), segment_id)
        except CasError as err:
            result.corrupt.append(str(err))
