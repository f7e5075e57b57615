"""``earshot flow run|ablation`` and ``earshot serve``: the Prefect flows of pipelines/flows.py.

``flow run`` and ``flow ablation`` run a flow in this process, against the first Prefect
API found: ``$PREFECT_API_URL`` (or the active Prefect profile's), else the project's own
server when ``earshot server up`` runs it, else a temporary local API that Prefect starts
for the run (about 10 s more, and the run is not kept for any UI). ``serve`` registers
both flows as deployments on a running server, so that they can be started from its UI
with parameters, and runs them as they come.

Prefect is imported inside the commands (``earshot --help`` stays fast). Logging is
Prefect's: each line names its flow or task run (the stage), and the same lines go to
the server's UI.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from pipelines._common import exit_on_user_error

if TYPE_CHECKING:
    from components.config import Params
    from components.orchestration.summaries import StageResult

flow_app = typer.Typer(help="Prefect flows: the DVC pipeline, ablation sweeps", no_args_is_help=True)

ProjectOpt = Annotated[Optional[Path], typer.Option(
    "--project", help="project folder with dvc.yaml and params.yaml (default: the one around the current folder)")]


def _project(project: Path | None) -> tuple[Path, Params]:
    from components.config import load_params
    from components.io import project_root

    root = (project or project_root()).resolve()
    return root, load_params(root / "params.yaml")


def prefect_api_url() -> str | None:
    """The Prefect API this process talks to (``$PREFECT_API_URL`` or the active profile)."""
    from prefect.settings import get_current_settings

    return get_current_settings().api.url or None


def project_server_api(params: Params, root: Path) -> str | None:
    """The API URL of the project's Prefect server when ``earshot server up`` runs it."""
    from components.orchestration.servers import ServerError, inspect, server_specs

    try:
        spec = next(s for s in server_specs(params, root) if s.name == "prefect")
    except ServerError:
        return None
    return spec.client_value if inspect(spec).state == "running" else None


@contextlib.contextmanager
def prefect_api(params: Params, root: Path, *, required: bool = False) -> Iterator[str | None]:
    """Point Prefect at ``$PREFECT_API_URL``, else at the project's running server; with
    neither, Prefect's temporary API (``required``: an error naming what to do)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from components.errors import EarshotError

    if url := prefect_api_url():
        yield url
        return
    if url := project_server_api(params, root):
        typer.echo(f"Prefect: the project's server at {url} (PREFECT_API_URL is not set)", err=True)
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url
        return
    if required:
        from components.orchestration.servers import server_specs

        spec = next(s for s in server_specs(params, root) if s.name == "prefect")
        raise EarshotError("this needs a running Prefect server (deployments live on it), and none was found: "
                           f"PREFECT_API_URL is not set and the project's server does not run; start it with "
                           f"`earshot server up` (then it is found, or `export PREFECT_API_URL={spec.client_value}`), "
                           "or set PREFECT_API_URL to a remote server's /api URL")
    typer.echo("Prefect: no server (PREFECT_API_URL not set, `earshot server up` not running): a temporary "
               "local API for this run", err=True)
    yield None


def _print_results(title: str, results: list[StageResult]) -> None:
    """The flow's stage table, then the MLflow run links (the same as its Prefect artifact)."""
    from rich.console import Console
    from rich.table import Table

    from components.orchestration.summaries import status_text

    table = Table(title=title, title_justify="left")
    for column in ("stage", "status", "seconds", "MLflow runs"):
        table.add_column(column, justify="right" if column == "seconds" else "left")
    for r in results:
        table.add_row(r.name, status_text(r), f"{r.seconds:.1f}", ", ".join(run.name for run in r.runs))
    console = Console()
    console.print(table)
    for r in results:
        for run in r.runs:
            console.print(f"{r.name}: {run.name} {run.url}", soft_wrap=True)


def _run_flow(fn, **kwargs):  # type: ignore[no-untyped-def]
    """Run a flow; a failed stage ends the command with exit code 1 (the flow already
    logged its output and published its summary)."""
    from pipelines.flows import StageFailed

    try:
        return fn(**kwargs)
    except StageFailed as exc:
        typer.echo(f"error: stage {exc}", err=True)
        raise SystemExit(1) from None


@flow_app.command("run")
@exit_on_user_error
def flow_run(
    target: Annotated[Optional[str], typer.Argument(help="a stage of dvc.yaml (default: every stage)")] = None,
    force: Annotated[bool, typer.Option("--force", help="rerun the stages even when DVC finds them up to date")] = False,
    project: ProjectOpt = None,
) -> None:
    """Reproduce the DVC pipeline as a Prefect flow: one task per stage, DVC decides what reruns."""
    from components.orchestration.graph import stages_for_target

    root, params = _project(project)
    stages_for_target(target, root / "dvc.yaml")  # an unknown stage fails here, before Prefect starts
    from pipelines.flows import pipeline

    with prefect_api(params, root):
        results = _run_flow(pipeline, target=target, force=force, project=str(root))
    _print_results("dvc repro" + (f" {target}" if target else ""), results)


@flow_app.command("ablation")
@exit_on_user_error
def flow_ablation(
    sweep: Annotated[str, typer.Argument(help="a sweep of params.yaml (sweeps:), e.g. audio, audio_length")],
    project: ProjectOpt = None,
) -> None:
    """Run each variant of a sweep as `dvc exp run -S ...` under one MLflow parent run, then compare."""
    from components.errors import ConfigError

    root, params = _project(project)
    if sweep not in params.sweeps:  # fails here, before Prefect starts
        raise ConfigError(f"{root / 'params.yaml'}: no sweep {sweep!r}; sweeps: {', '.join(params.sweeps) or 'none'}")
    from pipelines.flows import ablation

    with prefect_api(params, root):
        results = _run_flow(ablation, sweep=sweep, project=str(root))
    _print_results(f"ablation {sweep}", results)
    typer.echo(f"comparison: {root / 'results' / 'compare' / sweep}/comparison.md (also on the sweep's parent run); "
               f"`earshot compare {sweep}` prints it")


@exit_on_user_error
def serve(project: ProjectOpt = None) -> None:
    """Register the pipeline and ablation flows on the Prefect server and run them from its UI."""
    root, params = _project(project)
    from prefect import serve as prefect_serve
    from prefect.deployments.runner import EntrypointType

    from pipelines.flows import ablation, pipeline

    sweeps = ", ".join(params.sweeps) or "none defined"
    # Runs load the flows by module (pipelines.flows), not by a file path relative to the
    # folder `serve` was started from; the project folder is a parameter of each run.
    common = {"parameters": {"project": str(root)}, "entrypoint_type": EntrypointType.MODULE_PATH}
    with prefect_api(params, root, required=True) as url:
        deployments = [
            pipeline.to_deployment(name="earshot-pipeline", description=f"dvc repro [target] in {root}, "
                                   "one task per stage", **common),
            ablation.to_deployment(name="earshot-ablation", description=f"an ablation sweep of {root}/params.yaml "
                                   f"as DVC experiments; sweeps: {sweeps}", **common),
        ]
        typer.echo(f"serving the flows of {root} on {url} (Ctrl-C stops); in its UI: Deployments -> "
                   "earshot-pipeline or earshot-ablation -> Run -> Custom run")
        prefect_serve(*deployments)
