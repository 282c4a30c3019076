"""Hostile input: a repository, a remote and a config that may come from anyone.

Threat model: the attacker controls the commits a victim pulls (pointers, ``.cas/config``, Git
symlinks) and the bytes a remote serves (manifests, packs, index files). The victim runs ``cas
pull`` / ``cas checkout``. Whatever the attacker crafts, cas must refuse in one line with a
non-zero exit code, write nothing outside the target, follow no symlink out of it, leave the
working tree and the local store as they were, and never print or commit a credential.

Manifests are built the way an attacker would: straight with pyarrow (no cas encoder, no sorting,
no checks), written with Parquet options cas never uses, named by the documented canonical id
(docs/format.md) and dropped by hand into a ``file://`` remote (or, for a store shared through
``core.store``, into the local store) while a commit names them in a pointer.

Decisions this file pins (see docs/format.md, "Manifest"):

- Paths that differ only in case (``A``/``a``) or in Unicode normalisation (NFC/NFD ``é``) are a
  valid manifest: on Linux both files coexist and both are written. Checkout probes the target
  filesystem and refuses, before writing anything, a manifest two of whose paths (or folders)
  would be one name there (macOS, Windows, casefold ext4), rather than let one overwrite the other.
- Symbolic links: ``cas add`` refuses them (never follows or records them); checkout refuses a
  working tree holding one (inside the target, or the target itself) and never writes through one.
- No manifest path, and no target, has a ``.git`` component in any case or HFS+ spelling: a
  checkout writing one would plant a repository whose config runs commands.
- No manifest path holds a control character (terminal escapes in ``cas ls``/``diff`` output).

The fuzz tests use fixed example counts (named in each docstring) with derandomised Hypothesis,
and record the number of inputs they ran as junit test-suite properties ``fuzzed_inputs.*``
(1,600 in all).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cas import hashing, manifest, pointer, versions
from cas.errors import CasError, FileChangedError, PathError
from cas.objects import index_key, manifest_key, pack_key
from cas.ops import checkout as checkout_op
from cas.ops.hashfile import hash_file
from cas.repo import Repo
from cas.workspace import scan
from tests.conftest import CAS, cas, git, write
from tests.s3_server import ACCESS_KEY, S3Server

Chunk = tuple[bytes, int]
RowSpec = tuple[str, int, bytes, bool, Sequence[Chunk]]

# The manifest schema exactly as docs/format.md states it, written independently of cas.manifest.
CHUNK_TYPE = pa.struct([("id", pa.binary(32)), ("size", pa.uint32())])
SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("size", pa.uint64()),
        ("hash", pa.binary(32)),
        ("executable", pa.bool_()),
        ("chunks", pa.list_(CHUNK_TYPE)),
    ],
    metadata={b"format": b"cas-manifest", b"version": b"1"},
)
TWO_GIB = 2 << 30


# -- crafting objects as an attacker would ------------------------------------------------------
def craft(rows: Sequence[RowSpec]) -> pa.Table:
    """A manifest table built directly with pyarrow, rows in the given order, nothing checked."""
    offsets, ids, sizes = [0], [], []
    for row in rows:
        for cid, size in row[4]:
            ids.append(cid)
            sizes.append(size)
        offsets.append(len(ids))
    chunks = pa.ListArray.from_arrays(
        pa.array(offsets, pa.int32()),
        pa.StructArray.from_arrays(
            [pa.array(ids, pa.binary(32)), pa.array(sizes, pa.uint32())], fields=list(CHUNK_TYPE)
        ),
    )
    columns = {
        "path": pa.array([r[0] for r in rows], pa.string()),
        "size": pa.array([r[1] for r in rows], pa.uint64()),
        "hash": pa.array([r[2] for r in rows], pa.binary(32)),
        "executable": pa.array([r[3] for r in rows], pa.bool_()),
        "chunks": chunks,
    }
    return pa.table(columns, schema=SCHEMA)


def to_parquet(table: pa.Table) -> bytes:
    """Parquet options cas never uses (snappy, dictionaries): the id must not depend on them."""
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="snappy", use_dictionary=True)
    return sink.getvalue()


def attacker_id(table: pa.Table) -> str:
    """The documented canonical id (docs/format.md; pinned by a golden vector in test_formats):
    an attacker computes it so the manifest is not refused as merely corrupt."""
    return manifest.canonical_id(table)


def empty_row(path: str) -> RowSpec:
    return (path, 0, hashing.digest(b""), False, ())


def bytes_row(path: str, data: bytes) -> RowSpec:
    """A row for content the store may not hold: fine, validation comes first."""
    digest = hashing.digest(data)
    return (path, len(data), digest, False, ((digest, len(data)),) if data else ())


def bomb(rows: int, chunks_per_row: int = 0, metadata: dict[bytes, bytes] | None = None) -> bytes:
    """A small Parquet file that decodes to about ``rows`` rows: one real row group of
    constant, dictionary- and run-length-encoded columns, listed over and over in the footer
    (every copy points at the same pages), as an attacker would make it. 600 KB for 10^9 rows."""
    group = 1 << 20 if not chunks_per_row else max(1, (1 << 20) // chunks_per_row)
    n_chunks = group * chunks_per_row
    zero = pa.py_buffer(bytes(32 * max(group, n_chunks)))
    fixed = pa.FixedSizeBinaryArray.from_buffers(pa.binary(32), group, [None, zero])
    chunk_ids = pa.FixedSizeBinaryArray.from_buffers(pa.binary(32), n_chunks, [None, zero])
    offsets = pa.array(
        range(0, n_chunks + 1, chunks_per_row) if chunks_per_row else [0] * (group + 1), pa.int32()
    )
    table = pa.table(
        {
            "path": pa.repeat(pa.scalar("a"), group),
            "size": pa.repeat(pa.scalar(0, pa.uint64()), group),
            "hash": fixed,
            "executable": pa.repeat(pa.scalar(False), group),
            "chunks": pa.ListArray.from_arrays(
                offsets,
                pa.StructArray.from_arrays(
                    [chunk_ids, pa.repeat(pa.scalar(1, pa.uint32()), n_chunks)],
                    fields=list(CHUNK_TYPE),
                ),
            ),
        },
        schema=SCHEMA.with_metadata(metadata or SCHEMA.metadata),
    )
    sink = io.BytesIO()
    pq.write_table(table, sink, use_dictionary=True, compression="zstd", row_group_size=group)
    data = sink.getvalue()
    footer = struct.unpack("<I", data[-8:-4])[0]
    one = pq.ParquetFile(io.BytesIO(data)).metadata
    claimed = pq.ParquetFile(io.BytesIO(data)).metadata
    count = 1
    while count * 2 * group <= rows:
        claimed.append_row_groups(claimed)
        count *= 2
    while count * group < rows:
        claimed.append_row_groups(one)
        count += 1
    out = io.BytesIO()
    claimed.write_metadata_file(out)
    return data[: len(data) - 8 - footer] + out.getvalue()[4:]


# -- a published repository, and victims that clone it ----------------------------------------
@dataclass
class Published:
    """An honest origin (two commits, two packs) pushed to a file:// remote, and two clones to
    copy from: ``fresh`` (Git only: nothing fetched) and ``pulled`` (data checked out)."""

    origin: Path
    remote: Path
    fresh: Path
    pulled: Path


@dataclass
class Victim:
    """A clone that is the victim's, with a remote and an outside folder of its own."""

    root: Path
    remote: Path
    outside: Path
    base: Path  # holds all three: nothing under it may change unless a test says so

    def commit_pointer(self, target: str, ptr: pointer.Pointer) -> None:
        """The attacker's commit arriving by ``git pull``: a pointer naming a crafted object."""
        write(self.root / pointer.pointer_for(target), ptr.encode())
        git(self.root, "add", pointer.pointer_for(target))
        git(self.root, "commit", "-qm", "upstream change")

    def serve_manifest(self, data: bytes, manifest_id: str, where: Path | None = None) -> None:
        """Put manifest bytes on the remote (or into a store folder) under ``manifest_id``."""
        write((where or self.remote) / manifest_key(manifest_id), data)

    def local_store(self) -> Path:
        return self.root / ".cas/store"


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def snapshot(base: Path) -> dict[str, tuple[str, str]]:
    """Every entry under ``base`` (Git's own folder aside): kind and content hash, link target
    for links (never followed)."""
    found: dict[str, tuple[str, str]] = {}
    for folder, dirs, files in os.walk(base):
        dirs[:] = [d for d in dirs if d != ".git"]
        for name in dirs + files:
            path = Path(folder) / name
            rel = path.relative_to(base).as_posix()
            if path.is_symlink():
                found[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                found[rel] = ("dir", "")
            else:
                found[rel] = ("file", hashing.digest(path.read_bytes()).hex())
    return found


def assert_unchanged(before: dict[str, tuple[str, str]], victim: Victim) -> None:
    """Nothing under the victim's base changed, except empty scratch folders in the store
    (``tmp/``: writes in progress, never read), the store's lock file, and the stat cache of an
    honest target checked out on the way (``.cas/state``: deleting it changes no result)."""
    after = snapshot(victim.base)
    store = victim.local_store().relative_to(victim.base).as_posix()
    state = (victim.root / ".cas/state").relative_to(victim.base).as_posix()
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    noise = {
        k
        for k in changed
        if (k.startswith(store) and after.get(k) == ("dir", ""))
        or k.startswith(state + "/")
        or k == f"{store}/lock"  # the store's lock file (empty): every process takes it
    }
    assert changed == noise, sorted(changed - noise)


def make_origin(base: Path) -> Published:
    """Built through the Python API (the CLI is what the tests exercise; here it would only
    cost interpreter start-ups)."""
    from cas import remote as remotes
    from cas.ops import transfer

    origin, remote = base / "origin", base / "remote"
    origin.mkdir()
    git(origin, "init", "-q", "-b", "main")
    git(origin, "config", "user.email", "a@example.com")
    git(origin, "config", "user.name", "A")
    repo = Repo.init(origin)
    write(origin / "data/a.txt", "alpha\n")
    write(origin / "data/sub/b.bin", blake3.blake3(b"b").digest(length=100_000))
    write(origin / "data/run.sh", "#!/bin/sh\n")
    os.chmod(origin / "data/run.sh", 0o755)
    repo.add([origin / "data"])
    remotes.add(repo, "origin", remote.as_uri())
    git(origin, "add", "-A")
    git(origin, "commit", "-qm", "v1")
    with open(origin / "data/sub/b.bin", "ab") as f:  # new chunks: a second pack
        f.write(blake3.blake3(b"c").digest(length=70_000))
    Repo.discover(origin).add([origin / "data"])
    git(origin, "commit", "-qam", "v2")
    transfer.push(Repo.discover(origin), revs=["HEAD~1", "HEAD"])
    fresh = base / "fresh"
    git(base, "clone", "-q", str(origin), str(fresh))
    git(fresh, "config", "user.email", "v@example.com")
    git(fresh, "config", "user.name", "V")
    pulled = base / "pulled"
    shutil.copytree(fresh, pulled, symlinks=True)
    transfer.pull(Repo.discover(pulled))
    return Published(origin, remote, fresh, pulled)


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Published:
    return make_origin(tmp_path_factory.mktemp("published"))


def _victim(template: Path, published: Published, tmp_path: Path) -> Victim:
    base = tmp_path / "base"
    root, remote, outside = base / "victim", base / "remote", base / "outside"
    shutil.copytree(template, root, symlinks=True)
    shutil.copytree(published.remote, remote, symlinks=True)
    write(outside / "secret.txt", "the victim's private file\n")
    write(root / ".cas/config.local", f'[remote "origin"]\nurl = {remote.as_uri()}\n')
    return Victim(root, remote, outside, base)


@pytest.fixture
def victim(published: Published, tmp_path: Path) -> Victim:
    """A clone with its data checked out."""
    return _victim(published.pulled, published, tmp_path)


@pytest.fixture
def fresh_victim(published: Published, tmp_path: Path) -> Victim:
    """A clone that has fetched nothing yet."""
    return _victim(published.fresh, published, tmp_path)


def real_rows(victim: Victim) -> dict[str, manifest.Row]:
    """The honest manifest rows of the victim's current pointer."""
    repo = Repo.discover(victim.root)
    ptr = repo.read_pointer(repo.target("data.cas", victim.root))
    return {r.path: r for r in manifest.to_rows(repo.load_manifest(ptr.manifest))}


# -- crafted manifests: every rule, end to end ---------------------------------------------------
@dataclass(frozen=True)
class Crafted:
    """Manifest bytes, the id a pointer names them by, and the totals the pointer states."""

    data: bytes
    id: str
    files: int
    size: int


def crafted(rows: Sequence[RowSpec]) -> Crafted:
    table = craft(rows)
    return Crafted(to_parquet(table), attacker_id(table), len(rows), sum(r[1] for r in rows))


def _with_empty_chunks(_: Victim) -> Crafted:
    """Three empty chunks before the real one: sizes add up, and a million would cost nothing
    to list but a read each at checkout."""
    x = hashing.digest(b"x")
    return crafted([("a", 1, x, False, ((hashing.digest(b""), 0),) * 3 + ((x, 1),))])


def _with_null_chunk_id(_: Victim) -> Crafted:
    table = craft([bytes_row("a", b"x")])
    chunks = pa.ListArray.from_arrays(
        pa.array([0, 1], pa.int32()),
        pa.StructArray.from_arrays(
            [pa.array([None], pa.binary(32)), pa.array([1], pa.uint32())], fields=list(CHUNK_TYPE)
        ),
    )
    table = table.set_column(4, "chunks", chunks)
    return Crafted(to_parquet(table), "ab" * 32, 1, 1)  # refused before the id matters


def _with_invalid_utf8(_: Victim) -> Crafted:
    table = craft([bytes_row("a", b"x")])
    offsets = pa.py_buffer(struct.pack("<2i", 0, 2))
    path = pa.Array.from_buffers(pa.string(), 1, [None, offsets, pa.py_buffer(b"\xff/")])
    table = table.set_column(0, "path", path)  # pyarrow writes what it is given
    return Crafted(to_parquet(table), "cd" * 32, 1, 1)


def _with_extra_column(_: Victim) -> Crafted:
    table = craft([bytes_row("a", b"x")]).append_column("mode", pa.array([0o4755], pa.uint32()))
    return Crafted(to_parquet(table), "ef" * 32, 1, 1)


def _under_another_id(_: Victim) -> Crafted:
    """Valid manifest bytes served under the id of other rows: the remote lies."""
    honest = crafted([bytes_row("a", b"x")])
    other = attacker_id(craft([bytes_row("b", b"y")]))
    return Crafted(honest.data, other, 1, 1)


HOSTILE_MANIFESTS: dict[str, tuple[Callable[[Victim], Crafted], str, int]] = {
    "dot-dot": (lambda v: crafted([bytes_row("../pwned", b"x")]), "unsafe path", 4),
    "dot-dot-inside": (lambda v: crafted([bytes_row("sub/../../pwned", b"x")]), "unsafe path", 4),
    "absolute": (
        lambda v: crafted([bytes_row(str(v.outside / "pwned"), b"x")]),
        "unsafe path",
        4,
    ),
    "drive-letter": (lambda v: crafted([bytes_row("C:/pwned", b"x")]), "unsafe path", 4),
    "backslash": (lambda v: crafted([bytes_row("..\\pwned", b"x")]), "unsafe path", 4),
    "nul-byte": (lambda v: crafted([bytes_row("a\x00b", b"x")]), "unsafe path", 4),
    "terminal-escape": (lambda v: crafted([bytes_row("a\x1b]0;pwned\x07", b"x")]), "unsafe", 4),
    "dot-git": (lambda v: crafted([bytes_row(".git/config", b"x")]), "unsafe path", 4),
    "dot-git-upper": (lambda v: crafted([bytes_row("sub/.GIT/hooks/x", b"x")]), "unsafe", 4),
    "dot-git-hfs": (lambda v: crafted([bytes_row(".g\u200cit/config", b"x")]), "unsafe", 4),
    "dot-git-ntfs-dot": (lambda v: crafted([bytes_row(".git./config", b"x")]), "unsafe", 4),
    "dot-git-ntfs-space": (lambda v: crafted([bytes_row("sub/.git /hooks/x", b"x")]), "unsafe", 4),
    "dot-git-ntfs-short": (lambda v: crafted([bytes_row("GIT~1/config", b"x")]), "unsafe", 4),
    "dot-git-ntfs-stream": (lambda v: crafted([bytes_row(".git::$DATA/x", b"x")]), "unsafe", 4),
    "temp-name": (lambda v: crafted([bytes_row(".a.cas-tmp-1-0123abcd", b"x")]), "unsafe", 4),
    "file-and-folder": (
        lambda v: crafted([bytes_row("a", b"x"), bytes_row("a/b", b"y")]),
        "as a file and as a folder",
        4,
    ),
    "duplicate": (
        lambda v: crafted([bytes_row("a", b"x"), bytes_row("a", b"y")]),
        "duplicate paths",
        4,
    ),
    "unsorted": (
        lambda v: crafted([bytes_row("b", b"x"), bytes_row("a", b"y")]),
        "not sorted",
        4,
    ),
    "size-not-sum-of-chunks": (
        lambda v: crafted([("a", 100, hashing.digest(b"x"), False, ((hashing.digest(b"x"), 1),))]),
        "do not add up",
        4,
    ),
    "empty-chunk": (_with_empty_chunks, "empty chunk", 4),
    "null-chunk-id": (_with_null_chunk_id, "null values", 4),
    "invalid-utf8": (_with_invalid_utf8, "not valid Parquet", 4),
    "unknown-schema": (_with_extra_column, "unknown schema", 4),
    "rows-hash-to-another-id": (_under_another_id, "corrupt", 4),
}


# One case per check end to end (the CLI maps each cas error to its line and exit code the same
# way); the other cases of the same check are decoded in-process, which keeps this file fast.
END_TO_END = [
    "absolute",
    "dot-git",
    "file-and-folder",
    "size-not-sum-of-chunks",
    "null-chunk-id",
    "invalid-utf8",
    "rows-hash-to-another-id",
]


@pytest.mark.parametrize("case", sorted(HOSTILE_MANIFESTS))
def test_decode_refuses_a_hostile_manifest(case: str, tmp_path: Path) -> None:
    """Every crafted manifest (24 of them) is refused by the decoder itself, with a cas error
    (never a pyarrow, Unicode or attribute error) naming the rule, and the exit code the CLI
    gives it; one case per check then runs end to end through ``cas pull`` below."""
    build, message, code = HOSTILE_MANIFESTS[case]
    bad = build(Victim(tmp_path, tmp_path, tmp_path / "outside", tmp_path))
    with pytest.raises(CasError, match=message) as info:
        manifest.decode(bad.data, bad.id)
    assert info.value.exit_code == code


@pytest.mark.parametrize("case", END_TO_END)
def test_pull_refuses_a_hostile_manifest(case: str, victim: Victim) -> None:
    """The attacker commits a pointer naming a crafted manifest and serves it from the remote:
    ``cas pull`` refuses it while fetching, in one line naming the manifest, and nothing
    changes anywhere (working tree, local store, remote, the folder beside the clone)."""
    build, message, code = HOSTILE_MANIFESTS[case]
    bad = build(victim)
    victim.serve_manifest(bad.data, bad.id)
    victim.commit_pointer("data", pointer.Pointer("dir", bad.id, bad.size, bad.files))
    before = snapshot(victim.base)
    line = one_line(cas(victim.root, "pull", code=code).stderr)
    assert message in line and bad.id in line and "nothing was stored" in line
    assert_unchanged(before, victim)


@pytest.mark.parametrize("case", ["absolute"])
def test_checkout_refuses_a_hostile_manifest_already_in_the_store(
    case: str, victim: Victim
) -> None:
    """A store shared through a committed ``core.store`` is as writable by the attacker as a
    remote: reading a manifest from the local store applies the same rules as fetching it, for
    checkout (even with --force) and status alike."""
    build, message, code = HOSTILE_MANIFESTS[case]
    bad = build(victim)
    victim.serve_manifest(bad.data, bad.id, where=victim.local_store())
    victim.commit_pointer("data", pointer.Pointer("dir", bad.id, bad.size, bad.files))
    before = snapshot(victim.base)
    line = one_line(cas(victim.root, "checkout", "--force", "data.cas", code=code).stderr)
    assert message in line and bad.id in line
    status = cas(victim.root, "status", code=2).stdout
    assert message in status and bad.id in status
    assert_unchanged(before, victim)


# -- valid manifests that lie: sizes, hashes, pointer totals -----------------------------------
def store_manifest(
    victim: Victim, rows: Sequence[RowSpec], files: int | None = None, size: int | None = None
) -> str:
    """A crafted manifest placed in the local store and named by a committed pointer (totals
    from the rows unless given)."""
    ordered = sorted(rows, key=lambda r: r[0].encode())
    bad = crafted(ordered)
    victim.serve_manifest(bad.data, bad.id, where=victim.local_store())
    ptr = pointer.Pointer(
        "dir", bad.id, bad.size if size is None else size, bad.files if files is None else files
    )
    victim.commit_pointer("data", ptr)
    return bad.id


def honest(victim: Victim) -> dict[str, RowSpec]:
    return {
        p: (r.path, r.size, r.hash, r.executable, r.chunks) for p, r in real_rows(victim).items()
    }


def test_pointer_whose_totals_lie_is_refused(victim: Victim) -> None:
    """A pointer is what a reviewer reads in a Git diff: one claiming 10^9 files and 10^18
    bytes for a four-file manifest (or any other mismatch) is refused before anything is
    written, so the diff cannot understate what a checkout writes."""
    rows = honest(victim)
    rows["extra.bin"] = ("extra.bin", *rows["run.sh"][1:])  # same content, one more file
    manifest_id = store_manifest(victim, list(rows.values()), files=10**9, size=10**18)
    before = snapshot(victim.base)
    line = one_line(cas(victim.root, "checkout", code=4).stderr)
    assert "says 1000000000 files" in line and f"holds {len(rows)} files" in line
    assert manifest_id in line
    assert_unchanged(before, victim)


def test_chunks_that_do_not_hash_to_the_file_hash_leave_the_old_file(victim: Victim) -> None:
    """A row whose chunks (real ones, in the store, lengths right) do not hash to its file hash:
    the checkout reads them, sees the mismatch, and leaves the old file in place: no wrong
    content under the final name, no temp file beside it."""
    rows = honest(victim)
    b = rows["sub/b.bin"]
    rows["a.txt"] = ("a.txt", b[1], hashing.digest(b"what the attacker claims"), False, b[4])
    store_manifest(victim, list(rows.values()))
    before = snapshot(victim.base)
    line = one_line(cas(victim.root, "checkout", code=4).stderr)
    assert "data/a.txt do not hash to its recorded hash" in line
    assert_unchanged(before, victim)


def test_chunk_sizes_that_lie_are_refused_before_writing(victim: Victim) -> None:
    """A row that says 1 byte and names a chunk of tens of KB as 1 byte long (sizes add up, the
    hash is the chunk's): the store knows the chunk's real length, so the checkout refuses
    before it touches anything, instead of writing a file tens of thousands of times larger than
    its manifest and pointer say."""
    rows = honest(victim)
    first = rows["sub/b.bin"][4][0][0]
    rows["sub/b.bin"] = ("sub/b.bin", 1, first, False, ((first, 1),))
    store_manifest(victim, list(rows.values()))
    before = snapshot(victim.base)
    line = one_line(cas(victim.root, "checkout", code=4).stderr)
    assert first.hex() in line and "data/sub/b.bin" in line and "nothing was written" in line
    assert_unchanged(before, victim)


def test_one_chunk_given_two_lengths_is_refused_before_fetching(victim: Victim) -> None:
    """Two rows name one chunk the store lacks, with different lengths: at most one can be
    right, so the checkout refuses while planning, before it fetches or touches anything."""
    rows = honest(victim)
    nowhere = hashing.digest(b"a chunk on no store")
    rows["x1.bin"] = ("x1.bin", 1, hashing.digest(b"1"), False, ((nowhere, 1),))
    rows["x2.bin"] = ("x2.bin", 2, hashing.digest(b"2"), False, ((nowhere, 2),))
    store_manifest(victim, list(rows.values()))
    before = snapshot(victim.base)
    line = one_line(cas(victim.root, "checkout", code=4).stderr)
    assert nowhere.hex() in line and "data/x2.bin" in line and "nothing was written" in line
    assert_unchanged(before, victim)


def test_fetched_chunk_whose_length_lies_is_refused_before_writing(
    published: Published, fresh_victim: Victim
) -> None:
    """The same lie about a chunk no local store holds: its length is known only once it is
    fetched (and verified by its id), and is checked then, before anything is written."""
    pulled = Repo.discover(published.pulled)
    ptr = pulled.read_pointer(pulled.target("data.cas", published.pulled))
    rows = {r.path: tuple(r) for r in manifest.to_rows(pulled.load_manifest(ptr.manifest))}
    first = rows["sub/b.bin"][4][0][0]
    rows["sub/b.bin"] = ("sub/b.bin", 1, first, False, ((first, 1),))
    store_manifest(fresh_victim, list(rows.values()))
    line = one_line(cas(fresh_victim.root, "checkout", code=4).stderr)
    assert first.hex() in line and "the store holds" in line and "nothing was written" in line
    assert not (fresh_victim.root / "data").exists()


# -- names that collide by case or Unicode normalisation --------------------------------------
NFC, NFD = unicodedata.normalize("NFC", "\u00e9.txt"), unicodedata.normalize("NFD", "\u00e9.txt")


def colliding_rows(victim: Victim) -> dict[str, RowSpec]:
    """The honest rows plus ``A.txt`` beside ``a.txt`` and an NFD ``é.txt`` beside an NFC one,
    each pair with different contents (chunks the store holds)."""
    rows = honest(victim)
    a, run = rows["a.txt"], rows["run.sh"]
    rows["A.txt"] = ("A.txt", *run[1:3], False, run[4])
    rows[NFC] = (NFC, *a[1:])
    rows[NFD] = (NFD, *run[1:3], False, run[4])
    return rows


def test_case_and_normalisation_twins_coexist_where_the_filesystem_allows(victim: Victim) -> None:
    """Where the filesystem tells the names apart (Linux), a manifest with ``A.txt``/``a.txt``
    and NFC/NFD twins is valid and each file gets its own content; where it does not, the
    checkout refuses before writing. Which branch runs depends on the filesystem under test."""
    rows = colliding_rows(victim)
    store_manifest(victim, list(rows.values()))
    before = snapshot(victim.base)
    case, norm = checkout_op._folding(victim.root)
    if case or norm:
        assert "are one name on the filesystem" in one_line(
            cas(victim.root, "checkout", code=2).stderr
        )
        assert_unchanged(before, victim)
        return
    cas(victim.root, "checkout")
    data = victim.root / "data"
    assert (data / "A.txt").read_bytes() == (data / "run.sh").read_bytes()
    assert (data / "a.txt").read_bytes() == b"alpha\n"
    assert (data / NFC).read_bytes() == b"alpha\n"
    assert (data / NFD).read_bytes() == (data / "run.sh").read_bytes()
    assert "data.cas: unchanged" in cas(victim.root, "status").stdout


@pytest.mark.parametrize(
    ("folds", "twins"), [((True, False), ("A.txt", "a.txt")), ((False, True), (NFC, NFD))]
)
def test_twins_are_refused_where_the_filesystem_folds(
    victim: Victim,
    monkeypatch: pytest.MonkeyPatch,
    folds: tuple[bool, bool],
    twins: tuple[str, str],
) -> None:
    """On a case-insensitive (or normalising) filesystem, writing the second twin would replace
    the first: the checkout names both and writes nothing. The probe's answer is replaced by that
    of such a filesystem, so this runs on any machine (the real probe is tested against the real
    filesystem below)."""
    store_manifest(victim, list(colliding_rows(victim).values()))
    before = snapshot(victim.base)
    monkeypatch.setattr(checkout_op, "_folding", lambda folder: folds)
    with pytest.raises(PathError, match="are one name on the filesystem") as info:
        Repo.discover(victim.root).checkout()
    assert all(repr(name) in str(info.value) for name in twins)
    assert_unchanged(before, victim)


def test_folding_probe_agrees_with_the_filesystem(tmp_path: Path) -> None:
    """The probe's answer is what the filesystem does with a real pair of names, and it leaves
    nothing behind."""
    write(tmp_path / "x.txt", "x")
    write(tmp_path / NFC, "x")
    expected = ((tmp_path / "X.TXT").exists(), (tmp_path / NFD).exists())
    assert checkout_op._folding(tmp_path) == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["x.txt", NFC])


# -- symbolic links and Git folders ---------------------------------------------------------------
def test_checkout_writes_nothing_through_a_symlink_in_the_tree(victim: Victim) -> None:
    """``data/sub`` replaced by a link to a folder outside, a dangling link where a new file is
    due: checkout (also --force, also a subtree) refuses, and the outside folder is untouched."""
    shutil.rmtree(victim.root / "data/sub")
    os.symlink(victim.outside, victim.root / "data/sub")
    os.symlink(victim.outside / "created.txt", victim.root / "data/new.txt")
    rows = honest(victim)
    rows["new.txt"] = ("new.txt", *rows["a.txt"][1:])
    store_manifest(victim, list(rows.values()))
    before = snapshot(victim.base)
    for args in (["checkout", "--force"], ["checkout", "data/sub/b.bin"]):
        line = one_line(cas(victim.root, *args, code=2).stderr)
        assert "symbolic link" in line or "outside the repository" in line
    assert_unchanged(before, victim)


def test_a_target_git_committed_as_a_symlink_is_refused(fresh_victim: Victim) -> None:
    """The attacker commits ``data`` itself as a link to a folder outside the clone, beside the
    honest pointer: the pull fetches, then refuses to check out through the link."""
    victim = fresh_victim
    os.symlink(victim.outside, victim.root / "data")
    git(victim.root, "add", "-f", "data")
    git(victim.root, "commit", "-qm", "upstream: data is a link")
    before = snapshot(victim.base)
    line = one_line(cas(victim.root, "pull", code=2).stderr)
    assert "data is a symbolic link" in line
    assert snapshot(victim.outside) == {"secret.txt": before["outside/secret.txt"]}


def test_a_target_inside_a_git_folder_is_refused(victim: Victim) -> None:
    """A pointer ``sub/.git.cas`` would make checkout write ``sub/.git/config``: a repository
    whose config runs commands for anyone who runs Git (or a Git-aware prompt) in ``sub``."""
    honest_ptr = (victim.root / "data.cas").read_bytes()
    write(victim.root / "sub/.git.cas", honest_ptr)
    git(victim.root, "add", "sub/.git.cas")
    git(victim.root, "commit", "-qm", "upstream: a Git folder")
    before = snapshot(victim.base)
    line = one_line(cas(victim.root, "pull", code=2).stderr)
    assert "sub/.git, a Git folder" in line
    assert_unchanged(before, victim)
    assert not (victim.root / "sub/.git").exists()


def test_add_refuses_a_link_to_a_folder_outside_and_reads_nothing_there(victim: Victim) -> None:
    """``cas add`` of a tree holding a link to a folder outside refuses it (links are never
    recorded nor followed): no pointer changes, and no byte of the outside file reaches a pack.
    (Links to files and a linked target or parent are covered in test_bad_input.)"""
    os.symlink(victim.outside, victim.root / "data/sub/elsewhere")
    pointer_before = (victim.root / "data.cas").read_bytes()
    line = one_line(cas(victim.root, "add", "data", code=2).stderr)
    assert "data/sub/elsewhere is a symbolic link" in line
    assert (victim.root / "data.cas").read_bytes() == pointer_before
    secret = (victim.outside / "secret.txt").read_bytes()
    packs = [p for p in victim.local_store().rglob("*") if p.is_file()]
    assert packs and not any(secret in p.read_bytes() for p in packs)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (".git/config", "is a Git folder"),
        (".GiT/config", "is a Git folder"),
        ("a\x1b[2Jb", "control character"),
        ("tab\there", "control character"),
    ],
)
def test_scan_refuses_names_no_manifest_may_hold(tmp_path: Path, name: str, message: str) -> None:
    """What ``cas add`` would record but checkout must refuse is refused at the scan, with a
    message naming the file and the fix (not "the manifest may be hostile" at encode time)."""
    write(tmp_path / "data/ok.txt", "ok")
    write(tmp_path / "data/sub" / name, "x")
    with pytest.raises(PathError, match=message):
        scan(tmp_path / "data", "data")


class RecordingWriter:
    """Stands in for the pack writer: records what would have been stored."""

    def __init__(self) -> None:
        self.stored: list[bytes] = []

    def add(self, chunk_id: bytes, data: bytes | memoryview) -> bool:
        self.stored.append(bytes(data))
        return True


def test_a_link_swapped_in_after_the_scan_is_not_read(tmp_path: Path) -> None:
    """Between the scan and the read, the file becomes a link to a secret outside: the read
    refuses the link instead of storing the secret's bytes (and only then noticing the swap)."""
    secret = write(tmp_path / "outside/secret", "private key material")
    write(tmp_path / "data/f", "harmless")
    (entry,) = scan(tmp_path / "data", "data")
    os.unlink(tmp_path / "data/f")
    os.symlink(secret, tmp_path / "data/f")
    writer = RecordingWriter()
    with pytest.raises(FileChangedError, match="symbolic link"):
        hash_file(str(tmp_path / "data/f"), entry, "data/f", writer)  # type: ignore[arg-type]
    assert writer.stored == []


# -- a remote serving wrong bytes -----------------------------------------------------------------
OBJECT_PREFIXES = {"packs", "index", "remote-index", "manifests", "versions", "segments"}


def honest_objects(published: Published) -> dict[str, bytes]:
    """Every object of the honest origin's store, by key."""
    store = published.origin / ".cas/store"
    return {
        p.relative_to(store).as_posix(): p.read_bytes()
        for p in store.rglob("*")
        if p.is_file() and not p.relative_to(store).as_posix().startswith("tmp/")
    }


def _pack_ids(remote: Path) -> list[str]:
    return sorted(p.name for p in (remote / "packs").rglob("*") if p.is_file())


def _swap(victim: Victim, key: str, data: bytes) -> None:
    path = victim.remote / key
    path.chmod(0o644)
    path.write_bytes(data)


@pytest.mark.parametrize("what", ["manifest", "index", "pack"])
def test_a_remote_serving_wrong_bytes_cannot_poison_the_store(
    what: str, fresh_victim: Victim, published: Published
) -> None:
    """The remote's manifest, index file or pack for the pulled commit is replaced by another
    valid object's bytes (the subtlest lie: well-formed, wrong). Pull fails naming the object;
    nothing is checked out; every object the local store holds is byte-identical to the honest
    origin's (so ``fsck`` is clean), and the lied-about object is not among them."""
    victim = fresh_victim
    head = pointer.read(victim.root / "data.cas").manifest
    older = pointer.parse(git(victim.root, "show", "HEAD~1:data.cas").encode(), "HEAD~1").manifest
    first, second = _pack_ids(victim.remote)
    key, other = {
        "manifest": (manifest_key(head), manifest_key(older)),
        "index": (index_key(first), index_key(second)),
        "pack": (pack_key(first), pack_key(second)),
    }[what]
    _swap(victim, key, (victim.remote / other).read_bytes())
    before = snapshot(victim.base)
    line = one_line(cas(victim.root, "pull", code=4).stderr)
    assert key.rsplit("/", 1)[-1] in line and ("corrupt" in line or "does not match" in line)
    store = victim.local_store()
    held = {
        p.relative_to(store).as_posix().replace("remote-index/", "index/"): p.read_bytes()
        for p in store.rglob("*")
        if p.is_file() and p.relative_to(store).parts[0] in OBJECT_PREFIXES
    }
    honest_store = honest_objects(published)
    assert all(honest_store.get(k) == v for k, v in held.items()), sorted(held)
    assert key not in held
    assert snapshot(victim.outside) == {"secret.txt": before["outside/secret.txt"]}
    assert not (victim.root / "data").exists()
    assert Repo.discover(victim.root).fsck().ok


# -- claims of a billion entries ------------------------------------------------------------------
def _limit_memory() -> None:  # runs in the child, before exec
    resource.setrlimit(resource.RLIMIT_AS, (TWO_GIB, TWO_GIB))


def test_a_billion_row_manifest_is_refused_from_its_footer(fresh_victim: Victim) -> None:
    """A 600 KB Parquet file that really decodes to 10^9 rows (tens of GB), named by a pointer
    claiming 10^9 files: ``cas pull`` under a 2 GiB address-space limit refuses it from the
    footer, in one line, instead of dying of memory exhaustion. (Memory, not time, is what is
    asserted: the limit would kill a decoder that tried.)"""
    victim = fresh_victim
    data = bomb(10**9)
    assert len(data) < 1 << 20
    bad_id = "0b" * 32  # refused before the id could be checked
    victim.serve_manifest(data, bad_id)
    victim.commit_pointer("data", pointer.Pointer("dir", bad_id, 0, 10**9))
    before = snapshot(victim.base)
    proc = subprocess.run(
        [*CAS, "pull"], cwd=victim.root, capture_output=True, text=True, preexec_fn=_limit_memory
    )
    assert proc.returncode == 4, proc.stderr  # an integrity failure
    line = one_line(proc.stderr)
    claimed = pq.ParquetFile(io.BytesIO(data)).metadata.num_rows
    assert claimed >= 10**9 and f"claims {claimed} rows" in line and bad_id in line
    assert_unchanged(before, victim)


BOMB_CHILD = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
from pathlib import Path
from cas import hashing, manifest, versions
from cas.errors import CasError
chunks, segment = sys.argv[1:]
segment_id = hashing.digest(Path(segment).read_bytes()).hex()
for name, check in (
    ("chunks", lambda: manifest.decode(Path(chunks).read_bytes(), "0c" * 32)),
    ("segment", lambda: versions.verify_segment_file(segment, segment_id)),
):
    try:
        check()
        print(name, "accepted")
    except CasError as err:
        print(name, type(err).__name__, err)
"""


def test_chunk_and_segment_bombs_are_refused_within_2_gib(tmp_path: Path) -> None:
    """Two more shapes of the same lie, decoded in a child process under a 2 GiB limit: a
    manifest of a million rows listing 10^9 chunks, and an append segment of 10^9 rows (named
    by its own hash, as segments are). Both are refused from the footer with a cas error."""
    chunk_bomb = tmp_path / "chunks.parquet"
    chunk_bomb.write_bytes(bomb(10**6, chunks_per_row=1024))
    segment = tmp_path / "segment.parquet"
    meta = {b"format": b"cas-segment", b"version": b"1", b"kind": b"append"}
    segment.write_bytes(bomb(10**9, metadata=meta))
    child = BOMB_CHILD.format(limit=TWO_GIB)
    proc = subprocess.run(
        [sys.executable, "-c", child, str(chunk_bomb), str(segment)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("chunks ManifestError") and "chunks (at most" in lines[0]
    assert lines[1].startswith("segment ManifestError") and "rows (at most" in lines[1]


# -- credentials -----------------------------------------------------------------------------
SECRET = "XYZ-hostile-suite-secret-Qm7r"
TOKEN = "XYZ-hostile-suite-token-Lp2w"


def tracked(root: Path) -> Repo:
    """An initialised repository tracking ``data/`` (set up in-process: only the commands
    under test pay an interpreter start-up)."""
    write(root / "data/a.txt", "a")
    repo = Repo.init(root)
    repo.add([root / "data"])
    return repo


NO_ENV_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SESSION_TOKEN": ""}


def test_credentials_reach_no_output_commit_or_file(
    git_repo: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    """Secrets set with ``--local`` go to the git-ignored config.local (mode 600) and nowhere
    else: not in the output of failing commands against a real S3 server (wrong secret, wrong
    endpoint), with ``--verbose`` tracebacks and ``--json``; not in ``remote list``; not in an
    error about a malformed config.local that quotes the secret's line; not in any commit or any
    other file of the repository."""
    from cas import remote as remotes

    repo = tracked(git_repo)
    remotes.add(repo, "origin", f"s3://{s3_bucket}/cas")
    remotes.modify(repo, "origin", "endpoint_url", s3_server.endpoint)
    remotes.modify(repo, "origin", "access_key_id", ACCESS_KEY, local=True)
    remotes.modify(repo, "origin", "session_token", TOKEN, local=True)
    out = cas(git_repo, "remote", "modify", "origin", "secret_access_key", SECRET, "--local")
    assert SECRET not in out.stdout + out.stderr
    outputs = []
    proc = cas(git_repo, "-v", "push", "--json", code=7, env=NO_ENV_CREDENTIALS)
    assert "wrong credentials or permission denied for remote 'origin'" in proc.stderr
    outputs.append(proc.stdout + proc.stderr)
    outputs += [cas(git_repo, "remote", "list", *a).stdout for a in ((), ("--json",))]
    assert "secret_access_key" in outputs[-2]  # named, never shown
    tls = s3_server.endpoint.replace("http://", "https://")  # a server that speaks no TLS
    cas(git_repo, "remote", "modify", "origin", "endpoint_url", tls)
    proc = cas(git_repo, "-v", "push", "--json", code=7, env=NO_ENV_CREDENTIALS)
    assert tls in proc.stderr
    outputs.append(proc.stdout + proc.stderr)
    local = git_repo / ".cas/config.local"
    assert local.stat().st_mode & 0o077 == 0
    good = local.read_text()
    local.write_text(good + f"{SECRET} was pasted here by mistake\n")
    proc = cas(git_repo, "-v", "remote", "list", code=2)
    assert "config.local is not valid config" in proc.stderr
    outputs.append(proc.stdout + proc.stderr)
    local.write_text(good)
    for text in outputs:
        assert SECRET not in text and TOKEN not in text, text
    git(git_repo, "add", "-A")
    git(git_repo, "commit", "-qm", "everything git would take")
    assert git(git_repo, "check-ignore", ".cas/config.local").strip() == ".cas/config.local"
    assert SECRET not in git(git_repo, "log", "-p", "--all")
    proc = subprocess.run(["git", "grep", "-I", "-e", SECRET, "-e", TOKEN, "HEAD"], cwd=git_repo)
    assert proc.returncode == 1  # no match
    for path in git_repo.rglob("*"):
        if path.is_file() and ".git" not in path.parts and path != local:
            data = path.read_bytes()
            assert SECRET.encode() not in data and TOKEN.encode() not in data, path


def test_a_secret_in_the_committed_config_is_refused(git_repo: Path, tmp_path: Path) -> None:
    """cas.remote promises "a secret is refused in the committed file": a hand-edited (or
    attacker-supplied) ``.cas/config`` holding one makes every remote command stop, naming the
    key and the fix, without printing the value."""
    tracked(git_repo)
    config_text = f'[core]\nremote = origin\n[remote "origin"]\nurl = {(tmp_path / "r").as_uri()}\n'
    write(git_repo / ".cas/config", config_text + f"secret_access_key = {SECRET}\n")
    proc = cas(git_repo, "push", code=2)
    assert "secret_access_key" in proc.stderr and "config.local" in proc.stderr
    assert SECRET not in proc.stdout + proc.stderr


def test_an_invalid_endpoint_is_one_line(git_repo: Path) -> None:
    """A committed config may hold any endpoint_url: one that is no URL is a one-line usage
    error, not a traceback from botocore."""
    tracked(git_repo)
    write(
        git_repo / ".cas/config",
        '[core]\nremote = origin\n[remote "origin"]\nurl = s3://bucket/cas\n'
        "endpoint_url = notaurl\n",
    )
    assert "endpoint_url" in one_line(cas(git_repo, "push", code=2).stderr)


def test_file_names_are_printed_verbatim(git_repo: Path) -> None:
    """Brackets are legal in file names; ``cas ls`` must print them, not read them as rich
    markup (``[/b]`` crashed it, ``[red]`` vanished)."""
    write(git_repo / "data/[red]x", "a")
    write(git_repo / "data/[/b]", "b")
    Repo.init(git_repo).add([git_repo / "data"])
    out = cas(git_repo, "ls", "data.cas").stdout
    assert "data/[red]x" in out and "data/[/b]" in out


def test_fsck_deletes_only_its_own_temp_files(git_repo: Path, tmp_path: Path) -> None:
    """A committed ``core.store`` may name any folder (sharing a store is a feature): ``cas
    fsck``'s clean-up of dead writers' temp files must then touch only files cas names, not a
    week-old file or folder of the victim's that happens to sit in ``<store>/tmp``."""
    victims = tmp_path / "home"
    old = write(victims / "tmp/notes.txt", "keep me")
    write(victims / "tmp/project/file", "keep me too")
    for path in (old, victims / "tmp/project"):
        os.utime(path, (1_000_000_000, 1_000_000_000))
    Repo.init(git_repo)
    write(git_repo / ".cas/config", f"[core]\nstore = {victims}\n")
    Repo.discover(git_repo).fsck()
    assert old.exists() and (victims / "tmp/project/file").exists()


# -- fuzzing the parsers --------------------------------------------------------------------------
@contextlib.contextmanager
def memory_cap(headroom: int = TWO_GIB) -> Iterator[None]:
    """Lower this process's address-space limit to what it uses now plus ``headroom`` while
    fuzzing decoders: an input that makes a decoder allocate gigabytes then fails the test with
    a MemoryError instead of exhausting a shared machine. The old limit is put back."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    status = Path("/proc/self/status").read_text()
    used = int(next(line for line in status.splitlines() if line.startswith("VmSize:")).split()[1])
    cap = used * 1024 + headroom
    resource.setrlimit(resource.RLIMIT_AS, (cap if hard < 0 else min(cap, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def fuzz(
    record: Callable[[str, object], None],
    name: str,
    examples: int,
    strategy: st.SearchStrategy[Any],
    check: Callable[[Any], None],
) -> None:
    """Run ``check`` on ``examples`` derandomised inputs (same inputs on every run, so CI is
    deterministic) and record how many ran as the junit test-suite property
    ``fuzzed_inputs.<name>`` (what the reliability report sums). ``check`` returns normally for
    a valid object or a cas error; anything else fails the test."""
    ran = 0

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def one(value: Any) -> None:
        nonlocal ran
        ran += 1
        check(value)

    with memory_cap():
        one()
    record(f"fuzzed_inputs.{name}", ran)
    assert ran >= examples


def safe_path(path: str) -> bool:
    """docs/format.md's path rules, restated independently of cas.rows as the fuzz oracle."""
    hfs_ignored = dict.fromkeys(
        [*range(0x200C, 0x2010), *range(0x202A, 0x202F), *range(0x206A, 0x2070), 0xFEFF]
    )
    parts = path.split("/")
    return not (
        not path
        or path.startswith("/")
        or "\\" in path
        or path[1:2] == ":"
        or any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in path)
        or any(p in ("", ".", "..") or p.translate(hfs_ignored).casefold() == ".git" for p in parts)
    )


def accept_or_cas_error(parse: Callable[[], Any]) -> Any:
    """The parse's result, or None when it raised a cas error; any other exception propagates."""
    try:
        return parse()
    except CasError:
        return None


POINTERS = st.builds(
    pointer.Pointer,
    st.sampled_from(pointer.KINDS),
    st.binary(min_size=32, max_size=32).map(bytes.hex),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
).map(lambda p: p if p.kind in ("dir", "file") else pointer.Pointer(p.kind, p.manifest))
BYTE_EDITS = st.tuples(
    st.sampled_from(["flip", "insert", "delete", "swap-lines"]),
    st.integers(0, 400),
    st.sampled_from(
        [
            b" ",
            b"\n",
            b"\r",
            b"\t",
            b"0",
            b"9",
            b"f",
            b"F",
            b"-",
            b"\x00",
            b"\xff",
            b"kind file",
            b"\xc3\xa9",
        ]
    ),
)
NUMBER_EDITS = st.tuples(  # the size or files value replaced: huge, negative, padded, not a number
    st.just("number"),
    st.integers(0, 400),
    st.one_of(
        st.integers(0, 2**70).map(lambda n: str(n).encode()),
        st.sampled_from([b"-1", b"007", b" 1", b"1e3", b"", b"\xd9\xa3"]),
    ),
)
EDITS = st.lists(st.one_of(BYTE_EDITS, NUMBER_EDITS), max_size=4)


def mutate_pointer(data: bytes, edits: list[tuple[str, int, bytes]]) -> bytes:
    for op, at, value in edits:
        at %= max(1, len(data))
        if op == "flip" and data:
            data = data[:at] + bytes([data[at] ^ (value[0] or 1)]) + data[at + 1 :]
        elif op == "insert":
            data = data[:at] + value + data[at:]
        elif op == "delete":
            data = data[:at] + data[at + len(value) :]
        elif op == "swap-lines":
            lines = data.split(b"\n")
            i, j = at % len(lines), (at + 1) % len(lines)
            lines[i], lines[j] = lines[j], lines[i]
            data = b"\n".join(lines)
        elif op == "number":
            key = b"size " if at % 2 else b"files "
            start = data.find(key)
            if start >= 0:
                end = data.find(b"\n", start)
                data = data[: start + len(key)] + value + data[end if end >= 0 else len(data) :]
    return data


def test_fuzz_pointer_parser(record_testsuite_property: Callable[[str, object], None]) -> None:
    """300 inputs: valid pointers of every kind (extreme ids and counts), then flipped, inserted
    and deleted bytes, swapped lines, huge and zero-padded numbers. Every input parses to a
    canonical pointer whose counts fit in u64, or raises PointerError; an unedited pointer
    always round-trips. (test_formats fuzzes raw bytes; this fuzzes near-valid ones.)"""

    def check(value: tuple[pointer.Pointer, list[tuple[str, int, bytes]]]) -> None:
        ptr, edits = value
        data = mutate_pointer(ptr.encode(), edits)
        parsed = accept_or_cas_error(lambda: pointer.parse(data, "fuzz.cas"))
        if not edits:
            assert parsed == ptr
        if parsed is not None:
            assert parsed.encode() == data and max(parsed.size, parsed.files) < 2**64

    fuzz(record_testsuite_property, "pointer", 300, st.tuples(POINTERS, EDITS), check)


SEED_ROWS = [
    [bytes_row("a.txt", b"alpha"), bytes_row("d/b.bin", b"x" * 300), empty_row("e")],
    [bytes_row(f"f{i:03d}", bytes([i]) * (i + 1)) for i in range(40)],
]
SEEDS = [(to_parquet(craft(rows)), attacker_id(craft(rows)), rows) for rows in SEED_ROWS]
SEEDS += [(manifest.encode(craft(SEED_ROWS[1])), SEEDS[1][1], SEED_ROWS[1])]  # cas's encoder


def test_fuzz_manifest_decoder_on_mutated_parquet(
    record_testsuite_property: Callable[[str, object], None],
) -> None:
    """300 inputs: valid manifests (two writers' options) with bytes flipped, runs of bytes
    overwritten (often in the footer, where counts and offsets live) or the file truncated.
    Each is refused with a cas error, or decodes to exactly the original rows: the id check
    leaves no third outcome. Run under an address-space cap."""

    def check(value: tuple[int, list[tuple[int, bytes]], int]) -> None:
        seed, edits, cut = value
        data, manifest_id, rows = SEEDS[seed]
        buf = bytearray(data)
        for at, patch in edits:
            at = len(buf) - 1 - (at % len(buf)) if at % 2 else at % len(buf)  # favour the footer
            buf[at : at + len(patch)] = patch
        mutated = bytes(buf[: len(buf) - cut])
        table = accept_or_cas_error(lambda: manifest.decode(mutated, manifest_id))
        if table is not None:
            assert [tuple(r) for r in manifest.to_rows(table)] == [
                (p, s, h, x, tuple(c)) for p, s, h, x, c in rows
            ]

    edits = st.lists(
        st.tuples(st.integers(0, 10**6), st.binary(min_size=1, max_size=8)), min_size=1, max_size=4
    )
    strategy = st.tuples(st.integers(0, len(SEEDS) - 1), edits, st.sampled_from([0, 0, 0, 1, 9]))
    fuzz(record_testsuite_property, "manifest_mutated", 300, strategy, check)


def test_fuzz_manifest_decoder_on_random_bytes(
    record_testsuite_property: Callable[[str, object], None],
) -> None:
    """200 inputs: random bytes, bare or framed by the Parquet magic ``PAR1`` with a footer
    length, all refused with a cas error."""

    def check(value: tuple[bytes, bool]) -> None:
        data, framed = value
        if framed:
            data = b"PAR1" + data + struct.pack("<I", len(data)) + b"PAR1"
        assert accept_or_cas_error(lambda: manifest.decode(data, "aa" * 32)) is None

    fuzz(
        record_testsuite_property,
        "manifest_random",
        200,
        st.tuples(st.binary(max_size=600), st.booleans()),
        check,
    )


PATH_PIECES = st.sampled_from(
    [
        "a",
        "B",
        "b",
        ".",
        "..",
        "",
        "/",
        "\\",
        ":",
        "C:",
        ".git",
        ".GIT",
        ".g\u200cit",
        "\x00",
        "\x1b",
        "\x85",
        "\u00e9",
        "e\u0301",
        " ",
        "~",
    ]
)
CHUNK_IDS = [hashing.digest(bytes([i])) for i in range(4)]
FUZZ_ROWS = st.lists(
    st.tuples(
        st.lists(PATH_PIECES, min_size=0, max_size=5).map("".join),
        st.integers(0, 2**20),
        st.sampled_from(CHUNK_IDS),
        st.booleans(),
        st.lists(st.tuples(st.sampled_from(CHUNK_IDS), st.integers(0, 2**16)), max_size=3),
    ),
    max_size=6,
)


def test_fuzz_manifest_rules_on_crafted_rows(
    record_testsuite_property: Callable[[str, object], None],
) -> None:
    """300 inputs: manifests of hostile rows (paths built from ``..``, ``/``, ``\\``, drive
    letters, ``.git`` spellings, NUL, escapes, case and NFC/NFD twins; lying sizes; any order),
    written with pyarrow and named by their canonical id. Whatever decodes satisfies every rule
    of docs/format.md, checked by an oracle written apart from cas."""

    def check(rows: list[RowSpec]) -> None:
        table = craft(rows)
        data, manifest_id = to_parquet(table), attacker_id(table)
        decoded = accept_or_cas_error(lambda: manifest.decode(data, manifest_id))
        if decoded is None:
            return
        paths = [r[0] for r in rows]
        encoded = [p.encode() for p in paths]
        assert encoded == sorted(set(encoded))
        assert all(safe_path(p) for p in paths)
        assert not any(q.startswith(p + "/") for p in paths for q in paths)
        for _path, size, _hash, _x, chunks in rows:
            assert sum(n for _, n in chunks) == size and all(n > 0 for _, n in chunks)

    fuzz(record_testsuite_property, "manifest_rows", 300, FUZZ_ROWS, check)


CONFIG_LINES = st.lists(
    st.one_of(
        st.sampled_from(
            [
                "[core]",
                '[remote "origin"]',
                '[remote ""]',
                "[core",
                "store = ../s",
                "fsync = maybe",
                "fsync = yes",
                "remote = origin",
                "url = s3://b/p",
                "url = file:///tmp/x",
                "url",
                "  continued",
                "= x",
                "#",
                ";c",
                "secret_access_key = s",
                "[DEFAULT]",
                "%(x)s",
            ]
        ),
        st.text(max_size=20),
    ),
    max_size=8,
)
CONFIG_BYTES = st.one_of(
    CONFIG_LINES.map(lambda ls: "\n".join(ls).encode(errors="surrogatepass")),
    st.binary(max_size=200),
)


@pytest.fixture(scope="module")
def config_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("config-fuzz")
    git(root, "init", "-q")
    (root / ".cas").mkdir()
    return root


def test_fuzz_config_parser(
    config_repo: Path, record_testsuite_property: Callable[[str, object], None]
) -> None:
    """200 inputs: ``.cas/config`` and ``config.local`` from INI-like lines, arbitrary text
    (NUL, lone surrogates, percent signs) and raw bytes (not UTF-8). Opening the repository and
    reading its remotes gives objects or a cas error; nothing is created on the way."""
    from cas import remote
    from cas.gitio import GitRepo

    def check(value: tuple[bytes, bytes]) -> None:
        (config_repo / ".cas/config").write_bytes(value[0])
        (config_repo / ".cas/config.local").write_bytes(value[1])

        def open_repo() -> tuple[Repo, dict[str, remote.Remote], str | None]:
            repo = Repo(GitRepo(config_repo))
            repo.config.get_bool("core", "fsync", False)
            return repo, remote.remotes(repo), remote.default_name(repo)

        accept_or_cas_error(open_repo)
        assert sorted(p.name for p in (config_repo / ".cas").iterdir()) == [
            "config",
            "config.local",
        ]

    fuzz(record_testsuite_property, "config", 200, st.tuples(CONFIG_BYTES, CONFIG_BYTES), check)


JSON_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-1, 2**64),
        st.floats(allow_nan=True),
        st.text(max_size=8),
        st.sampled_from(["ab" * 32, "2026-11-26T22:58:52Z", "corpus", "append", "cas-version"]),
    ),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
FIELDS = (
    "format",
    "version",
    "kind",
    "base",
    "glob",
    "parent",
    "segments",
    "created",
    "files",
    "bytes",
)
VALID_VERSION = {
    "format": "cas-version",
    "version": 1,
    "kind": "corpus",
    "base": "s3://b/p",
    "glob": None,
    "parent": None,
    "segments": ["ab" * 32],
    "created": "2026-11-26T22:58:52Z",
    "files": 3,
    "bytes": 10,
}


def test_fuzz_version_decoder(record_testsuite_property: Callable[[str, object], None]) -> None:
    """300 inputs: version objects with fields dropped, added or replaced by any JSON value
    (nested, huge, NaN, bool for int), encoded canonically or not, plus raw bytes and 10^5-deep
    nesting; each named by its own hash so the id check passes. Each decodes to a Version that
    re-encodes to the same bytes, with every field of the documented type, or a cas error."""

    def check(value: tuple[dict[str, Any], bool, bytes]) -> None:
        changes, canonical, raw = value
        doc = {**VALID_VERSION, **changes}
        doc = {k: v for k, v in doc.items() if v != "<drop>"}
        data = raw or json.dumps(doc, sort_keys=canonical, separators=(",", ":")).encode()
        version = accept_or_cas_error(
            lambda: versions.decode_version(data, hashing.digest(data).hex())
        )
        if version is None:
            return
        assert version.encode() == data and version.kind in ("corpus", "append")
        assert isinstance(version.created, str) and all(
            type(n) is int for n in (version.files, version.bytes)
        )
        assert (version.base is None) == (version.kind == "append")

    changes = st.dictionaries(
        st.sampled_from([*FIELDS, "extra"]), JSON_VALUES | st.just("<drop>"), max_size=3
    )
    raw = st.one_of(
        st.just(b""), st.binary(min_size=1, max_size=64), st.just(b"[" * 100_000 + b"]" * 100_000)
    )
    fuzz(record_testsuite_property, "version", 300, st.tuples(changes, st.booleans(), raw), check)


def test_readers_never_return_chunks_that_do_not_make_up_the_file(victim: Victim) -> None:
    """The same lying rows, read without a checkout: ``cas://`` and the training datasets
    refuse them (exit-code class 4) instead of returning bytes that are not the file's."""
    from cas.errors import CorruptObjectError
    from cas.fs import CASFileSystem
    from cas.torch import CASDataset

    rows = honest(victim)
    b = rows["sub/b.bin"]
    rows["a.txt"] = ("a.txt", b[1], hashing.digest(b"what the attacker claims"), False, b[4])
    first = b[4][0][0]
    rows["sub/b.bin"] = ("sub/b.bin", 1, first, False, ((first, 1),))
    store_manifest(victim, list(rows.values()))
    fs = CASFileSystem(repo=victim.root)
    with pytest.raises(CorruptObjectError, match=r"data/a.txt do not make up"):
        fs.cat_file("data/a.txt")
    with pytest.raises(CorruptObjectError, match=first.hex()):
        fs.cat_file("data/sub/b.bin", start=0, end=1)
    ds = CASDataset("data.cas", repo=victim.root)
    for name in ("a.txt", "sub/b.bin"):
        with pytest.raises(CorruptObjectError):
            ds[ds.paths.index(name)]
    honest_names = [p for p in ds.paths if p not in ("a.txt", "sub/b.bin")]
    assert honest_names and all(
        ds[ds.paths.index(p)][1] == (victim.root / "data" / p).read_bytes() for p in honest_names
    )
