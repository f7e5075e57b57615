"""The speaker bootstrap: seeded, honest about speakers, right about known effects."""

from __future__ import annotations

import numpy as np
import pytest

from components.evaluation.stats import Estimate, speaker_bootstrap


def speakers_with(values_per_speaker: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    values = np.concatenate(values_per_speaker)
    speakers = np.concatenate([[f"s{i}"] * len(v) for i, v in enumerate(values_per_speaker)])
    return values, speakers


def test_the_interval_is_seeded_and_brackets_the_mean():
    rng = np.random.default_rng(0)
    values, speakers = speakers_with([rng.normal(size=3) for _ in range(20)])
    a = speaker_bootstrap(values, speakers, 500, seed=1)
    assert a == speaker_bootstrap(values, speakers, 500, seed=1)
    assert a != speaker_bootstrap(values, speakers, 500, seed=2)
    assert a.lo < a.mean < a.hi and a.mean == pytest.approx(values.mean())


def test_a_null_effect_contains_zero_and_a_strong_one_excludes_it():
    rng = np.random.default_rng(3)
    noise = [rng.normal(scale=1.0, size=4) for _ in range(40)]
    null = speaker_bootstrap(*speakers_with([n - n.mean() for n in noise]), 1000, seed=0)
    assert null.lo < 0 < null.hi and not null.excludes_zero()
    strong = speaker_bootstrap(*speakers_with([n + 1.0 for n in noise]), 1000, seed=0)
    assert strong.lo > 0 and strong.excludes_zero()


def test_coverage_of_the_true_mean_is_near_95_percent():
    rng = np.random.default_rng(7)
    covered = 0
    for trial in range(200):
        speaker_means = rng.normal(size=30)  # the true mean is 0
        values, speakers = speakers_with([m + rng.normal(scale=0.5, size=3) for m in speaker_means])
        est = speaker_bootstrap(values, speakers, 400, seed=trial)
        covered += est.lo <= 0 <= est.hi
    assert 0.85 <= covered / 200 <= 0.99


def test_resampling_is_by_speaker_so_many_samples_of_one_speaker_do_not_shrink_the_interval():
    # each speaker has its own offset; more frames of the same speakers add no information about another speaker
    rng = np.random.default_rng(5)
    offsets = rng.normal(size=12)
    few = speaker_bootstrap(*speakers_with([np.full(2, o) for o in offsets]), 2000, seed=0)
    many = speaker_bootstrap(*speakers_with([np.full(200, o) for o in offsets]), 2000, seed=0)
    assert many.hi - many.lo == pytest.approx(few.hi - few.lo, rel=0.05)
    # a per-sample bootstrap would shrink by ~10x; the speaker bootstrap of 12 speakers stays wide
    assert many.hi - many.lo > 0.5


def test_unknown_values_and_lone_speakers():
    nan = np.nan
    assert speaker_bootstrap(np.array([nan, nan]), np.array(["a", "b"]), 100, seed=0) is None
    est = speaker_bootstrap(np.array([1.0, nan, 3.0]), np.array(["a", "b", "a"]), 100, seed=0)
    assert est.mean == est.lo == est.hi == 2.0  # speaker b has nothing known: one speaker, nothing to resample
    with pytest.raises(ValueError, match="differ in shape"):
        speaker_bootstrap(np.zeros(3), np.array(["a"]), 10, seed=0)


def test_an_estimate_goes_into_the_metrics_with_its_bounds_and_never_as_nan():
    from components.evaluation.stats import put_estimate

    out: dict[str, float] = {}
    put_estimate(out, "a", Estimate(0.1234567, 0.1, 0.2))
    put_estimate(out, "b", Estimate(1.0, float("nan"), float("nan")))
    put_estimate(out, "c", Estimate(float("nan"), 0.0, 1.0))
    put_estimate(out, "d", None)
    assert out == {"a": 0.123457, "a_lo": 0.1, "a_hi": 0.2, "b": 1.0}
