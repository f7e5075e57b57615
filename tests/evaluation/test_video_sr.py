"""The video paper's evaluation on tiny shards and an untrained toy model: what it writes, and its rules."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from components.config import parse_params
from components.data.shards import write_shards
from components.evaluation import video_clips, video_sr
from components.evaluation.face_id import FaceIdentity
from components.evaluation.fid import load_inception
from components.evaluation.landmarks import FaceLandmarks
from components.media.probe import probe
from components.models.perceptual import PerceptualLoss
from components.models.talking import build_models, get_preset
from components.models.talking.upsampler import VideoUpsampler
from tests._fixtures import make_upstream
from tests.training.test_talking import TINY

EVAL = {"frames_per_clip": 8, "fid_frames_per_clip": 2, "detail_frames_per_clip": 1, "stlpips_size": 32, "batch_size": 8,
        "workers": 1, "max_offset": 3, "fid_bootstrap": 10,
        "kid_subsets": 5, "kid_subset_size": 4, "videos": 1, "grid_samples": 3, "seed": 0, "bootstrap_samples": 100,
        "out_dir": "unused"}


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 speakers x 2 videos of 30-32 frames: 2 unseen speakers (4 clips), 4 seen ones with a held-out video."""
    up = make_upstream(tmp_path_factory.mktemp("up"), n_speakers=6, videos_per_speaker=2, clips_per_video=1,
                       unknown_videos=0, crop_size=48)
    params = parse_params({"common": {"data_dir": str(up.data_dir), "workers": 1},
                           "shards": {"rows_per_shard": 4, "row_group_size": 1, "unseen_speaker_fraction": 0.34,
                                      "seen_test_fraction": 0.5}})
    write_shards(params, up.raw, up.faces, up.audio, up.data_dir / "shards", progress=False)
    return up.data_dir / "shards"


@pytest.fixture(scope="module")
def model() -> VideoUpsampler:
    cfg = get_preset("small", **TINY)
    return VideoUpsampler(cfg, build_models(cfg, seed=3))


@pytest.fixture(scope="module")
def evaluated(shards: Path, model: VideoUpsampler, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("results")
    cfg = parse_params({"evaluate_video": EVAL}).evaluate_video
    scorers = video_sr.Scorers(PerceptualLoss(), FaceIdentity(), FaceLandmarks(), load_inception())
    metrics = video_sr.evaluate(model, scorers, shards, out, cfg, photo_rule="other_clip", fps=25)
    return out, metrics


def test_the_stage_writes_every_method_and_metric_with_intervals(evaluated):
    out, metrics = evaluated
    assert json.loads((out / "metrics.json").read_text()) == metrics
    for split in ("seen", "unseen"):
        assert metrics[f"{split}.n_speakers"] >= 2
        assert f"{split}.truth.lse_c" in metrics
        for method in video_sr.METHODS:
            for metric in ("psnr", "ssim", "stlpips", "lse_c", "lse_d", "id_dist_dlib"):
                key = f"{split}.{method}.{metric}"
                assert metrics[f"{key}_lo"] <= metrics[key] <= metrics[f"{key}_hi"], key
        for method in video_sr.FID_METHODS:
            assert metrics[f"{split}.{method}.fid"] > 0
        assert f"{split}.fid_ratio.bicubic_over_full" in metrics
        assert f"{split}.other_audio_follows.lse_c" in metrics
        assert f"{split}.truth_minus_bicubic.lse_c" in metrics  # the expert's own check
        assert metrics[f"{split}.truth_minus_bicubic.lse_c"] == pytest.approx(
            metrics[f"{split}.truth.lse_c"] - metrics[f"{split}.bicubic.lse_c"], abs=1e-5)
        assert (out / f"grid_{split}.png").stat().st_size > 0
    text = (out / "results.md").read_text()
    assert "## Claims" in text and "FID: bicubic / full >= 8" in text and "earshot expert" in text
    assert "instrument: the expert rates the true lips" in text
    videos = sorted((out / "videos").glob("*.mp4"))
    assert len(videos) == 2  # one per split
    info = probe(videos[0])
    assert info.width == 32 * 5 and info.height == 32 and info.has_audio  # 8x8 | bicubic | stage 1 | ours | truth
    assert info.duration_s == pytest.approx(30 / 25, abs=0.2)


def test_clip_workers_give_the_in_process_numbers(shards: Path, tmp_path: Path):
    """The stage's default: two forked processes score the clips (the model loaded in each from its file), the
    stage process gathers them in clip order; every number as in one process (thread counts may move the last
    float digits), the same figures written."""
    from components.models.talking import load_video_sr
    from components.orchestration.executors import default_executor
    from tests.inference.test_video_sr import save_video_model

    path = save_video_model(tmp_path / "model.pt", get_preset("small", **TINY))
    model = load_video_sr(path, "cpu")
    scorers = video_sr.Scorers(PerceptualLoss(), FaceIdentity(), FaceLandmarks(), load_inception())
    cfg = parse_params({"evaluate_video": EVAL | {"workers": 2}}).evaluate_video
    alone = video_sr.evaluate(model, scorers, shards, tmp_path / "alone", cfg, photo_rule="other_clip", fps=25)
    with default_executor(2, warmup=functools.partial(video_sr.load_worker, str(path), "cpu")) as pool:
        pooled = video_sr.evaluate(model, scorers, shards, tmp_path / "pooled", cfg, photo_rule="other_clip", fps=25,
                                   pool=pool)
    assert pooled.keys() == alone.keys()
    for key, value in alone.items():
        assert pooled[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
    assert sorted(p.name for p in (tmp_path / "pooled" / "videos").iterdir()) == \
        sorted(p.name for p in (tmp_path / "alone" / "videos").iterdir())


def test_another_clips_audio_changes_the_output_and_the_own_audio_does_not(shards: Path, model: VideoUpsampler):
    clips = video_clips.read_clips(shards, "test_unseen", 32, 8, 8)
    video_clips.assign_photos(clips, {}, "other_clip")
    a, b = clips[0], next(c for c in clips if c.speaker != clips[0].speaker)
    assert not torch.equal(a.mel, b.mel)
    mixed = video_sr.method_outputs(model, a, b)
    assert not torch.allclose(mixed["other_audio"], mixed["full"])
    assert torch.equal(video_sr.method_outputs(model, a, a)["other_audio"], mixed["full"])


def test_photos_come_from_another_clip_of_the_speaker_then_training_then_the_clip_itself(shards: Path):
    unseen = video_clips.read_clips(shards, "test_unseen", 32, 8, 8)
    sources = video_clips.assign_photos(unseen, {}, "other_clip")
    assert sources == ["other_clip"] * len(unseen)
    for clip in unseen:  # the photo is the middle frame of the speaker's other clip, never a frame of its own
        other = next(c for c in unseen if c.speaker == clip.speaker and c.key != clip.key)
        assert torch.equal(clip.photo, other.middle)
    seen = video_clips.read_clips(shards, "test_seen", 32, 8, 8)
    train = video_clips.training_photos(shards, 32, {c.speaker for c in seen})
    assert video_clips.assign_photos(seen, train, "other_clip") == ["train_clip"] * len(seen)
    assert all(torch.equal(c.photo, train[c.speaker][0]) for c in seen)
    assert video_clips.assign_photos(seen, {}, "other_clip") == ["same_clip"] * len(seen)
    assert video_clips.assign_photos(unseen, {}, "same_clip") == ["same_clip"] * len(unseen)
    assert all(torch.equal(c.photo, c.first) for c in unseen)


def test_other_audio_partners_are_other_speakers():
    speakers = ["a", "a", "b", "c", "c", "c"]
    partners = video_clips.other_audio_partners(speakers, seed=1)
    assert all(speakers[p] != s for s, p in zip(speakers, partners))
    assert list(video_clips.other_audio_partners(["a", "a"], seed=0)) == [-1, -1]


def test_fid_intervals_and_the_paired_ratio():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(60, 8))
    features = {"truth": truth, "bicubic": truth + 2.0, "stage1": truth + 1.0, "no_audio": truth + 1.0,
                "full": truth + 0.5}
    speakers = np.repeat(np.arange(20), 3)
    cfg = parse_params({"evaluate_video": EVAL | {"fid_bootstrap": 50, "kid_subset_size": 10}}).evaluate_video
    out = video_sr.set_metrics(features, speakers, cfg, "unseen")
    # a pure shift d adds |d|^2 = 8 d^2 to the FID: 32 vs 2
    assert out["unseen.bicubic.fid"] == pytest.approx(32.0, rel=1e-6)
    assert out["unseen.full.fid"] == pytest.approx(2.0, rel=1e-6)
    assert out["unseen.fid_ratio.bicubic_over_full"] == pytest.approx(16.0, rel=1e-6)
    assert out["unseen.full_minus_stage1.fid"] == pytest.approx(-6.0, rel=1e-6)
    assert out["unseen.full_minus_stage1.fid_hi"] < 0
    for key in ("bicubic.fid", "full.kid"):
        assert out[f"unseen.{key}_lo"] <= out[f"unseen.{key}_hi"]


def test_set_metric_intervals_are_centred_on_the_estimate_despite_the_resamples_bias():
    est = video_sr.shifted_interval(10.0, [11.0, 12.0, 13.0, 14.0, 15.0])  # resamples biased upwards by 3
    assert est.mean == 10.0
    assert est.lo == pytest.approx(np.percentile([11, 12, 13, 14, 15], 2.5) - 3.0)
    assert est.hi == pytest.approx(np.percentile([11, 12, 13, 14, 15], 97.5) - 3.0)
    assert est.lo < est.mean < est.hi
