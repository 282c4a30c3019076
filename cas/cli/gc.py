"""``cas gc``: thin shell over :mod:`cas.ops.gc`."""

from __future__ import annotations

import re
from dataclasses import asdict
from typing import Any

import typer

from cas.cli.output import emit_json, human, say
from cas.errors import UsageError
from cas.repo import Repo

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def register(app: typer.Typer) -> None:
    app.command("gc")(gc)


def parse_duration(text: str) -> float:
    """``7d``, ``12h``, ``30m``, ``45s``, ``2w`` or plain seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not match:
        raise UsageError(f"--older-than {text!r} is not a duration; use e.g. 7d, 12h, 30m, 0s")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def gc(
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Report only; delete nothing."),
    all_branches: bool = typer.Option(False, "--all-branches", help="Keep branch tips' data."),
    all_tags: bool = typer.Option(False, "--all-tags", help="Keep every tag's data."),
    all_commits: bool = typer.Option(False, "--all-commits", help="Keep every commit's data."),
    remote: str = typer.Option(None, "--remote", "-r", help="Collect a remote instead."),
    older_than: str = typer.Option("7d", "--older-than", help="Remote gc: grace (7d, 12h, 0s)."),
    json_out: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
    delete_unpushed: bool = typer.Option(
        False,
        "--delete-unpushed",
        help="Also delete what only older commits reach when no remote holds it (unrecoverable).",
    ),
) -> None:
    """Delete objects no root reaches. Roots: HEAD, the index, the working tree, stash entries,
    linked worktrees, plus (default: branches and tags) the scope flags' commits. What other
    commits (any ref, reflog) reach is deleted locally only when a remote holds it."""
    from cas.ops.gc import RemoteGcResult

    options: dict[str, Any] = {}  # no scope flag: the default scope, branches and tags
    if all_branches or all_tags or all_commits:
        options.update(branches=all_branches, tags=all_tags, all_commits=all_commits)
    if remote:
        options["grace_seconds"] = parse_duration(older_than)
    result = Repo.open().gc(
        **options, dry_run=dry_run, delete_unpushed=delete_unpushed, remote=remote or None
    )
    if json_out:
        emit_json(asdict(result))
        return
    where = f"remote '{remote}'" if remote else "the local store"
    verb = "would delete" if dry_run else "deleted"
    left = f"; {human(result.bytes_left)} unused left in mostly used packs"
    say(
        f"{where}: {verb} {result.manifests} manifests, {result.versions} versions, "
        f"{result.segments} segments, {result.packs_deleted} packs"
        + (f" (+{result.packs_repacked} repacked)" if result.packs_repacked else "")
        + f": {human(result.bytes_freed)} freed; kept what {result.roots} pointers need"
        + (left if result.bytes_left else "")
    )
    if isinstance(result, RemoteGcResult) and (result.marked or result.young):
        say(
            f"  {result.marked} unused objects marked: a gc after {older_than} deletes them if "
            f"still unused; {result.young} younger than {older_than} kept"
        )
    if result.kept_unpushed:
        say(
            f"  kept {result.kept_unpushed} objects older commits need that no remote holds "
            "('cas push --all-commits' uploads them; --delete-unpushed deletes them)"
        )
    for line in result.remote_errors:
        say(f"  warning: could not list {line}; kept what it might hold")
    for line in result.unresolved:
        say(f"  warning: kept what could be read of {line}")
    if result.skipped:
        say(f"  {len(result.skipped)} *.cas files in history are not pointers (they name nothing)")
