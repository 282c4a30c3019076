"""What the Git hooks do (``cas hook <name>``; installed by :mod:`cas.ops.install`).

- pre-push: uploads what the pushed commits' pointers need, before Git sends the commits. Only
  pointer blobs reachable from the pushed commits and not from what the remote already has (its
  old tips, its remote-tracking branches) are read: one ``git rev-list --objects``, never a scan
  of history.
- post-checkout (branch checkouts) and post-merge: the data follows HEAD. A target whose data
  the local store lacks is fetched from the default remote; a target with unsaved edits is left
  as it is and reported (checkout's own "would overwrite" check), never overwritten.
- pre-commit: a staged pointer must parse and name an object the local store holds (a
  hand-edited or truncated pointer is refused); data modified but not re-added is warned about.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cas import pointer
from cas.errors import CasError, ConflictError, ObjectMissingError, PointerError
from cas.ops.needs import Need, blob_needs, root_of

if TYPE_CHECKING:
    from cas.ops.transfer import PushResult
    from cas.progress import Progress
    from cas.repo import Repo


@dataclass
class HookReport:
    """Lines for the user (each names the target and the fix) and whether the hook failed."""

    lines: list[str] = field(default_factory=list)
    failed: bool = False


def _missing(sha: str) -> bool:
    return set(sha) == {"0"}


# -- pre-push --------------------------------------------------------------------------------------
def pre_push(
    repo: Repo, git_remote: str, ref_lines: Sequence[str], progress: Progress | None = None
) -> PushResult | None:
    """Push the data of the commits Git is about to send; None when there is nothing to send.
    ``ref_lines`` are Git's ``<local ref> <local sha> <remote ref> <remote sha>`` lines."""
    include: list[str] = []
    exclude: list[str] = []
    for line in ref_lines:
        fields = line.split()
        if len(fields) != 4:
            continue  # a blank line: Git sends none, a shell wrapper may
        _local_ref, local_sha, _remote_ref, remote_sha = fields
        if _missing(local_sha):
            continue  # a deletion sends no commits
        include.append(local_sha)
        known = repo.git.probe("cat-file", "-e", f"{remote_sha}^{{commit}}") is not None
        if not _missing(remote_sha) and known:  # a remote tip this clone lacks excludes nothing
            exclude.append(remote_sha)
    if not include:
        return None
    tracking = [f"--remotes={git_remote}"] if git_remote else []  # a URL matches none: fine
    revs = [*include, "--not", *exclude, *tracking]
    needs = blob_needs(repo, repo.git.blobs(revs, pointer.SUFFIX))
    if not needs:
        return None
    from cas.ops import transfer  # lazily: fsspec is only needed when there is data to send

    return transfer.push(repo, progress=progress, needs=needs)


def skip_push() -> bool:
    return os.environ.get("CAS_SKIP_PUSH", "") not in ("", "0")


# -- post-checkout, post-merge ---------------------------------------------------------------------
def restore(repo: Repo, progress: Progress | None = None) -> HookReport:
    """Check out every pointer of the working tree, fetching what the store lacks. Each target
    stands alone: one with unsaved edits or unreachable data is reported, the others restored."""
    report = HookReport()
    for target in repo.targets(()):
        try:
            ptr = repo.read_pointer(target)
            need = Need(target.pointer, target.pointer, ptr.kind, ptr.manifest)
            if ptr.kind != "corpus" and not repo.local.exists(root_of(need).key):
                from cas.ops import transfer  # lazily: fsspec is not needed otherwise

                transfer.fetch(repo, [target.pointer], progress=progress)
            for result in repo.checkout([target.pointer], progress=progress):
                if result.written or result.deleted:
                    report.lines.append(
                        f"cas: {target.path}: {result.written} files written, "
                        f"{result.deleted} deleted"
                    )
        except ConflictError as err:
            report.lines.append(f"cas: kept your unsaved changes: {err}")
        except CasError as err:
            report.lines.append(f"cas: {target.path} not restored: {err}")
            report.failed = True
    return report


# -- pre-commit ------------------------------------------------------------------------------------
def pre_commit(repo: Repo) -> HookReport:
    """Refuse staged pointers that are malformed or name objects the store lacks; warn about
    tracked data modified since its last ``cas add``."""
    report = HookReport()
    changed = repo.git.run(
        "diff", "--cached", "--name-only", "--diff-filter=ACMR", "-z", "--", f"*{pointer.SUFFIX}"
    )
    staged = set(changed.split("\0"))
    blobs = {b: p for b, p in repo.git.index_blobs(pointer.SUFFIX).items() if p in staged}
    try:
        needs = blob_needs(repo, blobs)
    except PointerError as err:
        report.lines.append(f"cas: refusing the commit: {err}; fix the pointer or run 'cas add'")
        report.failed = True
        return report
    for need in needs:
        obj = root_of(need)
        if not repo.local.exists(obj.key):
            err = ObjectMissingError(f"{need.pointer} names {obj}, which the local store lacks")
            report.lines.append(
                f"cas: refusing the commit: {err}; run 'cas add' on its data, or 'cas pull' if "
                "it came from elsewhere"
            )
            report.failed = True
    for st in repo.status():
        if st.state == "modified":
            report.lines.append(
                f"cas: warning: {st.target} has changes not added ({st.modified} modified, "
                f"{st.added} added, {st.deleted} deleted); to commit them, run: "
                f"cas add -- {shlex.quote(st.target)}"
            )
    return report
