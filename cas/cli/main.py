"""The ``cas`` command: a typer app whose command groups live in sibling modules.

Every command module exposes ``register(app)``. This module owns only what they share: global
options, error rendering (one line, the right exit code, no traceback unless ``--verbose``).
"""

from __future__ import annotations

import os
import sys
import traceback

import typer

from cas.cli import core, corpus, gc, hooks, imports, remote, snapshot, split
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


for module in (core, corpus, remote, snapshot, split, hooks, gc, imports):
    module.register(app)


def run() -> None:
    """Console-script entry point: map CasError to its one-line message and exit code.

    The process ends with ``os._exit`` once output is flushed: pyarrow 26's thread pools can
    abort the interpreter's shutdown ("terminate called without an active exception", seen in
    about 1 run in 10 after a threaded Parquet read), which would turn a finished, successful
    command into exit code 134. Everything cas writes is complete and renamed into place
    before this point, so skipping interpreter teardown loses nothing.

    Arrow allocates from the C library's heap rather than its default mimalloc pool, which keeps
    freed memory: measured on a 1,000,000-file add, that is ~250 MB of peak memory
    (docs/reliability.md, "Load"). An environment variable, not ``pa.set_memory_pool``: the fast
    paths never import pyarrow, and a user's own setting wins."""
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    code = 0
    try:
        app()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except CasError as err:
        if state.verbose:
            traceback.print_exc()
        print(f"cas: error: {err}", file=sys.stderr)
        code = err.exit_code
    except KeyboardInterrupt:
        print("cas: interrupted; rerun to complete", file=sys.stderr)
        code = 130
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)
