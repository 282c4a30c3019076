"""``cas split``: a thin shell over :func:`cas.split.split_parquet`.

All validation and every error message live in ``cas.split``, so the library and the CLI can
never disagree about which rows go where or why an input is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cas.cli.output import console, emit_json, state

DEFAULT_FRACTIONS = "train=0.8,val=0.1,test=0.1"

HELP = (
    "Assign every row of a Parquet file to a split by a seeded hash of its id.\n\n"
    "A row's split depends only on the seed and its id (see docs/splits.md), so adding, "
    "removing or reordering rows never moves an existing row to another split. Prints the "
    "rows per split; with --out, also writes DIR/<split>.parquet for every split."
)


def register(app: typer.Typer) -> None:
    """Add the ``split`` command to ``app`` (the CLI's main module decides where it appears)."""
    app.command("split", help=HELP)(split)


def split(
    file: Annotated[Path, typer.Argument(help="The Parquet file whose rows to split.")],
    id_column: Annotated[
        str, typer.Option("--id-column", help="Column holding each row's stable id.")
    ],
    seed: Annotated[
        int,
        typer.Option(
            "--seed", help="Signed 64-bit seed; the same seed always gives the same split."
        ),
    ],
    fractions: Annotated[
        str,
        typer.Option(
            "--fractions",
            help="NAME=FRACTION pairs in bucket order, summing to 1.",
        ),
    ] = DEFAULT_FRACTIONS,
    group_column: Annotated[
        str | None,
        typer.Option(
            "--group-column",
            help="Keep all rows sharing this column's value in one split (hash it, not the id).",
        ),
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Write DIR/<split>.parquet for every split."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    """Parse, delegate, report: the user-facing text is in HELP, the logic in cas.split."""
    # numpy/pyarrow/blake3 cost ~0.2 s to import; every other cas command should not pay it.
    from cas.split import parse_fractions, split_parquet

    wanted = parse_fractions(fractions)
    counts = split_parquet(
        file, id_column, seed, wanted, out_dir=out_dir, group_column=group_column
    )
    outputs = (
        None if out_dir is None else {name: str(out_dir / f"{name}.parquet") for name in counts}
    )
    total = sum(counts.values())
    if as_json:
        report = {
            "file": str(file),
            "id_column": id_column,
            "group_column": group_column,
            "seed": seed,
            "fractions": wanted,
            "counts": counts,
            "rows": total,
            "outputs": outputs,
        }
        emit_json(report)
        return
    if state.quiet:
        return
    table = Table(title=f"{file} (seed {seed}, by {group_column or id_column})")
    table.add_column("split")
    table.add_column("fraction", justify="right")
    table.add_column("rows", justify="right")
    table.add_column("share", justify="right")
    if outputs is not None:
        table.add_column("file")
    for name, count in counts.items():
        share = f"{100 * count / total:.2f}%" if total else "-"
        row = [name, f"{wanted[name]:g}", str(count), share]
        if outputs is not None:
            row.append(outputs[name])
        table.add_row(*row)
    table.add_section()
    table.add_row("total", "", str(total), "", *([""] if outputs is not None else []))
    console().print(table)
