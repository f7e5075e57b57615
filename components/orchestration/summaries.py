"""What the Prefect flows publish: each stage's (or sweep variant's) result, with links
to its MLflow runs, as the markdown summaries shown as Prefect artifacts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from components.config import SweepParams

StageStatus = Literal["ran", "skipped", "failed", "not reached"]


@dataclass(frozen=True)
class RunLink:
    """One MLflow run, as a summary links it."""

    name: str
    url: str
    stage: str = ""
    variant: str = ""
    status: str = ""


@dataclass
class StageResult:
    """What happened to one stage (or one sweep variant) in a flow run."""

    name: str
    status: StageStatus
    seconds: float = 0.0
    detail: str = ""
    attempts: int = 1
    runs: list[RunLink] = field(default_factory=list)


def _seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _links(runs: Iterable[RunLink]) -> str:
    return ", ".join(f"[{_cell(r.name)}]({r.url})" for r in runs)


def stage_table(results: Sequence[StageResult], header: str = "stage") -> str:
    """The markdown table of stages (or variants): status, duration, MLflow runs."""
    lines = [f"| {header} | status | duration | MLflow |", "|---|---|---|---|"]
    for r in results:
        duration = _seconds(r.seconds) if r.status != "not reached" else ""
        lines.append(f"| {_cell(r.name)} | {_cell(status_text(r))} | {duration} | {_links(r.runs)} |")
    return "\n".join(lines)


def attach_runs(results: Sequence[StageResult], runs: Sequence[RunLink], key: str = "stage") -> list[RunLink]:
    """Give each result the runs whose ``stage`` (or ``variant``) tag is its name; returns
    the runs no result claimed (nested or foreign runs, listed separately)."""
    by_name = {r.name: r for r in results}
    unclaimed = []
    for run in runs:
        owner = by_name.get(getattr(run, key))
        if owner is not None:
            owner.runs.append(run)
        else:
            unclaimed.append(run)
    return unclaimed


def pipeline_markdown(command: str, results: Sequence[StageResult], other_runs: Sequence[RunLink],
                      total_seconds: float) -> str:
    """The Prefect artifact of a pipeline flow run: what DVC ran, skipped or failed."""
    counts = {s: sum(r.status == s for r in results) for s in ("ran", "skipped", "failed")}
    failed = next((r for r in results if r.status == "failed"), None)
    verdict = f"**failed at stage `{failed.name}`**" if failed else "**completed**"
    lines = [f"# `{command}`", "",
             f"{verdict} in {_seconds(total_seconds)}: {counts['ran']} ran, {counts['skipped']} skipped "
             f"(DVC found them up to date), {counts['failed']} failed.", "", stage_table(results)]
    if other_runs:
        lines += ["", "Other MLflow runs started during this flow run:", ""]
        lines += [f"- [{_cell(r.name)}]({r.url})" + (f" ({r.status})" if r.status else "") for r in other_runs]
    return "\n".join(lines) + "\n"


def status_text(r: StageResult) -> str:
    """``failed (exit 3), 2 attempts``: the status with its detail and retries."""
    status = r.status + (f" ({r.detail})" if r.detail else "")
    return status + (f", {r.attempts} attempts" if r.attempts > 1 else "")


def sweep_markdown(sweep_name: str, sweep: SweepParams, results: Sequence[StageResult], parent: RunLink | None,
                   exp_names: Mapping[str, str], comparison: str | None = None, figure: str | None = None) -> str:
    """The Prefect artifact of an ablation flow run: each variant's overrides, DVC
    experiment, status and MLflow runs, then the comparison report (when it was built;
    its own title and image links dropped: an artifact cannot show a local PNG, so
    ``figure`` says where the plot is)."""
    lines = [f"# Ablation `{sweep_name}`", ""]
    if sweep.description:
        lines += [sweep.description, ""]
    lines += [f"Baseline: `{sweep.baseline}`." + (f" Parent MLflow run: [{parent.name}]({parent.url})." if parent else ""),
              "", "| variant | overrides | DVC experiment | status | duration | MLflow |", "|---|---|---|---|---|---|"]
    for r in results:
        overrides = ", ".join(f"`{k}={v}`" for k, v in sweep.variants[r.name].items()) or "(none)"
        duration = _seconds(r.seconds) if r.status != "not reached" else ""
        lines.append(f"| {_cell(r.name)} | {_cell(overrides)} | {_cell(exp_names.get(r.name, ''))} | "
                     f"{_cell(status_text(r))} | {duration} | {_links(r.runs)} |")
    if comparison:
        body = [line for line in comparison.splitlines() if not line.startswith(("# ", "!["))]
        lines += ["", "## Comparison", *body]
        if figure:
            lines += ["", f"Figure: {figure}"]
    return "\n".join(lines) + "\n"
