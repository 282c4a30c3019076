"""Versioned manifests: ``cas manifest create|append|verify``, ``cas log``, and the output of
``cas add --append-only`` (core.py delegates here).

The operations are imported inside each command: they load pyarrow and numpy, and every other
command (``cas status`` above all) must start without them.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from cas.cli.core import EXECUTOR
from cas.cli.output import RichProgress, emit_json, human, report, say
from cas.repo import Repo

if TYPE_CHECKING:
    from cas.ops.corpus import CorpusResult

JSON = typer.Option(False, "--json", help="Print machine-readable JSON.")
JOBS = typer.Option(None, "--jobs", "-j", min=1, help="Files hashed at once (default 8).")

manifest_app = typer.Typer(
    name="manifest",
    help="Pin a corpus in place (any folder or fsspec URL) by a manifest of file hashes.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(manifest_app)
    app.command("log")(log)


@manifest_app.command("create")
def create(
    pointer: str = typer.Argument(..., help="The pointer to write, e.g. corpus.cas."),
    url: str = typer.Argument(..., help="The corpus: a folder, s3://bucket/prefix, any URL."),
    glob: str = typer.Option(None, "--glob", help="Only files matching, e.g. '**/*.jsonl.zst'."),
    jobs: int | None = JOBS,
    executor: str = EXECUTOR,
    json_out: bool = JSON,
) -> None:
    """Hash every file under URL into a new manifest; write POINTER and stage it."""
    result = Repo.open().manifest_create(
        pointer, url=url, glob=glob, jobs=jobs, executor=executor, progress=RichProgress()
    )
    _report(result, json_out)


@manifest_app.command("append")
def append(
    pointer: str = typer.Argument(..., help="The corpus pointer, e.g. corpus.cas."),
    url: str = typer.Argument(None, help="The base, or a folder inside it (default: the base)."),
    glob: str = typer.Option(None, "--glob", help="Only files matching (default: create's)."),
    jobs: int | None = JOBS,
    allow_removals: bool = typer.Option(
        False, "--allow-removals", help="Record changed or vanished files instead of refusing."
    ),
    executor: str = EXECUTOR,
    json_out: bool = JSON,
) -> None:
    """Add the files under URL that the manifest lacks; refuse if recorded ones changed."""
    result = Repo.open().manifest_append(
        pointer,
        url=url,
        glob=glob,
        jobs=jobs,
        allow_removals=allow_removals,
        executor=executor,
        progress=RichProgress(),
    )
    _report(result, json_out)


def _report(r: CorpusResult, json_out: bool) -> None:
    if json_out:
        emit_json(asdict(r))
        return
    if not r.pointer_changed:
        say(f"{r.pointer}: unchanged ({r.files} files, {human(r.bytes)})")
        return
    removed = f", {len(r.removed)} removed" if r.removed else ""
    say(
        f"{r.pointer}: +{r.files_added} files, +{human(r.bytes_added)}{removed}; "
        f"{r.files} files, {human(r.bytes)} (version {r.version[:12]})"
    )


@manifest_app.command("verify")
def verify(
    pointer: str = typer.Argument(..., help="The corpus pointer, e.g. corpus.cas."),
    sample: float = typer.Option(1.0, "--sample", help="Fraction of files to re-hash."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sample (same seed, same files)."),
    rev: str = typer.Option(None, "--rev", help="Verify the manifest of this revision."),
    jobs: int | None = JOBS,
    json_out: bool = JSON,
) -> None:
    """Re-hash all files (or a sample); exit 1 listing those that changed or vanished."""
    result = Repo.open().manifest_verify(
        pointer, sample=sample, seed=seed, jobs=jobs, rev=rev, progress=RichProgress()
    )
    if json_out:
        emit_json({**asdict(result), "ok": result.ok})
    else:
        for d in result.drifted:
            say(f"drifted: {d['url']}: {d['problem']}")
        state = "ok" if result.ok else f"{len(result.drifted)} drifted"
        say(f"{result.pointer}: checked {result.checked} files: {state}")
    if not result.ok:
        raise typer.Exit(1)


def log(
    pointer: str = typer.Argument(..., help="A corpus or append-only pointer."),
    rev: str = typer.Option(None, "--rev", help="Start from this revision's pointer."),
    json_out: bool = JSON,
) -> None:
    """Versions of a manifest, newest first: date, files and bytes added, totals."""
    from cas.ops import corpus as corpus_op

    entries = corpus_op.log(Repo.open(), pointer, rev)
    if json_out:
        emit_json(entries)
        return
    for e in entries:
        say(
            f"{e['version'][:12]}  {e['created']}  {e['files_added']:+d} files  "
            f"{'+' if e['bytes_added'] >= 0 else '-'}{human(abs(e['bytes_added']))}  "
            f"total {e['files']} files, {human(e['bytes'])}"
        )


def add_append_only_cli(targets: list[Path], json_out: bool) -> None:
    """``cas add --append-only``: called by core.add."""
    from cas.ops.append import add_append_only

    repo = Repo.open()
    report(
        [add_append_only(repo, repo.target(t), RichProgress()) for t in targets],
        json_out,
        lambda r: (
            f"{r.pointer}: {r.files} files, {human(r.size)}, +{r.added_files} appended "
            f"({human(r.added_bytes)}), {human(r.new_bytes)} new in the store"
        ),
    )
