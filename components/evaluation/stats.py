"""Confidence intervals for the evaluation: a bootstrap over test speakers.

The test faces of one speaker are not independent samples (several frames of a clip,
several clips of a speaker share a face and a voice), so resampling faces would make a
result look surer than it is. :func:`speaker_bootstrap` resamples whole speakers with
replacement, each drawn speaker bringing all of its samples, and reads the 95 % interval
of the mean from the percentiles of the resampled means. A paired comparison (fused
minus image-only on the same faces) is the same call on the per-sample differences.

:func:`put_estimate` writes an estimate into the flat metrics, :func:`with_interval` and
:func:`claim_verdict` write it and a claim's verdict, the same way in every evaluation.

Pure numpy and seeded: the same values, speakers, resample count and seed give the same
interval. Unknown values (NaN: a metric that does not apply to a sample) are left out, and
a speaker with no known value does not take part.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Estimate:
    """A mean over samples with its bootstrap percentile interval ``[lo, hi]``."""

    mean: float
    lo: float
    hi: float

    def excludes_zero(self) -> bool:
        return self.lo > 0 or self.hi < 0


def speaker_draws(n_speakers: int, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, n_speakers) speaker indices: each row one resample, as many speakers drawn
    with replacement as there are (every bootstrap over speakers here draws this way)."""
    return np.random.default_rng(seed).integers(0, n_speakers, size=(n_resamples, n_speakers))


def speaker_bootstrap(values: np.ndarray, speakers: np.ndarray, n_resamples: int, seed: int,
                      level: float = 0.95) -> Estimate | None:
    """The mean of ``values`` over samples and its ``level`` percentile interval from
    ``n_resamples`` resamples of the speakers (``speakers[i]`` is sample i's speaker).

    None when no value is known. With one speaker the interval is the mean itself
    (nothing to resample: the data cannot say how another speaker would score).
    """
    values, speakers = np.asarray(values, np.float64), np.asarray(speakers)
    if values.shape != speakers.shape:
        raise ValueError(f"values {values.shape} and speakers {speakers.shape} differ in shape")
    known = ~np.isnan(values)
    if not known.any():
        return None
    _, group = np.unique(speakers[known], return_inverse=True)
    sums = np.bincount(group, weights=values[known])
    counts = np.bincount(group).astype(np.float64)
    mean = float(sums.sum() / counts.sum())
    n_groups = len(sums)
    drawn = speaker_draws(n_groups, n_resamples, seed)
    offsets = (np.arange(n_resamples)[:, None] * n_groups + drawn).ravel()
    times = np.bincount(offsets, minlength=n_resamples * n_groups).reshape(n_resamples, n_groups)
    means = (times @ sums) / (times @ counts)
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return Estimate(mean, float(lo), float(hi))


# --------------------------------------------------------------------------- reporting (both papers' results.md)


def put_estimate(out: dict[str, float], key: str, estimate: Estimate | None) -> None:
    """Write ``estimate`` into flat metrics as ``key`` with ``key_lo`` / ``key_hi`` (rounded to 6 places).

    Nothing is written for no estimate or an unknown (non-finite) mean, and no bounds where
    they are unknown (a ratio outside a curve's range on too many resamples): a metrics file
    never holds a NaN, which JSON does not have.
    """
    if estimate is None or not math.isfinite(estimate.mean):
        return
    out[key] = round(estimate.mean, 6)
    if math.isfinite(estimate.lo) and math.isfinite(estimate.hi):
        out |= {f"{key}_lo": round(estimate.lo, 6), f"{key}_hi": round(estimate.hi, 6)}


def with_interval(metrics: Mapping[str, float], key: str, *, signed: bool = False, missing: str = "n/a",
                  digits: int = 3) -> str:
    """``metrics[key]`` with its interval (``key_lo``, ``key_hi``) as ``v [lo, hi]`` (``digits`` decimals)."""
    if key not in metrics:
        return missing
    form = f"{'+' if signed else ''}.{digits}f"
    text = f"{metrics[key]:{form}}"
    if f"{key}_lo" in metrics:
        text += f" [{metrics[f'{key}_lo']:{form}}, {metrics[f'{key}_hi']:{form}}]"
    return text


def claim_verdict(lo: float, hi: float, higher_is_better: bool, threshold: float = 0.0) -> str:
    """Whether a claim "the value is on the good side of ``threshold``" holds: its whole
    95 % interval must be there."""
    good, bad = (lo > threshold, hi < threshold) if higher_is_better else (hi < threshold, lo > threshold)
    return "**holds**" if good else "no: the opposite holds" if bad else f"no: the interval contains {threshold:g}"
