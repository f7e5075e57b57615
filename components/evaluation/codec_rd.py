"""The codec's rate-distortion measurement on the test clips (the DVC stage ``evaluate_codec``).

For each split (``seen``: new videos of training speakers, ``unseen``: speakers never
trained on), ``evaluate_codec.clips_per_split`` test clips, one per speaker first, are
read whole (every frame at 256 with its audio: the shards' ``clip`` mode). On each clip:

* **earshot** at every operating point (``evaluate_codec.operating_points``, overrides of
  the ``codec`` section): the clip is encoded as a call exactly as ``earshot codec
  encode`` encodes (:func:`components.codec.call.encode_call`: the first frame as the
  photo, every frame degraded to 8x8 and coded, the audio), the file decoded
  (:func:`~components.codec.call.decode_inputs`) and the model run on the decoded inputs;
* the **decoder's ceiling**: the model on the clip's uncompressed 8x8 frames, true photo
  and audio (no bits counted): where earshot's quality saturates whatever the rate;
* each **baseline** (``evaluate_codec.baselines``: libx264, libx265, SVT-AV1 at their slow
  presets) at every rate factor and side of its ladder: the true 256 face video,
  shrunk to the side (antialiased bicubic) when it is smaller, encoded, decoded and
  enlarged back to 256 bicubically (:func:`components.codec.streams.encode_video`: the
  same stream code as the call's, informational SEI left out on both sides).

Bits per pixel of a point are its video bits over 256 x 256 x the clip's frames: for
earshot the whole file but its audio payload (header, photo, video); with audio, both
sides add the same Opus stream (``codec.audio_kbps``); earshot's ``bpp_stream`` leaves the
photo out too (a long call sends it once: its share of the bits falls towards 0). Quality is measured on the middle
``frames_per_clip`` frames: PSNR on all of them, SSIM and InceptionV3 features (FID, KID per
split) on ``fid_frames_per_clip``, ST-LPIPS on ``detail_frames_per_clip`` (at
``stlpips_size``), LSE-C with the project's lip-sync expert against the clip's true audio.
:mod:`components.evaluation.rd` turns the per-clip values into curves, bpp ratios at
equal ST-LPIPS and Bjontegaard delta rates; :mod:`.codec_report` writes them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from components.codec import streams
from components.codec.call import decode_inputs, encode_call, low_res_frames
from components.codec.container import payload_sizes
from components.config import BaselineParams, CodecParams, EvaluateCodecParams
from components.data.dataset import ShardDataset, evenly_spaced
from components.data.features import mel_windows, resize
from components.data.shards import shard_files
from components.evaluation import fid as fid_lib
from components.evaluation.metrics import psnr, ssim, stlpips
from components.evaluation.video_clips import SPLITS, TestClip, full_model
from components.evaluation.video_sr import audio_embeddings, clip_sync
from components.figures.images import from_hwc, from_pixels, to_hwc, to_pixels
from components.models.talking.upsampler import VideoUpsampler, enlarge

log = logging.getLogger(__name__)

EARSHOT = "earshot"
CEILING = "ceiling"
PAYLOADS = ("header", "photo", "video", "audio")


@dataclass(frozen=True)
class Baseline:
    """One baseline point: a codec at a rate factor, on the face video at ``size``."""

    family: str  # the params' name: h264, h265, av1
    codec: str  # h264, hevc, av1
    preset: str
    crf: int
    size: int

    @property
    def name(self) -> str:
        return f"{self.family} {self.size}px crf{self.crf}"


def baseline_points(baselines: Mapping[str, BaselineParams]) -> list[Baseline]:
    """Every (codec, side, rate factor) of the baselines' params."""
    return [Baseline(family, b.codec, b.preset, crf, size) for family, b in baselines.items()
            for size in b.sizes for crf in b.crfs]


def earshot_points(cfg: EvaluateCodecParams, codec: CodecParams) -> dict[str, CodecParams]:
    """earshot's operating points: the codec section with each point's overrides."""
    return {name: CodecParams.model_validate(codec.model_dump() | overrides)
            for name, overrides in cfg.operating_points.items()}


@dataclass
class SplitMeasures:
    """Per-clip values of every point of one split, in clip order (NaN where a point does not apply)."""

    speakers: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    family: dict[str, str] = field(default_factory=dict)  # point -> family
    values: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # point -> metric -> per clip
    fid_frames: dict[str, list[torch.Tensor]] = field(default_factory=dict)  # point -> uint8 frames, for FID / KID
    payload_bytes: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # earshot point -> payload -> per clip
    grid: dict[str, torch.Tensor] = field(default_factory=dict)  # first clip: point -> its middle scored frame

    def add(self, point: str, family: str, metrics: Mapping[str, float]) -> None:
        self.family[point] = family
        for metric, value in metrics.items():
            self.values.setdefault(point, {}).setdefault(metric, []).append(float(value))


@dataclass(frozen=True)
class Scoring:
    """What scores a point's segment: the model's expert (LSE-C), ST-LPIPS, the frame picks."""

    model: VideoUpsampler
    perceptual: torch.nn.Module
    cfg: EvaluateCodecParams


def read_test_clips(shards: str | Path, split: str, out_size: int, lr_size: int, count: int, min_frames: int, *,
                    num_workers: int = 0) -> Iterator[dict]:
    """Up to ``count`` clips of ``split`` (each from a speaker not seen yet, in shard order), with
    at least ``min_frames`` frames; streamed (a clip is 20-30 MB at 256 px)."""
    dataset = ShardDataset(shards, split, "clip", train=False, hr_size=out_size, lr_size=lr_size)
    taken: set[str] = set()
    for clip in DataLoader(dataset, batch_size=None, num_workers=num_workers):
        if len(taken) >= count:
            return
        if clip["speaker_id"] in taken or len(clip["pixels"]) < min_frames:
            continue
        taken.add(clip["speaker_id"])
        yield clip


def score_points(scoring: Scoring, outputs: Mapping[str, torch.Tensor], truth: torch.Tensor, own_audio: np.ndarray,
                 start: int) -> dict[str, dict[str, float]]:
    """Every point's per-clip quality on the segment (each metric in one batched call over the points)."""
    cfg, names = scoring.cfg, list(outputs)
    detail = evenly_spaced(len(truth), cfg.detail_frames_per_clip, 0)
    stacked = torch.stack([outputs[n] for n in names])  # P x F x 3 x R x R
    count = len(names)

    def per_point(metric, frames: list[int], size: int | None = None) -> np.ndarray:  # type: ignore[no-untyped-def]
        pred, target = stacked[:, frames].flatten(0, 1), truth[frames].repeat(count, 1, 1, 1)
        if size is not None:
            pred, target = resize(pred, size), resize(target, size)
        return metric(pred, target).reshape(count, len(frames)).mean(1).numpy()

    values = {"psnr": per_point(psnr, list(range(len(truth)))), "ssim": per_point(ssim, detail),
              "stlpips": per_point(lambda a, b: stlpips(scoring.perceptual, a, b), detail, cfg.stlpips_size)}
    out = {}
    for i, name in enumerate(names):
        out[name] = {metric: float(v[i]) for metric, v in values.items()}
        out[name]["lse_c"] = clip_sync(scoring.model, outputs[name], own_audio, start, cfg.max_offset)[1]
    return out


def ladder(frames: list[np.ndarray], sizes: set[int]) -> dict[int, list[np.ndarray]]:
    """The clip's true frames at every side of the baselines' ladders (antialiased bicubic), once per clip."""
    stacked = torch.stack([from_hwc(f) for f in frames])
    return {side: frames if side == frames[0].shape[0] else list(to_hwc(resize(stacked, side))) for side in sizes}


def encode_baseline(frames: list[np.ndarray], point: Baseline, fps: int, limit: int) -> tuple[int, list[np.ndarray]]:
    """A baseline's stream bytes for frames at its side (one encoder thread) and its first ``limit``
    decoded frames."""
    data, _ = streams.encode_video(frames, point.codec, crf=point.crf, preset=point.preset, fps=fps, threads=1)
    return len(data), streams.decode_video(data, point.codec, name=point.name, limit=limit)


def measure_clip(scoring: Scoring, clip: dict, points: Mapping[str, CodecParams], baselines: list[Baseline], *,
                 fps: int, model_id: bytes, found: SplitMeasures, keep_grid: bool) -> None:
    """Every point's bits and quality on one clip, added to ``found``."""
    model, cfg = scoring.model, scoring.cfg
    size, lr_size = model.cfg.out_size, model.cfg.lr_size
    pixels, n = clip["pixels"], len(clip["pixels"])
    start = (n - cfg.frames_per_clip) // 2
    segment = slice(start, start + cfg.frames_per_clip)
    truth = from_pixels(pixels[segment])
    frames = list(pixels.permute(0, 2, 3, 1).numpy())
    audio, sr = clip["audio"].numpy(), int(clip["sample_rate"])
    pixel_count = size * size * n
    outputs: dict[str, torch.Tensor] = {}
    bits: dict[str, dict[str, float]] = {}  # point -> bpp, bpp_audio (and earshot's bpp_stream), in bits
    families: dict[str, str] = {}

    def clip_of(lr: torch.Tensor, mel: torch.Tensor, photo: torch.Tensor) -> TestClip:
        return TestClip(clip["key"], clip["speaker_id"], lr, mel, start, pixels[segment], pixels[0], pixels[n // 2],
                        photo=photo)

    def decoded_segment(inputs: TestClip) -> torch.Tensor:  # the full model's frames of the segment, in [-1, 1]
        return full_model(model, inputs, range(segment.start, segment.stop))[1].float().cpu().clamp(-1, 1)

    outputs[CEILING], families[CEILING] = decoded_segment(clip_of(clip["lr"], clip["mel"], pixels[0])), CEILING
    bits[CEILING] = {"bpp": np.nan, "bpp_audio": np.nan}
    lr = low_res_frames(frames, lr_size, name=clip["key"])
    for name, settings in points.items():
        call = encode_call(lr, frames[0], audio, fps=fps, settings=settings, model=model_id, out_size=size,
                           sample_rate=sr)
        sizes = payload_sizes(call)
        for part in PAYLOADS:
            found.payload_bytes.setdefault(name, {}).setdefault(part, []).append(sizes[part])
        inputs = decode_inputs(call, name=f"{clip['key']} ({name})")
        decoded = clip_of(torch.stack([from_hwc(f) for f in inputs.lr]),
                          torch.from_numpy(mel_windows(inputs.audio, sr, fps, n_frames=n)),
                          torch.from_numpy(np.array(inputs.photo)).permute(2, 0, 1).contiguous())
        point = f"{EARSHOT} {name}"
        outputs[point], families[point] = decoded_segment(decoded), EARSHOT
        video_bits = 8 * (sizes["header"] + sizes["photo"] + sizes["video"])
        bits[point] = {"bpp": video_bits, "bpp_audio": video_bits + 8 * sizes["audio"],
                       "bpp_stream": 8 * (sizes["header"] + sizes["video"])}  # the photo sent once in a long call
    audio_bits = 8 * len(streams.encode_audio(audio, sr, points[cfg.default_point].audio_kbps))
    from concurrent.futures import ThreadPoolExecutor  # the encoders release the GIL: one encode per core

    with ThreadPoolExecutor(max(1, cfg.parallel_encodes)) as pool:
        sides = ladder(frames, {base.size for base in baselines})
        encoded = list(pool.map(lambda base: encode_baseline(sides[base.size], base, fps, segment.stop), baselines))
    for base, (n_bytes, decoded_frames) in zip(baselines, encoded):
        out = torch.stack([from_hwc(f) for f in decoded_frames[segment]])
        outputs[base.name] = enlarge(out, size) if base.size != size else out
        bits[base.name] = {"bpp": 8 * n_bytes, "bpp_audio": 8 * n_bytes + audio_bits}
        families[base.name] = base.family
    scores = score_points(scoring, outputs, truth, audio_embeddings(model, clip["mel"]), start)
    picks = evenly_spaced(len(truth), cfg.fid_frames_per_clip, 0)
    for point, values in scores.items():
        found.add(point, families[point], values | {k: b / pixel_count for k, b in bits[point].items()})
        found.fid_frames.setdefault(point, []).append(to_pixels(outputs[point][picks]))
    found.fid_frames.setdefault("truth", []).append(pixels[segment][picks].clone())
    found.speakers.append(clip["speaker_id"])
    found.keys.append(clip["key"])
    if keep_grid:
        mid = len(truth) // 2
        found.grid = {point: out[mid] for point, out in outputs.items()} | \
            {"truth": truth[mid], "lr": from_hwc(lr[start + mid])}


def inception_of(frames: Mapping[str, list[torch.Tensor]], inception: fid_lib.FIDInception) -> dict[str, np.ndarray]:
    """Each point's InceptionV3 features of its scored frames."""
    return {point: fid_lib.inception_features(inception, (from_pixels(f) for f in parts), 32)
            for point, parts in frames.items()}


def measure_split(scoring: Scoring, shards: str | Path, split: str, points: Mapping[str, CodecParams],
                  baselines: list[Baseline], *, fps: int, model_id: bytes, num_workers: int = 0,
                  progress: bool = False) -> SplitMeasures:
    """Every point on the split's clips (the module docstring)."""
    from rich.progress import Progress

    cfg = scoring.cfg
    found = SplitMeasures()
    if not shard_files(shards, split):
        return found
    with Progress(disable=not progress) as bar:
        task = bar.add_task(f"evaluate_codec {split}", total=cfg.clips_per_split)
        for clip in read_test_clips(shards, split, scoring.model.cfg.out_size, scoring.model.cfg.lr_size,
                                    cfg.clips_per_split, cfg.frames_per_clip, num_workers=num_workers):
            with torch.inference_mode():
                measure_clip(scoring, clip, points, baselines, fps=fps, model_id=model_id, found=found,
                             keep_grid=not found.keys)
            bar.advance(task)
    return found

