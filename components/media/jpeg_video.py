"""Face-crop tracks as Motion-JPEG in Matroska: one JPEG per frame, one lossy step.

The faces stage writes each crop track as a ``.mkv`` whose video stream is Motion-JPEG:
every packet is a complete baseline JPEG (libjpeg-turbo through OpenCV, 4:2:0, at
``faces.jpeg_quality``). That is the form the shards stage stores frames in, so it copies
the packets into the shards without decoding them (:func:`read_jpegs`): the pixels go
through one lossy step between the source video and training, not an H.264 encode
followed by a JPEG re-encode, and the faces stage pays ~0.2 ms a 256 px frame instead of
an x264 process. The file is still a video: ``ffplay``, VLC and mpv play it, ``earshot
data crops KEY`` turns it into an H.264 MP4 for a browser.

Writes are bit-exact (Matroska's ``bitexact`` flag: no random track UIDs, no version
string), so the same crops give the same bytes; they are atomic
(:func:`components.io.atomic_path`).

Readers accept any video codec, so crops made by another tool that follow the layout
contract work too: :func:`iter_crop_frames` decodes JPEG packets with OpenCV (a grey
decode skips the colour conversion: 0.15 ms a frame against ~3 ms through FFmpeg's
``yuvj420p`` conversion) and other codecs with PyAV.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import cv2
import numpy as np

from components.errors import Rejected
from components.io import atomic_path

JPEG_SOI, JPEG_EOI = b"\xff\xd8", b"\xff\xd9"


def encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    """An ``(H, W, 3)`` RGB uint8 frame as a baseline JPEG (4:2:0) at ``quality``."""
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frames must be (H, W, 3) uint8 RGB, got {frame.shape} {frame.dtype}")
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"OpenCV could not JPEG-encode a {frame.shape} frame")
    return buf.tobytes()


def decode_jpeg(data: bytes, mode: Literal["rgb", "gray"] = "rgb") -> np.ndarray:
    """A JPEG as ``(H, W, 3)`` RGB or ``(H, W)`` grey uint8; ``ValueError`` when it does not decode."""
    flag = cv2.IMREAD_GRAYSCALE if mode == "gray" else cv2.IMREAD_COLOR
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if image is None:
        raise ValueError("not a decodable JPEG")
    return image if mode == "gray" else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def write_jpeg_video(path: str | Path, frames: Iterable[np.ndarray], fps: int, quality: int) -> Path:
    """Encode RGB frames (all the same size) as Motion-JPEG in Matroska at ``path``, atomically.

    ``frames`` is consumed lazily, a frame at a time. Raises ``ValueError`` for no frames,
    bad frames or a change of size; no partial file is left behind.
    """
    path = Path(path)
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise ValueError(f"{path}: no frames to write")
    shape = first.shape

    def jpegs() -> Iterator[bytes]:
        yield encode_jpeg(first, quality)
        for frame in it:
            if frame.shape != shape:
                raise ValueError(f"{path}: frame shape changed from {shape} to {frame.shape}")
            yield encode_jpeg(frame, quality)

    return write_jpeg_packets(path, jpegs(), fps, (shape[1], shape[0]))


def write_jpeg_packets(path: str | Path, jpegs: Iterable[bytes], fps: int, size: tuple[int, int]) -> Path:
    """Mux already-encoded JPEGs of ``size`` (width, height) as a Matroska MJPEG stream, atomically."""
    path = Path(path)
    time_base = Fraction(1, int(fps))
    with atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format="matroska") as out:
            out.flags |= av.container.Flags.bitexact.value
            stream = out.add_stream("mjpeg", rate=int(fps))
            stream.width, stream.height = size
            stream.pix_fmt = "yuvj420p"
            n = 0
            for n, data in enumerate(jpegs, start=1):
                packet = av.Packet(data)
                packet.stream, packet.time_base = stream, time_base
                packet.pts = packet.dts = n - 1
                packet.is_keyframe = True
                out.mux(packet)
            if n == 0:
                raise ValueError(f"{path}: no frames to write")
    return path


def _open_video(path: Path) -> tuple[av.container.InputContainer, av.VideoStream]:
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.error.FFmpegError, OSError) as exc:
        raise Rejected("corrupt", f"{path}: cannot open it as a video ({exc})") from None
    if not container.streams.video:
        container.close()
        raise Rejected("corrupt", f"{path}: no video stream")
    return container, container.streams.video[0]


def is_jpeg_video(path: str | Path) -> bool:
    """Whether the first video stream of ``path`` is Motion-JPEG."""
    container, stream = _open_video(Path(path))
    with container:
        return stream.codec_context.name == "mjpeg"


def read_jpegs(path: str | Path) -> tuple[list[bytes], tuple[int, int]]:
    """The JPEG of every frame of a Motion-JPEG video, without decoding, and its (height, width).

    Raises :class:`Rejected` (``corrupt``) when the file does not open, is not Motion-JPEG
    or a packet is not a whole JPEG (a truncated file ends mid-packet): a bad crop never
    reaches a shard.
    """
    path = Path(path)
    container, stream = _open_video(path)
    with container:
        if stream.codec_context.name != "mjpeg":
            raise Rejected("corrupt", f"{path}: {stream.codec_context.name} video, not Motion-JPEG")
        size = (stream.codec_context.height, stream.codec_context.width)
        jpegs = []
        try:
            for packet in container.demux(stream):
                if packet.size:
                    data = bytes(packet)
                    if not (data.startswith(JPEG_SOI) and data.rstrip(b"\x00").endswith(JPEG_EOI)):
                        raise Rejected("corrupt", f"{path}: frame {len(jpegs)} is not a whole JPEG")
                    jpegs.append(data)
        except av.error.FFmpegError as exc:
            raise Rejected("corrupt", f"{path}: demuxing failed after {len(jpegs)} frames ({exc})") from None
    return jpegs, size


def iter_crop_frames(path: str | Path, mode: Literal["rgb", "gray"] = "rgb") -> Iterator[np.ndarray]:
    """Every frame of a crop video, as stored (no frame-rate resampling), RGB or grey uint8.

    Motion-JPEG packets decode with OpenCV; any other codec through PyAV, upright as
    displayed (:func:`components.media.read.frame_array`). Raises :class:`Rejected`
    (``corrupt``) when the file or a frame does not decode.
    """
    from components.media.read import frame_array

    path = Path(path)
    container, stream = _open_video(path)
    with container:
        stream.thread_count = 1  # stages parallelise over clips with processes
        jpeg = stream.codec_context.name == "mjpeg"
        n = 0
        try:
            if jpeg:
                for packet in container.demux(stream):
                    if packet.size:
                        yield decode_jpeg(bytes(packet), mode)
                        n += 1
            else:
                for frame in container.decode(stream):
                    yield frame_array(frame, "gray" if mode == "gray" else "rgb24")
                    n += 1
        except (av.error.FFmpegError, ValueError) as exc:
            raise Rejected("corrupt", f"{path}: frame {n} does not decode ({exc})") from None
