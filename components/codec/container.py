"""The call file: the byte format earshot's talking-face codec writes and reads.

A call file holds one talking-face call: a header (sizes, frame rate, the decoder model's
id, the encoder's settings) and three payloads, in this order: the identity photo, the
low-resolution face video stream, the audio. :func:`pack` turns a :class:`CallFile` into
bytes, :func:`unpack` reads them back; ``docs/codec.md`` specifies the layout byte by byte.

Reading is safe on any input: :func:`unpack` checks the magic, the version, the header's
length and CRC-32, every length against the bytes actually there (before slicing anything)
and each payload's CRC-32, and raises :class:`CodecFileError` naming the file for every
refusal. Nothing in a file is ever executed: it holds integers, an enum index per setting
and opaque payload bytes, read with :mod:`struct` alone.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import NamedTuple

from components.errors import EarshotError

MAGIC = b"ESHT"
VERSION = 1
VIDEO_CODECS = ("h264", "hevc")
PIX_FMTS = ("yuv420p", "yuv444p")
PHOTO_FORMATS = ("jpeg", "webp", "avif")
AUDIO_CODECS = ("none", "opus")
PAYLOADS = ("photo", "video", "audio")  # their order in the file


class CodecFileError(EarshotError):
    """A call file (or a call about to be written) is not valid: the message says which and why."""


class _Field(NamedTuple):
    """One header field: its struct code, its allowed range, or the names its index stands for."""

    name: str
    code: str
    low: int = 0
    high: int | None = None  # None: the largest value ``code`` holds
    choices: tuple[str, ...] = ()  # an enum, stored as the value's index


_HEADER_FIELDS = (
    _Field("lr_size", "B", low=1),
    _Field("out_size", "H", low=1),
    _Field("fps_num", "H", low=1),
    _Field("fps_den", "H", low=1),
    _Field("n_frames", "I", low=1),
    _Field("sample_rate", "I", low=1),
    _Field("n_samples", "I"),
    _Field("model_id", "8s"),
    _Field("video_codec", "B", choices=VIDEO_CODECS),
    _Field("pix_fmt", "B", choices=PIX_FMTS),
    _Field("mosaic", "B", low=1),
    _Field("crf", "B"),
    _Field("photo_format", "B", choices=PHOTO_FORMATS),
    _Field("photo_quality", "B", high=100),
    _Field("audio_codec", "B", choices=AUDIO_CODECS),
    _Field("audio_kbps", "H"),
    _Field("photo_size", "H", low=1),
)
_MODEL_ID_BYTES = 8
_UINT_MAX = {"B": 0xFF, "H": 0xFFFF, "I": 0xFFFFFFFF}

_PREFIX = struct.Struct("<4sBH")  # magic, version, length of the header fields
_FIELDS = struct.Struct("<" + "".join(field.code for field in _HEADER_FIELDS))
_PAYLOAD_ENTRY = struct.Struct("<II")  # a payload's length, its CRC-32
_CRC = struct.Struct("<I")
_CRC_OFFSET = _PREFIX.size + _FIELDS.size + len(PAYLOADS) * _PAYLOAD_ENTRY.size
_HEADER_SIZE = _CRC_OFFSET + _CRC.size  # every byte before the photo payload


def _show(value: object) -> str:
    """``value``'s repr, cut short enough for a one-line message."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _field_problem(field: _Field, value: object) -> str | None:
    """What is wrong with ``value`` for ``field``, or None when it fits."""
    if field.choices:
        if isinstance(value, str) and value in field.choices:
            return None
        return f"is not one of {', '.join(field.choices)}"
    if field.code == "8s":
        if isinstance(value, bytes) and len(value) == _MODEL_ID_BYTES:
            return None
        return f"is not {_MODEL_ID_BYTES} bytes (the first {_MODEL_ID_BYTES} bytes of the decoder model file's sha256)"
    if not isinstance(value, int) or isinstance(value, bool):
        return "is not an integer"
    high = _UINT_MAX[field.code] if field.high is None else field.high
    if field.low <= value <= high:
        return None
    return f"is out of range ({field.low}..{high})"


@dataclass(frozen=True)
class CallHeader:
    """Everything a decoder needs besides the payloads; checked on construction."""

    lr_size: int  # side of the low-resolution face sent (8 or 16)
    out_size: int  # side of the decoder's output (256)
    fps_num: int  # frame rate as the fraction fps_num / fps_den
    fps_den: int
    n_frames: int
    sample_rate: int  # sample rate of the decoded audio
    n_samples: int  # length of the decoded audio in samples (cut or padded to it)
    model_id: bytes  # the first 8 bytes of the decoder model file's sha256
    video_codec: str  # one of VIDEO_CODECS
    pix_fmt: str  # one of PIX_FMTS
    mosaic: int  # frames are packed mosaic x mosaic per coded picture
    crf: int  # the video encoder's setting, for the record
    photo_format: str  # one of PHOTO_FORMATS
    photo_quality: int  # 0-100
    audio_codec: str  # one of AUDIO_CODECS
    audio_kbps: int
    photo_size: int  # side of the photo sent (the decoder enlarges it to out_size)

    def __post_init__(self) -> None:
        for field in _HEADER_FIELDS:
            value = getattr(self, field.name)
            problem = _field_problem(field, value)
            if problem:
                raise CodecFileError(f"CallHeader.{field.name} = {_show(value)} {problem}")

    @property
    def fps(self) -> float:
        return self.fps_num / self.fps_den


@dataclass(frozen=True)
class CallFile:
    """A whole call: its header and its three payloads (``audio`` is empty when there is no audio)."""

    header: CallHeader
    photo: bytes
    video: bytes
    audio: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.header, CallHeader):
            raise CodecFileError(f"CallFile.header = {_show(self.header)} is not a CallHeader")
        for payload in PAYLOADS:
            value = getattr(self, payload)
            if not isinstance(value, bytes):
                raise CodecFileError(f"CallFile.{payload} = {_show(value)} is not bytes")
            if len(value) > _UINT_MAX["I"]:
                raise CodecFileError(f"CallFile.{payload} holds {len(value)} bytes, over the format's 4 GiB limit")
        for payload in ("photo", "video"):
            if not getattr(self, payload):
                raise CodecFileError(f"CallFile.{payload} is empty")
        has_audio = self.header.audio_codec != "none"
        if has_audio and not self.audio:
            raise CodecFileError(f"CallFile.audio is empty but header.audio_codec is {self.header.audio_codec!r}")
        if not has_audio and self.audio:
            raise CodecFileError(f"CallFile.audio holds {len(self.audio)} bytes but header.audio_codec is 'none'")


def payload_sizes(call: CallFile) -> dict[str, int]:
    """Bytes of the header (everything before the payloads) and of each payload in ``call``'s file."""
    return {"header": _HEADER_SIZE, **{payload: len(getattr(call, payload)) for payload in PAYLOADS}}


def pack(call: CallFile) -> bytes:
    """The bytes of ``call``'s file (``docs/codec.md`` gives the layout)."""
    header = call.header
    values = []
    for field in _HEADER_FIELDS:
        value = getattr(header, field.name)
        values.append(field.choices.index(value) if field.choices else value)
    payloads = [getattr(call, payload) for payload in PAYLOADS]
    head = (
        _PREFIX.pack(MAGIC, VERSION, _FIELDS.size)
        + _FIELDS.pack(*values)
        + b"".join(_PAYLOAD_ENTRY.pack(len(payload), zlib.crc32(payload)) for payload in payloads)
    )
    return head + _CRC.pack(zlib.crc32(head)) + b"".join(payloads)


def _check_header_bytes(data: bytes, name: str) -> None:
    """Refuse what is not a complete header of this version: magic, version, header length, size."""
    size = len(data)
    if size == 0:
        raise CodecFileError(f"{name}: the file is empty (0 bytes)")
    start = data[: len(MAGIC)]
    if start != MAGIC[: len(start)]:
        raise CodecFileError(
            f"{name}: not an earshot codec file (it starts with bytes {data[:8].hex(' ')}; "
            f"a codec file starts with {MAGIC.hex(' ')})"
        )
    if size > len(MAGIC) and data[len(MAGIC)] != VERSION:
        raise CodecFileError(f"{name}: version {data[len(MAGIC)]} (this earshot reads version {VERSION})")
    if size >= _PREFIX.size:
        header_length = _PREFIX.unpack_from(data)[2]
        if header_length != _FIELDS.size:
            raise CodecFileError(
                f"{name}: header length {header_length} differs from version {VERSION}'s ({_FIELDS.size})"
            )
    if size < _HEADER_SIZE:
        raise CodecFileError(
            f"{name}: truncated (the file has {size} bytes, a version {VERSION} header alone has {_HEADER_SIZE})"
        )
    recorded = _CRC.unpack_from(data, _CRC_OFFSET)[0]
    actual = zlib.crc32(data[:_CRC_OFFSET])
    if recorded != actual:
        raise CodecFileError(
            f"{name}: the header is corrupted (CRC-32 {actual:08x}, the header records {recorded:08x})"
        )


def _read_header(data: bytes, name: str) -> CallHeader:
    """The header fields of a file whose header :func:`_check_header_bytes` accepted."""
    values = {}
    for field, value in zip(_HEADER_FIELDS, _FIELDS.unpack_from(data, _PREFIX.size)):
        if field.choices:
            if value >= len(field.choices):
                known = ", ".join(f"{code}={choice}" for code, choice in enumerate(field.choices))
                raise CodecFileError(f"{name}: unknown {field.name} code {value} (this earshot knows {known})")
            value = field.choices[value]
        values[field.name] = value
    try:
        return CallHeader(**values)
    except CodecFileError as err:
        raise CodecFileError(f"{name}: {err}") from None


def unpack(data: bytes, *, name: str = "the codec file") -> CallFile:
    """The call in ``data``, every check of ``docs/codec.md`` passed; refusals raise :class:`CodecFileError`."""
    if not isinstance(data, bytes):
        data = bytes(memoryview(data))
    _check_header_bytes(data, name)
    header = _read_header(data, name)
    entries = [
        _PAYLOAD_ENTRY.unpack_from(data, _PREFIX.size + _FIELDS.size + index * _PAYLOAD_ENTRY.size)
        for index in range(len(PAYLOADS))
    ]
    expected = _HEADER_SIZE + sum(length for length, _ in entries)
    if len(data) < expected:
        raise CodecFileError(f"{name}: truncated (the file has {len(data)} bytes, its header says {expected})")
    if len(data) > expected:
        raise CodecFileError(
            f"{name}: {len(data) - expected} bytes after the last payload (its header says {expected} bytes in all)"
        )
    payloads = {}
    offset = _HEADER_SIZE
    for payload, (length, recorded) in zip(PAYLOADS, entries):
        payloads[payload] = data[offset : offset + length]
        offset += length
        actual = zlib.crc32(payloads[payload])
        if actual != recorded:
            raise CodecFileError(
                f"{name}: the {payload} payload is corrupted (CRC-32 {actual:08x}, the header records {recorded:08x})"
            )
    try:
        return CallFile(header, **payloads)
    except CodecFileError as err:
        raise CodecFileError(f"{name}: {err}") from None
