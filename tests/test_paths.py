"""Naming: which paths a target, a temp file or a ``.gitignore`` line may have (issue 14, items
1, 7 and 8 and the path "low" items).

- A target that is, lies inside or holds a folder cas or Git owns (``.cas/``, the store wherever
  ``core.store`` puts it, the stat cache, ``.git``) is refused, with and without ``--force``,
  whichever way it arrives (a command-line argument, a committed pointer, the worktree's
  pointers, the post-checkout hook, a ``cas://`` read).
- Every legal name (up to NAME_MAX, 255 bytes) can be added and checked out: temp names fit.
- A checkout that stops part way leaves a marker: ``add`` refuses and ``status`` reports it
  until a checkout completes, so missing files never become silent deletions.
- ``.gitignore`` lines match exactly their target (checked by real ``git check-ignore``), Git
  pathspecs are literal, and every suggested command quotes its paths (run by a real shell).
- Paths Git refuses under core.protectNTFS (``.git.``, ``.git ``, ``git~1``) are refused as
  Git's own ``is_ntfs_dotgit`` refuses them, and a Git tree with ``..`` entries is a one-line
  error.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import fsspec
import pytest

from cas import pointer
from cas.errors import ManifestError, PathError
from cas.objects import pack_key
from cas.repo import Repo
from cas.rows import TEMP_NAME, check_path, is_dotgit
from cas.workspace import NAME_MAX, temp_name
from tests.conftest import cas, git, tree, write


def one_line(stderr: str) -> str:
    """The error a command printed: exactly one line, and no traceback."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def files_of(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (the store, ``.cas/``) with its bytes."""
    return tree(folder) if folder.exists() else {}


@pytest.fixture
def proj(git_repo: Path) -> Path:
    """A repository with one committed dataset ``data``."""
    cas(git_repo, "init")
    write(git_repo / "data/a.txt", "alpha\n")
    write(git_repo / "data/sub/b.txt", "beta\n")
    cas(git_repo, "add", "data")
    git(git_repo, "commit", "-qm", "data v1")
    return git_repo


def commit_pointer(root: Path, name: str, data: bytes) -> None:
    """The attacker's commit: a pointer at ``name`` (forced past any ignore rule)."""
    write(root / name, data)
    git(root, "add", "-f", "--", name)
    git(root, "commit", "-qm", f"upstream: {name}")


# -- item 1: folders cas and Git own -------------------------------------------------------------
@pytest.mark.parametrize("name", [".cas.cas", ".cas/store.cas"])
def test_a_committed_pointer_naming_cas_folders_is_refused(proj: Path, name: str) -> None:
    """``.cas.cas`` once made ``cas checkout --force`` delete ``.cas/config``, the packs and the
    state: its target ``.cas`` held files its manifest lacks. With or without ``--force``, as
    an argument or from the worktree's pointers, the checkout is refused in one line and
    nothing under ``.cas`` changes."""
    commit_pointer(proj, name, (proj / "data.cas").read_bytes())
    before = files_of(proj / ".cas")
    for args in ([], ["--force"], ["--force", name]):
        line = one_line(cas(proj, "checkout", *args, code=2).stderr)
        assert "cas's folder .cas" in line and "with or without --force" in line
        assert files_of(proj / ".cas") == before
    assert "cas's folder .cas" in one_line(cas(proj, "status", code=2).stderr)
    cas(proj, "fsck")


def test_a_gitignore_cannot_be_a_target(proj: Path) -> None:
    """``cas add .gitignore`` would write its own ignore rule into the file it just tracked."""
    write(proj / "sub/.gitignore", "*.tmp\n")
    line = one_line(cas(proj, "add", "sub/.gitignore", code=2).stderr)
    assert "the file cas writes its ignore rules into" in line
    assert (proj / "sub/.gitignore").read_text() == "*.tmp\n"


def test_the_suggested_fix_for_a_hostile_pointer_works(proj: Path) -> None:
    """The refusal names a command; run by a real shell and committed, cas works again."""
    commit_pointer(proj, ".cas.cas", (proj / "data.cas").read_bytes())
    line = one_line(cas(proj, "checkout", "--force", code=2).stderr)
    command = line.split("remove it: ", 1)[1].rstrip(")")
    subprocess.run(command, shell=True, cwd=proj, check=True, capture_output=True)
    git(proj, "commit", "-qm", "drop the hostile pointer")
    cas(proj, "checkout", "--force")
    assert (proj / ".cas/config").is_file()


@pytest.mark.parametrize(
    ("name", "relation"),
    [
        ("data/store.cas", "the local store"),
        ("data/store/packs.cas", "inside the local store"),
        ("data.cas", "a folder holding the local store"),
    ],
    ids=["store", "inside-store", "holding-store"],
)
def test_a_store_inside_the_repository_is_owned_too(
    git_repo: Path, name: str, relation: str
) -> None:
    """``core.store = data/store``: a pointer whose target is the store, lies in it or holds it
    (``data``) is refused by add, checkout and checkout --force, and the store keeps every
    object."""
    cas(git_repo, "init")
    (git_repo / ".cas/config").write_text("[core]\nstore = data/store\n", encoding="utf-8")
    write(git_repo / "models/m.bin", "weights")
    cas(git_repo, "add", "models")
    git(git_repo, "commit", "-qm", "models")
    store = git_repo / "data/store"
    assert files_of(store)  # the store really is inside the repository
    if name == "data.cas":
        before = files_of(store)
        line = one_line(cas(git_repo, "add", "data", code=2).stderr)
        assert relation in line
        assert files_of(store) == before
    commit_pointer(git_repo, name, (git_repo / "models.cas").read_bytes())
    before = files_of(store)
    for flags in ([], ["--force"]):
        line = one_line(cas(git_repo, "checkout", *flags, code=2).stderr)
        assert f"names {pointer.target_of(name)}, {relation}" in line
        assert files_of(store) == before


def test_a_symlink_into_cas_folder_is_followed_to_the_owner(proj: Path) -> None:
    """A committed link ``evil -> .cas``, and on another branch a pointer ``evil/store.cas``
    (no tree holds both): checked out by ``--rev`` over the link, the target's real folder is
    the store, and that is what is checked."""
    git(proj, "checkout", "-qb", "other")
    commit_pointer(proj, "evil/store.cas", (proj / "data.cas").read_bytes())
    git(proj, "checkout", "-q", "main")
    os.symlink(".cas", proj / "evil")
    git(proj, "add", "evil")
    git(proj, "commit", "-qm", "upstream: a link")
    before = files_of(proj / ".cas")
    line = one_line(cas(proj, "checkout", "--force", "--rev", "other", code=2).stderr)
    assert "names evil/store, the local store" in line
    assert files_of(proj / ".cas") == before


def test_hooks_and_cas_reads_refuse_an_owned_target(proj: Path) -> None:
    """The post-checkout hook restores the data of the commit checked out: it refuses the
    hostile pointer too (Git's checkout itself goes on); ``cas://`` reads and the Python API
    refuse it with the same error."""
    git(proj, "checkout", "-qb", "evil")
    commit_pointer(proj, ".cas.cas", (proj / "data.cas").read_bytes())
    git(proj, "checkout", "-q", "main")
    cas(proj, "install-hooks")
    before = files_of(proj / ".cas")
    proc = subprocess.run(
        ["git", "checkout", "-q", "evil"], cwd=proj, capture_output=True, text=True
    )
    assert "cas's folder .cas" in proc.stderr
    assert files_of(proj / ".cas") == before
    with Repo.discover(proj) as repo, pytest.raises(PathError, match=r"cas's folder \.cas"):
        repo.checkout(force=True)
    fs = fsspec.filesystem("cas", repo=str(proj), skip_instance_cache=True)
    with pytest.raises(PathError, match=r"cas's folder \.cas"):
        fs.ls("data")
    assert files_of(proj / ".cas") == before


# -- item 7: every legal name checks out; an unfinished checkout is never a deletion -------------
LONG_NAMES = ["n" * NAME_MAX, "\u00e9" * (NAME_MAX // 2), "x" * (NAME_MAX - 3) + "\u20ac"]


@pytest.mark.parametrize("name", LONG_NAMES, ids=["ascii-255", "utf8-254", "ascii-252-euro"])
def test_names_up_to_name_max_check_out(proj: Path, name: str) -> None:
    """A file name of up to 255 bytes is added, deleted and checked out again byte for byte:
    its temp name fits (it used to be ``.NAME.cas-tmp-PID-RAND``, over NAME_MAX)."""
    assert len(name.encode()) <= NAME_MAX
    write(proj / "data" / name, "long\n")
    cas(proj, "add", "data")
    want = tree(proj / "data")
    (proj / "data" / name).unlink()
    cas(proj, "checkout", "--force")
    assert tree(proj / "data") == want
    assert cas(proj, "status").stdout.strip() == "data.cas: unchanged"


def test_temp_names_fit_and_are_recognised() -> None:
    """The one temp-name helper: at most NAME_MAX bytes for any legal name, cut at a
    character boundary, and of the reserved form a scan removes once its writer is dead."""
    for name in [*LONG_NAMES, "a", "\u00e9" * 127 + "x"]:
        made = os.path.basename(temp_name(Path("/folder") / name))
        assert len(made.encode()) <= NAME_MAX
        assert TEMP_NAME.fullmatch(made)


def test_a_user_file_that_only_looks_like_a_temp_file_is_data(proj: Path) -> None:
    """Any name holding ``.cas-tmp-`` used to be skipped by the scan (and deleted when the pid
    after it was dead): only cas's exact temp-name form is, so these are tracked."""
    names = ["x.cas-tmp-1-abc", ".y.cas-tmp-99999999-notahex!", "z.cas-tmp-"]
    for name in names:
        write(proj / "data" / name, name)
    cas(proj, "add", "data")
    with Repo.discover(proj) as repo:
        listed = {item.path for item in repo.ls(["data"])}
    assert {f"data/{n}" for n in names} <= listed


def test_single_file_target_names_fit_their_pointer(proj: Path) -> None:
    """A tracked file's pointer is its name plus ``.cas``: a 251-byte name works, a 252-byte
    one is refused in one line before anything is written."""
    ok, long = "m" * (NAME_MAX - 4), "m" * (NAME_MAX - 3)
    write(proj / ok, "w")
    cas(proj, "add", ok)
    assert (proj / f"{ok}.cas").is_file()
    write(proj / long, "w")
    line = one_line(cas(proj, "add", long, code=2).stderr)
    assert "too long for its pointer" in line
    assert not any(p.name.startswith(f".{long[:20]}") for p in proj.iterdir())


def _corrupt_chunk_of(root: Path, path: str) -> tuple[Path, int, bytes]:
    """Flip a byte of the chunk holding ``path``'s bytes in its pack; returns how to undo it."""
    with Repo.discover(root) as repo:
        row = next(item for item in repo.ls(["data"]) if item.path == path)
        loc = repo.objects.index[bytes.fromhex(row.hash)]
        pack = repo.local.root / pack_key(loc.pack)
        offset = loc.offset
    os.chmod(pack, 0o644)
    data = bytearray(pack.read_bytes())
    old = bytes(data[offset : offset + 1])
    data[offset] ^= 0xFF
    pack.write_bytes(bytes(data))
    return pack, offset, old


def test_a_checkout_that_stops_part_way_blocks_add_until_finished(proj: Path) -> None:
    """v2 has files ``a``...``e``; the chunk of ``e`` is corrupt, so a checkout of v2 over v1
    writes some files, deletes v1's, then stops. ``cas add`` must not record the missing files
    as deleted: it refuses, naming the fix, and ``cas status`` says the same. Once the store is
    repaired the named fix completes the checkout and add records v2 exactly."""
    for name in "abcde":
        write(proj / "data/v2" / name, f"v2 {name}\n" * 50)
    cas(proj, "add", "data")
    git(proj, "commit", "-qm", "data v2")
    v2 = tree(proj / "data")
    v2_pointer = (proj / "data.cas").read_bytes()
    pack, offset, old = _corrupt_chunk_of(proj, "data/v2/e")
    git(proj, "checkout", "-q", "HEAD~1")
    cas(proj, "checkout")
    git(proj, "checkout", "-q", "main")
    proc = cas(proj, "checkout", code=4)
    assert "Traceback" not in proc.stderr
    assert not (proj / "data/v2/e").exists()
    line = one_line(cas(proj, "add", "data", code=5).stderr)
    assert "did not finish" in line and "cas checkout -- data.cas" in line
    assert (proj / "data.cas").read_bytes() == v2_pointer
    assert "did not finish" in cas(proj, "status", code=2).stdout
    one_line(cas(proj, "add", "--append-only", "data", code=5).stderr)
    data = bytearray(pack.read_bytes())
    data[offset : offset + 1] = old
    pack.write_bytes(bytes(data))
    cas(proj, "checkout", "--", "data.cas")
    assert tree(proj / "data") == v2
    cas(proj, "add", "data")
    assert (proj / "data.cas").read_bytes() == v2_pointer
    assert cas(proj, "status").stdout.strip() == "data.cas: unchanged"
    assert "checkout" not in git(proj, "status", "--porcelain", "--ignored=no")


def test_a_subtree_checkout_does_not_clear_an_unfinished_whole_checkout(proj: Path) -> None:
    """Only a whole-target checkout that succeeds proves the target complete."""
    write(proj / "data/v2/a", "v2 a\n" * 50)
    write(proj / "data/w/b", "v2 b\n" * 50)
    cas(proj, "add", "data")
    git(proj, "commit", "-qm", "data v2")
    pack, offset, old = _corrupt_chunk_of(proj, "data/w/b")
    git(proj, "checkout", "-q", "HEAD~1")
    cas(proj, "checkout")
    git(proj, "checkout", "-q", "main")
    cas(proj, "checkout", code=4)
    cas(proj, "checkout", "data/v2")
    cas(proj, "add", "data", code=5)
    data = bytearray(pack.read_bytes())
    data[offset : offset + 1] = old
    pack.write_bytes(bytes(data))
    cas(proj, "checkout")
    cas(proj, "add", "data")


# -- item 8: .gitignore lines, pathspecs and suggested commands ----------------------------------
HOSTILE_NAMES = [
    "d[1]",
    "sp ",
    "two  ",
    "q?",
    "*",
    "**",
    "back\\slash",
    "trail\\",
    "#hash",
    "!bang",
    "[",
    "]x",
    "uni-\u00e9\u4e2d",
    "-dash",
    'quote\'d "x"',
    "$(echo pwned)",
]
DECOYS = ["d1", "qa", "sp", "two", "back", "x", "hash", "bang", "echo"]


def ignored(root: Path, path: str) -> bool:
    """What real Git says: is ``path`` ignored?"""
    found = subprocess.run(["git", "check-ignore", "-q", "--", path], cwd=root, check=False)
    assert found.returncode in (0, 1), found
    return found.returncode == 0


def test_gitignore_lines_match_exactly_their_target(proj: Path) -> None:
    """After one ``cas add`` of every hostile name, real ``git check-ignore`` ignores each and
    none of the decoys beside them (``q?`` once ignored ``qa``, ``d[1]`` ignored ``d1`` but not
    itself), and ``git add -A`` commits the pointers but never the data."""
    for name in HOSTILE_NAMES:
        write(proj / name / "f.txt", "data")
    for decoy in DECOYS:
        write(proj / decoy / "f.txt", "decoy")
    cas(proj, "add", "--", *HOSTILE_NAMES)
    assert [n for n in HOSTILE_NAMES if not ignored(proj, f"{n}/f.txt")] == []
    assert [d for d in DECOYS if ignored(proj, f"{d}/f.txt")] == []
    git(proj, "add", "-A")
    staged = set(git(proj, "ls-files", "-z").split("\0"))
    assert {f"{n}.cas" for n in HOSTILE_NAMES} <= staged
    assert {f"{n}/f.txt" for n in HOSTILE_NAMES} & staged == set()
    assert {f"{d}/f.txt" for d in DECOYS} <= staged


def test_gitignore_keeps_every_legal_byte(proj: Path) -> None:
    """One name with every printable ASCII byte that is legal in a name (no ``/``), and one
    ending in spaces: each ignored exactly."""
    every = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "/")
    for name in (every, every + "  "):
        write(proj / name / "f", "x")
        cas(proj, "add", "--", name)
        assert (
            subprocess.run(["git", "check-ignore", "-q", "--", f"{name}/f"], cwd=proj).returncode
            == 0
        )


def test_a_name_with_a_newline_is_refused(proj: Path) -> None:
    """A newline would split the ``.gitignore`` line in two (ignoring something else)."""
    write(proj / "a\nb" / "f", "x")
    line = one_line(cas(proj, "add", "a\nb", code=2).stderr)
    assert "'a\\nb.cas' has a control character" in line
    assert not (proj / ".gitignore").exists() or "b" not in (proj / ".gitignore").read_text()


def test_a_star_folder_is_added_and_no_tracked_file_is_touched(proj: Path) -> None:
    """``cas add '*'`` used to say '* is tracked by Git' (the pathspec ``*`` matches every
    file); as a literal pathspec it is not, and it is added without staging anything else."""
    write(proj / "README", "readme")
    git(proj, "add", "README")
    git(proj, "commit", "-qm", "readme")
    write(proj / "*" / "f", "x")
    cas(proj, "add", "*")
    assert git(proj, "diff", "--cached", "--name-only").split() == ["*.cas", ".gitignore"]


@pytest.mark.parametrize(
    "name", ["*", "q?", "sp ", "-it's"], ids=["star", "question", "trailing-space", "dash-quote"]
)
def test_the_suggested_git_rm_unstages_only_that_path(proj: Path, name: str) -> None:
    """Data Git already tracks is refused with a command; run by a real shell, it unstages
    exactly that path (``git rm -r --cached *`` unquoted unstaged every file)."""
    write(proj / "README", "readme")
    write(proj / "qa", "decoy")
    write(proj / name, "tracked by git")
    git(proj, "add", "--", "README", "qa", name)
    git(proj, "commit", "-qm", "files")
    line = one_line(cas(proj, "add", "--", name, code=2).stderr)
    command = line.split("run: ", 1)[1]
    subprocess.run(command, shell=True, cwd=proj, check=True, capture_output=True)
    assert git(proj, "diff", "--cached", "--name-only", "-z").split("\0")[:-1] == [name]
    cas(proj, "add", "--", name)


# -- low: NTFS spellings of .git, Git trees with ".." ----------------------------------------------
NTFS_NAMES = [
    ".git.",
    ".git ",
    ".GIT. . ",
    "git~1",
    "GIT~1",
    "git~1. ",
    ".git::$INDEX_ALLOCATION",
    ".git:stream",
    ".g\u200cit",
    ".G\ufeffIT",
]
SAFE_NAMES = [
    ".g\u200cit.",
    ".gitx",
    "git",
    "git~2",
    ".git~1",
    "x.git",
    ".gi",
    "git~10",
    ".git.x",
    "agit~1",
]


def _name_id(name: str) -> str:
    """A node id without spaces (reliability/audit.tsv separates ids by spaces)."""
    return name.replace(" ", "%20")


@pytest.mark.parametrize("name", NTFS_NAMES + SAFE_NAMES, ids=_name_id)
def test_dotgit_agrees_with_git_under_protect_ntfs(git_repo: Path, name: str) -> None:
    """cas refuses exactly the names real Git refuses with core.protectNTFS (its
    ``is_ntfs_dotgit``), plus HFS+ spellings, as a manifest path and as a folder in it."""
    blob = subprocess.run(
        ["git", "hash-object", "-w", "--stdin"],
        cwd=git_repo,
        input="x",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    refused_by_git = (
        subprocess.run(
            [
                "git",
                "-c",
                "core.protectNTFS=true",
                "-c",
                "core.protectHFS=true",
                "update-index",
                "--add",
                "--cacheinfo",
                f"100644,{blob},{name}/x",
            ],
            cwd=git_repo,
            capture_output=True,
            check=False,
        ).returncode
        != 0
    )
    assert is_dotgit(name) == refused_by_git == (name in NTFS_NAMES)
    for path in (name, f"sub/{name}/f"):
        if refused_by_git:
            with pytest.raises(ManifestError):
                check_path(path)
        else:
            check_path(path)


def test_add_refuses_ntfs_dotgit_names(proj: Path) -> None:
    """What no manifest may hold, add refuses to record (one line, the pointer unchanged)."""
    before = (proj / "data.cas").read_bytes()
    for name in (".git.", "git~1", ".GIT "):
        write(proj / "data" / name / "config", "[core]\n")
        line = one_line(cas(proj, "add", "data", code=2).stderr)
        assert f"data/{name} is a Git folder" in line
        assert (proj / "data.cas").read_bytes() == before
        (proj / "data" / name / "config").unlink()
        (proj / "data" / name).rmdir()


def _tree_with_dotdot(root: Path) -> str:
    """A commit whose tree holds a ``..`` entry (only ``git mktree`` makes one)."""
    blob = git(root, "rev-parse", "HEAD:data.cas").strip()
    sub = subprocess.run(
        ["git", "mktree"],
        cwd=root,
        input=f"100644 blob {blob}\tx.cas\n",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    top = subprocess.run(
        ["git", "mktree"],
        cwd=root,
        input=f"100644 blob {blob}\tdata.cas\n040000 tree {sub}\t..\n",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return git(root, "commit-tree", "-m", "hostile", top).strip()


def test_a_git_tree_with_dotdot_entries_is_one_line(proj: Path) -> None:
    """``checkout --rev``, ``ls --rev`` and ``diff`` died with a GitPython traceback; now each
    names the path and exits 2, and nothing is written."""
    commit = _tree_with_dotdot(proj)
    before = tree(proj)
    for args in (["checkout", "--rev", commit], ["ls", "--rev", commit], ["diff", "HEAD", commit]):
        line = one_line(cas(proj, *args, code=2).stderr)
        assert "'../x.cas'" in line and "Git refuses" in line
    assert tree(proj) == before
    assert not (proj.parent / "x").exists()


@pytest.mark.parametrize("name", ["x:cat:y", "[red]z", "a[/b]c"])
def test_names_are_printed_as_they_are(proj: Path, name: str) -> None:
    """rich's console would print ``:cat:`` as an emoji and take ``[red]`` as markup."""
    write(proj / name / "f.txt", "f")
    assert cas(proj, "add", name).stdout.startswith(f"{name}.cas: 1 files")
    assert f"{name}.cas: unchanged\n" in cas(proj, "status").stdout.splitlines(keepends=True)
