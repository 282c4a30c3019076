"""``cas snapshot-query`` and ``cas snapshots``: a thin shell over :mod:`cas.snapshot`.

Errors are ``CasError`` s and propagate to ``cas.cli.main.run``, which prints the one-line
message and exits with the error's code, as for every other command.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich import box
from rich.table import Table

from cas.cli.output import console, emit_json, human, say, state, warn
from cas.errors import PathError, UsageError

if TYPE_CHECKING:
    from cas.snapshot import SnapshotInfo

JSON = typer.Option(False, "--json", help="Print machine-readable JSON.")
#: "blake3:" and 12 hex digits: enough to tell snapshots apart at a glance (--json has all).
_HASH_SHOWN = 19


def register(app: typer.Typer) -> None:
    app.command("snapshot-query")(snapshot_query_command)
    app.command("snapshots")(snapshots_command)


def snapshot_query_command(
    query: str = typer.Argument(None, help="The SQL query (or use --query-file)."),
    query_file: Path = typer.Option(
        None, "--query-file", help="Read the query from this file ('-' for stdin)."
    ),
    source: str = typer.Option(
        ...,
        "--source",
        "-s",
        help="postgresql://user@host:5432/db, sqlite:///file.db or duckdb:// "
        "(leave the password out: libpq reads PGPASSWORD and ~/.pgpass).",
    ),
    name: str = typer.Option(..., "--name", help="Snapshots go to snapshots/NAME/."),
    batch_rows: int = typer.Option(
        None, "--batch-rows", min=1, help="Rows per fetch (SQLite, DuckDB; default 65,536)."
    ),
    json_out: bool = JSON,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only errors and warnings."),
) -> None:
    """Freeze a query's result as snapshots/NAME/<UTC time>.parquet and stage its pointer."""
    # imported here: pyarrow and the drivers must not slow down every other cas command
    from cas.repo import Repo
    from cas.snapshot import UnorderedQueryWarning

    text = _query_text(query, query_file)
    repo = Repo.open()
    with warnings.catch_warnings():
        # printed below from info.warnings, once, in the CLI's own format
        warnings.simplefilter("ignore", UnorderedQueryWarning)
        info = repo.snapshot_query(text, source=source, name=name, batch_rows=batch_rows)
    for message in info.warnings:
        warn(message)
    if json_out:
        emit_json(info.to_json(Path(repo.root)))
    elif not (quiet or state.quiet):
        rel = info.path.relative_to(repo.root).as_posix()
        say(
            f"{rel}: {info.rows:,} rows, {human(info.bytes)}, "
            f"{info.content_hash[:_HASH_SHOWN]}...; "
            f"staged snapshots/{name}.cas (commit it to pin this snapshot)"
        )


def snapshots_command(
    name: str = typer.Argument(..., help="The snapshot set (folder snapshots/NAME)."),
    json_out: bool = JSON,
) -> None:
    """List the snapshots of NAME, oldest first: time, rows, size, content hash, query."""
    from cas.repo import Repo

    repo = Repo.open()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        infos = repo.snapshots(name)
    for warning in caught:
        warn(str(warning.message))
    if json_out:
        emit_json([i.to_json(Path(repo.root)) for i in infos])
        return
    console().print(_table(name, infos, console().width))


def _table(name: str, infos: list[SnapshotInfo], width: int) -> Table:
    """Only the query gives way on a narrow terminal (rich would rather drop whole columns)."""
    cells = [
        (
            info.path.stem,
            f"{info.rows:,}",
            human(info.bytes),
            info.content_hash[:_HASH_SHOWN],
            " ".join((info.query or "(no metadata)").split()),
        )
        for info in infos
    ]
    headers = ("timestamp (UTC)", "rows", "bytes", "content hash", "query")
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(headers)]
    room = width - sum(widths[:4]) - 2 * len(headers) - 2
    table = Table(title=f"snapshots/{name}", title_justify="left", box=box.SIMPLE_HEAD)
    for header, min_width in zip(headers[:4], widths, strict=False):
        justify = "right" if header in ("rows", "bytes") else "left"
        table.add_column(header, justify=justify, no_wrap=True, min_width=min_width)
    table.add_column("query", overflow="ellipsis", no_wrap=True, max_width=max(12, room))
    for row in cells:
        table.add_row(*row)
    return table


def _query_text(query: str | None, query_file: Path | None) -> str:
    if query is not None and query_file is not None:
        raise UsageError("give the query either as an argument or with --query-file, not both")
    if query_file is not None:
        if str(query_file) == "-":
            return sys.stdin.read()
        try:
            return query_file.read_text(encoding="utf-8")
        except OSError as err:
            raise PathError(f"cannot read --query-file {query_file}: {err.strerror}") from None
        except UnicodeDecodeError:
            raise PathError(f"--query-file {query_file} is not UTF-8 text") from None
    if query is None:
        raise UsageError("no query: pass it as an argument or with --query-file FILE")
    return query
