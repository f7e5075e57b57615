"""The rate-distortion analysis: fronts, bits at equal quality, BD-rates, speaker intervals, the table and the chart."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from components.errors import EarshotError
from components.evaluation.rd import (
    LOWER_IS_BETTER,
    PointValues,
    bd_rate,
    bpp_at,
    bpp_ratio,
    curve,
    curve_rows,
    front,
    ratio_bound,
    ratio_interval,
    speaker_resamples,
)
from components.figures.plots import rd_plot

RUNGS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32]


def ladder_quality(bpp: float | np.ndarray) -> float | np.ndarray:
    """A baseline's ST-LPIPS at ``bpp``: 0.1 better per doubling of the rate (linear in log bpp)."""
    return 0.6 - 0.1 * np.log2(np.asarray(bpp) / 0.01)


# --------------------------------------------------------------------------- front


def test_front_drops_points_another_beats_when_lower_is_better():
    points = [(3, 0.4), (1, 0.5), (2, 0.3), (4, 0.2), (2, 0.35), (2, 0.3), (5, 0.2), (6, math.nan)]
    assert front(points, lower_is_better=True) == [(1, 0.5), (2, 0.3), (4, 0.2)]


def test_front_drops_points_another_beats_when_higher_is_better():
    points = [(3, 32.0), (1, 30.0), (2, 31.0), (4, 35.0), (2, 33.0), (1, 30.0), (5, 34.0)]
    assert front(points, lower_is_better=False) == [(1, 30.0), (2, 33.0), (4, 35.0)]


# --------------------------------------------------------------------------- bits at equal quality


def test_bpp_at_interpolates_in_log_bpp_and_never_extrapolates():
    ladder = [(0.01, 0.4), (0.04, 0.2)]
    assert bpp_at(ladder, 0.3, True) == pytest.approx(0.02)  # halfway in log(bpp): sqrt(0.01 * 0.04)
    assert bpp_at(ladder, 0.35, True) == pytest.approx(0.01 * 4 ** 0.25)  # a quarter: not 0.0175 (linear)
    assert bpp_at(ladder, 0.4, True) == pytest.approx(0.01) and bpp_at(ladder, 0.2, True) == pytest.approx(0.04)
    assert math.isnan(bpp_at(ladder, 0.45, True)) and math.isnan(bpp_at(ladder, 0.15, True))
    assert bpp_at([(0.01, 30.0), (0.04, 34.0)], 32.0, False) == pytest.approx(0.02)
    assert math.isnan(bpp_at([(0.01, 30.0), (0.04, 34.0)], 35.0, False))
    assert math.isnan(bpp_at([], 0.3, True))


def test_a_baseline_needing_twice_the_bits_at_every_quality_has_ratio_two():
    baseline = front([(b, ladder_quality(b / 2)) for b in RUNGS], True)  # at b/2 earshot reaches this quality
    for bpp in (0.005, 0.012, 0.03, 0.1, 0.16):
        assert bpp_ratio(baseline, bpp, ladder_quality(bpp), True) == pytest.approx(2.0)
    assert math.isnan(bpp_ratio(baseline, 0.001, ladder_quality(0.001), True))


def test_ratio_bound_outside_and_inside_the_baseline_range():
    baseline = [(0.02, 0.3), (0.08, 0.1)]
    assert ratio_bound(baseline, 0.01, 0.35, True) == ("at_most", pytest.approx(2.0))
    assert ratio_bound(baseline, 0.01, 0.05, True) == ("at_least", pytest.approx(8.0))
    assert ratio_bound(baseline, 0.01, 0.2, True) == ("equal", pytest.approx(4.0))
    assert ratio_bound([(0.02, 30.0), (0.08, 36.0)], 0.01, 28.0, False) == ("at_most", pytest.approx(2.0))
    assert ratio_bound([(0.02, 30.0), (0.08, 36.0)], 0.01, 37.0, False) == ("at_least", pytest.approx(8.0))
    with pytest.raises(EarshotError, match="baseline_front"):
        ratio_bound([], 0.01, 0.2, True)


# --------------------------------------------------------------------------- BD-rate


@pytest.mark.parametrize("method", ["akima", "pchip"])
def test_bd_rate_of_a_curve_against_itself_and_at_half_the_rate(method):
    anchor = [(b, float(ladder_quality(b)) + 0.01 * math.sin(i)) for i, b in enumerate(RUNGS)]
    assert bd_rate(anchor, anchor, True, method) == pytest.approx(0.0, abs=1e-9)
    half = [(b / 2, q) for b, q in anchor]
    assert bd_rate(anchor, half, True, method) == pytest.approx(-50.0)
    assert bd_rate(half, anchor, True, method) == pytest.approx(100.0)
    psnr = [(b, 30.0 + 3 * math.log2(b / 0.01)) for b in RUNGS]
    assert bd_rate(psnr, [(b / 2, q) for b, q in psnr], False, method) == pytest.approx(-50.0)


def test_bd_rate_is_nan_without_warning_on_few_points_or_little_overlap():
    anchor = [(b, float(ladder_quality(b))) for b in RUNGS]  # quality 0.1 .. 0.6
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spread = [anchor[0], anchor[2], anchor[-1]]  # three points over the whole range
        assert math.isnan(bd_rate(spread, anchor, True)) and math.isnan(bd_rate(anchor, spread, True))
        assert bd_rate(sorted(spread + [anchor[3]]), anchor, True) == pytest.approx(0.0, abs=1.0)  # four: enough
        assert math.isnan(bd_rate(anchor, [(b, q + 1.0) for b, q in anchor], True))  # disjoint
        assert math.isnan(bd_rate(anchor, [(b, q + 0.2) for b, q in anchor], True))  # overlap 0.3 / 0.7
        assert math.isfinite(bd_rate(anchor, [(b, q + 0.05) for b, q in anchor], True))  # overlap 0.45 / 0.55
    with pytest.raises(EarshotError, match="method"):
        bd_rate(anchor, anchor, True, "cubic")


# --------------------------------------------------------------------------- per-clip values to curves


def synthetic_split(n_speakers: int, clips: int = 3, earshot_rung: float = 0.04, seed: int = 0
                    ) -> tuple[list[PointValues], np.ndarray]:
    """A baseline ladder and one earshot point at 0.01 bpp with the ladder's quality at
    ``earshot_rung`` (ratio ~ earshot_rung / 0.01), each speaker with its own difficulty
    and its own luck with earshot."""
    rng = np.random.default_rng(seed)
    n = n_speakers * clips
    speakers = np.repeat([f"s{i}" for i in range(n_speakers)], clips)
    difficulty = np.repeat(rng.normal(scale=0.03, size=n_speakers), clips)
    luck = np.repeat(rng.normal(scale=0.03, size=n_speakers), clips)
    points = [PointValues("h264", f"h264 256px r{b}", b * rng.uniform(0.9, 1.1, n),
                          {"stlpips": ladder_quality(b) + difficulty + rng.normal(scale=0.01, size=n)})
              for b in RUNGS]
    points.append(PointValues("earshot", "earshot default", 0.01 * rng.uniform(0.9, 1.1, n),
                              {"stlpips": ladder_quality(earshot_rung) + difficulty + luck
                               + rng.normal(scale=0.01, size=n)}))
    return points, speakers


def test_curve_means_per_point_sorted_by_bpp_over_the_chosen_clips():
    points = [PointValues("h264", "b", np.array([0.4, 0.2]), {"psnr": np.array([30.0, np.nan])}),
              PointValues("h264", "a", np.array([0.1, 0.3]), {"psnr": np.array([20.0, 22.0])}),
              PointValues("earshot", "e", np.array([0.01, 0.01]), {"psnr": np.array([1.0, 1.0])})]
    assert curve(points, "h264", "psnr") == [pytest.approx((0.2, 21.0)), pytest.approx((0.3, 30.0))]
    assert curve(points, "h264", "psnr", rows=np.array([1, 1, 0])) == [
        pytest.approx((0.7 / 3, 64.0 / 3)), pytest.approx((0.8 / 3, 30.0))]
    with pytest.raises(EarshotError, match="av1"):
        curve(points, "av1", "psnr")
    with pytest.raises(EarshotError, match="ssim"):
        curve(points, "h264", "ssim")
    with pytest.raises(EarshotError, match="quality"):
        PointValues("h264", "c", np.zeros(2), {"psnr": np.zeros(3)})


def test_speaker_resamples_draw_whole_speakers():
    speakers = np.array(["b", "a", "b", "c", "a", "b"])
    resamples = list(speaker_resamples(speakers, 50, seed=0))
    for rows in resamples:
        drawn = speakers[rows]
        for name in ("a", "b", "c"):
            clips = np.flatnonzero(speakers == name)
            times = int((drawn == name).sum()) // len(clips)
            assert all((rows == i).sum() == times for i in clips)  # each draw brings all its clips
    assert any(len(np.unique(speakers[rows])) < 3 for rows in resamples)  # drawn with replacement
    assert all(np.array_equal(a, b) for a, b in zip(resamples, speaker_resamples(speakers, 50, seed=0)))


def test_ratio_interval_contains_the_estimate_is_seeded_and_narrows_with_speakers():
    points, speakers = synthetic_split(12)
    est = ratio_interval(points, speakers, "h264", "earshot default", "stlpips", 400, seed=1)
    whole = front(curve(points, "h264", "stlpips"), True)
    bpp, quality = curve(points, "earshot", "stlpips")[0]
    assert est.mean == pytest.approx(bpp_ratio(whole, bpp, quality, True))
    assert 2.5 < est.mean < 6.0 and est.lo < est.mean < est.hi
    assert est == ratio_interval(points, speakers, "h264", "earshot default", "stlpips", 400, seed=1)
    assert est != ratio_interval(points, speakers, "h264", "earshot default", "stlpips", 400, seed=2)
    many = ratio_interval(*synthetic_split(120), "h264", "earshot default", "stlpips", 400, seed=1)
    assert many.hi - many.lo < 0.6 * (est.hi - est.lo)


def test_ratio_interval_is_nan_when_the_ratio_is_often_undefined_and_flat_for_one_speaker():
    # near the baseline's best quality: the ratio is defined on 85.5 % of these resamples (on 97 % a little lower)
    points, speakers = synthetic_split(12, earshot_rung=0.28)
    edge = ratio_interval(points, speakers, "h264", "earshot default", "stlpips", 200, seed=0)
    assert math.isfinite(edge.mean) and math.isnan(edge.lo) and math.isnan(edge.hi)
    inside = ratio_interval(*synthetic_split(12, earshot_rung=0.27), "h264", "earshot default", "stlpips", 200, 0)
    assert inside.lo < inside.mean < inside.hi
    alone = ratio_interval(*synthetic_split(1), "h264", "earshot default", "stlpips", 50, seed=0)
    assert alone.lo == pytest.approx(alone.mean) and alone.hi == pytest.approx(alone.mean)
    with pytest.raises(EarshotError, match="earshot best"):
        ratio_interval(points, speakers, "h264", "earshot best", "stlpips", 10, seed=0)
    with pytest.raises(EarshotError, match="speakers"):
        ratio_interval(points, speakers[:-1], "h264", "earshot default", "stlpips", 10, seed=0)
    assert LOWER_IS_BETTER["stlpips"] and not LOWER_IS_BETTER["psnr"]


def test_curve_rows_flat_columns_sorted_by_family_then_bpp():
    points = [PointValues("h264", "h264 r2", np.array([0.2, 0.4]), {"stlpips": np.array([0.1, 0.3]),
                                                                     "psnr": np.array([30.0, np.nan])}),
              PointValues("h264", "h264 r1", np.array([0.1, 0.1]), {"stlpips": np.array([0.4, 0.4]),
                                                                     "psnr": np.array([25.0, 27.0])}),
              PointValues("earshot", "e", np.array([0.01, 0.03]), {"stlpips": np.array([0.2, 0.2])})]
    rows = curve_rows(points, "unseen")
    assert [r["name"] for r in rows] == ["e", "h264 r1", "h264 r2"]
    assert all(list(r) == ["split", "family", "name", "bpp", "stlpips", "psnr"] for r in rows)
    assert rows[2] == {"split": "unseen", "family": "h264", "name": "h264 r2", "bpp": pytest.approx(0.3),
                       "stlpips": pytest.approx(0.2), "psnr": pytest.approx(30.0)}
    assert rows[0]["bpp"] == pytest.approx(0.02) and math.isnan(rows[0]["psnr"])


def test_rd_plot_writes_a_png(tmp_path):
    curves = {"h264": [(b, float(ladder_quality(b))) for b in RUNGS], "av1": [],
              "earshot": [(0.005, 0.5), (0.01, 0.4)]}
    path = rd_plot(tmp_path / "rd" / "stlpips.png", curves, metric="stlpips", title="unseen speakers",
                   lower_is_better=True, highlight=(0.01, 0.4))
    assert path == tmp_path / "rd" / "stlpips.png"
    assert path.stat().st_size > 1000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
