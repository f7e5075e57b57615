"""Probe a media file and prove it decodes, before any stage relies on it.

Container headers lie: a download cut short, a file of random bytes named ``.mp4`` or a
stream in a codec nobody can decode all look fine to a header-only probe (ffprobe) and
then fail deep inside a later stage. :func:`probe` therefore opens the file with PyAV
and *decodes*:

* the first video frame (and the first audio frame when there is audio), which
  catches garbage, unknown codecs and broken stream headers;
* the frames of the last second (after a seek), which catches truncation: when the
  index is at the front of the file (``+faststart`` MP4, Matroska cues, MPEG-PS), a
  file cut short still opens and its first frames decode, but the tail does not. The
  decode must also *reach* the end the index records: with a single keyframe the seek
  lands at the start and whatever is left decodes, so a video whose last decoded frame
  ends more than :data:`TRUNCATION_TOLERANCE_S` before its stream's recorded end is
  rejected as ``truncated`` (not kept at its decoded length: the container's duration
  and frame count, and the audio cut at another point, would be wrong for every stage
  that reads them, and a cut file is usually a broken transfer that a retry repairs).

The reported ``width`` x ``height`` is the frame as displayed: the display matrix's
rotation (``rotation``, which :func:`components.media.read.frame_array` applies) is
taken from the first decoded frame.

It costs one GOP at each end, not a full decode, so it is cheap enough to run on every
file that enters ``data/raw``. Failures raise :class:`~components.errors.Rejected` with
a reason code from :data:`components.errors.REASONS` and a detail naming the file.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import av

from components.errors import Rejected
from components.media.read import quarter_turns

log = logging.getLogger(__name__)

MAX_HEAD_PACKETS = 600
"""Packets demuxed from the start before concluding that no frame decodes: a decoder
needs a few packets (B-frame delay, an audio priming frame), never hundreds."""

TAIL_SECONDS = 1.0
"""How far before the end the truncation check seeks (then decodes to the end)."""

TRUNCATION_TOLERANCE_S = 0.5
"""How much earlier than its stream's recorded end a video's decoded frames may stop.
Intact files end within a frame of it (edit lists and VFR included); a cut one stops
seconds short."""


@dataclass(frozen=True)
class MediaInfo:
    """What the pipeline needs to know about a media file (values as PyAV reports them)."""

    path: str
    bytes: int
    container: str  # demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2", "mpeg", "matroska,webm"
    duration_s: float
    has_video: bool
    has_audio: bool
    width: int  # as displayed (after ``rotation``)
    height: int
    rotation: int  # degrees counter-clockwise the display turns the stored pixels (0, 90, 180, 270)
    fps: float
    n_frames: int  # from the container when it records it, else round(duration_s * fps)
    vcodec: str
    acodec: str | None
    audio_rate: int | None
    audio_channels: int | None


def probe(path: str | Path) -> MediaInfo:
    """Read the stream layout of ``path`` and decode a frame at each end.

    Raises :class:`Rejected` with ``unreadable`` (missing path, a folder, no permission),
    ``empty_file``, ``corrupt`` (not a media container, or a frame fails to decode),
    ``truncated`` (the index is there but the frames stop short of it), ``no_video_stream``
    or ``unsupported_codec`` (no decoder for the video codec). A missing audio stream is
    reported (``has_audio``), not rejected: only stages that need the audio reject it.
    """
    path = Path(path)
    size = readable_size(path)
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise Rejected("corrupt", f"{path}: not a readable media container ({_why(exc)})") from None
    with container:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise Rejected("no_video_stream", f"{path}: no video stream (streams: {', '.join(kinds)})")
        video = container.streams.video[0]
        if video.codec_context is None:
            raise Rejected("unsupported_codec", f"{path}: FFmpeg has no decoder for the video codec")
        audio = container.streams.audio[0] if container.streams.audio else None
        if audio is not None and audio.codec_context is None:
            log.warning("%s: FFmpeg has no decoder for the audio codec; treating the file as silent", path)
            audio = None
        duration = _duration(container, video)
        rotation = _decode_head(container, path, video, audio)
        _decode_tail(container, path, video, duration)
        fps = float(video.average_rate or video.guessed_rate or video.base_rate or 0)
        n_frames = int(video.frames) or int(round(duration * fps))
        ctx = video.codec_context
        actx = audio.codec_context if audio is not None else None
        return MediaInfo(
            path=str(path),
            bytes=size,
            container=container.format.name,
            duration_s=duration,
            has_video=True,
            has_audio=audio is not None,
            width=int(ctx.height if rotation % 180 else ctx.width),
            height=int(ctx.width if rotation % 180 else ctx.height),
            rotation=rotation,
            fps=fps,
            n_frames=n_frames,
            vcodec=ctx.name,
            acodec=actx.name if actx is not None else None,
            audio_rate=int(actx.sample_rate) if actx is not None else None,
            audio_channels=int(actx.layout.nb_channels) if actx is not None else None,
        )


def readable_size(path: Path) -> int:
    """Size of a regular, readable file, else ``unreadable``/``empty_file``."""
    try:
        if path.is_dir():
            raise Rejected("unreadable", f"{path}: is a directory, not a file")
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
    except OSError as exc:
        raise Rejected("unreadable", f"{path}: {exc.strerror or exc}") from None
    if size == 0:
        raise Rejected("empty_file", f"{path}: zero bytes")
    return size


def _duration(container: av.container.InputContainer, video: av.VideoStream) -> float:
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    if video.duration is not None and video.time_base is not None:
        return float(video.duration * video.time_base)
    return 0.0


def _decode_head(container: av.container.InputContainer, path: Path, video: av.VideoStream,
                 audio: av.AudioStream | None) -> int:
    """Decode the first video frame (and first audio frame) or raise ``corrupt``.

    Returns the video's display rotation (degrees counter-clockwise, 0/90/180/270).
    """
    need = {video.index} | ({audio.index} if audio is not None else set())
    streams = [video] + ([audio] if audio is not None else [])
    rotation = 0
    try:
        for n, packet in enumerate(container.demux(streams)):
            if packet.stream.index in need and (frames := packet.decode()):
                need.discard(packet.stream.index)
                if packet.stream.index == video.index:
                    rotation = quarter_turns(frames[0]) * 90
            if not need or n >= MAX_HEAD_PACKETS:
                break
    except av.error.FFmpegError as exc:
        raise Rejected("corrupt", f"{path}: the first frames do not decode ({_why(exc)})") from None
    if need:
        kinds = ", ".join(sorted(s.type for s in streams if s.index in need))
        raise Rejected("corrupt", f"{path}: no decodable {kinds} frame at the start of the file")
    return rotation


def _decode_tail(container: av.container.InputContainer, path: Path, video: av.VideoStream,
                 duration: float) -> None:
    """Seek to the last second and decode to the end, or raise ``truncated`` (the frames
    stop well before the video's recorded end, or none decodes there) or ``corrupt``
    (a damaged tail that still reaches the end)."""
    target = max(0.0, duration - TAIL_SECONDS)
    frames, decoded_end, failure = 0, None, None
    try:
        container.seek(int(target * av.time_base), backward=True)
        video.codec_context.flush_buffers()
        for packet in container.demux(video):
            for frame in packet.decode():
                frames += 1
                decoded_end = _frame_end(frame, video, decoded_end)
    except av.error.FFmpegError as exc:
        failure = _why(exc)
    if frames == 0:
        why = f" ({failure})" if failure else ""
        raise Rejected("truncated", f"{path}: no video frame decodes in the last {TAIL_SECONDS:g}s{why}")
    recorded_end = _recorded_end(video)
    if recorded_end is not None and decoded_end is not None and recorded_end - decoded_end > TRUNCATION_TOLERANCE_S:
        start = float(video.start_time * video.time_base) if video.start_time is not None else 0.0
        raise Rejected("truncated", f"{path}: the video decodes to {decoded_end - start:.2f}s but the container "
                                    f"records {recorded_end - start:.2f}s (file cut short)")
    if failure:
        raise Rejected("corrupt", f"{path}: damaged near t={target:.2f}s ({failure})")


def _frame_end(frame: av.VideoFrame, video: av.VideoStream, latest: float | None) -> float | None:
    """The later of ``latest`` and the time ``frame`` stops showing (its pts plus its duration)."""
    if frame.time is None:
        return latest
    step = float(frame.duration * frame.time_base) if frame.duration and frame.time_base else 0.0
    if not step:
        rate = float(video.average_rate or video.guessed_rate or 0)
        step = 1.0 / rate if rate else 0.0
    end = float(frame.time) + step
    return end if latest is None else max(latest, end)


def _recorded_end(video: av.VideoStream) -> float | None:
    """The end time (seconds) the container's index records for the video stream, if any."""
    if video.duration is None or video.time_base is None or not video.duration:
        return None
    return float((video.start_time or 0) + video.duration) * float(video.time_base)


def _why(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc)
