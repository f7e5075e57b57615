"""``earshot server up|down|status``: the local Prefect and MLflow servers (the UIs).

Optional: every stage and flow also runs with no server (MLflow to the project's SQLite
file, Prefect in its temporary mode). The process handling is in components/orchestration/servers.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from pipelines._common import exit_on_user_error, parse_overrides, setup_logging

server_app = typer.Typer(help="Local Prefect and MLflow servers (UIs on 127.0.0.1)", no_args_is_help=True)

ParamsOpt = Annotated[Path, typer.Option("--params", help="params file (orchestration section)")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-S", help="override: KEY=VALUE (YAML value)")]


def _specs(params: Path, overrides: list[str] | None, allow_remote: bool = False):  # type: ignore[no-untyped-def]
    from components.config import load_params
    from components.io import project_root
    from components.orchestration.servers import server_specs

    extra = {"orchestration.allow_remote": True} if allow_remote else {}
    cfg = load_params(params, {**parse_overrides(overrides or []), **extra})
    return server_specs(cfg, project_root(params.resolve().parent))


def _short(path: Path | str) -> str:
    """A path relative to the working directory when it is inside it."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _table(states) -> None:  # type: ignore[no-untyped-def]
    from rich.console import Console
    from rich.table import Table

    table = Table("server", "state", "pid", "url", "data", "log")
    for column in table.columns:
        column.overflow = "fold"
    colour = {"running": "green", "starting": "yellow", "stale": "red", "stopped": "dim"}
    for st in states:
        store = st.spec.store.replace(str(Path.cwd()) + "/", "")
        table.add_row(st.spec.name, f"[{colour[st.state]}]{st.state}[/]", str(st.pid or ""), st.spec.url,
                      store, _short(st.spec.log_file))
    Console().print(table)


@server_app.command("up")
@exit_on_user_error
def server_up(
    timeout: Annotated[float, typer.Option(help="seconds to wait for both servers to answer")] = 180.0,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    allow_remote: Annotated[bool, typer.Option(
        "--allow-remote", help="allow orchestration.host to be a non-loopback address (prints a warning)")] = False,
) -> None:
    """Start both servers in the background and wait until they answer.

    A server already running is not started again. Prints the URLs and the environment
    lines that point stages and flows at the servers."""
    import time

    from components.orchestration.servers import env_lines, up

    setup_logging()
    started = time.monotonic()
    states = up(_specs(params, set_, allow_remote), timeout=timeout)
    _table(states)
    typer.echo(f"ready in {time.monotonic() - started:.1f} s. Prefect UI {states[0].spec.url}, "
               f"MLflow UI {states[1].spec.url}. To use them from a shell:")
    for line in env_lines([st.spec for st in states]):
        typer.echo(f"  {line}")


@server_app.command("down")
@exit_on_user_error
def server_down(
    timeout: Annotated[float, typer.Option(help="seconds between SIGTERM and SIGKILL")] = 15.0,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Stop the servers that `earshot server up` started (their process groups only)."""
    from components.orchestration.servers import down

    setup_logging()
    for st in down(_specs(params, set_), timeout=timeout):
        was = {"running": "stopped", "starting": "stopped", "stale": "removed a stale PID file",
               "stopped": "was not running"}[st.state]
        typer.echo(f"{st.spec.name}: {was}" + (f" (pid {st.pid})" if st.pid and st.state != "stale" else ""))


@server_app.command("status")
@exit_on_user_error
def server_status(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Show both servers: state, PID, URL, database, log."""
    from components.orchestration.servers import inspect

    _table([inspect(spec) for spec in _specs(params, set_)])
