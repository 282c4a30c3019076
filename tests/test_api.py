"""The public Python API (docs/api.md): the names ``cas`` exports, the signatures of the
``Repo`` methods, and what they do on a real Git repository with the local store."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import pytest

import cas
from cas import pointer
from cas.objects import pack_key
from cas.ops.compare import expected_rows
from tests.conftest import cas as cas_cli
from tests.conftest import git, write

EXPORTED = [
    "CasError",
    "ConflictError",
    "CorruptObjectError",
    "DependencyError",
    "FileChangedError",
    "IntegrityError",
    "LockedError",
    "ManifestError",
    "NotARepoError",
    "ObjectMissingError",
    "PathError",
    "PointerError",
    "Repo",
    "RerunFailedError",
    "StorageError",
    "UsageError",
    "current_run",
    "log_metric",
    "log_metrics",
    "open",
    "read_bytes",
    "seed_everything",
    "start_run",
]

P = "paths: 'Sequence[str | Path]' = ()"
JOBS = "jobs: 'int' = 8"
PROGRESS = "progress: 'Progress | None' = None"
EXECUTOR = "executor: 'str | Executor | None' = None"
#: A changed signature is a changed API: update docs/api.md with this table.
SIGNATURES = {
    "open": "(path: 'str | os.PathLike[str] | None' = '.') -> 'Repo'",
    "init": "(path: 'str | os.PathLike[str] | None' = '.') -> 'Repo'",
    "add": "(self, paths: 'Sequence[str | Path]', *, progress: 'Progress | None' = None, "
    f"{EXECUTOR}, to_remote: 'bool' = False, remote: 'str | None' = None) -> 'list[AddResult]'",
    "status": f"(self, {P}) -> 'list[TargetStatus]'",
    "remote_status": f"(self, {P}, *, remote: 'str | None' = None) -> 'list[RemoteStatus]'",
    "checkout": f"(self, {P}, *, rev: 'str | None' = None, force: 'bool' = False, {PROGRESS}, "
    "subtree_required: 'bool' = True) -> 'list[CheckoutResult]'",
    "diff": f"(self, rev_a: 'str' = 'HEAD', rev_b: 'str | None' = None, *, {P}) "
    "-> 'list[FileChange]'",
    "ls": f"(self, {P}, *, rev: 'str | None' = None) -> 'list[LsEntry]'",
    "fsck": "(self) -> 'FsckResult'",
    "push": f"(self, {P}, *, revs: 'Sequence[str]' = (), all_commits: 'bool' = False, "
    f"remote: 'str | None' = None, {JOBS}, {PROGRESS}, repair: 'bool' = False) -> 'PushResult'",
    "fetch": f"(self, {P}, *, rev: 'str | None' = None, subpath: 'str | None' = None, "
    f"remote: 'str | None' = None, {JOBS}, {PROGRESS}, repair: 'bool' = False) -> 'FetchResult'",
    "pull": f"(self, {P}, *, rev: 'str | None' = None, subpath: 'str | None' = None, "
    f"remote: 'str | None' = None, {JOBS}, force: 'bool' = False, {PROGRESS}) -> 'PullResult'",
    "verify": f"(self, {P}, *, revs: 'Sequence[str]' = (), remote: 'str | None' = None, "
    f"deep: 'bool' = False, {JOBS}) -> 'VerifyResult'",
    "gc": "(self, *, branches: 'bool' = True, tags: 'bool' = True, all_commits: 'bool' = False, "
    "dry_run: 'bool' = False, delete_unpushed: 'bool' = False, remote: 'str | None' = None, "
    "grace_seconds: 'float' = 604800) -> 'GcResult'",
    "snapshot_query": "(self, query: 'str', *, source: 'str', name: 'str', "
    "batch_rows: 'int | None' = None) -> 'SnapshotInfo'",
    "snapshots": "(self, name: 'str') -> 'list[SnapshotInfo]'",
    "manifest_create": "(self, pointer: 'str', *, url: 'str', glob: 'str | None' = None, "
    f"jobs: 'int | None' = None, {EXECUTOR}, {PROGRESS}) -> 'CorpusResult'",
    "manifest_append": "(self, pointer: 'str', *, url: 'str | None' = None, "
    "glob: 'str | None' = None, jobs: 'int | None' = None, allow_removals: 'bool' = False, "
    f"{EXECUTOR}, {PROGRESS}) -> 'CorpusResult'",
    "manifest_verify": "(self, pointer: 'str', *, sample: 'float' = 1.0, seed: 'int' = 0, "
    f"jobs: 'int | None' = None, rev: 'str | None' = None, {PROGRESS}) "
    "-> 'ManifestVerifyResult'",
    "runs": "(self) -> 'list[RunSummary]'",
    "run_show": "(self, ref: 'str') -> 'RunRecord'",
    "runs_diff": "(self, run_a: 'str', run_b: 'str') -> 'RunsDiff'",
    "runs_to_mlflow": "(self, refs: 'Sequence[str]' = ()) -> 'list[MlflowCopy]'",
    "repro": "(self, ref: 'str', *, rtol: 'float | None' = None, atol: 'float | None' = None, "
    "metric: 'Sequence[str]' = (), strict_env: 'bool' = False, "
    "say: 'Callable[[str], None]' = <built-in function print>) -> 'ReproResult'",
    "close": "(self) -> 'None'",
}
FUNCTIONS = {
    "open": "(path: 'str', rev: 'str | None' = None, mode: 'str' = 'rb', *, "
    "repo: 'str | os.PathLike[str] | None' = None, encoding: 'str' = 'utf-8', "
    "errors: 'str | None' = None, newline: 'str | None' = None) -> 'IO[Any]'",
    "read_bytes": "(path: 'str', rev: 'str | None' = None, *, "
    "repo: 'str | os.PathLike[str] | None' = None) -> 'bytes'",
}


def test_exported_names() -> None:
    assert cas.__all__ == EXPORTED
    for name in EXPORTED:
        assert getattr(cas, name) is not None
    assert issubclass(cas.ManifestError, cas.IntegrityError)
    assert issubclass(cas.CorruptObjectError, cas.IntegrityError)
    assert cas.split.assign is not None and cas.fs.CASFileSystem is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = cas.nope  # type: ignore[attr-defined]


def test_signatures() -> None:
    assert {n: str(inspect.signature(getattr(cas.Repo, n))) for n in SIGNATURES} == SIGNATURES
    assert {n: str(inspect.signature(getattr(cas, n))) for n in FUNCTIONS} == FUNCTIONS
    assert cas.Repo.discover == cas.Repo.open  # the older name stays


def test_signatures_are_documented() -> None:
    """docs/api.md has a heading per public method naming each of its parameters, so the page
    cannot drift from the code."""
    page = (Path(__file__).resolve().parent.parent / "docs" / "api.md").read_text()
    headings = re.findall(r"^### `(cas\.Repo\.|repo\.|cas\.)(\w+)\((.*)\)`", page, re.M)
    documented = {(owner != "cas.", name): params for owner, name, params in headings}
    for on_repo, table in ((True, SIGNATURES), (False, FUNCTIONS)):
        for name in table:
            function = getattr(cas.Repo if on_repo else cas, name)
            assert (on_repo, name) in documented, f"docs/api.md has no heading for {name}"
            params = [p for p in inspect.signature(function).parameters if p != "self"]
            shown = re.findall(r"\w+(?==|,|$)", documented[on_repo, name].replace(" ", ""))
            assert [p for p in shown if p in params] == params, (name, shown)


@pytest.fixture
def repo(git_repo: Path) -> cas.Repo:
    """Two commits: v1 with a.txt "one", v2 with "two" (and a file in a subfolder)."""
    write(git_repo / "data" / "a.txt", "one\n")
    write(git_repo / "data" / "sub" / "b.bin", bytes(range(256)) * 64)
    opened = cas.Repo.init(git_repo)
    opened.add(["data"])
    git(git_repo, "commit", "-qm", "v1")
    git(git_repo, "tag", "v1")
    write(git_repo / "data" / "a.txt", "two\n")
    opened.add(["data"])
    git(git_repo, "commit", "-qm", "v2")
    return opened


def test_open_discovers_upward(repo: cas.Repo, tmp_path: Path) -> None:
    inner = cas.Repo.open(path=repo.root / "data" / "sub")
    assert inner.root == repo.root
    assert [s.state for s in inner.status()] == ["unchanged"]
    with pytest.raises(cas.NotARepoError):
        cas.Repo.open(tmp_path)


def test_ls_returns_dataclasses(repo: cas.Repo) -> None:
    listing = repo.ls(["data"], rev="v1")
    assert [(e.path, e.size) for e in listing] == [("data/a.txt", 4), ("data/sub/b.bin", 16384)]
    assert re.fullmatch("[0-9a-f]{64}", listing[0].hash)
    assert json.loads(cas_cli(repo.root, "ls", "--rev", "v1", "--json").stdout)[0] == {
        "path": "data/a.txt",
        "size": 4,
        "hash": listing[0].hash,
        "executable": False,
    }


def test_open_and_read_bytes_at_a_revision(repo: cas.Repo) -> None:
    root = repo.root
    assert cas.read_bytes("data/a.txt", repo=root) == b"two\n"
    assert cas.read_bytes("data/a.txt", "v1", repo=root) == b"one\n"
    with cas.open("data/a.txt", rev="v1", mode="r", repo=root) as f:
        assert f.read() == "one\n"
    with cas.open("data/sub/b.bin", "HEAD", repo=root) as f:
        f.seek(256)
        assert f.read(3) == bytes([0, 1, 2])
    with pytest.raises(cas.UsageError, match="mode 'w'"):
        cas.open("data/a.txt", mode="w", repo=root)
    with pytest.raises(FileNotFoundError):
        cas.read_bytes("data/nope.txt", repo=root)


def test_errors_carry_structured_fields(repo: cas.Repo, tmp_path: Path) -> None:
    with pytest.raises(cas.PathError) as path_err:
        repo.add(["nope"])
    assert path_err.value.path == "nope" and path_err.value.object_id is None
    missing = "0" * 64
    with pytest.raises(cas.ObjectMissingError) as missing_err:
        repo.load_manifest(missing)
    assert missing_err.value.object_id == missing
    # damage one chunk of the pack that holds b.bin: the read names the chunk
    target = repo.target("data")
    chunk_id = expected_rows(repo, target, repo.read_pointer(target))["sub/b.bin"].chunks[0][0]
    loc = repo.objects.index.get(chunk_id)
    repo.close()
    pack = repo.local.path(pack_key(loc.pack))
    pack.chmod(0o644)
    data = bytearray(pack.read_bytes())
    data[loc.offset] ^= 0xFF
    pack.write_bytes(bytes(data))
    with pytest.raises(cas.CorruptObjectError) as corrupt:
        cas.read_bytes("data/sub/b.bin", repo=repo.root)
    assert corrupt.value.object_id == chunk_id.hex() and corrupt.value.exit_code == 4
    # a remote whose folder cannot be made: the failure names the remote
    blocker = write(tmp_path / "file", "not a folder")
    cas_cli(repo.root, "remote", "add", "origin", (blocker / "cas").as_uri())
    with pytest.raises(cas.StorageError) as storage:
        cas.Repo.open(repo.root).push()
    assert storage.value.remote == "origin"


def test_a_hostile_manifest_exits_with_the_integrity_code(repo: cas.Repo) -> None:
    """A pointer whose totals disagree with its manifest is an integrity failure (4), not a
    usage error (2), and the JSON error says so."""
    ptr = pointer.read(repo.root / "data.cas", "data.cas")
    lying = pointer.Pointer(**{**vars(ptr), "files": ptr.files + 1})
    (repo.root / "data.cas").write_bytes(lying.encode())
    err = json.loads(cas_cli(repo.root, "checkout", "--json", code=4).stderr)["error"]
    assert err["class"] == "ManifestError" and err["exit_code"] == 4
    assert "says 3 files" in err["message"]
