"""Remote commands: remote add/list/modify/default/remove, push, fetch, pull, verify.

Thin: parsing and printing only; the work is in :mod:`cas.remote` and :mod:`cas.ops.transfer`.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import typer

from cas import remote as remote_config
from cas.cli.output import RichProgress, checked_out, emit_json, human, say
from cas.errors import UsageError
from cas.ops import transfer
from cas.repo import Repo

JSON = typer.Option(False, "--json", help="Print machine-readable JSON.")
TARGETS = typer.Argument(None, help="Pointers or targets (default: all).")
REMOTE = typer.Option(None, "--remote", "-r", help="Remote name (default: core.remote).")
JOBS = typer.Option(transfer.DEFAULT_JOBS, "--jobs", "-j", min=1, max=256,
                    help="Concurrent requests.")  # fmt: skip

remote_app = typer.Typer(help="Manage remotes (in .cas/config; secrets in .cas/config.local).",
                         no_args_is_help=True)  # fmt: skip


def register(app: typer.Typer) -> None:
    app.add_typer(remote_app, name="remote")
    app.command("push")(push)
    app.command("fetch")(fetch)
    app.command("pull")(pull)
    app.command("verify")(verify)


@remote_app.command("add")
def remote_add(
    name: str = typer.Argument(..., help="Remote name, e.g. origin."),
    url: str = typer.Argument(..., help="s3://bucket/prefix, file:///abs/path, gs://..."),
    default: bool = typer.Option(False, "--default", help="Make it the default remote."),
) -> None:
    """Add a remote to .cas/config (staged); the first remote becomes the default."""
    repo = Repo.open()
    remote_config.add(repo, name, url, default)
    is_default = remote_config.default_name(repo) == name
    say(f"added remote '{name}' ({url})" + (", the default" if is_default else ""))


@remote_app.command("list")
def remote_list(json_out: bool = JSON) -> None:
    """Remotes with their options (secrets are never shown, only whether they are set)."""
    repo = Repo.open()
    default = remote_config.default_name(repo)
    rows = [
        {
            "name": r.name,
            "url": r.url,
            "default": r.name == default,
            "options": r.options,
            "credentials": sorted(r.secrets),
        }
        for r in remote_config.remotes(repo).values()
    ]
    if json_out:
        emit_json(rows)
        return
    for row in rows:
        opts = " ".join(f"{k}={v}" for k, v in sorted(row["options"].items()))
        creds = f" (credentials in .cas/config.local: {', '.join(row['credentials'])})"
        say(
            f"{'*' if row['default'] else ' '} {row['name']}\t{row['url']}"
            + (f"\t{opts}" if opts else "")
            + (creds if row["credentials"] else "")
        )


@remote_app.command("modify")
def remote_modify(
    name: str = typer.Argument(..., help="Remote name."),
    key: str = typer.Argument(
        ..., help=f"One of {', '.join([*remote_config.OPTIONS, *remote_config.SECRETS])}."
    ),
    value: str = typer.Argument(None, help="New value (omit with --unset)."),
    local: bool = typer.Option(False, "--local", help="Write to .cas/config.local (secrets)."),
    unset: bool = typer.Option(False, "--unset", help="Remove the option."),
) -> None:
    """Set an option of a remote; secrets (access_key_id, ...) only with --local."""
    if (value is None) != unset:
        raise UsageError("give a VALUE, or --unset to remove the option")
    remote_config.modify(Repo.open(), name, key, value, local)
    where = ".cas/config.local" if local else ".cas/config (staged)"
    say(f"{'unset' if unset else 'set'} {key} of remote '{name}' in {where}")


@remote_app.command("default")
def remote_default(name: str = typer.Argument(..., help="Remote name.")) -> None:
    """Make NAME the default remote (core.remote)."""
    remote_config.set_default(Repo.open(), name)
    say(f"default remote: {name}")


@remote_app.command("remove")
def remote_remove(name: str = typer.Argument(..., help="Remote name.")) -> None:
    """Remove a remote from both config files (the remote's objects are not touched)."""
    remote_config.remove(Repo.open(), name)
    say(f"removed remote '{name}'")


def push(
    targets: list[Path] = TARGETS,
    remote: str = REMOTE,
    rev: list[str] = typer.Option(None, "--rev", help="Push the pointers of these revisions."),
    all_commits: bool = typer.Option(False, "--all-commits", help="Every commit's pointers."),
    jobs: int = JOBS,
    json_out: bool = JSON,
    repair: bool = typer.Option(
        False, "--repair", help="First replace what the remote serves damaged (verify --deep)."
    ),
) -> None:
    """Send what the pointers need and the remote lacks (packs, then manifests and versions)."""
    result = Repo.open().push(
        targets or [], revs=rev or [], all_commits=all_commits, remote=remote, jobs=jobs,
        progress=RichProgress(), repair=repair,
    )  # fmt: skip
    if json_out:
        emit_json(asdict(result))
        return
    if result.replaced:
        say(f"replaced {result.replaced} damaged objects on remote '{result.remote}'")
    if not (result.manifests or result.versions or result.segments or result.runs):
        say(f"everything is on remote '{result.remote}' already")
        return
    say(
        f"pushed to '{result.remote}': {result.manifests} manifests, {result.versions} versions, "
        f"{result.segments} segments, {result.packs} packs"
        + (f", {result.runs} run records" if result.runs else "")
        + f" ({human(result.bytes)}, {result.requests} requests)"
    )


def _fetched(result: transfer.FetchResult) -> str:
    return (
        f"fetched from '{result.remote}': {result.manifests} manifests, {result.versions} "
        f"versions, {result.segments} segments, {result.chunks} chunks "
        f"({result.packs} packs, {result.ranges} ranges; {human(result.bytes)}, "
        f"{result.requests} requests)" + (f", {result.runs} run records" if result.runs else "")
    )


def fetch(
    targets: list[Path] = TARGETS,
    remote: str = REMOTE,
    rev: str = typer.Option(None, "--rev", help="Take pointers from this Git revision."),
    path: str = typer.Option(None, "--path", help="Only this subtree of each target."),
    jobs: int = JOBS,
    json_out: bool = JSON,
    repair: bool = typer.Option(
        False, "--repair", help="Check the local copies too; replace damaged ones."
    ),
) -> None:
    """Bring the manifests and chunks the pointers need into the local store."""
    result = Repo.open().fetch(
        targets or [], rev=rev, subpath=path, remote=remote, jobs=jobs, progress=RichProgress(),
        repair=repair,
    )  # fmt: skip
    if json_out:
        emit_json(asdict(result))
    else:
        say(_fetched(result))


def pull(
    targets: list[Path] = TARGETS,
    remote: str = REMOTE,
    rev: str = typer.Option(None, "--rev", help="Take pointers from this Git revision."),
    path: str = typer.Option(None, "--path", help="Only this subtree of each target."),
    force: bool = typer.Option(False, "--force", "-f", help="Discard unsaved data in the way."),
    jobs: int = JOBS,
    json_out: bool = JSON,
) -> None:
    """Fetch, then check out."""
    result = Repo.open().pull(
        targets or [], rev=rev, subpath=path, remote=remote, jobs=jobs, force=force,
        progress=RichProgress(),
    )  # fmt: skip
    if json_out:
        emit_json(asdict(result))
        return
    say(_fetched(result.fetch))
    for r in result.checkout:
        say(checked_out(r))


def verify(
    targets: list[Path] = TARGETS,
    on_remote: bool = typer.Option(False, "--remote", help="Check the remote (required)."),
    remote: str = typer.Option(
        None, "--remote-name", "--name", "-r", help="Remote name (default: core.remote)."
    ),
    rev: list[str] = typer.Option(None, "--rev", help="Check these revisions' pointers."),
    deep: bool = typer.Option(False, "--deep", help="Download and re-hash every pack."),
    jobs: int = JOBS,
    json_out: bool = JSON,
) -> None:
    """Exit 1 unless every object the pointers reach is on the remote (for CI)."""
    if not on_remote:
        raise UsageError("cas verify checks a remote: add --remote (the local store: 'cas fsck')")
    result = Repo.open().verify(targets or [], revs=rev or [], remote=remote, deep=deep, jobs=jobs)
    if json_out:
        emit_json({**asdict(result), "ok": result.ok})
    else:
        for p in result.problems:
            say(f"{p.problem}: {p.object} (needed by {', '.join(p.needed_by)})")
        say(
            f"remote '{result.remote}': {result.manifests} manifests, {result.versions} versions, "
            f"{result.segments} segments, {result.chunks} chunks"
            + (f", {result.packs_checked} packs re-hashed" if deep else "")
            + (": ok" if result.ok else f": {len(result.problems)} problems")
        )
        if any(p.problem.startswith("corrupt") for p in result.problems):
            say(f"damaged objects: {transfer.REMOTE_REPAIR}")
        if any(p.problem.startswith("missing") for p in result.problems):
            say("missing objects: run 'cas push' from a clone that holds them")
    if not result.ok:
        raise typer.Exit(1)


def status_remote(targets: list[Path], remote: str | None, json_out: bool, exit_code: bool) -> None:
    """``cas status --remote``: what is not pushed, and what is not fetched; with
    ``exit_code``, exit 1 if anything is either."""
    results = Repo.open().remote_status(targets, remote=remote)
    if json_out:
        emit_json([asdict(r) for r in results])
    for r in [] if json_out else results:
        pushed = "pushed" if r.pushed else "not pushed ('cas push')"
        if not r.manifest_local:
            fetched = "manifest not fetched ('cas pull')"
        elif r.missing_chunks:
            fetched = f"{r.missing_chunks} chunks not fetched ('cas pull')"
        else:
            fetched = "all chunks local"
        say(f"{r.pointer}: {pushed}; {fetched}")
    if exit_code and any(not (r.pushed and r.manifest_local) or r.missing_chunks for r in results):
        raise typer.Exit(1)
