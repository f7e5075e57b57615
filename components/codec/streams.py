"""The codecs a call file's payloads and the rate-distortion baselines are made with.

One function pair per kind of payload, all in this process through PyAV's FFmpeg
(libx264, libx265, SVT-AV1, libopus, dav1d) and Pillow (JPEG, WebP, AVIF):

* :func:`encode_video` / :func:`decode_video`: RGB frames <-> a raw elementary stream
  (H.264 or HEVC Annex B, AV1 as low-overhead OBUs). The encoders' informational SEI
  (x264 writes its whole command line into the first picture, ~680 bytes; x265 its
  version string) is left out of every stream, the call's and the baselines' alike, so
  that a rate counts picture data only.
* :func:`mosaic` / :func:`unmosaic`: ``m x m`` consecutive frames packed into one picture.
  An 8x8 picture costs H.264 ~24 bytes whatever its content (NAL and slice headers, one
  padded macroblock); packed 4x4 per picture the same frames cost ~8 bytes each.
* :func:`encode_photo` / :func:`decode_photo`: the identity still.
* :func:`encode_audio` / :func:`decode_audio`: mono audio <-> an Ogg Opus stream,
  decoded back to the caller's sample rate and cut or padded to the original length
  (Ogg's pre-skip is applied by the demuxer, so the audio stays in sync).

Every decoder raises :class:`~components.errors.EarshotError` naming ``name`` for bytes
it cannot decode, and reads only the bytes it is given.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterable, Sequence
from fractions import Fraction

import numpy as np

from components.errors import EarshotError

ENCODERS = {"h264": "libx264", "hevc": "libx265", "av1": "libsvtav1"}
"""The encoder of each stream codec (PyAV's FFmpeg)."""
STREAM_FORMATS = {"h264": "h264", "hevc": "hevc", "av1": "obu"}
"""The raw stream format (FFmpeg muxer/demuxer) of each codec."""
PHOTO_FORMATS = {"jpeg": "JPEG", "webp": "WEBP", "avif": "AVIF"}
"""Pillow's name of each photo format."""
OPUS_RATE = 48000  # Opus decodes at 48 kHz


def _encoder_options(codec: str, crf: int, preset: str, extra: str) -> dict[str, str]:
    """The encoder's options: the rate (CRF) and speed preset, logs quiet, no informational SEI."""
    if codec == "h264":
        return {"crf": str(crf), "preset": preset} | ({"x264-params": extra} if extra else {})
    if codec == "hevc":
        return {"crf": str(crf), "preset": preset,
                "x265-params": ":".join(p for p in ("log-level=error", "info=0", extra) if p)}
    if codec == "av1":
        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 logs its whole configuration per encoder: errors only
        return {"crf": str(crf), "preset": preset,
                "svtav1-params": ":".join(p for p in ("log-level=0", extra) if p)}
    raise EarshotError(f"unknown video codec {codec!r} (one of {', '.join(ENCODERS)})")


def encode_video(frames: Iterable[np.ndarray], codec: str, *, crf: int, preset: str, fps: float | Fraction,
                 pix_fmt: str = "yuv420p", extra: str = "", threads: int = 0) -> tuple[bytes, int]:
    """Encode (H, W, 3) uint8 RGB frames (all one size) into a raw ``codec`` stream.

    Returns the stream's bytes and how many pictures it holds. ``extra``: more
    ``key=value`` encoder params (``:``-separated), ``threads``: the encoder's threads
    (0: its choice).
    """
    import av

    options = _encoder_options(codec, crf, preset, extra)
    buffer = io.BytesIO()
    pictures = 0
    with av.open(buffer, "w", format=STREAM_FORMATS[codec]) as out:
        stream = None
        strip = None
        for frame in frames:
            if stream is None:
                height, width = frame.shape[:2]
                stream = out.add_stream(ENCODERS[codec], rate=Fraction(fps).limit_denominator(1001), options=options)
                stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
                stream.thread_count = threads
                if codec == "h264":  # drop x264's SEI (NAL type 6)
                    strip = av.bitstream.BitStreamFilterContext("filter_units=remove_types=6", stream)
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            _mux(out, stream.encode(picture), strip)
            pictures += 1
        if stream is None:
            raise EarshotError("encode_video: no frames to encode")
        _mux(out, stream.encode(), strip)
        if strip is not None:
            _mux(out, strip.filter(None), None)
    return buffer.getvalue(), pictures


def _mux(out, packets, strip) -> None:  # type: ignore[no-untyped-def]
    for packet in packets:
        for kept in (strip.filter(packet) if strip is not None else [packet]):
            out.mux(kept)


def decode_video(data: bytes, codec: str, *, name: str = "the video stream", limit: int | None = None) -> list[np.ndarray]:
    """The pictures of a raw ``codec`` stream as (H, W, 3) uint8 RGB: all of them, or the first ``limit``."""
    import av

    if codec not in STREAM_FORMATS:
        raise EarshotError(f"{name}: unknown video codec {codec!r}")
    try:
        with av.open(io.BytesIO(data), format=STREAM_FORMATS[codec]) as container:
            pictures = []
            for frame in container.decode(video=0):
                pictures.append(frame.to_ndarray(format="rgb24"))
                if limit is not None and len(pictures) >= limit:
                    break
    except (av.error.FFmpegError, ValueError, IndexError) as exc:
        raise EarshotError(f"{name}: the {codec} stream cannot be decoded ({exc})") from None
    if not pictures:
        raise EarshotError(f"{name}: the {codec} stream holds no picture")
    return pictures


def mosaic(frames: Sequence[np.ndarray], side: int) -> list[np.ndarray]:
    """Consecutive frames packed ``side x side`` per picture, row-major; the last picture is
    padded by repeating the last frame. ``side`` 1 returns the frames."""
    if side == 1:
        return list(frames)
    if not frames:
        return []
    per = side * side
    padded = list(frames) + [frames[-1]] * (-len(frames) % per)
    return [np.concatenate([np.concatenate(padded[k + r * side:k + (r + 1) * side], axis=1) for r in range(side)])
            for k in range(0, len(padded), per)]


def unmosaic(pictures: Sequence[np.ndarray], side: int, n_frames: int, *, name: str = "the video stream") -> list[np.ndarray]:
    """The first ``n_frames`` frames of pictures packed by :func:`mosaic`."""
    if len(pictures) < math.ceil(n_frames / (side * side)):
        raise EarshotError(f"{name}: {len(pictures)} pictures hold fewer than the {n_frames} frames it should carry")
    if side == 1:
        return list(pictures[:n_frames])
    height, width = pictures[0].shape[:2]
    if height % side or width % side:
        raise EarshotError(f"{name}: {width}x{height} pictures do not split into {side}x{side} frames")
    h, w = height // side, width // side
    frames = [p[r * h:(r + 1) * h, c * w:(c + 1) * w] for p in pictures for r in range(side) for c in range(side)]
    return frames[:n_frames]


def encode_photo(image: np.ndarray, fmt: str, quality: int) -> bytes:
    """An (H, W, 3) uint8 RGB image as a ``fmt`` (jpeg, webp, avif) file at ``quality`` (0-100)."""
    from PIL import Image

    if fmt not in PHOTO_FORMATS:
        raise EarshotError(f"unknown photo format {fmt!r} (one of {', '.join(PHOTO_FORMATS)})")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, PHOTO_FORMATS[fmt], quality=int(quality))
    return buffer.getvalue()


def decode_photo(data: bytes, fmt: str, *, name: str = "the photo") -> np.ndarray:
    """The (H, W, 3) uint8 RGB image of a ``fmt`` file; other formats are refused."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data), formats=[PHOTO_FORMATS[fmt]]) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, KeyError) as exc:
        raise EarshotError(f"{name}: not a decodable {fmt} image ({exc})") from None


def encode_audio(samples: np.ndarray, sample_rate: int, kbps: int) -> bytes:
    """Mono float samples in [-1, 1] as an Ogg Opus stream at ``kbps`` kb/s (bit-exact muxing:
    no encoder version in its tags)."""
    import av

    samples = np.ascontiguousarray(samples, dtype=np.float32).reshape(-1)
    if samples.size == 0:
        raise EarshotError("encode_audio: no samples to encode")
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="ogg") as out:
        out.flags |= av.container.Flags.bitexact.value
        stream = out.add_stream("libopus", rate=sample_rate, layout="mono")
        stream.bit_rate = int(kbps) * 1000
        stream.codec_context.flags |= av.codec.context.Flags.bitexact.value
        chunk = av.AudioFrame.from_ndarray(samples[None], format="flt", layout="mono")
        chunk.sample_rate, chunk.pts = sample_rate, 0
        out.mux(stream.encode(chunk))
        out.mux(stream.encode())
    return buffer.getvalue()


def decode_audio(data: bytes, sample_rate: int, n_samples: int, *, name: str = "the audio stream") -> np.ndarray:
    """The float32 mono samples of an Ogg Opus stream at ``sample_rate``, cut or zero-padded
    to ``n_samples``."""
    import av

    try:
        with av.open(io.BytesIO(data), format="ogg") as container:
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            parts = [part.to_ndarray().reshape(-1) for frame in container.decode(audio=0)
                     for part in resampler.resample(frame)]
            parts += [part.to_ndarray().reshape(-1) for part in resampler.resample(None)]
    except (av.error.FFmpegError, ValueError, IndexError) as exc:
        raise EarshotError(f"{name}: the Opus stream cannot be decoded ({exc})") from None
    audio = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    out = np.zeros(n_samples, np.float32)
    out[:min(n_samples, len(audio))] = audio[:n_samples]
    return out
