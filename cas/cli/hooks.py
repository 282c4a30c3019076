"""Git integration commands: install-hooks, uninstall-hooks, and ``cas hook <name>``, which the
scripts of ``hooks/`` call. Thin: the work is in :mod:`cas.ops.install`, :mod:`cas.ops.hooks`
and :mod:`cas.ops.merge`. Hooks talk on stderr (Git shows it); their exit code is Git's verdict.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import typer

from cas.cli.output import RichProgress, human, say
from cas.errors import ConflictError
from cas.ops import hooks as hooks_op
from cas.ops import install as install_op
from cas.repo import Repo

hook_app = typer.Typer(help="What the Git hooks run (installed by 'cas install-hooks').",
                       no_args_is_help=True)  # fmt: skip


def register(app: typer.Typer) -> None:
    app.command("install-hooks")(install_hooks)
    app.command("uninstall-hooks")(uninstall_hooks)
    app.add_typer(hook_app, name="hook")


def _tell(line: str) -> None:
    print(line, file=sys.stderr)


def install_hooks() -> None:
    """Install the pre-push, post-checkout, post-merge and pre-commit hooks and the *.cas merge
    driver (idempotent; keeps your own hooks and runs them first; honours core.hooksPath)."""
    result = install_op.install(Repo.open())
    say(f"installed {', '.join(result.hooks)} in {result.folder}; merge driver for *.cas")
    for name in result.chained:
        say(f"kept your {name} hook as {name}{install_op.CHAINED}; it runs first")


def uninstall_hooks() -> None:
    """Remove cas's hooks (restoring any they chained to) and the merge driver's config."""
    result = install_op.uninstall(Repo.open())
    say(f"removed {', '.join(result.hooks) or 'no cas hooks'} from {result.folder}")
    for name in result.chained:
        say(f"restored your {name} hook")


@hook_app.command("pre-push")
def pre_push(
    remote: str = typer.Argument("", help="The Git remote's name (Git passes it)."),
    url: str = typer.Argument("", help="The Git remote's URL (Git passes it)."),
) -> None:
    """Upload the data of the commits being pushed (ref lines on stdin); CAS_SKIP_PUSH=1 skips."""
    if hooks_op.skip_push():
        _tell("cas: CAS_SKIP_PUSH is set: data not pushed (run 'cas push' before others pull)")
        return
    lines = sys.stdin.read().splitlines()
    if not any(line.strip() for line in lines) and os.environ.get("PRE_COMMIT_TO_REF"):
        # the pre-commit framework passes the push as variables, not stdin
        remote = os.environ.get("PRE_COMMIT_REMOTE_NAME", remote)
        lines = [f"HEAD {os.environ['PRE_COMMIT_TO_REF']} ref "
                 f"{os.environ.get('PRE_COMMIT_FROM_REF') or '0' * 40}"]  # fmt: skip
    result = hooks_op.pre_push(Repo.open(), remote, lines, RichProgress())
    if result is None:
        return
    if result.packs or result.manifests or result.versions or result.segments:
        _tell(
            f"cas: data pushed to {result.remote}: {result.packs} packs, {result.manifests} "
            f"manifests, {result.versions} versions ({human(result.bytes)})"
        )
    else:
        _tell(f"cas: {result.remote} already has the data these commits need")


def _finish(report: hooks_op.HookReport) -> None:
    """A hook's lines on stderr; a failed hook exits 1, which Git reports."""
    for line in report.lines:
        _tell(line)
    if report.failed:
        raise typer.Exit(1)


@hook_app.command("post-checkout")
def post_checkout(
    previous: str = typer.Argument("", help="The previous HEAD (Git passes it)."),
    new: str = typer.Argument("", help="The new HEAD (Git passes it)."),
    branch: str = typer.Argument("1", help="1 for a branch checkout, 0 for a file checkout."),
) -> None:
    """Restore the data the new HEAD's pointers name (branch checkouts only)."""
    if os.environ.get("PRE_COMMIT_CHECKOUT_TYPE", branch) == "1":  # the pre-commit framework
        _finish(hooks_op.restore(Repo.open(), RichProgress()))


@hook_app.command("post-merge")
def post_merge(squash: str = typer.Argument("0", help="1 for a squash merge.")) -> None:
    """Restore the data the merged pointers name."""
    _finish(hooks_op.restore(Repo.open(), RichProgress()))


@hook_app.command("pre-commit")
def pre_commit(files: list[str] = typer.Argument(None, help="Ignored.")) -> None:
    """Refuse a staged pointer that is broken or names data the store lacks; warn about data
    changed but not re-added."""
    _finish(hooks_op.pre_commit(Repo.open()))


@hook_app.command("merge")
def merge(
    base: Path = typer.Argument(..., help="%O: the common ancestor's pointer."),
    ours: Path = typer.Argument(..., help="%A: ours; the result is written here."),
    theirs: Path = typer.Argument(..., help="%B: theirs."),
    path: str = typer.Argument("", help="%P: the pointer's path in the repository."),
) -> None:
    """The *.cas merge driver: merge the datasets file by file; exit 1 on a conflict."""
    from cas.ops import merge as merge_op

    repo = Repo.open()
    shown = path or str(ours)
    try:
        result = merge_op.merge(
            repo, base.read_bytes(), ours.read_bytes(), theirs.read_bytes(), shown
        )
    except ConflictError as err:
        _tell(f"cas: merge conflict: {err}")
        raise typer.Exit(1) from None
    ours.write_bytes(result.pointer.encode())
    if result.conflicts:
        listed = ", ".join(result.conflicts[:20])
        more = f" (+{len(result.conflicts) - 20} more)" if len(result.conflicts) > 20 else ""
        _tell(
            f"cas: merge conflict in {shown}: both sides changed {listed}{more}; the merged "
            f"pointer keeps ours for them, theirs is: git show {shlex.quote(':3:' + shown)}. Fix "
            f"the data, then run cas add and: git add -- {shlex.quote(shown)}"
        )
        raise typer.Exit(1)
