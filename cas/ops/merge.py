"""The merge driver for ``*.cas`` (``cas hook merge %O %A %B %P``): a 3-way merge of datasets.

Git merges pointers as text, which for two branches that each changed ``data/`` can only
conflict. This merges what they name instead, file by file: a file added, removed or changed on
one side only takes that side; the same file changed differently on both sides is a conflict,
listed by path. On a conflict the merged pointer keeps *ours* for those paths (so every cas
command still works) and Git keeps the merge unresolved, with both sides' pointers in the index
(``git show :2:data.cas``, ``:3:``) and their manifests in the store: nothing is lost.

Versioned pointers (``append``, ``corpus``) merge as unions of appends
(:func:`cas.versions.merge_versions`).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cas import pointer
from cas.errors import ConflictError, ManifestError, ObjectMissingError, UsageError
from cas.ops.needs import MetaObject
from cas.pointer import VERSIONED, Pointer

if TYPE_CHECKING:
    from cas.repo import Repo
    from cas.rows import Row

_SINGLE = ""  # a ``file`` pointer's one row, whatever its name


@dataclass
class MergeResult:
    pointer: Pointer
    conflicts: list[str] = field(default_factory=list)


def merge(repo: Repo, base: bytes, ours: bytes, theirs: bytes, path: str) -> MergeResult:
    """Merge three versions of the pointer at ``path`` (``base`` is empty when both sides
    added it)."""
    o = pointer.parse(ours, f"{path} (ours)")
    t = pointer.parse(theirs, f"{path} (theirs)")
    b = pointer.parse(base, f"{path} (base)") if base.strip() else None
    if o == t or (b is not None and t == b):
        return MergeResult(o)
    if b is not None and o == b:
        return MergeResult(t)
    if o.kind != t.kind or (b is not None and b.kind != o.kind):
        raise ConflictError(
            f"cannot merge {path}: one side made it a {o.kind}, the other a {t.kind}; "
            f"choose one with: git checkout --ours -- {shlex.quote(path)} (or --theirs)"
        )
    if o.kind in VERSIONED:
        if b is None:
            raise ConflictError(f"cannot merge {path}: both sides created it; keep one side")
        from cas import versions  # lazily: imports pyarrow

        return MergeResult(Pointer(o.kind, versions.merge_versions(repo, b.manifest, o.manifest,
                                                                   t.manifest)))  # fmt: skip
    return _merge_files(repo, b, o, t)


def _rows(repo: Repo, ptr: Pointer | None) -> Mapping[str, Row]:
    if ptr is None:
        return {}
    if not repo.objects.has_manifest(ptr.manifest):
        _fetch(repo, ptr.manifest)
    from cas.ops.worktree import rows_by_path

    rows = rows_by_path(repo.load_manifest(ptr.manifest))
    if ptr.kind == "file":
        if len(rows) != 1:
            raise ManifestError(f"file pointer's manifest {ptr.manifest} has {len(rows)} rows")
        return {_SINGLE: next(iter(rows.values()))}
    return rows


def _fetch(repo: Repo, manifest_id: str) -> None:
    """A side's manifest may exist only on the remote (a teammate's branch): fetch it."""
    from cas import remote as remote_config
    from cas.ops.transfer import Traffic, download_meta  # lazily: fsspec

    try:
        spec = remote_config.resolve(repo, None)
    except UsageError as err:  # no remote configured: say what is missing, and why
        raise ObjectMissingError(
            f"manifest {manifest_id} is not in the local store and there is no remote to fetch "
            f"it from ({err}); run 'cas pull' where it exists"
        ) from err
    download_meta(repo, spec.open(), MetaObject("manifests", manifest_id), Traffic(), keep=True)


def _key(row: Row | None) -> tuple[bytes, bool] | None:
    return None if row is None else (row.hash, row.executable)


def _merge_files(repo: Repo, b: Pointer | None, o: Pointer, t: Pointer) -> MergeResult:
    base, ours, theirs = _rows(repo, b), _rows(repo, o), _rows(repo, t)
    merged: dict[str, Row] = {}
    conflicts: list[str] = []
    for path in sorted(ours.keys() | theirs.keys() | base.keys()):
        kb, ko, kt = _key(base.get(path)), _key(ours.get(path)), _key(theirs.get(path))
        if ko == kt or kt == kb:
            pick = ours.get(path)
        elif ko == kb:
            pick = theirs.get(path)
        else:
            conflicts.append(path)
            pick = ours.get(path)
        if pick is not None:
            merged[path] = pick
    conflicts += _file_folder_clashes(merged, ours)
    if o.kind == "file":
        (row,) = merged.values() if merged else (ours[_SINGLE],)
        rows = [row]
    else:
        rows = list(merged.values())
    from cas import manifest  # lazily: see cas.rows

    manifest_id = repo.store_manifest(manifest.from_rows(rows))
    ptr = Pointer(o.kind, manifest_id, sum(r.size for r in rows), len(rows))
    return MergeResult(ptr, [c or "(the file)" for c in conflicts])


def _file_folder_clashes(merged: dict[str, Row], ours: Mapping[str, Row]) -> list[str]:
    """One side added ``a`` as a file, the other ``a/b``: no tree holds both. Theirs' paths
    under our file give way (listed as conflicts)."""
    clashes = []
    for path in list(merged):
        folder = path.rpartition("/")[0]
        while folder:
            if folder in merged and path in merged:
                loser = path if path not in ours else folder
                clashes.append(loser)
                del merged[loser]
            folder = folder.rpartition("/")[0]
    return clashes
