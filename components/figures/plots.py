"""Charts: metrics as points with their 95 % intervals per method and split, and a
figure that only says why it is empty.

Values are drawn as points with error bars (:func:`interval_points`), never as bars from
an arbitrary baseline, where a small difference would look like a large one. Pure
functions from metric dicts to PNG files (matplotlib, Agg backend, written atomically).
Image grids are :mod:`components.figures.grids`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from components.io import atomic_path

CELL_INCHES = 1.25


def _figure(rows: int, cols: int):  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, cols, figsize=(cols * CELL_INCHES, rows * CELL_INCHES + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    return plt, fig, axes


def _save(plt, fig, path: str | Path) -> Path:  # type: ignore[no-untyped-def]
    path = Path(path)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def interval_points(ax: Any, x: Sequence[float], values: Sequence[float], lo: Sequence[float] | None = None,
                    hi: Sequence[float] | None = None, **style: Any) -> Any:
    """Points at ``values`` with error bars from ``lo`` to ``hi`` (NaN: no interval for
    that point), or plain points when no interval is known; returns matplotlib's
    ``ErrorbarContainer`` (its lines carry the values and the intervals)."""
    values = np.asarray(values, np.float64)
    yerr = None
    if lo is not None and hi is not None and not np.isnan(np.asarray(lo, np.float64)).all():
        below = np.clip(values - np.asarray(lo, np.float64), 0, None)
        above = np.clip(np.asarray(hi, np.float64) - values, 0, None)
        yerr = np.vstack([below, above])
    return ax.errorbar(np.asarray(x, np.float64), values, yerr=yerr, fmt=style.pop("fmt", "o"), capsize=2, ms=4,
                       **style)


def ablation_plot(metrics: Mapping[str, float], path: str | Path, *, splits: Sequence[str], methods: Sequence[str],
                  names: Sequence[str]) -> Path:
    """One panel per metric, a point per method with its 95 % interval (the keys'
    ``_lo`` / ``_hi``, when there are), the splits side by side in their own colours.

    ``metrics`` maps ``<split>.<method>.<metric>`` to a value; missing entries (a metric
    that was skipped or does not apply) leave a gap.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [m for m in names if any(f"{s}.{meth}.{m}" in metrics for s in splits for meth in methods)]
    cols = min(max(len(shown), 1), 4)
    rows = -(-max(len(shown), 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.8 * rows), squeeze=False)
    for ax in axes.flat[len(shown):]:
        ax.set_visible(False)
    x = np.arange(len(methods))
    step = 0.3 / max(len(splits) - 1, 1)
    for ax, metric in zip(axes.flat, shown):
        for i, split in enumerate(splits):
            keys = [f"{split}.{meth}.{metric}" for meth in methods]
            interval_points(ax, x + (i - (len(splits) - 1) / 2) * step, [metrics.get(k, np.nan) for k in keys],
                            [metrics.get(f"{k}_lo", np.nan) for k in keys],
                            [metrics.get(f"{k}_hi", np.nan) for k in keys], color=f"C{i}", label=split)
        ax.set_title(metric, fontsize=9)
        ax.set_xticks(x)
        ax.set_xticklabels(methods, fontsize=7, rotation=30, ha="right")
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("means with 95 % intervals over test speakers", fontsize=9)
    return _save(plt, fig, path)


def message_figure(text: str, path: str | Path) -> Path:
    """A small figure that only says ``text`` (e.g. why a declared figure has no images)."""
    plt, fig, axes = _figure(1, 3)
    axes[0, 1].text(0.5, 0.5, text, ha="center", va="center", fontsize=9)
    return _save(plt, fig, path)


def rd_plot(path: str | Path, curves: Mapping[str, Sequence[tuple[float, float]]], *, metric: str, title: str,
            lower_is_better: bool, highlight: tuple[float, float] | None = None,
            markers_only: Sequence[str] = ("earshot",)) -> Path:
    """A rate-distortion chart: bits per pixel (log axis) against ``metric``, one line with
    markers per family of ``curves`` (``(bpp, quality)`` pairs), the families in
    ``markers_only`` (earshot's operating points, not a ladder) as markers alone, and
    ``highlight`` (the default operating point) as a star. The y label's arrow says which
    way is better."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.0, 3.8))
    for i, (family, points) in enumerate(curves.items()):
        if not points:
            continue
        bpp, quality = np.array(points, np.float64).T
        ax.plot(bpp, quality, "o" if family in markers_only else "o-", ms=4, color=f"C{i}", label=family)
    if highlight is not None:
        ax.plot(*highlight, "*", ms=14, color="black", label="default operating point", zorder=3)
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    # labels at 1, 2 and 5 of each decade, written plainly (0.002, not 2x10^-3, which run into each other)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("bits per pixel (256x256)")
    ax.set_ylabel(f"{metric} ({'↓' if lower_is_better else '↑'} better)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(plt, fig, path)
