"""What a pointer needs: the one description push, fetch, verify, status, the hooks and gc walk.

A pointer needs *metadata objects* and chunks: a ``dir``/``file`` pointer its manifest; a
versioned pointer (``corpus``, ``append``) its version, the version's whole parent chain (older
commits stay resolvable) and every segment those versions list, plus, for ``append``, the chunks
its segments' rows name. Walking this in one place keeps what is pushed, what is verified and what
gc keeps from drifting apart.

Pointers come from named targets at revisions, or straight from Git blobs (every ``*.cas`` blob
reachable from some commits, listed by ``git rev-list --objects``), which is how the pre-push hook
and gc find them without reading a tree per commit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cas import pointer
from cas.errors import ObjectMissingError, PointerError, UsageError
from cas.objects import manifest_key, segment_key, version_key
from cas.pointer import VERSIONED

if TYPE_CHECKING:
    from cas.repo import Repo
    from cas.rows import Row

PREFIXES = ("manifests", "versions", "segments")  # of metadata objects, in result order


@dataclass
class Need:
    """A pointer (``where``: ``rev:path`` or a path) with its kind and the manifest or version
    id it names; ``pointer`` is its path, relative to the root."""

    where: str
    pointer: str
    kind: str
    manifest: str


@dataclass(frozen=True)
class MetaObject:
    """A metadata object a pointer needs. ``prefix`` is its listing prefix (``manifests``,
    ``versions``, ``segments``); ``kind`` is, for a segment, the kind of the version listing it,
    which the segment's schema must match."""

    prefix: str
    id: str
    kind: str = ""

    @property
    def key(self) -> str:
        keys = {"manifests": manifest_key, "versions": version_key, "segments": segment_key}
        return keys[self.prefix](self.id)

    def __str__(self) -> str:
        return f"{self.prefix[:-1]} {self.id}"


def counts(objects: Sequence[MetaObject]) -> tuple[int, int, int]:
    """How many manifests, versions and segments: the figures results report."""
    manifests, versions, segments = (sum(o.prefix == p for o in objects) for p in PREFIXES)
    return manifests, versions, segments


def root_of(need: Need) -> MetaObject:
    return MetaObject("versions" if need.kind in VERSIONED else "manifests", need.manifest)


def prefixes(needs: Sequence[Need]) -> tuple[str, ...]:
    """The listings that tell which of these pointers' metadata objects a remote holds."""
    versioned = [n.kind in VERSIONED for n in needs]
    manifests = () if all(versioned) else ("manifests",)
    return manifests + (("versions", "segments") if any(versioned) else ())


def objects_of(
    repo: Repo, need: Need, ensure: Callable[[list[MetaObject]], None]
) -> list[MetaObject]:
    """Every metadata object the pointer needs, in push order: its manifest; or every segment,
    then the versions oldest first, so that no object reaches a remote before what it names.
    ``ensure`` is called on objects before they are read, so a fetch can bring them in; the
    chain is walked one version at a time because each version names its parent."""
    root = root_of(need)
    ensure([root])
    if root.prefix == "manifests":
        return [root]
    from cas import versions  # lazily: imports pyarrow

    chain = [root]
    segments: dict[str, MetaObject] = {}
    while True:
        version = versions.load_version(repo, chain[-1].id)
        for segment_id in version.segments:
            segments.setdefault(segment_id, MetaObject("segments", segment_id, version.kind))
        if version.parent is None:
            break
        chain.append(MetaObject("versions", version.parent))
        ensure(chain[-1:])
    ensure(list(segments.values()))
    return [*segments.values(), *reversed(chain)]


def chunks_of(
    repo: Repo, objects: Iterable[MetaObject], subpath: str | None = None
) -> Iterator[bytes]:
    """The chunks the data of these objects needs (only of files under ``subpath`` when given):
    a manifest's rows and an ``append`` segment's rows name chunks; a corpus's bytes stay where
    they are, so its segments name none. A chunk several rows share comes once per row."""
    from cas import versions  # lazily: imports pyarrow

    for obj in objects:
        if obj.prefix == "manifests":
            for row in rows(repo, obj.id):
                if under(row.path, subpath):
                    yield from (cid for cid, _ in row.chunks)
        elif obj.kind == "append":
            one = versions.Version(obj.kind, None, None, None, (obj.id,), "", 0, 0)
            wanted = versions.prefix_range(subpath or "")
            for group in versions.scan(repo, one, ["path", "chunks"], wanted):
                paths, chunks = group.column("path").to_pylist(), group.column("chunks")
                for path, row in zip(paths, chunks.to_pylist()):
                    if under(path, subpath):
                        yield from (chunk["id"] for chunk in row)


def require_local(repo: Repo, where: str) -> Callable[[list[MetaObject]], None]:
    """The ``ensure`` of push and status: what is not in the local store cannot be pushed."""

    def ensure(objects: list[MetaObject]) -> None:
        for obj in objects:
            if not repo.local.exists(obj.key):
                raise ObjectMissingError(
                    f"{obj} that {where} needs is not in the local store; "
                    "run 'cas pull', or push from the clone that made it"
                )

    return ensure


def rows(repo: Repo, manifest_id: str) -> list[Row]:
    from cas import manifest  # lazily: see cas.rows

    return manifest.to_rows(repo.load_manifest(manifest_id))


def under(path: str, prefix: str | None) -> bool:
    return prefix is None or path == prefix or path.startswith(prefix + "/")


# -- which pointers --------------------------------------------------------------------------------
def pointer_needs(
    repo: Repo, targets: Sequence[str | Path], revs: Sequence[str | None], all_commits: bool = False
) -> list[Need]:
    """The pointers of named targets (all when none) at each revision (None: the worktree);
    ``all_commits``: every ``*.cas`` blob any commit holds."""
    if all_commits and not targets:
        needs = blob_needs(repo, repo.git.blobs(["--all"], pointer.SUFFIX))
    else:
        revisions = list(dict.fromkeys(repo.git.all_commits() if all_commits else revs))
        needs = []
        for rev in revisions or [None]:
            for target in repo.targets(targets, rev):
                if all_commits and not repo.pointer_exists(target, rev):
                    continue
                ptr = repo.read_pointer(target, rev)
                where = f"{rev}:{target.pointer}" if rev else target.pointer
                needs.append(Need(where, target.pointer, ptr.kind, ptr.manifest))
    if not needs:
        raise UsageError("no pointers to transfer; name targets or run 'cas add' first")
    return needs


def blob_needs(repo: Repo, blobs: dict[str, str], skipped: list[str] | None = None) -> list[Need]:
    """The pointers stored in Git blobs (``{blob id: path}``). A ``*.cas`` blob that is not a
    pointer (a user's own file, a hand edit gone wrong) names nothing: it goes to ``skipped``
    when given, else its error is raised."""
    needs = []
    for blob, data in repo.git.cat_blobs(list(blobs)).items():
        where = f"{blobs[blob]} (blob {blob[:12]})"
        try:
            ptr = pointer.parse(data, where)
        except PointerError as err:
            if skipped is None:
                raise
            skipped.append(str(err))
            continue
        needs.append(Need(where, blobs[blob], ptr.kind, ptr.manifest))
    return needs
