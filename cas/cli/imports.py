"""``cas import dvc`` and ``cas import lfs``: migrate data versioned by DVC or git-lfs (see
docs/migrate.md). Thin shells over :mod:`cas.ops.import_dvc` and :mod:`cas.ops.import_lfs`."""

from __future__ import annotations

from dataclasses import asdict

import typer

from cas.cli.output import RichProgress, emit_json, human, say
from cas.repo import Repo

JSON = typer.Option(False, "--json", help="Print machine-readable JSON.")


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        help="Migrate data versioned by DVC or git-lfs into cas (verified, not committed).",
        no_args_is_help=True,
    )
    group.command("dvc")(dvc)
    group.command("lfs")(lfs)
    app.add_typer(group, name="import")


def dvc(
    records: list[str] = typer.Argument(None, help=".dvc files or dvc.lock (default: all)."),
    json_out: bool = JSON,
) -> None:
    """Every DVC output becomes a cas pointer, verified against DVC's md5 first; the .dvc files
    leave the index and the worktree. Data comes from the worktree, DVC's cache or a local DVC
    remote."""
    from cas.ops.import_dvc import import_dvc

    with Repo.open() as repo:
        results = import_dvc(repo, records or (), RichProgress())
    if json_out:
        emit_json([asdict(r) for r in results])
        return
    if not results:
        say("nothing to import: no DVC outputs in this worktree")
    for r in results:
        origin = ", ".join(f"{n} from {k}" for k, n in sorted(r.sources.items())) or "unchanged"
        removed = f"; {r.record} removed" if r.record_removed else ""
        say(f"{r.path} -> {r.pointer}: {r.files} files, {human(r.size)} ({origin}){removed}")


def lfs(
    patterns: list[str] = typer.Argument(
        None, help=".gitattributes patterns to import (default: every lfs pattern)."
    ),
    json_out: bool = JSON,
) -> None:
    """Every git-lfs file of the patterns becomes cas data, verified against its LFS sha256
    first; the files leave the Git index and their patterns leave .gitattributes."""
    from cas.ops.import_lfs import import_lfs

    with Repo.open() as repo:
        results = import_lfs(repo, patterns or (), RichProgress())
    if json_out:
        emit_json([asdict(r) for r in results])
        return
    if not results:
        say("nothing to import: no git-lfs files match")
    for r in results:
        say(f"{r.path} -> {r.pointer}: {r.files} files, {human(r.size)} (from {r.source})")
