"""The ``cas`` command: a typer app whose command groups live in sibling modules.

Every command module exposes ``register(app)``. This module owns only what they share: global
options, error rendering (one line, the right exit code, no traceback unless ``--verbose``).
"""

from __future__ import annotations

import sys

import typer

from cas.cli import core, corpus, remote, snapshot, split
from cas.cli.output import state
from cas.errors import CasError

app = typer.Typer(
    name="cas",
    help="Content-addressed, Git-integrated data versioning for machine learning.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show tracebacks on errors."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only errors."),
) -> None:
    state.verbose = verbose
    state.quiet = quiet


for module in (core, corpus, remote, snapshot, split):
    module.register(app)


def run() -> None:
    """Console-script entry point: map CasError to its one-line message and exit code."""
    try:
        app()
    except CasError as err:
        if state.verbose:
            raise
        print(f"cas: error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        print("cas: interrupted; rerun to complete", file=sys.stderr)
        sys.exit(130)
