"""Core commands: init, add, status, checkout, diff, ls, fsck."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import typer

from cas.cli.output import RichProgress, checked_out, emit_json, human, report, say
from cas.errors import UsageError
from cas.repo import Repo

JSON = typer.Option(False, "--json", help="Print machine-readable JSON.")
EXIT_CODE = typer.Option(
    False, "--exit-code", help="Exit 1 when there are differences, 0 when none (as git's)."
)
EXECUTOR = typer.Option(
    None,
    "--executor",
    help="Hash on a cluster: tcp://scheduler:8786 (Dask), processes[:N] or local "
    "(default: core.executor, else this process).",
)


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("add")(add)
    app.command("status")(status)
    app.command("checkout")(checkout)
    app.command("diff")(diff)
    app.command("ls")(ls)
    app.command("fsck")(fsck)


def init() -> None:
    """Create .cas/ in this Git repository (idempotent) and stage its config."""
    repo = Repo.init()
    say(f"initialised cas in {repo.root} (config staged: .cas/config)")


def add(
    targets: list[Path] = typer.Argument(..., help="Folders or files to track."),
    append_only: bool = typer.Option(
        False, "--append-only", help="Only new files may appear; a changed or deleted one fails."
    ),
    executor: str = EXECUTOR,
    to_remote: bool = typer.Option(
        False, "--to-remote", help="Upload new chunks to the remote; keep only manifests locally."
    ),
    remote: str = typer.Option(None, "--remote", "-r", help="With --to-remote: which remote."),
    json_out: bool = JSON,
) -> None:
    """Chunk TARGETS into the store, write TARGET.cas, git-ignore TARGET, stage both."""
    if append_only and (to_remote or remote):
        raise UsageError("--append-only cannot be combined with --to-remote; drop one")
    if append_only:
        from cas.cli.corpus import add_append_only_cli  # lazily: keeps plain add light

        add_append_only_cli(targets, json_out)
        return
    repo = Repo.open()
    report(
        repo.add(
            targets, progress=RichProgress(), executor=executor, to_remote=to_remote, remote=remote
        ),
        json_out,
        lambda r: (
            f"{r.pointer}: {r.files} files, {human(r.size)}, {r.hashed_files} hashed, "
            f"{human(r.new_bytes)} new "
            + (f"on remote '{r.remote}'" if r.remote else "in the store")
        ),
    )


def status(
    targets: list[Path] = typer.Argument(None, help="Pointers or targets (default: all)."),
    remote: bool = typer.Option(False, "--remote", help="What is not pushed / not fetched."),
    remote_name: str = typer.Option(
        None, "--remote-name", "-r", help="With --remote: which remote (default: core.remote)."
    ),
    json_out: bool = JSON,
    exit_code: bool = EXIT_CODE,
) -> None:
    """How each tracked dataset differs from its pointer (--remote: from the remote)."""
    if remote:
        from cas.cli.remote import status_remote  # lazily: keeps fsspec out of plain status

        status_remote(targets or [], remote_name, json_out, exit_code)
        return
    results = Repo.open().status(targets or [])
    if json_out:
        emit_json([asdict(r) for r in results])
    else:
        for r in results:
            if r.state == "modified":
                say(
                    f"{r.pointer}: modified ({r.modified} modified, {r.added} added, "
                    f"{r.deleted} deleted)"
                )
                for c in r.changes[:50]:
                    say(f"    {c.change:9} {c.path}")
                if len(r.changes) > 50:
                    say(f"    ... and {len(r.changes) - 50} more ('cas status --json' lists all)")
            elif r.state in ("missing", "error"):
                say(f"{r.pointer}: {r.state}: {r.message}")
            else:
                say(f"{r.pointer}: {r.state}")
    if any(r.state == "error" for r in results):
        raise typer.Exit(2)
    if exit_code and any(r.state != "unchanged" for r in results):
        raise typer.Exit(1)


def checkout(
    targets: list[Path] = typer.Argument(
        None, help="Pointers, targets or paths inside a tracked folder (default: all)."
    ),
    rev: str = typer.Option(None, "--rev", help="Take pointers from this Git revision."),
    force: bool = typer.Option(False, "--force", "-f", help="Discard unsaved data in the way."),
    json_out: bool = JSON,
) -> None:
    """Make the data equal to its pointers (of the worktree, or of --rev)."""
    report(
        Repo.open().checkout(targets or [], rev=rev, force=force, progress=RichProgress()),
        json_out,
        checked_out,
    )


def diff(
    rev_a: str = typer.Argument("HEAD", help="Old revision."),
    rev_b: str = typer.Argument(None, help="New revision (default: the worktree pointers)."),
    targets: list[Path] = typer.Option(None, "--target", "-t", help="Limit to these targets."),
    json_out: bool = JSON,
    exit_code: bool = EXIT_CODE,
) -> None:
    """Per-file changes between two revisions: added / modified / deleted, with sizes."""
    changes = Repo.open().diff(rev_a, rev_b, paths=targets or [])
    if json_out:
        emit_json([asdict(c) for c in changes])
    for c in [] if json_out else changes:
        sizes = {
            "added": human(c.new_size or 0),
            "deleted": human(c.old_size or 0),
            "modified": f"{human(c.old_size or 0)} -> {human(c.new_size or 0)}",
        }[c.change]
        say(f"{c.change:9} {c.path}  ({sizes})")
    if exit_code and changes:
        raise typer.Exit(1)


def ls(
    targets: list[Path] = typer.Argument(None, help="Pointers or targets (default: all)."),
    rev: str = typer.Option(None, "--rev", help="Git revision to list."),
    json_out: bool = JSON,
) -> None:
    """BLAKE3, size and path of every tracked file, path last so any name parses (b3sum of a
    checked-out file matches the hash)."""
    listing = Repo.open().ls(targets or [], rev=rev)
    if json_out:
        emit_json([asdict(item) for item in listing])
        return
    for item in listing:
        say(f"{item.hash}  {item.size:>12}  {item.path}")


def fsck(json_out: bool = JSON) -> None:
    """Re-hash every object in the local store; exit 1 on any corruption."""
    result = Repo.open().fsck()
    if json_out:
        emit_json({**asdict(result), "ok": result.ok})
    else:
        for problem in result.corrupt:
            say(f"corrupt: {problem}")
        say(
            f"checked {result.packs} packs ({result.chunks} chunks, "
            f"{human(result.bytes_checked)}), {result.manifests} manifests, "
            f"{result.versions} versions and {result.segments} segments: "
            + ("ok" if result.ok else f"{len(result.corrupt)} problems")
            + (
                f"; {result.missing_chunks} referenced chunks not local ('cas pull' fetches them)"
                if result.missing_chunks
                else ""
            )
        )
    if not result.ok:
        raise typer.Exit(1)
