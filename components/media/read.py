"""Stream the frames of any video at the pipeline frame rate, in bounded memory.

Every stage sees video at one frame rate (``common.fps``) so that frame ``i`` is at time
``i / fps`` in every file it reads or writes, and audio cut at the same times stays in
step. :func:`iter_frames` resamples any source rate (30, 29.97, 50, variable) by
*nearest source frame*: output frame ``i`` is the source frame whose presentation time,
counted from the first frame, is closest to ``i / fps``. Frames are never blended
(blending would smear the mouth motion later stages learn from), and an output frame
exists for every ``i / fps`` inside the source's time span, so the clip length is kept.

Why PyAV and not decord: decord 0.6 silently drops the first GOP of MPEG-1 program
streams (the GRID ``.mpg`` clips: the first 12 frames are missing and the last frame is
repeated 12 times to keep the count, a 0.48 s audio/video desync that raises no error),
it cannot open AV1 (YouTube's current codec) or Theora, and it is not faster: on one
core PyAV decodes 1080p H.264 as fast as decord's ``next()`` and 2-3x faster than its
``get_batch`` in chunks of 32, and is the fastest on the small real clips
(``test_decoder_choice`` in ``tests/benchmarks/bench_faces.py`` measures all three).
PyAV decodes exactly what the ffmpeg CLI decodes, and the download stage probes every
file with PyAV, so every file in ``data/raw`` is known to decode here.

Frames are decoded one at a time and only the last two are kept (nearest-frame choice
needs one frame of lookahead), so memory is flat on hour-long 1080p videos.

Frames come out **as a player shows them**: a phone stores its pixels sideways and
records the turn in the stream's display matrix (the legacy ``rotate`` tag becomes one
too); :func:`frame_array` applies it, as the ffmpeg CLI's autorotate does, so a face
is upright in every stage that decodes video through this module.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path

import av
import numpy as np

from components.errors import Rejected

TIE_TOLERANCE_S = 1e-6
"""Two source frames this close to equally near an output time count as a tie (the
earlier wins), so float noise in timestamps never flips the choice."""


def quarter_turns(frame: av.VideoFrame) -> int:
    """How many quarter turns counter-clockwise the display gives ``frame`` (0-3): its
    display matrix's rotation, rounded to the nearest quarter (phones record only those)."""
    return round((frame.rotation or 0) / 90) % 4


def frame_array(frame: av.VideoFrame, format: str = "rgb24", size: tuple[int, int] | None = None) -> np.ndarray:
    """``frame`` as an array in display orientation (its display matrix's rotation applied).

    ``size=(width, height)`` is the size of the *displayed* frame; the scaling happens
    in the conversion, before the turn (:func:`quarter_turns`). A frame without rotation
    is returned exactly as ``to_ndarray`` gives it. The conversion is single-threaded:
    swscale's default (``threads=0``, automatic) starts and stops a thread per core for
    *every frame*, which on small frames costs more than the conversion (two ``clone``
    calls a frame, 7 s of system time over the default corpus' 22k frames).
    """
    turns = quarter_turns(frame)
    width, height = size or (None, None)
    if turns % 2:
        width, height = height, width
    array = frame.to_ndarray(format=format, width=width, height=height, threads=1)
    return np.ascontiguousarray(np.rot90(array, turns)) if turns else array


def nearest_frames(times: Iterable[float], fps: float, nominal_fps: float | None = None) -> Iterator[tuple[int, int]]:
    """Map output frame indices to the nearest source frame, lazily.

    ``times`` are the presentation times (seconds) of the source frames in display
    order. It is consumed one element ahead of what is yielded, so a decoder feeding it
    keeps only the last two frames. Yields ``(i, j)``: output frame ``i`` (at ``i / fps``
    after the first source frame) shows source frame ``j``. Output frames cover the
    source's span ``[t_first, t_last + d)``, where ``d`` (the last frame's duration) is
    the last inter-frame gap, or ``1 / nominal_fps`` for a one-frame video.
    """
    it = iter(times)
    try:
        t0 = float(next(it))
    except StopIteration:
        return
    i, prev_j, prev_t, gap = 0, 0, 0.0, 0.0
    for j, t in enumerate(it, start=1):
        t = max(float(t) - t0, prev_t)  # tolerate a non-monotonic timestamp
        gap = t - prev_t
        while i / fps <= t:
            target = i / fps
            nearer_prev = (target - prev_t) <= (t - target) + TIE_TOLERANCE_S
            yield i, prev_j if nearer_prev else j
            i += 1
        prev_j, prev_t = j, t
    end = prev_t + (gap or 1.0 / (nominal_fps or fps))
    n_out = max(1, math.ceil(end * fps - 1e-3))
    while i < n_out:
        yield i, prev_j
        i += 1


def iter_frames(
    path: str | Path,
    fps: float = 25,
    size: tuple[int, int] | None = None,
    *,
    threads: int = 1,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(i, frame)`` for the output frames at ``fps``; frame is ``H x W x 3`` RGB uint8.

    Frames are read-only: when the source rate is below ``fps`` consecutive outputs
    share one array.

    Frames are upright as displayed (see :func:`frame_array`); ``size=(width, height)``
    (of the displayed frame) scales them while converting them to RGB (cheaper than
    afterwards). ``threads`` is the decoder's thread count: 1 by default because stages
    parallelise over files with processes; 0 lets FFmpeg choose. A file that cannot be
    opened, has no video stream or fails to decode raises :class:`Rejected`.
    """
    path = Path(path)
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.error.FFmpegError, OSError) as exc:
        raise Rejected("corrupt", f"{path}: cannot open it as a video ({exc})") from None
    with container:
        if not container.streams.video:
            raise Rejected("no_video_stream", f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_count = threads
        nominal = float(stream.average_rate or stream.guessed_rate or 0) or None
        recent: dict[int, av.VideoFrame] = {}  # the last two decoded frames, by source index

        def times() -> Iterator[float]:
            for j, frame in enumerate(container.decode(stream)):
                recent[j] = frame
                recent.pop(j - 2, None)
                yield frame.time if frame.time is not None else j / (nominal or fps)

        pos, array, n = -1, None, 0
        try:
            for i, j in nearest_frames(times(), fps, nominal):
                if j != pos:
                    array = frame_array(recent[j], "rgb24", size)
                    array.flags.writeable = False  # shared by the outputs that repeat it
                    pos = j
                n += 1
                yield i, array
        except av.error.FFmpegError as exc:
            raise Rejected("corrupt", f"{path}: decoding failed after source frame {pos} ({exc})") from None
        if n == 0:
            raise Rejected("corrupt", f"{path}: no video frame decodes")
