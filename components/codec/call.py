"""Encode a talking-face call into a small file, and decode it with the video upsampling model.

The sender (``earshot codec encode``) keeps three things of a talking video
(docs/codec.md gives the bytes):

* the **photo**: one still of the face (the first frame of the face track) at
  ``photo_size`` (the decoder enlarges it to its ``out_size``), as JPEG, WebP or AVIF at
  ``photo_quality``;
* the **face video**: every frame degraded to the model's ``lr_size`` input exactly as
  the training faces were (:func:`components.data.features.degrade` of the frame's centre
  square), packed ``mosaic x mosaic`` per picture and coded with x264 or x265;
* the **audio**: mono Opus at ``audio_kbps``.

The receiver (``earshot codec decode``) refuses a file made for another model (the
header's model id is the first 8 bytes of the sha256 of the decoder's ``model.pt``),
decodes the three payloads and runs the model as ``earshot video-sr`` does
(:func:`components.inference.video_sr.upsample`): stage 1 on the 8x8 window and the
decoded audio's mel windows, stage 2 animating the photo; it writes a 256x256 H.264 +
AAC MP4 of the input's duration with the audio in sync.

:func:`encode_call` and :func:`decode_inputs` are pure (arrays in, arrays out); the
rate-distortion stage uses them on the test clips, the CLI through :func:`encode_file`
and :func:`decode_file`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from components.audio.spectrogram import SPEC_SAMPLE_RATE
from components.codec import streams
from components.codec.container import CallFile, CallHeader, CodecFileError, pack, payload_sizes, unpack
from components.config import CodecParams, FacesParams
from components.data.features import degrade, mel_windows, resize
from components.errors import Rejected
from components.figures.images import from_hwc, to_hwc
from components.io import sha256_file, write_bytes_atomic
from components.models.talking import VideoUpsampler


def model_id(path: str | Path) -> bytes:
    """The id a call file names its decoder by: the first 8 bytes of the model file's sha256."""
    return bytes.fromhex(sha256_file(path))[:8]


def low_res_frames(faces: Sequence[np.ndarray], size: int, *, name: str = "video") -> list[np.ndarray]:
    """Each HxWx3 uint8 face frame's centre square degraded to ``size`` (uint8): what is sent."""
    from components.inference.video_sr import centre_square

    return [degrade(np.ascontiguousarray(centre_square(f, size, name=name)), size) for f in faces]


def encode_call(lr: Sequence[np.ndarray], photo: np.ndarray, audio: np.ndarray, *, fps: float, settings: CodecParams,
                model: bytes, out_size: int, sample_rate: int = SPEC_SAMPLE_RATE) -> CallFile:
    """The call file of ``lr`` faces (uint8, lr_size x lr_size), the ``photo`` (uint8, out_size) and
    the mono ``audio`` (float, ``sample_rate``; cut or padded to the frames' duration)."""
    if not lr:
        raise CodecFileError("encode: no frames to send")
    size = lr[0].shape[0]
    rate = Fraction(fps).limit_denominator(1001)
    n_samples = round(len(lr) / rate * sample_rate)
    sound = np.zeros(n_samples, np.float32)
    sound[:min(n_samples, len(audio))] = np.asarray(audio, np.float32).reshape(-1)[:n_samples]
    video, _ = streams.encode_video(streams.mosaic(list(lr), settings.mosaic), settings.video_codec, crf=settings.crf,
                                    preset=settings.preset, fps=rate, pix_fmt=settings.pix_fmt, threads=1)
    if photo.shape[:2] != (out_size, out_size):
        raise CodecFileError(f"encode: the photo is {photo.shape[1]}x{photo.shape[0]}, not {out_size}x{out_size}")
    sent = photo if settings.photo_size == out_size else to_hwc(resize(from_hwc(photo), settings.photo_size))
    header = CallHeader(lr_size=size, out_size=out_size, fps_num=rate.numerator, fps_den=rate.denominator,
                        n_frames=len(lr), sample_rate=sample_rate, n_samples=n_samples, model_id=model,
                        video_codec=settings.video_codec, pix_fmt=settings.pix_fmt, mosaic=settings.mosaic,
                        crf=settings.crf, photo_format=settings.photo_format, photo_quality=settings.photo_quality,
                        audio_codec="opus", audio_kbps=settings.audio_kbps, photo_size=settings.photo_size)
    return CallFile(header, streams.encode_photo(sent, settings.photo_format, settings.photo_quality), video,
                    streams.encode_audio(sound, sample_rate, settings.audio_kbps))


@dataclass(frozen=True)
class DecodedInputs:
    """What the decoder's model takes, from a call file's payloads."""

    lr: list[np.ndarray]  # n_frames x (lr_size, lr_size, 3) uint8
    photo: np.ndarray  # (out_size, out_size, 3) uint8
    audio: np.ndarray  # n_samples float32 at the header's sample rate


def decode_inputs(call: CallFile, *, name: str = "the codec file") -> DecodedInputs:
    """The three payloads decoded and checked against the header."""
    h = call.header
    pictures = streams.decode_video(call.video, h.video_codec, name=f"{name}: video payload")
    side = h.lr_size * h.mosaic
    if pictures and pictures[0].shape[:2] != (side, side):
        raise CodecFileError(f"{name}: the video payload's pictures are {pictures[0].shape[1]}x{pictures[0].shape[0]}, "
                             f"the header says {side}x{side}")
    lr = streams.unmosaic(pictures, h.mosaic, h.n_frames, name=f"{name}: video payload")
    photo = streams.decode_photo(call.photo, h.photo_format, name=f"{name}: photo payload")
    if photo.shape[:2] != (h.photo_size, h.photo_size):
        raise CodecFileError(f"{name}: the photo is {photo.shape[1]}x{photo.shape[0]}, the header says "
                             f"{h.photo_size}x{h.photo_size}")
    if h.photo_size != h.out_size:
        photo = to_hwc(resize(from_hwc(photo), h.out_size))
    audio = (streams.decode_audio(call.audio, h.sample_rate, h.n_samples, name=f"{name}: audio payload")
             if h.audio_codec == "opus" else np.zeros(h.n_samples, np.float32))
    return DecodedInputs(lr, photo, audio)


def check_decoder(call: CallFile, model: VideoUpsampler, decoder_id: bytes, *, name: str = "the codec file") -> None:
    """Refuse a file made for another model, or whose sizes are not this model's."""
    h = call.header
    if h.model_id != decoder_id:
        raise CodecFileError(f"{name}: made for model {h.model_id.hex()}, this decoder's model is {decoder_id.hex()} "
                             "(decode with the model.pt the file was encoded for: --model)")
    if (h.lr_size, h.out_size) != (model.cfg.lr_size, model.cfg.out_size):
        raise CodecFileError(f"{name}: {h.lr_size} -> {h.out_size} px, the model is {model.cfg.lr_size} -> "
                             f"{model.cfg.out_size}")


def decoded_frames(model: VideoUpsampler, inputs: DecodedInputs, fps: float, *, batch: int = 8,
                   side_by_side: bool = False) -> Iterator[np.ndarray]:
    """The ``out_size`` output frames (HxWx3 uint8) of decoded inputs, streamed."""
    from components.inference.video_sr import upsample

    mels = mel_windows(inputs.audio, SPEC_SAMPLE_RATE, fps, n_frames=len(inputs.lr))
    faces = (from_hwc(frame) for frame in inputs.lr)
    return upsample(model, faces, mels, from_hwc(inputs.photo), side_by_side=side_by_side, batch=batch)


def bits_per_pixel(call: CallFile, *, audio: bool = False) -> float:
    """The file's bits over ``out_size^2 x n_frames`` output pixels: header + photo + video
    (``audio``: + the audio payload)."""
    sizes = payload_sizes(call)
    total = sizes["header"] + sizes["photo"] + sizes["video"] + (sizes["audio"] if audio else 0)
    return 8 * total / (call.header.out_size ** 2 * call.header.n_frames)


def report_lines(call: CallFile) -> list[str]:
    """What ``earshot codec encode --report`` prints: each payload's bytes and the bits per pixel."""
    h, sizes = call.header, payload_sizes(call)
    seconds = h.n_frames / h.fps
    lines = [f"{h.n_frames} frames ({seconds:.2f} s at {h.fps:g} fps), {h.lr_size}x{h.lr_size} sent, decoded to "
             f"{h.out_size}x{h.out_size}; model {h.model_id.hex()}"]
    for part in ("header", "photo", "video", "audio"):
        lines.append(f"  {part:<6} {sizes[part]:>8,d} bytes  {8 * sizes[part] / seconds / 1000:8.2f} kb/s")
    lines.append(f"  total  {sum(sizes.values()):>8,d} bytes  {8 * sum(sizes.values()) / seconds / 1000:8.2f} kb/s")
    lines.append(f"bits per pixel: {bits_per_pixel(call):.5f} (video: header + photo + video), "
                 f"{bits_per_pixel(call, audio=True):.5f} with the audio")
    return lines


# --------------------------------------------------------------------------- files


def encode_file(video: Path, out: Path, settings: CodecParams, model_path: Path, *, faces: FacesParams, fps: int,
                detect: bool, progress: bool = True) -> CallFile:
    """Encode a talking video into the call file ``out`` (written atomically); returns it.

    With ``detect`` the face is tracked and cropped as the faces stage does (its rules
    apply); without it every frame is the face. The decoder model is read for its sizes
    and id only.
    """
    from rich.console import Console

    from components.inference.inputs import read_voice
    from components.inference.video_sr import centre_square, face_frames, soundtrack
    from components.models.talking import load_video_sr

    if not video.is_file():
        raise CodecFileError(f"{video}: no such video file")
    try:
        voice = read_voice(video, SPEC_SAMPLE_RATE)
    except Rejected as exc:
        if exc.reason == "no_audio_stream":
            raise CodecFileError(f"{video}: the video has no audio stream (a call sends the face and the voice)") from None
        raise
    model = load_video_sr(model_path, "cpu")
    size = model.cfg.lr_size
    console = Console(stderr=True, quiet=not progress)
    with tempfile.TemporaryDirectory(prefix="earshot-codec-") as workdir:
        with console.status(f"face track of {video.name}" if detect else f"reading {video.name}"):
            n, frames = face_frames(video, detect, faces, fps, Path(workdir))
        lr, photo = [], None
        for frame in frames():  # streamed: only the first frame (the photo) and the lr frames are kept
            if photo is None:
                photo = to_hwc(resize(from_hwc(centre_square(frame, size, name=str(video))), model.cfg.out_size))
            lr.extend(low_res_frames([frame], size, name=str(video)))
    audio = soundtrack(voice, n, fps)
    call = encode_call(lr, photo, audio, fps=fps, settings=settings, model=model_id(model_path),
                       out_size=model.cfg.out_size)
    write_bytes_atomic(out, pack(call))
    return call


def read_call(path: Path) -> CallFile:
    """A call file, checked (magic, version, lengths, checksums)."""
    if not path.is_file():
        raise CodecFileError(f"{path}: no such codec file")
    return unpack(path.read_bytes(), name=str(path))


def decode_file(path: Path, out: Path, model: VideoUpsampler, model_path: Path, *, batch: int = 8,
                side_by_side: bool = False, progress: bool = True) -> Path:
    """Decode the call file ``path`` into ``out`` (a 256x256 H.264 + AAC MP4, atomically)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from components.media.write import write_video

    if out.suffix.lower() != ".mp4":
        raise CodecFileError(f"{out}: the output is an MP4 file (name it .mp4)")
    call = read_call(path)
    check_decoder(call, model, model_id(model_path), name=str(path))
    inputs = decode_inputs(call, name=str(path))
    fps = call.header.fps
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task(f"decode {path.name}", total=call.header.n_frames)

        def counted() -> Iterator[np.ndarray]:
            for frame in decoded_frames(model, inputs, fps, batch=batch, side_by_side=side_by_side):
                yield frame
                bar.advance(task)

        return write_video(out, counted(), fps, audio=inputs.audio, sample_rate=call.header.sample_rate)

