"""A clone's remotes do not depend on the checked-out commit (issue 14, item 10).

The remotes live in the committed ``.cas/config``, so checking out a commit from before
``cas remote add`` used to leave the data unrestored with "no remote configured". Every remote
cas sees is recorded per clone, outside the history; real git, a bare Git remote, and a
file:// or SeaweedFS data remote.
"""

from __future__ import annotations

import configparser
import json
from pathlib import Path

import pytest

from cas import remote
from cas.repo import Repo
from tests.conftest import cas, git, tree
from tests.test_hooks import commit_data, identity, run_git


@pytest.fixture
def history(
    tmp_path: Path, remote_url: tuple[str, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, dict[str, bytes], dict[str, bytes], str]:
    """A bare Git remote holding tag v1 (data committed before any data remote existed) and
    main (the remote added, data v2), with every commit's data pushed."""
    url, env = remote_url
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # hooks run as git's children: they inherit it
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    work = tmp_path / "work"
    git(tmp_path, "init", "-q", "-b", "main", str(work))
    identity(work)
    git(work, "remote", "add", "origin", str(bare))
    cas(work, "init")
    cas(work, "install-hooks")
    commit_data(work, {"a.txt": "v1 a", "b.txt": "v1 b"}, "v1: no data remote yet")
    git(work, "tag", "v1")
    v1 = tree(work / "data")
    cas(work, "remote", "add", "origin", url)
    commit_data(work, {"a.txt": "v2 a", "c.txt": "v2 c"}, "v2")
    v2 = tree(work / "data")
    pushed = run_git(work, "push", "origin", "main", "--tags")
    assert pushed.returncode == 0, pushed.stderr
    cas(work, "verify", "--remote", "--rev", "v1", "--rev", "main")
    return bare, v1, v2, url


def test_an_old_checkout_still_finds_the_remote(
    history: tuple[Path, dict[str, bytes], dict[str, bytes], str], tmp_path: Path
) -> None:
    bare, v1, v2, url = history
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(bare), str(clone))
    identity(clone)
    cas(clone, "pull")
    assert tree(clone / "data") == v2
    cas(clone, "install-hooks")
    # v1's .cas/config names no remote, and the clone's store lacks v1's chunks
    switched = run_git(clone, "checkout", "-q", "v1")
    assert switched.returncode == 0, switched.stderr
    assert "[remote" not in (clone / ".cas/config").read_text()
    assert tree(clone / "data") == v1
    listed = json.loads(cas(clone, "remote", "list", "--json").stdout)
    assert [(r["name"], r["url"]) for r in listed] == [("origin", url)]
    run_git(clone, "checkout", "-q", "main")
    assert tree(clone / "data") == v2


def test_pull_at_an_old_commit_uses_the_recorded_remote(
    history: tuple[Path, dict[str, bytes], dict[str, bytes], str], tmp_path: Path
) -> None:
    """Without hooks: ``git checkout v1`` then ``cas pull``, as a user of a clone types."""
    bare, v1, _v2, _url = history
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(bare), str(clone))
    cas(clone, "remote", "list")  # cas has seen main's config once
    git(clone, "checkout", "-q", "v1")
    cas(clone, "pull")
    assert tree(clone / "data") == v1


def test_record_follows_edits_and_removal(git_repo: Path, tmp_path: Path) -> None:
    cas(git_repo, "init")
    url = (tmp_path / "remote").as_uri()
    cas(git_repo, "remote", "add", "origin", url)
    cas(git_repo, "remote", "modify", "origin", "region", "eu-west-1")
    git(git_repo, "commit", "-qm", "remote")
    repo = Repo.discover(git_repo)
    assert remote.remotes(repo)["origin"].options == {"region": "eu-west-1"}
    cas(git_repo, "remote", "modify", "origin", "region", "--unset")
    assert remote.remotes(repo)["origin"].options == {}
    record = configparser.ConfigParser(interpolation=None)
    record.read(remote.record_path(repo))
    assert dict(record.items('remote "origin"')) == {"url": url}
    assert record.get("core", "remote") == "origin"
    # the committed file of an older commit lacks it: the record still names it, and
    # modifying it there writes the whole remote (url included) into that commit's config
    (git_repo / ".cas/config").write_text("[core]\n")
    assert remote.resolve(repo).url == url
    cas(git_repo, "remote", "modify", "origin", "profile", "ml")
    committed = configparser.ConfigParser(interpolation=None)
    committed.read(git_repo / ".cas/config")
    assert dict(committed.items('remote "origin"')) == {"url": url, "profile": "ml"}
    cas(git_repo, "remote", "remove", "origin")
    (git_repo / ".cas/config").write_text("[core]\n")
    assert remote.remotes(repo) == {}
    err = cas(git_repo, "push", code=2).stderr
    assert "no remote configured" in err


def test_linked_worktree_shares_the_record(git_repo: Path, tmp_path: Path) -> None:
    cas(git_repo, "init")
    url = (tmp_path / "remote").as_uri()
    cas(git_repo, "remote", "add", "backup", url)
    git(git_repo, "commit", "-qm", "remote")
    git(git_repo, "commit", "-q", "--allow-empty", "-m", "later")
    other = tmp_path / "other"
    git(git_repo, "worktree", "add", "-q", "--detach", str(other), "HEAD")
    (other / ".cas/config").write_text("[core]\n")  # as at a commit before the remote
    listed = json.loads(cas(other, "remote", "list", "--json").stdout)
    assert [(r["name"], r["url"]) for r in listed] == [("backup", url)]
