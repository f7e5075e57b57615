"""Rate-distortion analysis of the codec evaluation: per-clip values to curves and the
figures a reader looks for.

The ``evaluate_codec`` stage encodes every test clip at several operating points of
earshot and of each baseline codec (H.264, H.265, AV1, some at several resolutions) and
measures, per clip, the video's bits per pixel and its quality by metric
(:class:`PointValues`). This module turns those values into:

- a family's curve (:func:`curve`): the mean bpp and mean quality of each of its points;
- its Pareto front (:func:`front`): the points no other point beats in both rate and
  quality, which is a codec ladder's "convex hull over resolutions";
- the bits a baseline needs for earshot's quality (:func:`bpp_at`, :func:`bpp_ratio`),
  interpolated linearly in log(bpp) between the front's points, never extrapolated, and
  what can still be said outside the front (:func:`ratio_bound`);
- the Bjontegaard delta rate where two fronts overlap (:func:`bd_rate`);
- the ratio's 95 % interval from a bootstrap over speakers (:func:`ratio_interval`);
- the rows of the curves' table for ``dvc plots`` (:func:`curve_rows`).

A curve is a list of ``(bpp, quality)`` pairs. Unknown per-clip values (NaN) are left out
of a mean, as :mod:`components.evaluation.stats` does. Pure numpy (and the pure Python
``bjontegaard`` package for the BD-rate); the plot is :func:`components.figures.plots.rd_plot`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from components.errors import EarshotError
from components.evaluation import HIGHER_IS_BETTER
from components.evaluation.stats import Estimate, speaker_draws

# The metrics a rate-distortion curve can be drawn against, and their direction.
LOWER_IS_BETTER = {m: not HIGHER_IS_BETTER[m] for m in ("stlpips", "psnr", "ssim", "lse_c", "fid", "kid")}

# Fewer points than this do not make a BD-rate: the classic Bjontegaard fit is a cubic
# through at least four points (the package itself would interpolate two).
BD_MIN_POINTS = 4
# The package's default minimum overlap of the two quality ranges, as a fraction of their union.
BD_MIN_OVERLAP = 0.75
# A bootstrap interval of the ratio needs the ratio defined on at least this share of the resamples.
MIN_DEFINED_SHARE = 0.9

Curve = list[tuple[float, float]]


@dataclass(frozen=True)
class PointValues:
    """One operating point measured on every clip of a split (the same clip order for every point)."""

    family: str  # "earshot", "h264", "h265", "av1"
    name: str  # e.g. "earshot crf18 webp40", "h264 256px crf35"
    bpp: np.ndarray  # per clip: video bits / (256 * 256 * frames)
    quality: dict[str, np.ndarray]  # per clip, by metric name ("stlpips", "psnr", ...)

    def __post_init__(self) -> None:
        for metric, values in self.quality.items():
            if np.shape(values) != np.shape(self.bpp):
                raise EarshotError(f"point {self.name!r}: quality[{metric!r}] has shape {np.shape(values)}, "
                                   f"bpp has {np.shape(self.bpp)}")


def _known_mean(values: np.ndarray) -> float:
    """The mean of the known (not NaN) values; NaN when none is known."""
    known = values[~np.isnan(values)]
    return float(known.mean()) if known.size else float("nan")


def _quality(point: PointValues, metric: str) -> np.ndarray:
    if metric not in point.quality:
        raise EarshotError(f"point {point.name!r} has no metric {metric!r} (it has {sorted(point.quality)})")
    return np.asarray(point.quality[metric], np.float64)


def _family_points(points: Sequence[PointValues], family: str) -> list[PointValues]:
    chosen = [p for p in points if p.family == family]
    if not chosen:
        raise EarshotError(f"family {family!r} has no point (families: {sorted({p.family for p in points})})")
    return chosen


def _point_mean(point: PointValues, metric: str, rows: np.ndarray | None) -> tuple[float, float]:
    bpp, quality = np.asarray(point.bpp, np.float64), _quality(point, metric)
    if rows is not None:
        bpp, quality = bpp[rows], quality[rows]
    return _known_mean(bpp), _known_mean(quality)


def curve(points: Sequence[PointValues], family: str, metric: str, rows: np.ndarray | None = None) -> Curve:
    """The family's ``(mean bpp, mean metric)`` per point over the clips ``rows`` (an index
    array, repeats allowed, as a bootstrap resample draws them; None: every clip), sorted by bpp."""
    return sorted(_point_mean(p, metric, rows) for p in _family_points(points, family))


def _goodness(quality: float | np.ndarray, lower_is_better: bool) -> float | np.ndarray:
    """Quality turned so that higher is better."""
    return -quality if lower_is_better else quality


def front(curve_points: Sequence[tuple[float, float]], lower_is_better: bool) -> Curve:
    """The Pareto front of ``curve_points``: the points that no other point beats (at most
    its bpp and at least its quality, one of them strictly), sorted by bpp, duplicates once.

    Points with an unknown bpp or quality are left out. Along the front both the bpp and
    the quality strictly improve: it is a monotone rate-distortion curve.
    """
    known = sorted((b, q) for b, q in curve_points if np.isfinite(b) and np.isfinite(q))
    kept: Curve = []
    for bpp, quality in known:  # by bpp, then by quality: a point is kept when it beats every cheaper one
        if not kept or _goodness(quality, lower_is_better) > _goodness(kept[-1][1], lower_is_better):
            if kept and kept[-1][0] == bpp:
                kept.pop()  # same bpp, better quality: the earlier one is dominated
            kept.append((bpp, quality))
    return kept


def bpp_at(front_points: Sequence[tuple[float, float]], quality: float, lower_is_better: bool) -> float:
    """The bpp ``front_points`` (a :func:`front`) needs for ``quality``: linear in log(bpp)
    between the two front points around it; NaN when ``quality`` is outside the front's
    quality range (no extrapolation) or the front is empty."""
    if not front_points or not np.isfinite(quality):
        return float("nan")
    bpps, qualities = np.array(front_points, np.float64).T
    goodness = _goodness(qualities, lower_is_better)
    wanted = _goodness(quality, lower_is_better)
    if not goodness[0] <= wanted <= goodness[-1]:
        return float("nan")
    return float(np.exp(np.interp(wanted, goodness, np.log(bpps))))


def bpp_ratio(baseline_front: Sequence[tuple[float, float]], bpp: float, quality: float,
              lower_is_better: bool) -> float:
    """How many times more bits the baseline needs than ``bpp`` for ``quality``
    (``bpp_at(baseline_front, quality) / bpp``); NaN outside the baseline's quality range."""
    return bpp_at(baseline_front, quality, lower_is_better) / bpp


def ratio_bound(baseline_front: Sequence[tuple[float, float]], bpp: float, quality: float,
                lower_is_better: bool) -> tuple[str, float]:
    """What can be said of the bpp ratio at ``quality``, also outside the baseline's range.

    ``("equal", ratio)`` inside the range; ``("at_most", cheapest_bpp / bpp)`` when
    ``quality`` is worse than the baseline's cheapest point (a monotone curve needs no more
    bits for a worse quality); ``("at_least", best_bpp / bpp)`` when it is better than the
    baseline's best point.
    """
    if not baseline_front:
        raise EarshotError("baseline_front is empty: no baseline point to compare with")
    (cheapest_bpp, cheapest_q), (best_bpp, best_q) = baseline_front[0], baseline_front[-1]
    wanted = _goodness(quality, lower_is_better)
    if wanted < _goodness(cheapest_q, lower_is_better):
        return "at_most", cheapest_bpp / bpp
    if wanted > _goodness(best_q, lower_is_better):
        return "at_least", best_bpp / bpp
    return "equal", bpp_ratio(baseline_front, bpp, quality, lower_is_better)


def quality_overlap(a: Sequence[tuple[float, float]], b: Sequence[tuple[float, float]]) -> float:
    """The overlap of two curves' quality ranges as a fraction of their union (0: disjoint),
    as ``bjontegaard`` measures it."""
    qa, qb = np.array([q for _, q in a]), np.array([q for _, q in b])
    union = max(qa.max(), qb.max()) - min(qa.min(), qb.min())
    common = min(qa.max(), qb.max()) - max(qa.min(), qb.min())
    return max(common, 0.0) / union if union > 0 else 0.0


def bd_rate(anchor_front: Sequence[tuple[float, float]], test_front: Sequence[tuple[float, float]],
            lower_is_better: bool, method: str = "akima") -> float:
    """The Bjontegaard delta rate of ``test_front`` against ``anchor_front`` in % (negative:
    the test needs fewer bits for the same quality), ``method`` "akima" or "pchip".

    NaN, with no warning, when either front has fewer than :data:`BD_MIN_POINTS` points or
    their quality ranges overlap by less than :data:`BD_MIN_OVERLAP` of their union (the
    package would warn and still answer, or answer NaN on disjoint ranges): the average
    over a small overlap says little about the curves.
    """
    if method not in ("akima", "pchip"):
        raise EarshotError(f"method {method!r} is not a BD-rate interpolation (akima or pchip)")
    if min(len(anchor_front), len(test_front)) < BD_MIN_POINTS:
        return float("nan")
    if quality_overlap(anchor_front, test_front) < BD_MIN_OVERLAP:
        return float("nan")
    import bjontegaard  # here: it loads matplotlib.pyplot on import

    rate_a, quality_a = np.array(anchor_front, np.float64).T
    rate_t, quality_t = np.array(test_front, np.float64).T
    return float(bjontegaard.bd_rate(rate_a, _goodness(quality_a, lower_is_better),
                                     rate_t, _goodness(quality_t, lower_is_better), method=method,
                                     require_matching_points=False, min_overlap=BD_MIN_OVERLAP))


def _point_named(points: Sequence[PointValues], name: str) -> PointValues:
    for point in points:
        if point.name == name:
            return point
    raise EarshotError(f"no point named {name!r} (points: {[p.name for p in points]})")


def _ratio(points: Sequence[PointValues], baseline_family: str, earshot: PointValues, metric: str,
           rows: np.ndarray | None) -> float:
    lower = LOWER_IS_BETTER[metric]
    baseline = front(curve(points, baseline_family, metric, rows), lower)
    bpp, quality = _point_mean(earshot, metric, rows)
    return bpp_ratio(baseline, bpp, quality, lower)


def speaker_resamples(speakers: np.ndarray, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """``n_resamples`` row-index arrays, each the clips of the speakers drawn with
    replacement (as many draws as speakers, each bringing all its clips), by
    :func:`components.evaluation.stats.speaker_draws`, as every speaker bootstrap draws them."""
    names, group = np.unique(np.asarray(speakers), return_inverse=True)
    if not names.size:
        raise EarshotError("speakers is empty: no clip to resample")
    members = [np.flatnonzero(group == g) for g in range(names.size)]
    for draw in speaker_draws(len(members), n_resamples, seed):
        yield np.concatenate([members[g] for g in draw])


def ratio_interval(points: Sequence[PointValues], speakers: np.ndarray, baseline_family: str,
                   earshot_point_name: str, metric: str, n_resamples: int, seed: int,
                   level: float = 0.95) -> Estimate:
    """The bpp ratio of ``baseline_family`` against the point ``earshot_point_name`` at
    equal ``metric`` (``mean``: on every clip) with its ``level`` percentile interval from
    a bootstrap over speakers (``speakers[i]``: clip i's speaker).

    Each resample uses the same clips for every point; the baseline's front and earshot's
    point are recomputed on it. The interval is read over the resamples whose ratio is
    defined (earshot's quality inside the baseline's range); when fewer than
    :data:`MIN_DEFINED_SHARE` of them are, its bounds are NaN: the ratio at equal quality
    is then not a stable figure (:func:`ratio_bound` says what is).
    """
    speakers = np.asarray(speakers)
    for point in points:
        if np.shape(point.bpp) != speakers.shape:
            raise EarshotError(f"point {point.name!r}: bpp has shape {np.shape(point.bpp)}, "
                               f"speakers has {speakers.shape}")
    if metric not in LOWER_IS_BETTER:
        raise EarshotError(f"metric {metric!r} has no known direction (known: {sorted(LOWER_IS_BETTER)})")
    earshot = _point_named(points, earshot_point_name)
    ratio = _ratio(points, baseline_family, earshot, metric, None)
    ratios = np.array([_ratio(points, baseline_family, earshot, metric, rows)
                       for rows in speaker_resamples(speakers, n_resamples, seed)])
    defined = ratios[np.isfinite(ratios)]
    if n_resamples == 0 or defined.size < MIN_DEFINED_SHARE * n_resamples:
        return Estimate(ratio, float("nan"), float("nan"))
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(defined, [tail, 100 - tail])
    return Estimate(ratio, float(lo), float(hi))


def curve_rows(points: Sequence[PointValues], split: str) -> list[dict[str, str | float]]:
    """The rows of the curves' table (for ``dvc plots``): one per point, ``split``,
    ``family``, ``name``, ``bpp`` and each metric's mean as a flat column (every metric any
    point has; NaN where a point lacks it), sorted by family, then bpp."""
    metrics = list(dict.fromkeys(m for p in points for m in p.quality))
    rows: list[dict[str, str | float]] = []
    for point in points:
        row: dict[str, str | float] = {"split": split, "family": point.family, "name": point.name,
                                       "bpp": _known_mean(np.asarray(point.bpp, np.float64))}
        for metric in metrics:
            row[metric] = _known_mean(_quality(point, metric)) if metric in point.quality else float("nan")
        rows.append(row)
    return sorted(rows, key=lambda r: (r["family"], r["bpp"]))
