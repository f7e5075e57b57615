"""The test clips of the video paper's evaluations, and the model run on them.

Both ``evaluate_video`` (:mod:`.video_sr`) and ``evaluate_codec`` (:mod:`.codec_rd`) read
the test splits' clips the same way (the shards' ``clip`` mode: every frame at
``out_size``, its ``lr_size`` degradation, its mel window) and run the model on a clip's
frames the same way: :func:`full_model` takes each frame's window of low-res frames
(:func:`lr_windows`, the ends repeated) and its mel window (:func:`mel_at`), stage 1 makes
the coarse frames, stage 2 animates the clip's identity photo with them. How a clip gets
its photo (another clip of its speaker, a training clip, its own first frame) is
:func:`assign_photos`; :func:`other_audio_partners` pairs clips of different speakers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from components.data.dataset import ShardDataset
from components.data.shards import shard_files
from components.figures.images import from_pixels, to_pixels
from components.models.talking.upsampler import IdentityState, VideoUpsampler

log = logging.getLogger(__name__)

SPLITS = {"seen": "test_seen", "unseen": "test_unseen"}


@dataclass
class TestClip:
    """One test clip: its lr frames and mel windows (all frames), the true segment at ``out_size``."""

    key: str
    speaker: str
    lr: torch.Tensor  # n x 3 x s x s float16
    mel: torch.Tensor  # n x 80 x 16 float16
    start: int  # the segment's first frame
    truth: torch.Tensor  # F x 3 x R x R uint8
    first: torch.Tensor  # frame 0, 3 x R x R uint8
    middle: torch.Tensor  # the middle frame, 3 x R x R uint8
    photo: torch.Tensor | None = None
    whole: torch.Tensor | None = None  # every frame at out_size (uint8), kept for the side-by-side videos only
    audio: torch.Tensor | None = None  # the clip's samples (with ``whole``)
    sample_rate: int = 16000

    @property
    def n(self) -> int:
        return len(self.lr)


def read_clips(shards: str | Path, split: str, out_size: int, lr_size: int, frames_per_clip: int, *,
               keep_whole: int = 0, num_workers: int = 0) -> list[TestClip]:
    """Every clip of ``split`` with at least ``frames_per_clip`` frames (shorter ones are left out, logged);
    the first ``keep_whole`` clips of different speakers keep all their frames and audio (the videos)."""
    dataset = ShardDataset(shards, split, "clip", train=False, hr_size=out_size, lr_size=lr_size)
    clips: list[TestClip] = []
    whole_speakers: set[str] = set()
    for clip in DataLoader(dataset, batch_size=None, num_workers=num_workers):
        n = len(clip["pixels"])
        if n < frames_per_clip:
            log.warning("%s: %d frames, fewer than the %d-frame segment: not evaluated", clip["key"], n, frames_per_clip)
            continue
        start = (n - frames_per_clip) // 2
        test = TestClip(clip["key"], clip["speaker_id"], clip["lr"].half(), clip["mel"].half(), start,
                        clip["pixels"][start:start + frames_per_clip].clone(), clip["pixels"][0].clone(),
                        clip["pixels"][n // 2].clone(), sample_rate=int(clip["sample_rate"]))
        if len(whole_speakers) < keep_whole and test.speaker not in whole_speakers:
            whole_speakers.add(test.speaker)
            test.whole, test.audio = clip["pixels"], clip["audio"]
        clips.append(test)
    return clips


def training_photos(shards: str | Path, out_size: int, speakers: set[str]) -> dict[str, list[torch.Tensor]]:
    """The middle frame of each training clip of ``speakers`` (uint8 at ``out_size``), by speaker."""
    found: dict[str, list[torch.Tensor]] = {}
    if not shard_files(shards, "train"):
        return found
    for sample in ShardDataset(shards, "train", "face_sr", train=False, hr_size=out_size, audio=False):
        if sample["speaker_id"] in speakers:
            found.setdefault(sample["speaker_id"], []).append(to_pixels(sample["hr"]))
    return found


def assign_photos(clips: Sequence[TestClip], train: Mapping[str, list[torch.Tensor]], rule: str) -> list[str]:
    """Set each clip's identity photo (see the module docstring); returns where each came from."""
    by_speaker: dict[str, list[TestClip]] = {}
    for clip in clips:
        by_speaker.setdefault(clip.speaker, []).append(clip)
    sources = []
    for clip in clips:
        others = [c for c in by_speaker[clip.speaker] if c.key != clip.key] if rule == "other_clip" else []
        if others:
            clip.photo, source = others[0].middle, "other_clip"
        elif rule == "other_clip" and train.get(clip.speaker):
            clip.photo, source = train[clip.speaker][0], "train_clip"
        else:
            clip.photo, source = clip.first, "same_clip"
        sources.append(source)
    return sources


def other_audio_partners(speakers: Sequence[str], seed: int) -> np.ndarray:
    """For each clip, another clip whose speaker differs (a seeded derangement over speakers); -1 if none."""
    speakers = np.asarray(speakers)
    order = np.random.default_rng(seed).permutation(len(speakers))
    partners = np.full(len(speakers), -1)
    for pos, i in enumerate(order):
        for step in range(1, len(order)):
            j = order[(pos + step) % len(order)]
            if speakers[j] != speakers[i]:
                partners[i] = j
                break
    return partners


def lr_windows(clip: TestClip, window: int, frames: Sequence[int]) -> torch.Tensor:
    """(len(frames), window, 3, s, s): the lr window around each frame (indices clamped at the ends)."""
    half = window // 2
    idx = (torch.as_tensor(frames)[:, None] + torch.arange(-half, half + 1)).clamp(0, clip.n - 1)
    return clip.lr[idx].float()


def mel_at(mel: torch.Tensor, frames: Sequence[int]) -> torch.Tensor:
    """(len(frames), 1, 80, 16) mel windows at ``frames`` (clamped to the clip)."""
    return mel[torch.as_tensor(frames).clamp(0, len(mel) - 1)].float()[:, None]


def full_model(model: VideoUpsampler, clip: TestClip, frames: Sequence[int],
               state: IdentityState | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 1's coarse frames and the full model's frames at ``frames`` of the clip (on the model's
    device); ``state``: the clip photo's :meth:`~VideoUpsampler.prepare_identity`, when already made."""
    dev = model.device
    coarse = model.coarse(lr_windows(clip, model.cfg.window, frames).to(dev), mel_at(clip.mel, frames).to(dev))
    if state is None:
        state = model.prepare_identity(from_pixels(clip.photo)[None].to(dev))
    return coarse, model.animate(state, coarse)
