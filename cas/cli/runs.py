"""Run commands: run, runs (list, show, diff), repro. Parsing and printing only; the work is in
:mod:`cas.runs`."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from cas.cli.output import emit_json, say, state, warn
from cas.repo import Repo

if TYPE_CHECKING:  # cas.runs is imported by the run commands only: other commands start faster
    from cas.runs.session import Session

JSON = typer.Option(False, "--json", help="Print machine-readable JSON.")
runs_app = typer.Typer(
    help="Recorded runs: list (default), show, diff.", invoke_without_command=True
)


def register(app: typer.Typer) -> None:
    app.command("run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(
        run
    )
    app.add_typer(runs_app, name="runs")
    app.command("repro")(repro)


def run(
    command: list[str] = typer.Argument(..., help="The command, after '--'."),
    name: str = typer.Option(None, "--name", help="A name for the run."),
    config: list[Path] = typer.Option(None, "--config", "-c", help="Config files it reads."),
    metrics: Path = typer.Option(None, "--metrics", "-m", help="JSON/YAML metrics it writes."),
    out: list[Path] = typer.Option(None, "--out", "-o", help="Outputs to 'cas add' on success."),
    data: list[Path] = typer.Option(None, "--data", "-d", help="Input pointers (default: all)."),
    seed: int = typer.Option(None, "--seed", help="Exported as CAS_SEED and PYTHONHASHSEED."),
    image_digest: str = typer.Option(None, "--image-digest", help="Container image digest."),
    require_clean: bool = typer.Option(False, "--require-clean", help="Refuse a dirty tree."),
    allow_secrets: bool = typer.Option(
        False, "--allow-secrets", help="Record config files that look like they hold secrets."
    ),
    reuse: bool = typer.Option(
        False, "--reuse", help="If these four inputs already ran, restore its outputs instead."
    ),
    no_mlflow: bool = typer.Option(
        False, "--no-mlflow", help="Do not copy the run to MLflow (MLFLOW_TRACKING_URI)."
    ),
) -> None:
    """Run COMMAND and record its code, data, config, environment, outputs and metrics."""
    from cas.runs.session import Options, Session

    repo = Repo.open()
    opts = Options(
        name=name,
        argv=list(command),
        config=[str(c) for c in config or []],
        metrics=str(metrics) if metrics else None,
        out=[str(o) for o in out or []],
        data=[str(d) for d in data or []],
        seed=seed,
        image_digest=image_digest,
        allow_secrets=allow_secrets,
        require_clean=require_clean,
        mlflow=not no_mlflow,
    )
    session = Session(repo, opts)
    code = execute(session, reuse)
    raise typer.Exit(code)


def execute(session: Session, reuse: bool = False) -> int:
    """Begin the session, then restore a reusable run's outputs or run the command; the exit
    code ``cas run`` ends with (the command's own)."""
    from cas.runs.session import run_command

    session.begin()
    for warning in session.warnings:
        warn(warning)
    if reuse:
        from cas.runs.reuse import try_reuse

        hit = try_reuse(session)
        if hit is not None:
            say(
                f"reused run {hit.source[:12]}: restored {', '.join(hit.restored) or 'nothing'}; "
                f"recorded as {hit.run_id[:12]}"
            )
            return 0
    status = run_command(session)
    metrics = session.record.get("metrics", {})
    shown = ", ".join(f"{k}={v}" for k, v in sorted(metrics.items())[:6])
    say(
        f"run {session.info['id'][:12]} {session.record['status']}"
        + (f": {shown}" if shown else "")
    )
    return status


@runs_app.callback()
def runs(ctx: typer.Context, json_out: bool = JSON) -> None:
    """Every recorded run: id, name, time, status, the four fingerprints, metrics."""
    if ctx.invoked_subcommand is not None:
        return
    from cas.runs.catalog import open_synced

    catalog = open_synced(Repo.open())
    for problem in catalog.problems:
        warn(problem)
    # Written directly, one run a line, as the catalog holds them: 10,000 runs decoded and
    # re-encoded through json's indenting encoder (pure Python) or rich's console cost a second.
    if json_out:
        texts = catalog.rows_json()
        sys.stdout.write("[\n" + ",\n".join(texts) + "\n]\n" if texts else "[]\n")
        return
    rows = catalog.rows()
    if state.quiet:
        return
    lines = [
        f"{'id':12}  {'name':16}  {'started':19}  {'status':9}  code     data     config   env"
        "      metrics"
    ]
    for r in rows:
        fp = r["fingerprint"]
        metrics = " ".join(f"{k}={v}" for k, v in sorted(r["metrics"].items())[:4])
        lines.append(
            f"{(r['id'] or '-')[:12]:12}  {(r['name'] or '')[:16]:16}  "
            f"{(r['started'] or '')[:19]:19}  {r['status']:9}  {fp['code'][:8]} "
            f"{fp['data'][:8]} {fp['config'][:8]} {fp['env'][:8]} {metrics}"
        )
    sys.stdout.write("\n".join(lines) + "\n")


@runs_app.command("show")
def show(run_ref: str = typer.Argument(..., metavar="RUN", help="Id, id prefix, or name.")) -> None:
    """The whole record of RUN, as JSON."""
    found = Repo.open().run_show(run_ref)
    emit_json({"id": found.id, **found.record})


@runs_app.command("mlflow")
def to_mlflow(
    run_refs: list[str] = typer.Argument(None, metavar="[RUN]...", help="Default: every run."),
    json_out: bool = JSON,
) -> None:
    """Copy recorded runs to MLflow (those not there yet): for runs MLflow missed, or a
    teammate's fetched runs."""
    results = Repo.open().runs_to_mlflow(run_refs or ())
    if json_out:
        emit_json([asdict(copy) for copy in results])
        return
    for copy in results:
        done = "logged as" if copy.logged else "already in MLflow as"
        say(f"{copy.id[:12]} {done} {copy.mlflow_run}")


@runs_app.command("diff")
def diff(
    run_a: str = typer.Argument(..., metavar="RUN_A"),
    run_b: str = typer.Argument(..., metavar="RUN_B"),
    json_out: bool = JSON,
) -> None:
    """Which of the four inputs differ between two runs, and how; metric deltas."""
    from cas.runs.compare import INPUTS

    compared = Repo.open().runs_diff(run_a, run_b)
    (id_a, a), (id_b, b) = (compared.a.id, compared.a.record), (compared.b.id, compared.b.record)
    result = compared.diff
    if json_out:
        emit_json(
            {
                "a": id_a,
                "b": id_b,
                "inputs": result.inputs,
                "metrics": {k: list(v) for k, v in result.metrics.items()},
                "nondeterministic": result.nondeterministic,
            }
        )
        return
    say(f"A {id_a[:12]} ({a.get('name') or '-'})  B {id_b[:12]} ({b.get('name') or '-'})")
    for name in INPUTS:
        lines = result.inputs.get(name)
        say(f"{name}: {'differs' if lines else 'same'}")
        for line in lines or []:
            say(f"    {line}")
    for metric, (old, new) in result.metrics.items():
        delta = ""
        if isinstance(old, (int, float)) and isinstance(new, (int, float)):
            delta = f" ({new - old:+.6g})"
        say(f"metric {metric}: {old} -> {new}{delta}")
    if result.nondeterministic:
        say("no input differs but metrics do: the run is nondeterministic")
    elif not result.inputs and not result.metrics:
        say("same inputs, same metrics")


def repro(
    run_ref: str = typer.Argument(..., metavar="RUN", help="Id, id prefix, or name."),
    rtol: float = typer.Option(None, "--rtol", help="Relative tolerance (default 0.005)."),
    atol: float = typer.Option(None, "--atol", help="Absolute tolerance (default 0)."),
    metric: list[str] = typer.Option(None, "--metric", help="NAME=RTOL for one metric."),
    strict_env: bool = typer.Option(False, "--strict-env", help="Fail on any env difference."),
    json_out: bool = JSON,
) -> None:
    """Rerun RUN in a temporary worktree; exit 0 if its metrics reproduce, 1 if not, 10 if the
    rerun fails."""
    result = Repo.open().repro(
        run_ref,
        rtol=rtol,
        atol=atol,
        metric=metric or [],
        strict_env=strict_env,
        say=(lambda _m: None) if json_out else say,
    )
    if json_out:
        emit_json(json.loads(json.dumps(result.as_dict())))
    raise typer.Exit(0 if result.reproduced else 1)
