"""``cas import lfs``: files git-lfs tracks -> cas data, verified against their LFS sha256.

The files are those of the index whose ``filter`` attribute is ``lfs`` and that match the
chosen patterns of the root ``.gitattributes`` (all its ``filter=lfs`` patterns by default);
their staged blob is the LFS pointer (``oid sha256:<hex>``, ``size``). The content is the
worktree file when it is smudged and its sha256 is the oid, else the object in
``.git/lfs/objects/<2>/<2>/<oid>`` (checked the same way) replaces a worktree file that is the
pointer text, or fills a missing one. Anything else is refused, listing the paths.

What becomes a target: a pattern ``DIR/**`` whose folder holds only LFS files (in Git) becomes
one folder target ``DIR`` (``DIR.cas``); every other file becomes its own file target
(``model.bin`` -> ``model.bin.cas``). Each target is versioned with ``cas add``'s op before its
files leave the Git index (a kill -9 between the two leaves both; the rerun finishes), then the
imported patterns' lines leave ``.gitattributes``. Nothing is committed. Patterns in nested
``.gitattributes`` files are not imported (``cas import lfs`` says which patterns exist).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cas.errors import UsageError
from cas.ops import add as add_op
from cas.ops.migrate import Problems, copy_verified, file_digest
from cas.store.local import storage_error

if TYPE_CHECKING:
    from cas.progress import Progress
    from cas.repo import Repo, Target

_POINTER = re.compile(
    rb"^version https://git-lfs\.github\.com/spec/v1\n"
    rb"(?:[a-z0-9.-]+ [^\n]*\n)*?"
    rb"oid sha256:(?P<oid>[0-9a-f]{64})\n"
    rb"size (?P<size>\d+)\n"
    rb"(?:[a-z0-9.-]+ [^\n]*\n)*$"
)
_POINTER_MAX = 1024


@dataclass(frozen=True)
class LfsFile:
    path: str
    oid: str
    size: int


@dataclass
class ImportedLfs:
    path: str
    pointer: str
    manifest: str
    files: int
    size: int
    source: str


def parse_pointer(data: bytes) -> tuple[str, int] | None:
    """(oid, size) of an LFS pointer, None when ``data`` is not one."""
    match = _POINTER.match(data) if len(data) <= _POINTER_MAX else None
    return (match["oid"].decode(), int(match["size"])) if match else None


def lfs_patterns(repo: Repo) -> list[str]:
    """The root .gitattributes patterns whose attributes include ``filter=lfs``, in order."""
    path = repo.abspath(".gitattributes")
    if not path.is_file():
        return []
    patterns = []
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if fields and not fields[0].startswith("#") and "filter=lfs" in fields[1:]:
            patterns.append(fields[0])
    return patterns


def _pathspec(pattern: str) -> str:
    """A .gitattributes pattern as a Git pathspec: no '/' matches at any depth."""
    if "/" not in pattern.rstrip("/"):
        return f":(glob)**/{pattern}"
    return f":(glob){pattern.lstrip('/')}"


def _staged(repo: Repo, *pathspecs: str) -> dict[str, str]:
    """``{path: blob id}`` of the index entries matching ``pathspecs``."""
    out = repo.git.run("ls-files", "--stage", "-z", "--", *pathspecs)
    staged = {}
    for record in out.split("\0"):
        if record:
            info, _, path = record.partition("\t")
            staged[path] = info.split()[1]
    return staged


def _lfs_filtered(repo: Repo, paths: list[str]) -> set[str]:
    if not paths:
        return set()
    out = repo.git.run("check-attr", "-z", "filter", "--", *paths)
    fields = out.split("\0")
    return {fields[i] for i in range(0, len(fields) - 2, 3) if fields[i + 2] == "lfs"}


def _objects_dir(repo: Repo) -> Path:
    common = repo.git.run("rev-parse", "--git-common-dir").strip()
    return (repo.root / common).resolve() / "lfs" / "objects"


def _write_attributes(repo: Repo, drop: set[str]) -> None:
    """Remove the lfs lines of the imported patterns from .gitattributes (temp + rename)."""
    path = repo.abspath(".gitattributes")
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [
        line
        for line in lines
        if not (line.split() and line.split()[0] in drop and "filter=lfs" in line.split()[1:])
    ]
    if kept == lines:
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text("".join(kept), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise storage_error(err, "cannot write .gitattributes") from err
    repo.git.stage([".gitattributes"])


def import_lfs(
    repo: Repo, patterns: Sequence[str] = (), progress: Progress | None = None
) -> list[ImportedLfs]:
    known = lfs_patterns(repo)
    unknown = [p for p in patterns if p not in known]
    if unknown:
        raise UsageError(
            f"not a git-lfs pattern of .gitattributes: {', '.join(unknown)}; "
            f"choose among: {', '.join(known) or '(none)'}"
        )
    chosen = list(patterns) or known
    if not chosen:
        return []
    # Every index entry a chosen pattern matches, and those of them LFS really filters.
    by_pattern = {p: _staged(repo, _pathspec(p)) for p in chosen}
    staged = {path: sha for found in by_pattern.values() for path, sha in found.items()}
    filtered = _lfs_filtered(repo, sorted(staged))
    blobs = repo.git.cat_blobs(sorted({staged[p] for p in filtered}))
    files: dict[str, LfsFile] = {}
    for path in sorted(filtered):
        parsed = parse_pointer(blobs.get(staged[path], b""))
        if parsed:  # a file committed before 'git lfs track' is Git's own: left alone
            files[path] = LfsFile(path, *parsed)

    objects = _objects_dir(repo)
    problems = Problems()
    sources: dict[str, str] = {}
    for f in files.values():
        sources[f.path] = _place(repo, f, objects, problems)
    problems.raise_if_any("git-lfs", "run 'git lfs fetch' (or 'git lfs pull') to get them")

    results = []
    for target, members in _targets(repo, chosen, by_pattern, files):
        added = add_op.add(repo, target, progress, tracked_ok=True)
        with repo.lock():
            # literal: a file named 'a*.bin' must not unstage every a...bin
            repo.git.run("rm", "--cached", "--quiet", "--", *(f":(literal){m}" for m in members))
        kinds = sorted({sources[m] for m in members})
        results.append(
            ImportedLfs(
                target.path, added.pointer, added.manifest, added.files, added.size, "+".join(kinds)
            )
        )
    with repo.lock():
        _write_attributes(repo, set(chosen))
    return results


def _place(repo: Repo, f: LfsFile, objects: Path, problems: Problems) -> str:
    """Verify the worktree copy, or put the verified LFS object there; returns the source."""
    path = repo.abspath(f.path)

    def matches(p: Path) -> bool:
        return p.stat().st_size == f.size and file_digest(p, "sha256") == f.oid

    present = path.is_file() and not path.is_symlink()
    if present and matches(path):
        return "worktree"
    if present and parse_pointer(path.read_bytes()[: _POINTER_MAX + 1]) != (f.oid, f.size):
        problems.mismatched.append(f.path)
        return "worktree"
    obj = objects / f.oid[:2] / f.oid[2:4] / f.oid
    if not obj.is_file():
        problems.missing.append(f.path)
        return "missing"
    # a present file is the pointer text, which Git holds: replacing it loses nothing
    if not copy_verified(obj, path, matches, f.path, replace=present):
        problems.mismatched.append(f"{f.path} (.git/lfs/objects copy)")
    return "lfs-objects"


def _targets(
    repo: Repo,
    chosen: list[str],
    by_pattern: dict[str, dict[str, str]],
    files: dict[str, LfsFile],
) -> list[tuple[Target, list[str]]]:
    """Folder targets for ``DIR/**`` patterns over LFS-only folders, file targets otherwise."""
    targets: list[tuple[Target, list[str]]] = []
    taken: set[str] = set()
    for pattern in chosen:
        folder = pattern.lstrip("/").removesuffix("/**")
        if not pattern.endswith("/**") or any(c in folder for c in "*?[\\"):
            continue
        members = sorted(p for p in by_pattern[pattern] if p in files)
        in_git = _staged(repo, f":(literal){folder}/")
        if members and set(in_git) == set(members) and not taken & set(members):
            targets.append((repo.target(folder, repo.root), members))
            taken.update(members)
    for path in sorted(set(files) - taken):
        targets.append((repo.target(path, repo.root), [path]))
    return targets
