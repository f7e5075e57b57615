"""Confidence intervals for the evaluation: a bootstrap over test speakers.

The test faces of one speaker are not independent samples (several frames of a clip,
several clips of a speaker share a face and a voice), so resampling faces would make a
result look surer than it is. :func:`speaker_bootstrap` resamples whole speakers with
replacement, each drawn speaker bringing all of its samples, and reads the 95 % interval
of the mean from the percentiles of the resampled means. A paired comparison (fused
minus image-only on the same faces) is the same call on the per-sample differences.

Pure numpy and seeded: the same values, speakers, resample count and seed give the same
interval. Unknown values (NaN: a metric that does not apply to a sample) are left out, and
a speaker with no known value does not take part.
"""

from __future__ import annotations

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
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, n_groups, size=(n_resamples, n_groups))
    offsets = (np.arange(n_resamples)[:, None] * n_groups + drawn).ravel()
    times = np.bincount(offsets, minlength=n_resamples * n_groups).reshape(n_resamples, n_groups)
    means = (times @ sums) / (times @ counts)
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return Estimate(mean, float(lo), float(hi))
