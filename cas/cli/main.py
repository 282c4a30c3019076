"""The ``cas`` command: a typer app whose command groups live in sibling modules.

Every command module exposes ``register(app)``. This module owns only what they share: global
options (accepted before and after the subcommand), ``--version``, shell completion, and error
rendering (one line, the right exit code, no traceback unless ``--verbose``; with ``--json``, one
JSON object on stderr, see docs/cli.md).
"""

from __future__ import annotations

import copy
import importlib.abc
import json
import os
import sys
import traceback
import warnings
from typing import Any

import typer

from cas.cli import core, corpus, gc, hooks, imports, remote, runs, snapshot, split
from cas.cli.output import state, warn
from cas.errors import CasError

#: The distribution's name on PyPI (``import cas`` and the ``cas`` command are unchanged).
DISTRIBUTION = "cas-data"
#: The options every command takes, wherever they stand on the command line.
GLOBAL_OPTIONS = ("verbose", "quiet")

app = typer.Typer(
    name="cas",
    help="Content-addressed, Git-integrated data versioning for machine learning.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            shown = version(DISTRIBUTION)
        except PackageNotFoundError:  # run from a source tree that was never installed
            from cas import __version__ as shown
        print(f"{DISTRIBUTION} {shown}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show tracebacks on errors."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only errors."),
    version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_version, help="Print the version and exit."
    ),
) -> None:
    state.verbose = state.verbose or verbose
    state.quiet = state.quiet or quiet


for module in (core, corpus, remote, snapshot, split, hooks, gc, imports, runs):
    module.register(app)


def _set_global(ctx: Any, param: Any, value: bool) -> None:
    if value:
        setattr(state, param.name, True)


def command() -> Any:
    """The click command tree, with the global options added to every subcommand (as git, DVC
    and git-lfs accept ``cas checkout -q``). Done on the built tree, so a command registered
    by any module gets them without declaring them; a command with its own option of the same
    flag keeps its own."""
    root = typer.main.get_command(app)
    shared = [p for p in root.params if p.name in GLOBAL_OPTIONS]
    todo = list(getattr(root, "commands", {}).values())
    while todo:
        cmd = todo.pop()
        todo.extend(getattr(cmd, "commands", {}).values())
        taken = {flag for p in cmd.params for flag in getattr(p, "opts", [])}
        for option in shared:
            if not taken & set(option.opts):
                extra = copy.copy(option)
                extra.expose_value = False
                extra.callback = _set_global
                cmd.params.append(extra)
    return root


def _wants_json(args: list[str]) -> bool:
    """``--json`` among the options (not after ``--``, where it would be a path)."""
    return "--json" in (args[: args.index("--")] if "--" in args else args)


def json_error(cls: str, message: str, exit_code: int, fields: dict[str, Any]) -> str:
    """The one JSON object an error becomes under ``--json`` (shape: docs/cli.md): the class,
    message and exit code, and the error's structured fields: ``object_id``, ``path`` and
    ``remote`` (null when the raise site did not know them), and a ConflictError's ``paths``."""
    body = {"class": cls, "message": message, "exit_code": exit_code}
    return json.dumps({"error": {**body, **fields}}, default=str)


def _show_warning(message: Warning | str, *_args: object, **_kwargs: object) -> None:
    """A Python warning (a tracker that refused a run's copy, a library's) as cas's one line."""
    warn(str(message))


class _WithoutPandas(importlib.abc.MetaPathFinder):
    """pyarrow imports pandas, when it is installed, on its first ``pa.array`` or ``pa.table``
    (to recognise a DataFrame): 0.35 s of CPU, half of a one-file ``cas add`` on a machine
    with pandas. No cas command uses pandas, so a command's process does without it: its import
    fails as if it were not installed, which pyarrow takes in its stride. The process only:
    ``cas run``'s command and Python callers of cas keep theirs. (A ``None`` in
    ``sys.modules`` would not do: pyarrow's compiled import reads it as the module.)"""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError("no cas command uses pandas", name=name)


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
    if "pandas" not in sys.modules:
        sys.meta_path.insert(0, _WithoutPandas())
    warnings.showwarning = _show_warning
    args = sys.argv[1:]
    as_json = _wants_json(args)
    code = 0
    try:
        if as_json:  # click's own usage errors must reach the JSON rendering below too
            returned = command().main(args, prog_name="cas", standalone_mode=False)
            code = returned if isinstance(returned, int) else 0
        else:
            command().main(args, prog_name="cas")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except CasError as err:
        if state.verbose:
            traceback.print_exc()
        code = err.exit_code
        if as_json:
            fields = {k: v for k, v in vars(err).items() if not k.startswith("_")}
            print(json_error(type(err).__name__, str(err), code, fields), file=sys.stderr)
        else:
            print(f"cas: error: {err}", file=sys.stderr)
    except typer.TyperException as err:  # --json only: click's bad-arguments errors
        code = getattr(err, "exit_code", 2)
        message = err.format_message() if hasattr(err, "format_message") else str(err)
        print(json_error("UsageError", message, code, {}), file=sys.stderr)
    except typer.Abort:  # --json only: an interrupted prompt
        code = 1
    except KeyboardInterrupt:
        print("cas: interrupted; rerun to complete", file=sys.stderr)
        code = 130
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)
