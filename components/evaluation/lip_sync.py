"""LSE-D and LSE-C, SyncNet's lip-sync scores, computed with the project's own expert.

Wav2Lip and its successors report LSE-D / LSE-C from joonson's SyncNet
(``SyncNetInstance.evaluate``, github.com/joonson/syncnet_python). There, for one clip:
every 5-frame video window i is embedded once; the audio windows are embedded once and
compared with video window i at audio window i + k for k in -vshift..+vshift (15
frames in Wav2Lip's scripts); the distance is Euclidean
(``torch.nn.functional.pairwise_distance``) between the raw, unnormalised
embeddings; the per-offset mean over windows is the clip's distance profile;
**LSE-D = its minimum**, **LSE-C = its median minus its minimum**, and the AV offset it
prints is ``vshift - argmin``, i.e. minus the k of the minimum. Papers average both
over clips.

This module computes the same from any pair of embedding sequences; the project's
expert is the lip-sync expert trained in the pipeline, so its numbers are called
"LSE-D (earshot expert)" / "LSE-C (earshot expert)" and are not comparable with
numbers from joonson's SyncNet (different network, different data, and our expert's
embeddings are L2-normalised for a cosine score, so the distances lie in [0, 2]).
Differences from SyncNet's code, each on purpose:

* ``best_offset`` is k itself (audio window i + k matches video window i), not SyncNet's
  printed ``-k``.
* SyncNet pads the audio sequence with zero vectors, so near the clip's ends the
  distance is to a zero embedding; here a window whose shifted audio falls outside the
  clip is left out of that offset's mean (NaN rows are skipped).
* The distance is plain Euclidean (SyncNet's ``pairwise_distance`` adds 1e-6 to the
  difference); ``l2_normalise`` chooses raw embeddings (SyncNet's convention) or
  L2-normalised ones (the expert's own cosine geometry).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class SyncScores:
    """One clip's lip-sync scores and the distance profile they come from."""

    lse_d: float  # the smallest mean distance over offsets (lower: better synced)
    lse_c: float  # median minus smallest mean distance (higher: more confident sync)
    best_offset: int  # k of the smallest distance: audio window i + k matches video window i
    offsets: np.ndarray  # (2 * max_offset + 1,) the k of each profile entry, -max_offset..+max_offset
    profile: np.ndarray  # (2 * max_offset + 1,) mean distance per offset (NaN: no window has that offset)


def shifted_audio(audio: np.ndarray, max_offset: int) -> np.ndarray:
    """(2 * max_offset + 1, N, D) stack of a clip's audio embeddings, one per offset.

    ``audio[i]`` is the embedding of the mel window aligned with video window i; entry
    ``[j, i]`` is ``audio[i + k]`` with k = j - max_offset, NaN where i + k is outside the
    clip (the layout of SyncNet's ``calc_pdist``, without its zero padding).
    """
    audio = np.asarray(audio, np.float64)
    n = len(audio)
    stack = np.full((2 * max_offset + 1, *audio.shape), np.nan)
    for j, k in enumerate(range(-max_offset, max_offset + 1)):
        lo, hi = max(0, -k), min(n, n - k)
        if lo < hi:
            stack[j, lo:hi] = audio[lo + k:hi + k]
    return stack


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=-1, keepdims=True), 1e-12)


def sync_scores(video: np.ndarray, audio: np.ndarray | Callable[[int], np.ndarray], max_offset: int, *,
                l2_normalise: bool) -> SyncScores:
    """LSE-D, LSE-C and the best offset of one clip.

    ``video``: (N, D) embeddings, one per 5-frame window. ``audio``: the (2 * max_offset
    + 1, N, D) embeddings of the mel windows at offsets -max_offset..+max_offset (as
    :func:`shifted_audio` builds), or a callable ``audio(k) -> (N, D)`` giving the
    embeddings of the windows shifted by k frames; NaN rows are windows without audio at
    that offset.
    """
    video = np.asarray(video, np.float64)
    if video.ndim != 2 or not len(video):
        raise ValueError(f"expected (N, D) video embeddings with N >= 1, got shape {video.shape}")
    offsets = np.arange(-max_offset, max_offset + 1)
    stack = (np.stack([np.asarray(audio(int(k)), np.float64) for k in offsets]) if callable(audio)
             else np.asarray(audio, np.float64))
    if stack.shape != (len(offsets), *video.shape):
        raise ValueError(f"audio embeddings {stack.shape} do not match {len(offsets)} offsets x video {video.shape}")
    if l2_normalise:
        video, stack = _unit(video), _unit(stack)
    distances = np.linalg.norm(stack - video[None], axis=-1)  # (offsets, N), NaN where audio is missing
    present = np.isfinite(distances)
    counts = present.sum(1)
    profile = np.where(counts > 0, np.where(present, distances, 0.0).sum(1) / np.maximum(counts, 1), np.nan)
    if not np.isfinite(profile).any():
        raise ValueError("no window has audio at any offset")
    best = int(np.nanargmin(profile))
    lse_d = float(profile[best])
    return SyncScores(lse_d=lse_d, lse_c=float(np.nanmedian(profile)) - lse_d, best_offset=int(offsets[best]),
                      offsets=offsets, profile=profile)
