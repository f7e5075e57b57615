"""Write video (H.264 + AAC MP4) and audio (PCM WAV) files atomically.

:func:`write_video` streams raw RGB frames into ffmpeg's stdin (libx264, yuv420p) and
muxes an optional mono float track as AAC; :func:`write_wav` writes 16-bit PCM WAV with
soundfile. Both write a temporary file beside the destination and ``os.replace`` it into
place (:func:`components.io.atomic_path`), so a reader never sees a half-written file.

Encodes are bit-exact (``+bitexact`` flags, no metadata): the same frames and samples give
the same bytes, which keeps generated corpora reproducible.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import soundfile as sf

from components.io import atomic_path
from components.media.ffmpeg import ffmpeg_exe


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
) -> Path:
    """Encode RGB frames (and optional mono audio) to an MP4, atomically.

    Args:
        path: destination ``.mp4``; its folder is created.
        frames: ``(H, W, 3)`` uint8 RGB arrays, all the same shape (H and W even, as
            yuv420p requires); consumed lazily, so a generator never holds the clip.
        fps: frame rate of the video stream.
        audio: optional float mono samples in [-1, 1], muxed as AAC at ``sample_rate``.
        crf, preset: libx264 quality and speed.
        threads: libx264 threads (0: ffmpeg's choice; 1 when many encodes run in parallel).

    Raises ``ValueError`` for bad frames and ``subprocess.CalledProcessError`` (with
    ffmpeg's stderr) when the encode fails; no partial file is left behind either way.
    """
    path = Path(path)
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise ValueError(f"{path}: no frames to write")
    first = _check_frame(first, None, path)
    height, width = first.shape[:2]
    if height % 2 or width % 2:
        raise ValueError(f"{path}: yuv420p needs even frame sides, got {width}x{height}")

    with atomic_path(path) as tmp, tempfile.TemporaryDirectory(prefix="earshot-wav-") as wav_dir:
        cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-framerate", str(fps),
               "-i", "pipe:0"]
        if audio is not None:
            wav = write_wav(Path(wav_dir) / "audio.wav", audio, sample_rate)
            cmd += ["-i", str(wav), "-map", "0:v:0", "-map", "1:a:0",
                    "-c:a", "aac", "-b:a", "64k", "-ar", str(sample_rate), "-ac", "1", "-flags:a", "+bitexact"]
        cmd += ["-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p",
                "-threads", str(threads), "-flags:v", "+bitexact", "-fflags", "+bitexact",
                "-map_metadata", "-1", "-movflags", "+faststart", "-f", "mp4", str(tmp)]
        with tempfile.TemporaryFile() as stderr:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=stderr)
            assert proc.stdin is not None
            try:
                proc.stdin.write(first.tobytes())
                for frame in it:
                    proc.stdin.write(_check_frame(frame, first.shape, path).tobytes())
                proc.stdin.close()
            except BrokenPipeError:
                pass  # ffmpeg died; its exit status and stderr say why
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            if proc.wait() != 0:
                stderr.seek(0)
                raise subprocess.CalledProcessError(proc.returncode, cmd, None, stderr.read())
    return path
