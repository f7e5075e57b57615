"""Write video (H.264 + AAC MP4) and audio (PCM WAV) files atomically.

:func:`write_video` encodes RGB frames in this process with PyAV (libx264, yuv420p) and
muxes an optional mono float track as AAC; :func:`write_wav` writes 16-bit PCM WAV with
soundfile. Both write a temporary file beside the destination and ``os.replace`` it into
place (:func:`components.io.atomic_path`), so a reader never sees a half-written file.

Encodes are bit-exact (``+bitexact`` flags, no metadata): the same frames and samples give
the same bytes, which keeps generated corpora reproducible.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf

from components.io import atomic_path


def _as_mono_float(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"audio must be mono (1-D), got shape {audio.shape}")
    return np.clip(audio, -1.0, 1.0)


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int) -> Path:
    """Write mono float audio in [-1, 1] as 16-bit PCM WAV, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        sf.write(tmp, _as_mono_float(audio), sample_rate, subtype="PCM_16", format="WAV")
    return path


def _check_frame(frame: np.ndarray, shape: tuple[int, ...] | None, path: Path) -> np.ndarray:
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"{path}: frames must be (H, W, 3) uint8 RGB, got {frame.shape} {frame.dtype}")
    if shape is not None and frame.shape != shape:
        raise ValueError(f"{path}: frame shape changed from {shape} to {frame.shape}")
    return np.ascontiguousarray(frame)


def write_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    fps: float,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    crf: int = 18,
    preset: str = "veryfast",
    *,
    threads: int = 0,
    keyframe_every: int | None = None,
) -> Path:
    """Encode RGB frames (and optional mono audio) to an MP4, atomically.

    Args:
        path: destination ``.mp4``; its folder is created.
        frames: ``(H, W, 3)`` uint8 RGB arrays, all the same shape (H and W even, as
            yuv420p requires); consumed lazily, so a generator never holds the clip.
        fps: frame rate of the video stream.
        audio: optional float mono samples in [-1, 1], muxed as AAC (64 kb/s) at ``sample_rate``.
        crf, preset: libx264 quality and speed.
        threads: libx264 threads (0: its choice; 1 when many encodes run in parallel).
        keyframe_every: the longest keyframe interval, frames (None: libx264's, 250).

    Encoding runs in this process (PyAV's libx264 and FFmpeg's AAC encoder): no ffmpeg
    process to start and no pipe to copy every frame through, which made an encode of a
    4.6 s 256 px clip cost ~1.9 ms a frame against ~1.2 ms here. Raises ``ValueError``
    for bad frames and :class:`av.error.FFmpegError` when the encode fails; no partial
    file is left behind either way.
    """
    import av

    path = Path(path)
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise ValueError(f"{path}: no frames to write")
    first = _check_frame(first, None, path)
    height, width = first.shape[:2]
    if height % 2 or width % 2:
        raise ValueError(f"{path}: yuv420p needs even frame sides, got {width}x{height}")
    rate = Fraction(fps).limit_denominator(1001)
    with atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as out:
            out.flags |= av.container.Flags.bitexact.value
            video = out.add_stream("libx264", rate=rate, options={"crf": str(crf), "preset": preset})
            video.width, video.height, video.pix_fmt = width, height, "yuv420p"
            video.thread_count = threads
            if keyframe_every is not None:
                video.codec_context.gop_size = keyframe_every
            video.codec_context.flags |= av.codec.context.Flags.bitexact.value
            sound = None
            if audio is not None:
                samples = _as_mono_float(audio)
                sound = out.add_stream("aac", rate=sample_rate, layout="mono")
                sound.bit_rate = 64000
                sound.codec_context.flags |= av.codec.context.Flags.bitexact.value
            for frame in itertools.chain([first], it):
                picture = av.VideoFrame.from_ndarray(_check_frame(frame, first.shape, path), format="rgb24")
                out.mux(video.encode(picture))
            out.mux(video.encode())
            if sound is not None:
                chunk = av.AudioFrame.from_ndarray(samples[None], format="flt", layout="mono")
                chunk.sample_rate, chunk.pts = sample_rate, 0
                out.mux(sound.encode(chunk))
                out.mux(sound.encode())
    return path
