"""Audio-video offset of a talking-face clip, from the mouth and the sound.

Web videos are often out of sync by a few frames (re-encodes, a muxer's audio delay,
dubbing); a model that learns face motion from speech needs them in step. Without a
pretrained lip-sync network, the classic signal-level cue does the job at this scale:
the mouth opens when the voice gets loud. So per video frame ``i``:

* visual: **mouth activity**, how open the lips look in a box from the mouth-corner
  landmarks of the face crop: the sum of the box's darkness (the oral cavity), its
  contrast (teeth and cavity against the lips) and its change from the clip's median
  mouth (:func:`mouth_activity`);
* audio: **log RMS energy** of the samples of that frame (``sr / fps`` of them).

Both are band-passed (a ~0.12 s smoothing and the removal of the ~0.5 s moving
average): syllables live at 2-8 Hz, while slower changes (head motion, lighting, the
long silence-speech-silence envelope of a short clip) would otherwise dominate the
correlation and pull the peak anywhere. The normalised cross-correlation is computed
at every lag ``-L..L`` over all the frames where both signals overlap; its peak is the
offset. **Confidence** is the peak minus the median of the curve (as SyncNet's
confidence is the median minus the minimum distance): a flat curve means there is
nothing to align on.

Measured: on the shared real clips (face crops from the faces stage, audio shifted by
0, +-3, +-5 frames) 28 of 30 estimates are within 1 frame; on 32 clips of the synthetic
corpus (same shifts) 137 of 160. A wrong peak is usually a weak one: with
``audio.min_sync_confidence`` 0.45, 0 of the 16 accepted real estimates and 5 of the
116 accepted synthetic ones are wrong; below it the audio is left as the container has
it (most published video is in sync: a wrong shift does more harm than a missed one).

Sign convention: ``offset_frames = k > 0`` means the audio is **late** by ``k`` frames
(the sound of frame ``i`` is heard at frame ``i + k``); :func:`align_audio` advances it
by ``k`` frames, so the aligned audio is in step with the crop video.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import map_coordinates, uniform_filter1d

from components.audio.extract import window
from components.media.jpeg_video import iter_crop_frames

SMOOTH_S = 0.12  # low-pass: a 3-frame moving average at 25 fps
HIGHPASS_S = 0.5  # high-pass: subtract the moving average over ~13 frames at 25 fps
ENERGY_FLOOR_DB = -60.0  # frames quieter than this below the loudest frame are "silence"
FLOOR_PERCENTILE = 10  # ...and so are frames quieter than the quietest tenth of the clip
MIN_OVERLAP_S = 1.0  # the least video the correlation is computed on
PATCH = (16, 24)  # rows x columns of the resampled mouth box
LEFT_MOUTH, RIGHT_MOUTH = 3, 4  # RetinaFace landmark order: eyes, nose, mouth corners
# The mouth box, in units of the mouth-corner distance w around the corners' midpoint:
# the lip opening only (0.9 w wide, 0.2 w above to 0.35 w below the corner line). A wider
# box takes in beard, chin and cheeks, which move with the jaw but are no oral cavity; on
# the shared real clips it mis-estimated a bearded speaker's offset by 5 frames.
BOX_HALF_WIDTH, BOX_ABOVE, BOX_BELOW = 0.45, 0.2, 0.35


def mouth_boxes(landmarks: np.ndarray) -> np.ndarray:
    """Per-frame mouth boxes ``(n, 4)`` as ``x0, y0, x1, y1`` in the landmarks' pixels.

    The box is centred on the mouth corners' midpoint; its size is fixed for the whole
    clip (from the median corner distance ``w``, robust to the mouth rounding on "oo"),
    so patches of different frames are comparable; it spans the lip opening (see
    ``BOX_*``). Frames with missing (non-finite) landmarks reuse the clip's median position.
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)
    left, right = landmarks[:, LEFT_MOUTH], landmarks[:, RIGHT_MOUTH]
    centre = (left + right) / 2
    ok = np.isfinite(centre).all(axis=1) & np.isfinite(right - left).all(axis=1)
    if not ok.any():
        raise ValueError("no frame has finite mouth landmarks")
    centre[~ok] = np.median(centre[ok], axis=0)
    width = max(float(np.median(np.linalg.norm((right - left)[ok], axis=1))), 2.0)
    x, y = centre[:, 0], centre[:, 1]
    return np.stack([x - BOX_HALF_WIDTH * width, y - BOX_ABOVE * width,
                     x + BOX_HALF_WIDTH * width, y + BOX_BELOW * width], axis=1)


def mouth_patch(gray: np.ndarray, box: np.ndarray, shape: tuple[int, int] = PATCH) -> np.ndarray:
    """The box of a grey frame resampled (bilinear) to ``shape``; edges replicate outside."""
    x0, y0, x1, y1 = box
    ys, xs = np.linspace(y0, y1, shape[0]), np.linspace(x0, x1, shape[1])
    grid = np.meshgrid(ys, xs, indexing="ij")
    return map_coordinates(np.asarray(gray, dtype=np.float32), grid, order=1, mode="nearest")


def mouth_activity(frames: Iterable[np.ndarray], landmarks: np.ndarray) -> np.ndarray:
    """Per-frame mouth opening signal (zero mean; larger = more open) of the mouth box.

    ``frames`` are grey ``(H, W)`` uint8 images (streamed: one is decoded at a time, only
    the small resampled patches are kept) and ``landmarks`` their ``(n, 5, 2)`` landmarks
    in the same pixels. Extra frames on either side are ignored, so a crop and its track
    may differ in length by a frame. The signal is the sum of three z-scored cues whose
    failure modes differ:

    * darkness (``1 - mean grey``): the oral cavity is dark, but bright teeth in a dark
      face invert it;
    * contrast (grey standard deviation): cavity and teeth against the lips, whatever
      their polarity, but a textured beard adds its own;
    * change from the clip's median mouth (mean absolute difference): right when the
      mouth mostly rests, blurred in continuous speech.

    Measured on real clips and the synthetic corpus, the sum recovers the offset where a
    single cue fails on one kind of face or the other (see the module docstring).
    """
    boxes = mouth_boxes(landmarks)
    patches = np.asarray([mouth_patch(frame, box) for frame, box in zip(frames, boxes)], dtype=np.float32)
    if not len(patches):
        return np.zeros(0, dtype=np.float32)
    cues = (1.0 - patches.mean(axis=(1, 2)) / 255.0, patches.std(axis=(1, 2)),
            np.abs(patches - np.median(patches, axis=0)).mean(axis=(1, 2)))
    return np.sum([_zscore(c.astype(np.float64)) for c in cues], axis=0).astype(np.float32)


def gray_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Decode every frame of a face-crop video as grey ``(H, W)`` uint8, one at a time.

    The face crops are already at the pipeline frame rate (one frame per ``1/fps``),
    so frames are taken as they are, without resampling; Motion-JPEG crops decode
    straight to grey (:func:`components.media.jpeg_video.iter_crop_frames`).
    """
    yield from iter_crop_frames(path, "gray")


def mouth_signal(crop_path: str | Path, track_path: str | Path) -> np.ndarray:
    """Mouth activity per frame of a face crop video, with the landmarks of its track."""
    with np.load(track_path) as track:
        landmarks = track["landmarks"]
    return mouth_activity(gray_frames(crop_path), landmarks)


def frame_bounds(n_samples: int, sr: int, fps: float) -> np.ndarray:
    """Sample index where each whole video frame starts (and the last one ends)."""
    n_frames = int(np.floor(n_samples * fps / sr + 1e-9))
    return np.round(np.arange(n_frames + 1) * sr / fps).astype(np.int64)


def audio_envelope(audio: np.ndarray, sr: int = 16000, fps: float = 25) -> np.ndarray:
    """Log RMS energy (dB) of the audio during each video frame.

    Floored at the clip's background level (its quietest tenth of frames, and at most
    ``ENERGY_FLOOR_DB`` below the loudest): digital silence (padding, a muted stretch)
    then reads as ordinary quiet, not as a cliff toward minus infinity that would
    dominate the correlation.
    """
    audio = np.asarray(audio, dtype=np.float64)
    bounds = frame_bounds(len(audio), sr, fps)
    if len(bounds) < 2:
        return np.zeros(0, dtype=np.float32)
    power = np.add.reduceat(audio[: bounds[-1]] ** 2, bounds[:-1]) / np.diff(bounds)
    rms = np.sqrt(power)
    floor = max(float(np.percentile(rms, FLOOR_PERCENTILE)), float(rms.max()) * 10 ** (ENERGY_FLOOR_DB / 20), 1e-12)
    return (20 * np.log10(np.maximum(rms, floor))).astype(np.float32)


def bandpass(x: np.ndarray, fps: float) -> np.ndarray:
    """Keep the syllable-rate part of a per-frame signal (see the module docstring)."""
    x = np.asarray(x, dtype=np.float64)
    smooth = max(1, int(round(SMOOTH_S * fps)))
    trend = max(3, int(round(HIGHPASS_S * fps)) | 1)
    x = uniform_filter1d(x, smooth, mode="nearest")
    return x - uniform_filter1d(x, trend, mode="nearest")


def _zscore(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / (x.std() + 1e-9)


@dataclass(frozen=True)
class SyncEstimate:
    offset_frames: int  # > 0: the audio is late by that many frames
    confidence: float  # correlation peak minus the median of the curve
    lags: np.ndarray  # the lags tried, in frames
    curve: np.ndarray  # normalised cross-correlation at each lag


def sync_curve(visual: np.ndarray, audio_env: np.ndarray, max_lag: int, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """Normalised cross-correlation of band-passed visual and audio signals per lag.

    ``curve[j]`` is the Pearson correlation of ``visual[i]`` with ``audio_env[i + k]``,
    ``k = lags[j]``, over every ``i`` where both exist (the audio may be longer than the
    video). The lag range shrinks when the clip is too short to keep ``MIN_OVERLAP_S``
    of overlap at every lag (an empty curve when even lag 0 does not).
    """
    n, m = len(visual), len(audio_env)
    min_overlap = max(3, int(round(MIN_OVERLAP_S * fps)))
    if min(n, m) < min_overlap:
        return np.zeros(0, dtype=int), np.zeros(0)
    lag = min(int(max_lag), n - min_overlap, m - min_overlap)
    v, a = bandpass(visual, fps), bandpass(audio_env, fps)
    lags = np.arange(-lag, lag + 1)
    curve = []
    for k in lags:
        lo, hi = max(0, -k), min(n, m - k)
        curve.append(float(np.mean(_zscore(v[lo:hi]) * _zscore(a[lo + k:hi + k]))))
    return lags, np.asarray(curve)


def estimate_offset(visual: np.ndarray, audio_env: np.ndarray, max_lag: int, fps: float) -> SyncEstimate:
    """The lag (frames) at the correlation peak, with its confidence.

    Confidence is 0 when the clip is too short, and when the maximum sits on either end
    of the searched range: that is no peak (the curve still rises past the range), and at
    the extreme lags the correlation rests on the fewest frames, so a noisy short clip
    "wins" there easily. Such an estimate shifts nothing and rejects nothing.
    """
    lags, curve = sync_curve(visual, audio_env, max_lag, fps)
    if len(curve) < 3:
        return SyncEstimate(0, 0.0, lags, curve)
    best = int(np.argmax(curve))
    if best in (0, len(curve) - 1):
        return SyncEstimate(int(lags[best]), 0.0, lags, curve)
    return SyncEstimate(int(lags[best]), float(curve[best] - np.median(curve)), lags, curve)


def align_audio(audio: np.ndarray, offset_frames: int, n_frames: int, fps: float, sr: int) -> np.ndarray:
    """The audio advanced by ``offset_frames`` and cut/padded to exactly ``n_frames / fps`` s.

    Sample ``t`` of the result is sample ``t + offset * sr / fps`` of the input; what the
    input lacks at either end is silence. The length is ``round(n_frames * sr / fps)``.
    """
    return window(np.asarray(audio, dtype=np.float32), int(round(offset_frames * sr / fps)),
                  int(round(n_frames * sr / fps)))
