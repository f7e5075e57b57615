"""Compare the variants of an ablation sweep as MLflow recorded them.

The ablation flow (``earshot flow ablation NAME``) runs every variant of a sweep from
``params.yaml`` under one MLflow *parent* run (tags ``kind=sweep``, ``sweep``,
``baseline``, ``git_sha``; params = the sweep definition, flattened) and gives each
variant one child run with ``kind=variant``, ``sweep``, ``variant`` (and
``dvc_exp_name``) holding that variant's final ``evaluate`` metrics
(``<split>.<method>.<metric>``, :mod:`components.evaluation.face_sr`) and its
overrides as params. This module turns those runs, as
:func:`components.tracking.load_sweep` reads them back, into:

* a comparison table (:func:`comparison_table`): one row per variant, baseline first,
  each selected metric, its difference to the baseline and, when the variant logged one,
  its 95 % interval (the evaluation's ``<key>_lo`` / ``<key>_hi``);
* a markdown report (:func:`markdown_report`): one table per split (``seen`` = closed
  set, ``unseen`` = open set), the sweep's description, each variant's overrides, the
  git commit and the runs;
* a figure (:func:`plot_comparison`): one panel per metric, each variant's value as a
  point with its 95 % interval, the splits side by side, joined by a line over the
  variants' values when they are numbers (``1s``/``2s``/``4s``, ``8x8``/``16x16``).

Every MLflow query and write is in :mod:`components.tracking`; :func:`write_comparison`
and :func:`log_to_parent` are the only writers. matplotlib is imported inside the
functions that need it, so importing this module is cheap.
"""

from __future__ import annotations

import fnmatch
import io
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from components.errors import EarshotError
from components.evaluation import HIGHER_IS_BETTER
from components.io import atomic_path, write_bytes_atomic
from components.tracking import Sweep, load_sweep, log_artifacts, numeric_values, row_value

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

SPLITS = {"seen": "closed set: new clips of the training speakers",
          "unseen": "open set: speakers never trained on"}
# The default selection: the paper's model on fidelity, attributes and identity; whether
# a foreign voice steers the face; and the image-only model's identity and attributes,
# the reference the voice has to improve on.
KEY_METRICS = ("fused.psnr", "fused.ssim", "fused.stlpips", "fused.attr_acc", "fused.age_err", "fused.id_acc",
               "fused.id_cos", "mismatched.follows_audio", "image_only.id_cos", "image_only.attr_acc")
# The video paper's (evaluate_video's keys): the full model on fidelity, realism, lips and identity; the FID
# factor over bicubic; whether the voice changes the lips (full minus no audio, another clip's audio).
VIDEO_KEY_METRICS = ("full.psnr", "full.stlpips", "full.fid", "full.kid", "full.lse_c", "full.lmd_mouth",
                     "full.id_dist_dlib", "fid_ratio.bicubic_over_full", "full_minus_no_audio.lse_c",
                     "other_audio_follows.lse_c")
FACE_SR_METRICS = tuple(f"{split}.{key}" for split in SPLITS for key in KEY_METRICS)
VIDEO_METRICS = tuple(f"{split}.{key}" for split in SPLITS for key in VIDEO_KEY_METRICS)
# A sweep's variants log one paper's keys: select_metrics leaves the other paper's out.
DEFAULT_METRICS = FACE_SR_METRICS + VIDEO_METRICS
ARTIFACT_PATH = "comparison"


class CompareError(EarshotError):
    """The variants' runs do not hold what the comparison asks for (its baseline, a metric)."""


# --- the table ----------------------------------------------------------------------------


def split_key(key: str) -> tuple[str, str, str]:
    """``unseen.fused.id_cos`` -> (``unseen``, ``fused``, ``id_cos``)."""
    split, method, metric = key.split(".", 2)
    return split, method, metric


def higher_is_better(key: str) -> bool | None:
    """Direction of a metric key (by its last part); None when unknown."""
    return HIGHER_IS_BETTER.get(key.rsplit(".", 1)[-1])


def verdict(key: str, delta: float) -> str | None:
    """``better``/``worse``/``same`` for a difference to the baseline in metric ``key``;
    None when it is missing or the metric's direction is unknown."""
    direction = higher_is_better(key)
    if direction is None or delta is None or math.isnan(delta):
        return None
    if delta == 0:
        return "same"
    return "better" if (delta > 0) == direction else "worse"


def delta_column(key: str) -> str:
    return f"Δ {key}"


INTERVAL_ENDS = ("lo", "hi")
"""The evaluation logs metric ``k``'s 95 % interval as ``k_lo`` and ``k_hi``."""


def interval_column(key: str, end: str) -> str:
    """The table column of one end (``lo`` / ``hi``) of metric ``key``'s interval."""
    return f"{end} {key}"


def is_interval_key(key: str) -> bool:
    return key.endswith(tuple(f"_{end}" for end in INTERVAL_ENDS))


def select_metrics(available: Iterable[str], selection: Sequence[str] | None = None) -> list[str]:
    """The metric keys to compare, in selection order.

    An entry is a full key (``seen.fused.psnr``), a key without its split (``fused.psnr``:
    every split) or a glob (``*.fused.*``). Without a selection: :data:`DEFAULT_METRICS`.
    Entries nothing matches are left out (a skipped metric, e.g. LPIPS without AlexNet).
    """
    available = [k for k in dict.fromkeys(available) if not is_interval_key(k)]  # intervals go with their metric
    chosen: list[str] = []
    for entry in selection or DEFAULT_METRICS:
        if any(c in entry for c in "*?["):
            matches = [k for k in available if fnmatch.fnmatchcase(k, entry)]
        elif entry.count(".") == 1:
            matches = [f"{split}.{entry}" for split in SPLITS if f"{split}.{entry}" in available]
        else:
            matches = [entry] if entry in available else []
        if not matches:
            log.info("no variant logged a metric %r: left out", entry)
        chosen += [k for k in matches if k not in chosen]
    return chosen


def comparison_table(runs: pd.DataFrame, baseline: str, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per variant (``runs``' order, baseline first), for each selected metric
    its value and its difference to the baseline (column :func:`delta_column`).

    ``runs`` is indexed by variant with ``metrics.<key>`` columns (:attr:`Sweep.runs`).
    A metric a variant did not log is NaN, and so is its difference.
    """
    if baseline not in runs.index:
        raise CompareError(f"baseline {baseline!r} is not among the variants {list(runs.index)}")
    order = [baseline] + [v for v in runs.index if v != baseline]
    logged = [c.removeprefix("metrics.") for c in runs.columns if c.startswith("metrics.")]
    keys = select_metrics(logged, metrics)
    if not keys:
        raise CompareError(f"none of the metrics {list(metrics or DEFAULT_METRICS)} was logged by the variants; "
                           f"logged: {', '.join(sorted(logged)) or 'nothing'}")
    table = pd.DataFrame(index=pd.Index(order, name="variant"))
    for key in keys:
        values = pd.to_numeric(runs.loc[order, f"metrics.{key}"], errors="coerce")
        table[key] = values.to_numpy()
        table[delta_column(key)] = (values - values.loc[baseline]).to_numpy()
        for end in INTERVAL_ENDS:
            if f"metrics.{key}_{end}" in runs.columns:
                table[interval_column(key, end)] = pd.to_numeric(runs.loc[order, f"metrics.{key}_{end}"],
                                                                 errors="coerce").to_numpy()
    return table


def metric_keys(table: pd.DataFrame) -> list[str]:
    """The metric keys of a comparison table, without their delta and interval columns."""
    derived = tuple(f"{prefix} " for prefix in ("Δ", *INTERVAL_ENDS))
    return [c for c in table.columns if not c.startswith(derived)]


# --- the report -----------------------------------------------------------------------------


def decimals(values: Iterable[float]) -> int:
    """Decimals to show a metric with: 2 for values in the tens (PSNR 21.37 dB), else 3
    (SSIM 0.681, accuracies, cosines), the same for a whole row so that it reads aligned."""
    finite = [abs(v) for v in values if v is not None and not math.isnan(v)]
    return 2 if finite and max(finite) >= 10 else 3


def fmt(value: float | None, places: int = 3, *, signed: bool = False) -> str:
    """``value`` with ``places`` decimals (and its sign when ``signed``); '–' when missing."""
    if value is None or math.isnan(value):
        return "–"
    return f"{value:+.{places}f}" if signed else f"{value:.{places}f}"


def row_cells(table: pd.DataFrame, key: str, baseline: str) -> tuple[str, list[tuple[str, str, str | None]]]:
    """One metric's cells: the baseline's value, then for every other variant (value,
    signed difference, :func:`verdict`), all with the row's decimals."""
    places = decimals(table[key])
    cells = [(fmt(table.at[v, key], places), fmt(table.at[v, delta_column(key)], places, signed=True),
              verdict(key, table.at[v, delta_column(key)])) for v in table.index if v != baseline]
    return fmt(table.at[baseline, key], places), cells


def metric_label(key_without_split: str) -> str:
    direction = higher_is_better(key_without_split)
    return key_without_split + ("" if direction is None else " ↑" if direction else " ↓")


def split_rows(table: pd.DataFrame, split: str) -> list[tuple[str, str]]:
    """(``method.metric``, full key) of one split's metrics, in table order."""
    return [(key.split(".", 1)[1], key) for key in metric_keys(table) if split_key(key)[0] == split]


def markdown_report(sweep: Sweep, table: pd.DataFrame, *, plot_file: str | None = None) -> str:
    """The comparison as markdown: the sweep, its variants and runs, a table per split.

    Rows are metrics (``method.metric``, ↑ higher / ↓ lower is better), columns the
    variants, baseline first; the other variants show ``value (difference)``.
    """
    base = sweep.baseline
    lines = [f"# Ablation `{sweep.name}`", ""]
    if sweep.description:
        lines += [sweep.description, ""]
    parent_name = row_value(sweep.parent, "tags.mlflow.runName")
    lines += [f"- parent run: {_run_ref(sweep, sweep.parent_id, parent_name)}",
              f"- tracking: `{sweep.tracking_uri}`",
              f"- git commit: `{sweep.git_sha or 'unknown'}`",
              f"- baseline: `{base}`; differences are variant - baseline", ""]
    lines += ["## Variants", "", "| variant | overrides | run | DVC experiment | status |", "|---|---|---|---|---|"]
    for variant, row in sweep.runs.iterrows():
        overrides = sweep.overrides.get(str(variant)) or {}
        text = ", ".join(f"`{k}={v}`" for k, v in overrides.items()) or "(params.yaml as is)"
        name = f"**{variant}** (baseline)" if variant == base else str(variant)
        lines.append(f"| {name} | {text} | {_run_ref(sweep, str(row['run_id']))} | "
                     f"{row_value(row, 'tags.dvc_exp_name') or '–'} | {row_value(row, 'status') or '–'} |")
    others = [v for v in table.index if v != base]
    for split, what in SPLITS.items():
        rows = split_rows(table, split)
        if not rows:
            continue
        lines += ["", f"## {split} ({what})", "",
                  "| metric | " + " | ".join([f"{base} (baseline)", *others]) + " |",
                  "|---" * (len(others) + 2) + "|"]
        for label, key in rows:
            base_cell, cells = row_cells(table, key, base)
            shown = [base_cell] + [f"{value} ({delta})" for value, delta, _ in cells]
            lines.append(f"| {metric_label(label)} | " + " | ".join(shown) + " |")
    lines += ["", "↑ higher is better, ↓ lower is better. Metrics: components/evaluation/face_sr.py."]
    if plot_file:
        lines += ["", f"![{sweep.name}]({plot_file})"]
    return "\n".join(lines) + "\n"


def _run_ref(sweep: Sweep, run_id: str, name: str | None = None) -> str:
    """The run's id (and name), linked to the MLflow UI when the store is a server."""
    label = f"{name} ({run_id})" if name else run_id
    url = sweep.run_url(run_id)
    return f"[{label}]({url})" if url else f"`{label}`"


# --- the figure ------------------------------------------------------------------------------


def plot_comparison(table: pd.DataFrame, baseline: str, *, title: str = "") -> Figure:
    """One panel per ``method.metric``: each variant's value as a point with its 95 %
    interval as an error bar (plain points for runs that logged no interval), one colour
    per split, the splits side by side.

    Variants with numeric names (``1s``/``2s``/``4s``) are placed at their value and
    joined by a line; others in order, baseline first. The baseline's point is ringed.
    The y axis spans the points and their intervals, so a difference is read against the
    uncertainty rather than against an axis cut close to the values.
    Built on a bare :class:`~matplotlib.figure.Figure` (Agg when saved): no pyplot state,
    so it works the same headless and in a notebook.
    """
    import numpy as np
    from matplotlib.figure import Figure

    from components.figures.plots import interval_points

    panels = list(dict.fromkeys(k.split(".", 1)[1] for k in metric_keys(table)))
    splits = [s for s in SPLITS if any(split_key(k)[0] == s for k in metric_keys(table))]
    splits += sorted({split_key(k)[0] for k in metric_keys(table)} - set(splits))
    variants = list(table.index)
    values = numeric_values(variants)
    order = sorted(variants, key=values.__getitem__) if values is not None else variants
    positions = np.array([values[v] if values is not None else i for i, v in enumerate(order)], dtype=float)
    spacing = float(np.diff(positions).min()) if len(positions) > 1 else 1.0
    step = 0.3 * spacing / max(len(splits) - 1, 1)
    cols = min(max(len(panels), 1), 4)
    rows = -(-max(len(panels), 1) // cols)
    fig = Figure(figsize=(3.2 * cols, 2.7 * rows + 0.4), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    nan = pd.Series(np.nan, index=table.index)
    for ax, panel in zip(axes, panels):
        for i, split in enumerate(splits):
            key = f"{split}.{panel}"
            series = table[key] if key in table else nan
            lo, hi = (table[interval_column(key, end)] if interval_column(key, end) in table else nan
                      for end in INTERVAL_ENDS)
            x = positions + (i - (len(splits) - 1) / 2) * step
            color = f"C{i}"
            interval_points(ax, x, series[order], lo[order], hi[order], color=color, label=split,
                            fmt="o-" if values is not None else "o")
            base = order.index(baseline)
            ax.plot([x[base]], [series[baseline]], "o", ms=11, mfc="none", color=color)
        ax.set_xticks(positions, order, fontsize=7, rotation=0 if values is not None else 20,
                      ha="center" if values is not None else "right")
        ax.set_title(metric_label(panel), fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    if panels:
        axes[0].legend(fontsize=7)
    fig.suptitle(f"{title + ': ' if title else ''}baseline {baseline} (ringed); bars: 95 % intervals",
                 fontsize=10)
    return fig


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


# --- writing and logging -------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """What :func:`compare` made: the table, the files, and their paths on the parent run."""

    sweep: Sweep
    table: pd.DataFrame
    report: Path
    plot: Path
    logged: tuple[str, ...] = ()


def write_comparison(sweep: Sweep, table: pd.DataFrame, out_dir: str | Path) -> Comparison:
    """``<out_dir>/comparison.md`` and ``comparison.png``, written atomically."""
    out_dir = Path(out_dir)
    plot = out_dir / "comparison.png"
    fig = plot_comparison(table, sweep.baseline, title=sweep.name)
    with atomic_path(plot) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    report = out_dir / "comparison.md"
    write_bytes_atomic(report, markdown_report(sweep, table, plot_file=plot.name).encode())
    return Comparison(sweep, table, report, plot)


def log_to_parent(comparison: Comparison, artifact_path: str = ARTIFACT_PATH) -> tuple[str, ...]:
    """Log the report and the figure to the sweep's parent run (``comparison/``); their
    artifact paths. Logging again replaces them."""
    return log_artifacts(comparison.sweep.tracking_uri, comparison.sweep.parent_id,
                         (comparison.report, comparison.plot), artifact_path)


def compare(uri: str, sweep: str | None = None, *, parent_id: str | None = None, out_dir: str | Path | None = None,
            metrics: Sequence[str] | None = None, experiment: str | None = None, log_parent: bool = True
            ) -> Comparison:
    """Everything ``earshot compare`` does: read, tabulate, write the report and the
    figure to ``out_dir`` (default ``results/compare/<sweep>``), log both to the parent."""
    found = load_sweep(uri, sweep, parent_id=parent_id, experiment=experiment)
    table = comparison_table(found.runs, found.baseline, metrics)
    result = write_comparison(found, table, out_dir or Path("results") / "compare" / found.name)
    return replace(result, logged=log_to_parent(result)) if log_parent else result
