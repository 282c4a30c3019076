"""The pointers gc must keep alive: every place a user could still check data out from.

Always roots, whatever the scope: ``HEAD``, the index (every merge stage), the working tree's
pointers, every stash entry (its worktree, index and untracked commits) and every linked worktree
(its ``HEAD``, index and working tree). The scope adds history:

- ``branches``: the tips of local branches and remote-tracking branches (``refs/remotes``: a
  teammate's pushed work is kept);
- ``tags``: every tag;
- ``all_commits``: every commit reachable from any ref or reflog.

``cas gc`` with no scope flag uses branches and tags; what ``all_commits`` adds beyond the
scope is kept too unless a remote holds it (:func:`cas.ops.gc.gc`). Pointer blobs are listed by
Git in one ``rev-list --objects`` per set of commits, never a tree walk per commit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cas import pointer
from cas.gitio import GitRepo
from cas.ops.needs import Need, blob_needs

if TYPE_CHECKING:
    from cas.repo import Repo


@dataclass(frozen=True)
class Scope:
    branches: bool = True
    tags: bool = True
    all_commits: bool = False


@dataclass
class Roots:
    """``needs`` are the live pointers; ``skipped`` are ``*.cas`` blobs that are not pointers
    (they name nothing, so nothing is kept for them)."""

    needs: list[Need] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def collect(repo: Repo, scope: Scope) -> Roots:
    roots = Roots()
    commit_blobs = _commit_blobs(repo.git, scope)
    for wt_path, head in repo.git.worktrees():
        linked = GitRepo(wt_path)
        commit_blobs.update(repo.git.blobs([head], pointer.SUFFIX, walk=False) if head else {})
        _add_checkout(repo, linked, roots)
    roots.needs += blob_needs(repo, commit_blobs, roots.skipped)
    _add_checkout(repo, repo.git, roots)
    return roots


def _commit_blobs(git: GitRepo, scope: Scope) -> dict[str, str]:
    stash = git.stash_commits()
    if scope.all_commits:
        return git.blobs(["--all", "--reflog", *stash], pointer.SUFFIX)
    head = git.head()
    tips = [*([head] if head else []), *stash]
    if scope.branches:
        tips += git.refs("refs/heads", "refs/remotes")
    if scope.tags:
        tips += git.refs("refs/tags")
    return git.blobs(tips, pointer.SUFFIX, walk=False)


def _add_checkout(repo: Repo, git: GitRepo, roots: Roots) -> None:
    """A checkout's index and working-tree pointers. A malformed pointer in the working tree
    stops gc: the user is editing it, and what it should name cannot be guessed."""
    roots.needs += blob_needs(repo, git.index_blobs(pointer.SUFFIX), roots.skipped)
    for rel in git.worktree_files(pointer.SUFFIX):
        shown = str(git.root / rel) if git.root != repo.root else rel
        ptr = pointer.read(git.root / rel, shown)
        roots.needs.append(Need(shown, rel, ptr.kind, ptr.manifest))
