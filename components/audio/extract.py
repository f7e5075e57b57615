"""Extract the speech track of any video as mono float32 samples in the video's time base.

Every later step (mouth-audio sync, the wav stored beside the face crop, the model's
spectrogram windows) assumes that audio sample ``s`` and video frame ``i`` meet at
``s / sr == i / fps``, with frame 0 the first video frame (as
:func:`components.media.read.iter_frames` counts them). Containers do not promise that
by themselves: an audio stream may start later or earlier than the video stream (edit
lists, MPEG-PS start codes, ``-itsoffset``), or have gaps. :func:`load_audio` lets
ffmpeg place every decoded sample at its timestamp and then starts the samples at the
first video frame. What the container cannot tell (a recording whose audio is
genuinely out of step with the picture) is estimated from the content in
:mod:`components.audio.sync`.

Decoding runs in this process through PyAV (any codec FFmpeg reads: AAC, MP2 in MPEG-1
``.mpg``, Opus, PCM...), resampled and down-mixed to mono float32 by the filter graph the
ffmpeg command line would build (``aresample=<sr>:async=1:first_pts=0``, then ``aformat``
to mono ``flt``), with timestamps counted from the container's start as the command line
counts them: the same samples (to float rounding, 1e-7) as ``ffmpeg ... -ac 1 -f f32le``
on every shared real clip, at 5-15 ms a clip instead of ~65 ms for starting ffmpeg.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from components.errors import Rejected

SILENCE_DBFS = -60.0
"""A clip whose loudest sample is below this level is digital silence: real recordings,
even of a quiet room, have a noise floor well above it."""


def _layout(path: Path) -> tuple[bool, float]:
    """(whether the file has audio, seconds from the container's start to its first video frame).

    Raises ``Rejected`` (``unreadable``, ``corrupt``) when the file cannot be opened.
    """
    if not path.is_file():
        raise Rejected("unreadable", f"{path}: no such file")
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            origin = (container.start_time or 0) / av.time_base
            video = container.streams.video[0] if container.streams.video else None
            lead = 0.0
            if video is not None and video.start_time is not None and video.time_base is not None:
                lead = float(video.start_time * video.time_base) - origin
            return bool(container.streams.audio), lead
    except av.error.FFmpegError as exc:
        raise Rejected("corrupt", f"{path}: not a readable media container ({exc})") from None


def load_audio(path: str | Path, sr: int = 16000) -> np.ndarray:
    """Mono float32 samples of the first audio stream of ``path`` at ``sr``, in video time.

    Sample 0 is the instant of the first video frame (or the container's start, for a
    file without video). ffmpeg's ``aresample=async=1:first_pts=0`` places every decoded
    sample at its timestamp from the container's start: a late audio stream gets
    leading silence, a gap inside the stream is filled rather than closed up (later
    speech would otherwise drift early). The samples before the first video frame are
    then dropped.

    Raises ``Rejected``: ``no_audio_stream`` (a video without sound), ``unreadable``
    (missing file) or ``corrupt`` (ffmpeg cannot decode the audio).
    """
    path = Path(path).absolute()  # absolute: a file name can never be taken for an ffmpeg option
    has_audio, lead = _layout(path)
    if not has_audio:
        raise Rejected("no_audio_stream", f"{path}: the file has no audio stream")
    try:
        audio = _decode_mono(path, sr)
    except av.error.FFmpegError as exc:
        raise Rejected("corrupt", f"{path}: the audio does not decode ({exc})") from None
    skip = int(round(lead * sr))
    return window(audio, skip, len(audio) - skip) if skip else audio


def _decode_mono(path: Path, sr: int) -> np.ndarray:
    """The first audio stream, every sample at its timestamp from the container's start, at ``sr``, mono."""
    with av.open(str(path), metadata_errors="ignore") as container:
        stream = container.streams.audio[0]
        # The command line counts time from the container's start: move the frames there.
        shift = round((container.start_time or 0) / av.time_base / stream.time_base) if stream.time_base else 0
        graph = av.filter.Graph()
        chain = [graph.add_abuffer(template=stream), graph.add("aresample", f"{sr}:async=1:first_pts=0"),
                 graph.add("aformat", "sample_fmts=flt:channel_layouts=mono"), graph.add("abuffersink")]
        for a, b in zip(chain, chain[1:]):
            a.link_to(b)
        graph.configure()
        chunks: list[np.ndarray] = []

        def drain() -> None:
            while True:
                try:
                    chunks.append(graph.pull().to_ndarray().reshape(-1))
                except (av.error.BlockingIOError, av.error.EOFError):
                    return

        for frame in container.decode(stream):
            if frame.pts is not None:
                frame.pts -= shift
            graph.push(frame)
            drain()
        graph.push(None)
        drain()
    return np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)


def window(audio: np.ndarray, start: int, length: int) -> np.ndarray:
    """``audio[start:start + length]``, zero-padded where the window leaves the signal.

    ``start`` may be negative (leading zeros) and the window may run past the end
    (trailing zeros): the result always has exactly ``length`` samples.
    """
    length = max(0, int(length))
    out = np.zeros(length, dtype=np.float32)
    lo, hi = max(start, 0), min(start + length, len(audio))
    if hi > lo:
        out[lo - start:hi - start] = audio[lo:hi]
    return out


def peak_dbfs(audio: np.ndarray) -> float:
    """Level of the loudest sample in dB relative to full scale (-inf for all zeros)."""
    peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
    return 20.0 * np.log10(peak) if peak > 0 else float("-inf")


def check_not_silent(audio: np.ndarray, name: str = "audio", floor_dbfs: float = SILENCE_DBFS) -> None:
    """Raise ``Rejected("silence")`` for digital silence (a muted or empty track)."""
    level = peak_dbfs(audio)
    if level < floor_dbfs:
        raise Rejected("silence", f"{name}: digital silence (peak {level:.0f} dBFS < {floor_dbfs:.0f} dBFS)")
