"""``cas import dvc``: DVC-tracked data (``*.dvc`` files, ``dvc.lock`` outputs) -> cas pointers.

Every file of every output is checked against the md5 DVC recorded before anything changes; the
bytes come from the worktree, else DVC's cache (``.dvc/cache/files/md5/<2>/<30>``, or the
DVC 2 layout ``.dvc/cache/<2>/<30>``), else the default DVC remote when it is a local path or a
``file://`` URL. A directory output's file list is DVC's ``.dir`` object (a JSON list of
``{relpath, md5}``), itself checked against its md5; a file in the worktree folder that the
list does not name would change the data, so it is refused too. Then each output is versioned
with ``cas add``'s op and its ``.dvc`` file is removed from the index and the worktree (in that
order: a kill -9 between the two leaves both, and the rerun finishes). ``dvc.lock`` and
``dvc.yaml`` stay: they describe the pipeline, which is the user's to keep or drop; rerunning
the import re-adds their outputs, unchanged. DVC's ``.gitignore`` lines (``/data`` beside
``data``) are the ones cas writes, so they are kept and staged. Nothing is committed.

md5 of DVC 3 records (``hash: md5``) is of the raw bytes. DVC 2 records (no ``hash`` key)
hashed text files with CRLF turned into LF: either digest is accepted for them.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from cas.errors import PathError, UsageError, missing_extra
from cas.ops import add as add_op
from cas.ops.migrate import Problems, copy_verified, file_digest
from cas.store.local import storage_error

if TYPE_CHECKING:
    from cas.progress import Progress
    from cas.repo import Repo

_SKIP_DIRS = {".git", ".dvc", ".cas"}
_MD5 = re.compile(r"[0-9a-f]{32}(\.dir)?")
_BLOCK = 1 << 20


@dataclass(frozen=True)
class Output:
    """One DVC output: where its record is, the data's path and DVC's md5 for it."""

    record: str
    path: str
    md5: str
    legacy: bool

    @property
    def is_dir(self) -> bool:
        return self.md5.endswith(".dir")


@dataclass
class ImportedOutput:
    record: str
    path: str
    pointer: str
    manifest: str
    files: int
    size: int
    sources: dict[str, int] = field(default_factory=dict)
    record_removed: bool = False


def _yaml(path: Path, rel: str) -> Any:
    try:
        import yaml
    except ImportError:
        raise missing_extra("PyYAML", "dvc") from None
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise UsageError(f"cannot read the DVC file {rel}: {err}; fix or remove it") from None


def find_records(repo: Repo, args: Sequence[str]) -> list[str]:
    """The ``.dvc`` files named, or every ``*.dvc`` and ``dvc.lock`` of the worktree."""
    if args:
        records = []
        for arg in args:
            rel = repo.relpath(arg)
            if not (rel.endswith(".dvc") or rel.rsplit("/", 1)[-1] == "dvc.lock"):
                raise UsageError(f"{rel} is not a .dvc file or dvc.lock; name those")
            if not repo.abspath(rel).is_file():
                raise PathError(f"{rel} does not exist; check the path")
            records.append(rel)
        return records
    found = []
    for top, dirs, files in os.walk(repo.root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        for name in sorted(files):
            if name.endswith(".dvc") or name == "dvc.lock":
                found.append(Path(top, name).relative_to(repo.root).as_posix())
    return found


def outputs_of(repo: Repo, record: str) -> list[Output]:
    doc = _yaml(repo.abspath(record), record)
    base = record.rpartition("/")[0]
    entries: list[dict[str, Any]] = []
    if record.rsplit("/", 1)[-1] == "dvc.lock":
        stages = (doc or {}).get("stages") or {}
        for stage in stages.values():
            entries.extend((stage or {}).get("outs") or [])
    else:
        base = "/".join(p for p in (base, str((doc or {}).get("wdir") or "")) if p and p != ".")
        entries = list((doc or {}).get("outs") or [])
    outputs = []
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("cache") is False:
            continue  # cache: false -> Git tracks it, not DVC
        md5, path = entry.get("md5"), entry.get("path")
        if not isinstance(md5, str) or not isinstance(path, str):
            raise UsageError(f"{record}: an output without md5 or path; run 'dvc commit' first")
        if not _MD5.fullmatch(md5.lower()):
            raise UsageError(f"{record}: {md5!r} is not an md5; fix the record or rerun 'dvc add'")
        rel = os.path.normpath(f"{base}/{path}" if base else path).replace(os.sep, "/")
        target = repo.relpath(rel, repo.root)  # refuses escapes, .git and .cas
        outputs.append(Output(record, target, md5.lower(), entry.get("hash") != "md5"))
    return outputs


class _Sources:
    """Where DVC keeps object copies: the cache, then the default remote (local paths only)."""

    def __init__(self, repo: Repo) -> None:
        dvc_dir = repo.root / ".dvc"
        config = configparser.ConfigParser(interpolation=None, strict=False)
        config.read([dvc_dir / "config", dvc_dir / "config.local"], encoding="utf-8")
        sections = {s.replace("'", "").replace('"', "").strip(): s for s in config.sections()}

        def value(section: str, key: str) -> str | None:
            real = sections.get(section)
            return config.get(real, key, fallback=None) if real else None

        cache = value("cache", "dir")
        self.roots: list[tuple[str, Path]] = [
            ("cache", (dvc_dir / cache).resolve() if cache else dvc_dir / "cache")
        ]
        remote = value("core", "remote")
        url = value(f"remote {remote}", "url") if remote else None
        if url:
            parts = urlsplit(url)
            if parts.scheme == "file":
                self.roots.append(("remote", Path(unquote(parts.path))))
            elif not parts.scheme:
                self.roots.append(("remote", (dvc_dir / url).resolve()))
        self.remote_url = url

    def candidates(self, md5: str) -> Iterator[tuple[str, Path]]:
        for kind, root in self.roots:
            yield kind, root / "files" / "md5" / md5[:2] / md5[2:]
            yield kind, root / md5[:2] / md5[2:]


def _md5_matches(path: Path, md5: str, legacy: bool) -> bool:
    """DVC's md5 of a file: raw bytes, or (DVC 2 records) with CRLF as LF."""
    if file_digest(path, "md5") == md5:
        return True
    if not legacy:
        return False
    hasher = hashlib.md5()
    carry = b""
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            block = carry + block
            carry = b"\r" if block.endswith(b"\r") else b""
            hasher.update(block[: len(block) - len(carry)].replace(b"\r\n", b"\n"))
    hasher.update(carry)
    return hasher.hexdigest() == md5


class _Planner:
    """Checks every file of the outputs and places verified copies of the missing ones."""

    def __init__(self, repo: Repo) -> None:
        self.repo = repo
        self.sources = _Sources(repo)
        self.problems = Problems()
        self.counts: dict[str, dict[str, int]] = {}

    def _fetch(self, md5: str, legacy: bool, dest: Path, shown: str, out: str) -> None:
        """A missing (or symlinked) worktree file from the first verified copy."""
        tried_bad = False
        for kind, src in self.sources.candidates(md5):
            if not src.is_file():
                continue
            if copy_verified(src, dest, lambda p: _md5_matches(p, md5, legacy), shown):
                self.counts[out][kind] = self.counts[out].get(kind, 0) + 1
                return
            tried_bad = True
        (self.problems.mismatched if tried_bad else self.problems.missing).append(shown)

    def _one(self, md5: str, legacy: bool, rel: str, out: str) -> None:
        path = self.repo.abspath(rel)
        if path.is_file() and not path.is_symlink():
            if _md5_matches(path, md5, legacy):
                self.counts[out]["worktree"] = self.counts[out].get("worktree", 0) + 1
            else:
                self.problems.mismatched.append(rel)
            return
        if os.path.lexists(path) and not path.is_symlink():
            raise PathError(f"{rel} is not a regular file; DVC recorded a file there")
        self._fetch(md5, legacy, path, rel, out)

    def _listing(self, output: Output) -> list[dict[str, str]] | None:
        for _kind, src in self.sources.candidates(output.md5):
            if src.is_file() and file_digest(src, "md5") == output.md5.removesuffix(".dir"):
                try:
                    entries = json.loads(src.read_bytes())
                except ValueError:
                    continue
                if isinstance(entries, list) and all(
                    isinstance(e, dict) and isinstance(e.get("relpath"), str) for e in entries
                ):
                    return entries
        return None

    def check(self, output: Output) -> None:
        self.counts[output.path] = {}
        if not output.is_dir:
            self._one(output.md5, output.legacy, output.path, output.path)
            return
        entries = self._listing(output)
        if entries is None:
            self.problems.missing.append(f"{output.path} (DVC's file list {output.md5})")
            return
        listed = set()
        for entry in entries:
            relpath = entry["relpath"]
            rel = self.repo.relpath(f"{output.path}/{relpath}", self.repo.root)
            if not rel.startswith(f"{output.path}/"):
                raise UsageError(f"DVC's file list of {output.path} names {relpath!r}; refused")
            listed.add(rel)
            md5 = str(entry.get("md5", "")).lower()
            if not _MD5.fullmatch(md5) or md5.endswith(".dir"):
                raise UsageError(f"DVC's file list of {output.path} gives {rel} no valid md5")
            self._one(md5, output.legacy, rel, output.path)
        folder = self.repo.abspath(output.path)
        for top, _dirs, files in os.walk(folder):
            for name in files:
                rel = Path(top, name).relative_to(self.repo.root).as_posix()
                if rel not in listed:
                    self.problems.mismatched.append(f"{rel} (not in DVC's record)")


def import_dvc(
    repo: Repo, args: Sequence[str] = (), progress: Progress | None = None
) -> list[ImportedOutput]:
    """Import every output of the records (all of the worktree's when ``args`` is empty)."""
    records = find_records(repo, args)
    outputs = [o for r in records for o in outputs_of(repo, r)]
    planner = _Planner(repo)
    for output in outputs:
        planner.check(output)
    planner.problems.raise_if_any(
        "DVC",
        "run 'dvc pull' (or 'dvc fetch') so DVC's cache holds them"
        + ("" if planner.sources.remote_url else ", or configure a DVC remote"),
    )
    results = []
    for output in outputs:
        added = add_op.add(repo, repo.target(output.path, repo.root), progress)
        results.append(
            ImportedOutput(
                output.record,
                output.path,
                added.pointer,
                added.manifest,
                added.files,
                added.size,
                planner.counts.get(output.path, {}),
            )
        )
    for record in records:
        if not record.endswith(".dvc"):
            continue
        with repo.lock():
            literal = f":(literal){record}"  # a name with '*' must not match others
            repo.git.run("rm", "--cached", "--quiet", "--ignore-unmatch", "--", literal)
            try:
                repo.abspath(record).unlink(missing_ok=True)
            except OSError as err:
                raise storage_error(err, f"cannot remove {record}") from err
        for result in results:
            if result.record == record:
                result.record_removed = True
    return results
