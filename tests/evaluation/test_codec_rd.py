"""The codec's rate-distortion stage (``evaluate_codec``) on tiny shards and an untrained toy
model: what it writes, how it counts bits, the points it measures, and its CLI entry."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from components.codec import streams
from components.codec.call import encode_call, low_res_frames
from components.codec.container import payload_sizes
from components.config import BaselineParams, load_params, parse_params
from components.data.features import resize
from components.errors import ConfigError
from components.evaluation import codec_rd
from components.evaluation.codec_report import evaluate, summarize
from components.evaluation.fid import load_inception
from components.figures.images import from_hwc, from_pixels, to_hwc
from components.models.perceptual import PerceptualLoss
from components.models.talking import MODEL_STAGE, get_preset
from components.models.talking.upsampler import VideoUpsampler, enlarge
from pipelines.codec.evaluate import ARTIFACTS
from pipelines.codec.evaluate import main as stage_main
from tests.conftest import ROOT
from tests.evaluation.test_video_sr import model, shards  # noqa: F401  (fixtures: tiny shards, untrained TINY model)
from tests.inference.test_video_sr import save_video_model
from tests.training.test_talking import TINY

EVAL = {"clips_per_split": 2, "frames_per_clip": 8, "fid_frames_per_clip": 1, "detail_frames_per_clip": 1,
        "stlpips_size": 32, "max_offset": 2, "operating_points": {"default": {}, "crf40": {"crf": 40}},
        "default_point": "default", "parallel_encodes": 1, "kid_subsets": 3, "kid_subset_size": 2,
        "bootstrap_samples": 100, "seed": 0, "out_dir": "unused"}
BASELINES = {"h264": BaselineParams(codec="h264", preset="medium", crfs=[20, 45], sizes=[32, 16]),
             "h265": BaselineParams(codec="hevc", preset="fast", crfs=[20, 45], sizes=[32, 16])}
FPS = 25
MODEL_ID = bytes(range(8))
PNG = b"\x89PNG\r\n\x1a\n"


def refuse_nan(name: str) -> float:
    raise AssertionError(f"metrics.json holds {name}")


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One torch thread: on two cores shared with other work, two threads wait on each other
    (the module's evaluation takes 8 s on one, 50-100 s on two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def params():
    return parse_params({"evaluate_codec": EVAL})


@pytest.fixture(scope="module")
def scoring(model: VideoUpsampler, params) -> codec_rd.Scoring:  # noqa: F811
    return codec_rd.Scoring(model, PerceptualLoss(), params.evaluate_codec)


@pytest.fixture(scope="module")
def evaluated(scoring: codec_rd.Scoring, shards: Path, params, tmp_path_factory: pytest.TempPathFactory):  # noqa: F811
    out = tmp_path_factory.mktemp("codec")
    points = codec_rd.earshot_points(params.evaluate_codec, params.codec)
    metrics = evaluate(scoring, load_inception(), shards, out, points, codec_rd.baseline_points(BASELINES), fps=FPS,
                       model_id=MODEL_ID, notes=["a note for the reader"])
    return out, metrics


@pytest.fixture(scope="module")
def one_clip(scoring: codec_rd.Scoring, shards: Path, params):  # noqa: F811
    """The first unseen test clip measured at every point (its grid kept), and every video stream
    the measurement encoded (its frames and bytes) by (codec, crf, side, pix_fmt): x264 and x265 can
    differ by a few bytes from one run to the next on a loaded machine, so the bits are checked
    against the streams the measurement itself made."""
    cfg = params.evaluate_codec
    clip = next(codec_rd.read_test_clips(shards, "test_unseen", 32, 8, 1, cfg.frames_per_clip))
    found, encoded = codec_rd.SplitMeasures(), {}
    real = streams.encode_video

    def recording(frames, codec, *, crf, pix_fmt="yuv420p", **kw):  # type: ignore[no-untyped-def]
        frames = list(frames)
        data, pictures = real(frames, codec, crf=crf, pix_fmt=pix_fmt, **kw)
        encoded[(codec, crf, frames[0].shape[0], pix_fmt)] = frames, data
        return data, pictures

    with pytest.MonkeyPatch.context() as patch, torch.inference_mode():
        patch.setattr(streams, "encode_video", recording)
        codec_rd.measure_clip(scoring, clip, codec_rd.earshot_points(cfg, params.codec),
                              codec_rd.baseline_points(BASELINES), fps=FPS, model_id=MODEL_ID, found=found,
                              keep_grid=True)
    return clip, found, encoded


def test_evaluate_writes_flat_metrics_for_both_splits_without_nan(evaluated):
    out, metrics = evaluated
    text = (out / "metrics.json").read_text()
    assert json.loads(text, parse_constant=refuse_nan) == metrics
    assert all(isinstance(v, (int, float)) for v in metrics.values())  # flat: no nesting
    for split in ("seen", "unseen"):
        assert metrics[f"{split}.n_speakers"] == 2
        for metric in ("bpp", "stlpips", "bpp_audio", "bpp_stream", "psnr", "ssim", "lse_c"):
            key = f"{split}.{metric}"
            assert metrics[f"{key}_lo"] <= metrics[key] <= metrics[f"{key}_hi"], key
        assert metrics[f"{split}.bpp_stream"] < metrics[f"{split}.bpp"] < metrics[f"{split}.bpp_audio"]
        assert f"{split}.ceiling.stlpips" in metrics and f"{split}.fid" in metrics
        for part in codec_rd.PAYLOADS:
            assert metrics[f"{split}.bytes.{part}"] > 0
        for family in BASELINES:
            assert sum(k in metrics for k in (f"{split}.bpp_ratio.{family}", f"{split}.bpp_ratio_at_most.{family}",
                                               f"{split}.bpp_ratio_at_least.{family}")) == 1, (split, family)


def test_curves_hold_one_row_per_point_and_split_and_the_ceiling(evaluated):
    out, _ = evaluated
    with (out / "curves.csv").open() as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert {"split", "family", "name", "bpp", "stlpips", "psnr", "ssim", "lse_c", "fid", "kid"} <= set(
        reader.fieldnames or ())
    points = [f"earshot {p}" for p in EVAL["operating_points"]] + [b.name for b in
                                                                   codec_rd.baseline_points(BASELINES)]
    for split in ("seen", "unseen"):
        names = [r["name"] for r in rows if r["split"] == split]
        assert sorted(names) == sorted([*points, codec_rd.CEILING])
    ceiling = next(r for r in rows if r["name"] == codec_rd.CEILING)
    assert ceiling["bpp"] == "" and float(ceiling["stlpips"]) >= 0 and ceiling["fid"] != ""
    assert all(float(r["bpp"]) > 0 for r in rows if r["name"] != codec_rd.CEILING)


def test_results_and_figures(evaluated):
    out, _ = evaluated
    text = (out / "results.md").read_text()
    for section in ("## At earshot's default operating point", "## Where earshot's bits go", "## Every point",
                    "## Notes"):
        assert section in text
    assert "- a note for the reader" in text and "vs h264" in text and "vs h265" in text
    for split in ("seen", "unseen"):
        for name in (f"rd_{split}_stlpips.png", f"rd_{split}_psnr.png", f"grid_{split}.png"):
            data = (out / name).read_bytes()
            assert data.startswith(PNG) and len(data) > 1000, name


def hand_measures(earshot: dict[str, float], baseline: dict[str, tuple[float, float, float]]) -> codec_rd.SplitMeasures:
    """Four clips of two speakers, every clip with the same values: earshot's default point, the
    ceiling, and h264 points given as name -> (bpp, ST-LPIPS, PSNR)."""
    found = codec_rd.SplitMeasures(speakers=["a", "a", "b", "b"], keys=["a/0", "a/1", "b/0", "b/1"])
    quality = {"ssim": 0.5, "lse_c": 1.0}
    for _ in found.keys:
        found.add("earshot default", codec_rd.EARSHOT, earshot | quality | {"bpp_audio": earshot["bpp"] + 0.01})
        found.add(codec_rd.CEILING, codec_rd.CEILING, {"stlpips": 0.1, "psnr": 30.0} | quality)
        for name, (bpp, lpips, db) in baseline.items():
            found.add(name, "h264", {"bpp": bpp, "stlpips": lpips, "psnr": db, "bpp_audio": bpp + 0.01} | quality)
    found.payload_bytes["default"] = {part: [10, 10, 20, 20] for part in codec_rd.PAYLOADS}
    return found


def test_the_ratio_at_equal_quality_reads_the_baselines_front_at_earshots_quality(params):
    sets = {name: {"fid": 1.0, "kid": 0.1} for name in ("earshot default", codec_rd.CEILING)}
    # h264 needs 0.04 bpp for ST-LPIPS 0.2 and 0.01 for 0.4: 0.02 at earshot's 0.3 (log-linear), twice earshot's
    inside = hand_measures({"bpp": 0.01, "bpp_stream": 0.005, "stlpips": 0.3, "psnr": 22.5},
                           {"h264 32px crf20": (0.04, 0.2, 30.0), "h264 32px crf40": (0.01, 0.4, 20.0)})
    metrics = summarize("unseen", inside, params.evaluate_codec, sets, ["h264"])
    assert metrics["unseen.bpp_ratio.h264"] == pytest.approx(2.0)
    assert metrics["unseen.bpp_ratio.h264_lo"] == metrics["unseen.bpp_ratio.h264_hi"] == pytest.approx(2.0)
    assert metrics["unseen.bpp_ratio_psnr.h264"] == pytest.approx(2 ** 0.5)  # PSNR 22.5: a quarter of the way
    assert metrics["unseen.bpp_ratio_stream.h264"] == pytest.approx(4.0)  # the photo left out: half the bits
    assert metrics["unseen.bytes.photo"] == 15.0 and metrics["unseen.n_speakers"] == 2
    assert not any(k.startswith("unseen.bpp_ratio_at_") for k in metrics)
    worse = hand_measures({"bpp": 0.01, "bpp_stream": 0.005, "stlpips": 0.6, "psnr": 15.0},
                          {"h264 32px crf20": (0.04, 0.2, 30.0), "h264 32px crf40": (0.02, 0.4, 20.0)})
    metrics = summarize("unseen", worse, params.evaluate_codec, sets, ["h264"])
    assert "unseen.bpp_ratio.h264" not in metrics
    assert metrics["unseen.bpp_ratio_at_most.h264"] == pytest.approx(2.0)  # worse than the cheapest, 0.02 bpp


def test_earshot_bits_are_the_file_but_its_audio_over_the_output_pixels(one_clip, params):
    clip, found, encoded = one_clip
    pixels = 32 * 32 * len(clip["pixels"])
    frames = list(clip["pixels"].permute(0, 2, 3, 1).numpy())
    for name, settings in codec_rd.earshot_points(params.evaluate_codec, params.codec).items():
        call = encode_call(low_res_frames(frames, 8), frames[0], clip["audio"].numpy(), fps=FPS, settings=settings,
                           model=MODEL_ID, out_size=32, sample_rate=int(clip["sample_rate"]))
        _, video = encoded[(settings.video_codec, settings.crf, 8 * settings.mosaic, settings.pix_fmt)]
        sizes = payload_sizes(call) | {"video": len(video)}
        assert {part: v[0] for part, v in found.payload_bytes[name].items()} == sizes  # the photo: the first frame
        values = found.values[f"earshot {name}"]
        assert values["bpp"][0] == pytest.approx(8 * (sizes["header"] + sizes["photo"] + sizes["video"]) / pixels)
        assert values["bpp_stream"][0] == pytest.approx(8 * (sizes["header"] + sizes["video"]) / pixels)
        assert values["bpp_audio"][0] - values["bpp"][0] == pytest.approx(8 * sizes["audio"] / pixels)
    bits = {p: found.values[f"earshot {p}"]["bpp"][0] for p in EVAL["operating_points"]}
    assert bits["crf40"] < bits["default"]  # the override reached the encoder


def test_baselines_count_their_stream_and_the_same_opus_audio(one_clip, params):
    clip, found, encoded = one_clip
    pixels = 32 * 32 * len(clip["pixels"])
    audio = streams.encode_audio(clip["audio"].numpy(), int(clip["sample_rate"]), params.codec.audio_kbps)
    for base in codec_rd.baseline_points(BASELINES):
        values = found.values[base.name]
        assert found.family[base.name] == base.family
        _, data = encoded[(base.codec, base.crf, base.size, "yuv420p")]
        assert values["bpp"][0] == pytest.approx(8 * len(data) / pixels)
        assert values["bpp_audio"][0] - values["bpp"][0] == pytest.approx(8 * len(audio) / pixels)


def test_a_baseline_at_a_smaller_side_is_decoded_and_enlarged_back(one_clip, params):
    clip, found, encoded = one_clip
    cfg = params.evaluate_codec
    base = next(b for b in codec_rd.baseline_points(BASELINES) if b.size == 16)
    start = (len(clip["pixels"]) - cfg.frames_per_clip) // 2
    frames, data = encoded[(base.codec, base.crf, 16, "yuv420p")]
    shrunk = to_hwc(resize(from_pixels(clip["pixels"]), 16))
    assert all(np.array_equal(a, b) for a, b in zip(frames, shrunk, strict=True))  # every frame, shrunk once
    decoded = streams.decode_video(data, base.codec)
    expected = enlarge(torch.stack([from_hwc(f) for f in decoded[start:start + cfg.frames_per_clip]]), 32)
    assert found.grid[base.name].shape == (3, 32, 32)
    assert torch.allclose(found.grid[base.name], expected[cfg.frames_per_clip // 2], atol=1e-6)
    assert all(f.shape[-2:] == (32, 32) for frames in found.fid_frames.values() for f in frames)


def test_a_higher_crf_costs_fewer_bits_and_no_better_psnr(one_clip):
    _, found, _ = one_clip
    for family in BASELINES:
        low, high = (found.values[f"{family} 32px crf{crf}"] for crf in (20, 45))
        assert high["bpp"][0] < low["bpp"][0], family
        assert high["psnr"][0] <= low["psnr"][0], family


def test_baseline_points_enumerate_families_sides_and_rates():
    points = codec_rd.baseline_points(BASELINES)
    assert [(p.family, p.codec, p.size, p.crf) for p in points] == [
        (family, b.codec, size, crf) for family, b in BASELINES.items() for size in b.sizes for crf in b.crfs]
    assert len(points) == 8 and len({p.name for p in points}) == 8
    assert points[0].name == "h264 32px crf20" and points[0].preset == "medium"


def test_earshot_points_are_the_codec_section_with_each_points_overrides():
    params = load_params(ROOT / "params.yaml", {"evaluate_codec.operating_points": {
        "default": {}, "crf30": {"crf": 30}, "avif": {"photo_format": "avif", "photo_quality": 30}}})
    points = codec_rd.earshot_points(params.evaluate_codec, params.codec)
    assert points["default"] == params.codec
    assert points["crf30"] == params.codec.model_copy(update={"crf": 30})
    assert points["avif"] == params.codec.model_copy(update={"photo_format": "avif", "photo_quality": 30})


def test_params_refuse_an_unknown_override_and_a_default_that_is_not_a_point():
    with pytest.raises(ConfigError, match=r"operating_points.*'fast'.*bogus_key not a codec param"):
        load_params(ROOT / "params.yaml",
                    {"evaluate_codec.operating_points": {"default": {}, "fast": {"bogus_key": 3}}})
    with pytest.raises(ConfigError, match=r"default_point 'nowhere' is not one of the operating points"):
        load_params(ROOT / "params.yaml", {"evaluate_codec.default_point": "nowhere"})


def test_params_refuse_an_override_value_the_codec_section_refuses():
    with pytest.raises(ConfigError, match=r"operating_points.*'bad'.*crf"):
        load_params(ROOT / "params.yaml", {"evaluate_codec.operating_points": {"default": {}, "bad": {"crf": 99}}})


def test_the_stage_entry_writes_its_results(shards: Path, tmp_path: Path):  # noqa: F811
    save_video_model(tmp_path / "models" / MODEL_STAGE / "model.pt", get_preset("small", **TINY))
    out = tmp_path / "results" / "codec"
    one_rate = "{codec: %s, preset: '%s', crfs: [%d], sizes: [32]}"
    baselines = "{h264: %s, h265: %s, av1: %s}" % (one_rate % ("h264", "medium", 30), one_rate % ("hevc", "fast", 30),
                                                   one_rate % ("av1", "8", 45))
    settings = {"common.data_dir": shards.parent, "tracking.enabled": "false", "talking.out_dir": tmp_path / "models",
                "talking.device": "cpu", "talking.threads": 1, "talking.num_workers": 0,
                "evaluate_codec.out_dir": out, "evaluate_codec.baselines": baselines,
                "evaluate_codec.operating_points": "{default: {}}",
                **{f"evaluate_codec.{k}": v for k, v in EVAL.items() if k not in ("operating_points", "out_dir")}}
    stage_main(["--no-progress", *[arg for k, v in settings.items() for arg in ("-S", f"{k}={v}")]])
    for name in ARTIFACTS:
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text(), parse_constant=refuse_nan)
    assert {"seen.bpp", "unseen.bpp", "unseen.stlpips"} <= set(metrics)
    assert "av1: av1 preset 8, crf [45], sides [32]" in (out / "results.md").read_text()


def test_a_clip_shorter_than_the_scored_segment_is_skipped(shards: Path):  # noqa: F811
    clips = list(codec_rd.read_test_clips(shards, "test_unseen", 32, 8, 5, 8))
    assert len(clips) == 2 and len({c["speaker_id"] for c in clips}) == 2  # one per speaker first
    assert list(codec_rd.read_test_clips(shards, "test_unseen", 32, 8, 5, 1000)) == []
    assert np.all([len(c["pixels"]) >= 8 for c in clips])
