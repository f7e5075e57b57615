"""``earshot compare``: the variants of an ablation sweep side by side.

Reads the sweep's runs from MLflow (the tracking URI of params.yaml / $MLFLOW_TRACKING_URI,
as every stage), prints one table per split (metrics as rows, variants as columns, each
difference to the baseline green when it is an improvement and red when it is not), and
writes ``comparison.md`` + ``comparison.png``, which also go to the sweep's parent run.
The work is in :mod:`components.evaluation.compare`; this module only parses and prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from pipelines._common import exit_on_user_error, parse_overrides, setup_logging

if TYPE_CHECKING:
    import pandas as pd
    from rich.table import Table

    from components.tracking import Sweep

COLORS = {"better": "green", "worse": "red", "same": "dim"}


@exit_on_user_error
def compare(
    sweep: Annotated[Optional[str], typer.Argument(
        help="sweep name (params.yaml `sweeps`); default: the most recently run sweep")] = None,
    parent: Annotated[Optional[str], typer.Option(
        "--parent", help="parent run id of the sweep (default: its latest run)")] = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", help="folder for comparison.md and comparison.png (default: results/compare/<sweep>)")] = None,
    metrics: Annotated[Optional[list[str]], typer.Option(
        "--metrics", "-m", help="metrics to compare (repeat, or comma-separated): seen.fused.psnr, fused.psnr "
                                "(both splits) or a glob like '*.fused.*'; default: the key metrics")] = None,
    log: Annotated[bool, typer.Option("--log/--no-log", help="log the report and plot to the parent run")] = True,
    params: Annotated[Path, typer.Option("--params", help="params file")] = Path("params.yaml"),
    set_: Annotated[Optional[list[str]], typer.Option("--set", "-S", help="override: KEY=VALUE (YAML value)")] = None,
) -> None:
    """Compare the variants of an ablation sweep with its baseline (MLflow runs)."""
    from rich.console import Console

    from components.config import load_params
    from components.evaluation import compare as C
    from components.tracking import resolve_tracking_uri

    setup_logging()
    cfg = load_params(params, parse_overrides(set_ or []))
    uri = resolve_tracking_uri(cfg.tracking.uri)
    selection = [m.strip() for entry in metrics or [] for m in entry.split(",") if m.strip()] or None
    result = C.compare(uri, sweep, parent_id=parent, out_dir=out, metrics=selection,
                       experiment=cfg.tracking.experiment, log_parent=log)
    found, table = result.sweep, result.table
    console = Console()
    console.print(f"[bold]sweep {found.name}[/]: {found.description or '(no description)'}\n"
                  f"parent run {found.parent_id}, baseline [bold]{found.baseline}[/], "
                  f"git {found.git_sha[:12] or 'unknown'}, tracking {uri}")
    for split in C.SPLITS:
        if C.split_rows(table, split):
            console.print(split_table(found, table, split))
    console.print(f"report {result.report}\nplot   {result.plot}")
    if result.logged:
        console.print(f"logged {', '.join(result.logged)} to the parent run {found.parent_id}")


def split_table(sweep: Sweep, table: pd.DataFrame, split: str) -> Table:
    """Metrics of one split as rows, variants as columns: ``value (difference)``."""
    from rich.table import Table

    from components.evaluation import compare as C

    others = [v for v in table.index if v != sweep.baseline]
    out = Table(title=f"{split} ({C.SPLITS.get(split, '')})", title_justify="left")
    out.add_column("metric")
    out.add_column(f"{sweep.baseline} (baseline)", justify="right")
    for variant in others:
        out.add_column(str(variant), justify="right")
    for label, key in C.split_rows(table, split):
        base_cell, cells = C.row_cells(table, key, sweep.baseline)
        shown = [f"{value} [{COLORS[v]}]({delta})[/]" if v in COLORS else f"{value} ({delta})"
                 for value, delta, v in cells]
        out.add_row(C.metric_label(label), base_cell, *shown)
    return out
