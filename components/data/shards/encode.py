"""One clip's media as a shard row stores them: its face crop as one JPEG per frame (the
Motion-JPEG packets the faces stage wrote, copied without decoding; a crop in another
codec is decoded and JPEG-encoded at ``faces.jpeg_quality``), its aligned wav as FLAC, its
landmarks flattened. A file that is missing or
does not match the upstream index rejects the clip (:class:`~components.errors.Rejected`).
"""

from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import Any

import numpy as np

from components.errors import Rejected
from components.media.jpeg_video import encode_jpeg, is_jpeg_video, iter_crop_frames, read_jpegs
from components.orchestration.items import call_item


def encode_clip(clip: dict[str, Any], *, faces_dir: str, audio_dir: str, jpeg_quality: int,
                sample_rate: int) -> dict[str, Any]:
    """The media columns of one clip's row: JPEG frames, FLAC audio, flat landmarks.

    Raises :class:`Rejected` when a file is missing (``unreadable``) or does not match
    the index (``corrupt``: undecodable, wrong frame count, wrong audio length or rate).
    """
    crop = Path(faces_dir) / clip["crop_path"]
    track = Path(faces_dir) / clip["track_path"]
    wav = Path(audio_dir) / clip["wav_path"]
    for path in (crop, track, wav):
        if not path.is_file():
            raise Rejected("unreadable", f"missing {path}")
    n, fps = int(clip["n_frames"]), int(clip["fps"])
    frames, (height, width) = _jpeg_frames(crop, jpeg_quality)
    if len(frames) != n:
        raise Rejected("corrupt", f"{crop}: {len(frames)} frames decoded, index says {n}")
    landmarks = _landmarks(track, n)
    audio = _audio(wav, n, fps, sample_rate)
    return {"frames": frames, "height": height, "width": width, "audio": _flac(audio, sample_rate),
            "n_samples": len(audio), "sample_rate": sample_rate, "landmarks": landmarks}


def _jpeg_frames(path: Path, quality: int) -> tuple[list[bytes], tuple[int, int]]:
    """Every frame of a crop video as a JPEG, and its (height, width): Motion-JPEG packets as
    they are, any other codec decoded and encoded at ``quality``."""
    if is_jpeg_video(path):
        return read_jpegs(path)
    frames, size = [], None
    for frame in iter_crop_frames(path):
        size = size or frame.shape[:2]
        frames.append(encode_jpeg(frame, quality))
    if size is None:
        raise Rejected("corrupt", f"{path}: no frame decodes")
    return frames, size


def _landmarks(path: Path, n: int) -> np.ndarray:
    try:
        with np.load(path) as track:
            lm = np.asarray(track["landmarks"], dtype=np.float32)
    except (OSError, ValueError, KeyError) as exc:
        raise Rejected("corrupt", f"{path}: {exc}") from None
    if lm.shape != (n, 5, 2):
        raise Rejected("corrupt", f"{path}: landmarks {lm.shape}, expected ({n}, 5, 2)")
    return lm.reshape(-1)


def _audio(path: Path, n_frames: int, fps: int, sample_rate: int) -> np.ndarray:
    """The aligned wav as mono float32, cut or padded to exactly n_frames / fps seconds.

    The audio stage writes that length; more than one video frame off means the wav and
    the crop do not belong together.
    """
    import soundfile as sf

    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise Rejected("corrupt", f"{path}: {exc}") from None
    if sr != sample_rate:
        raise Rejected("corrupt", f"{path}: {sr} Hz, the pipeline rate is {sample_rate} Hz")
    audio = audio.mean(axis=1)
    want = int(round(n_frames / fps * sample_rate))
    if abs(len(audio) - want) > sample_rate / fps:
        raise Rejected("corrupt", f"{path}: {len(audio) / sr:.3f} s of audio for {n_frames / fps:.3f} s of video")
    return np.pad(audio[:want], (0, max(0, want - len(audio))))


def _flac(audio: np.ndarray, sample_rate: int) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(audio, -1.0, 1.0), sample_rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def encode_or_reject(clip: dict[str, Any], **kwargs: Any) -> tuple[str, dict[str, Any]]:
    """:func:`encode_clip` as data (crosses process boundaries), reported as every stage's
    items are (:func:`~components.orchestration.items.call_item`): ("ok", media),
    ("rejected", why) for an input fault, ("error", why with its traceback) for a bug."""
    return call_item(functools.partial(encode_clip, **kwargs), clip)
