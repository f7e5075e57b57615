"""LSE-D / LSE-C on synthetic embeddings whose right offset is known."""

from __future__ import annotations

import numpy as np
import pytest

from components.evaluation.lip_sync import shifted_audio, sync_scores


def synced_clip(n: int, dim: int, true_offset: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Audio embeddings per window and video embeddings that match audio window i + true_offset."""
    rng = np.random.default_rng(seed)
    audio = rng.normal(size=(n, dim))
    video = rng.normal(size=(n, dim))  # windows whose match lies outside the clip stay random
    inside = np.arange(max(0, -true_offset), min(n, n - true_offset))
    video[inside] = audio[inside + true_offset] + noise * rng.normal(size=(len(inside), dim))
    return video, audio


def test_hand_computed_profile_skips_windows_without_audio():
    video, audio = np.array([[0.0], [1.0]]), np.array([[0.0], [1.0]])
    scores = sync_scores(video, shifted_audio(audio, 1), 1, l2_normalise=False)
    # k=-1: only window 1 has audio (audio[0]): |1 - 0| = 1; k=0: 0; k=+1: only window 0 (audio[1]): 1
    np.testing.assert_allclose(scores.profile, [1.0, 0.0, 1.0])
    np.testing.assert_array_equal(scores.offsets, [-1, 0, 1])
    assert (scores.lse_d, scores.lse_c, scores.best_offset) == (0.0, 1.0, 0)


def test_shifted_audio_puts_window_i_plus_k_at_offset_k():
    audio = np.arange(5, dtype=float)[:, None]
    stack = shifted_audio(audio, 2)
    np.testing.assert_array_equal(stack[2 + 2, :, 0], [2, 3, 4, np.nan, np.nan])  # k = +2
    np.testing.assert_array_equal(stack[2 - 1, :, 0], [np.nan, 0, 1, 2, 3])  # k = -1
    assert np.isnan(shifted_audio(audio, 6)[0]).all()  # k = -6: no window of a 5-window clip


@pytest.mark.parametrize("true_offset", [-4, 0, 3])
@pytest.mark.parametrize("l2_normalise", [False, True])
def test_finds_the_known_offset_with_a_peaked_profile(true_offset: int, l2_normalise: bool):
    video, audio = synced_clip(n=60, dim=16, true_offset=true_offset, noise=0.3, seed=1)
    scores = sync_scores(video, shifted_audio(audio, 7), 7, l2_normalise=l2_normalise)
    assert scores.best_offset == true_offset
    others = np.delete(scores.profile, true_offset + 7)
    assert scores.lse_c > 0.3 * np.median(others)  # a clear dip at the right offset
    assert scores.lse_d == pytest.approx(scores.profile.min())
    assert scores.lse_c == pytest.approx(np.median(scores.profile) - scores.profile.min())


def test_unrelated_embeddings_have_confidence_near_zero():
    rng = np.random.default_rng(2)
    video, audio = rng.normal(size=(300, 32)), rng.normal(size=(300, 32))
    scores = sync_scores(video, shifted_audio(audio, 15), 15, l2_normalise=True)
    assert 0 <= scores.lse_c < 0.02 * scores.lse_d


def test_a_callable_gives_the_same_scores_as_the_stack():
    video, audio = synced_clip(n=30, dim=8, true_offset=2, noise=0.2, seed=4)
    stack = shifted_audio(audio, 5)
    from_stack = sync_scores(video, stack, 5, l2_normalise=False)
    from_callable = sync_scores(video, lambda k: stack[k + 5], 5, l2_normalise=False)
    np.testing.assert_allclose(from_callable.profile, from_stack.profile)
    assert from_callable.best_offset == from_stack.best_offset == 2


def test_l2_normalisation_ignores_embedding_scale():
    video, audio = synced_clip(n=30, dim=8, true_offset=1, noise=0.2, seed=5)
    base = sync_scores(video, shifted_audio(audio, 4), 4, l2_normalise=True)
    scaled = sync_scores(video, shifted_audio(5.0 * audio, 4), 4, l2_normalise=True)
    raw = sync_scores(video, shifted_audio(5.0 * audio, 4), 4, l2_normalise=False)
    np.testing.assert_allclose(scaled.profile, base.profile)
    assert base.profile.max() <= 2.0  # unit vectors are at most 2 apart
    assert raw.lse_d > 2 * base.lse_d


def test_mismatched_shapes_are_refused():
    video, audio = synced_clip(n=10, dim=4, true_offset=0, noise=0.1, seed=6)
    with pytest.raises(ValueError, match="do not match"):
        sync_scores(video, shifted_audio(audio, 3), 2, l2_normalise=False)
    with pytest.raises(ValueError, match="N >= 1"):
        sync_scores(np.zeros((0, 4)), np.zeros((3, 0, 4)), 1, l2_normalise=False)
