"""The call file format: round trips, the layout docs/codec.md documents, and every refusal.

Files are made here from small synthetic payloads; the refusals are checked on files cut,
flipped, extended or crafted (with the header CRC recomputed, to reach the checks behind it),
and hypothesis feeds unpack random and randomly mutated bytes.
"""

from __future__ import annotations

import ast
import itertools
import re
import struct
import zlib
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import components.codec.container as container
from components.codec.container import (
    AUDIO_CODECS,
    MAGIC,
    PAYLOADS,
    PHOTO_FORMATS,
    PIX_FMTS,
    VERSION,
    VIDEO_CODECS,
    CallFile,
    CallHeader,
    CodecFileError,
    pack,
    payload_sizes,
    unpack,
)
from components.errors import EarshotError

DOC = Path(__file__).resolve().parents[2] / "docs" / "codec.md"
NAME = "call.esht"


def make_header(**changes: object) -> CallHeader:
    fields = dict(
        lr_size=8,
        out_size=256,
        fps_num=25,
        fps_den=1,
        n_frames=50,
        sample_rate=16000,
        n_samples=32000,
        model_id=bytes(range(1, 9)),
        video_codec="h264",
        pix_fmt="yuv420p",
        mosaic=4,
        crf=30,
        photo_format="webp",
        photo_quality=70,
        audio_codec="opus",
        audio_kbps=12,
        photo_size=256,
    )
    return CallHeader(**{**fields, **changes})


def make_call(audio: bool = True) -> CallFile:
    header = make_header() if audio else make_header(audio_codec="none", audio_kbps=0)
    return CallFile(
        header,
        photo=b"RIFF\x00photo" * 7,
        video=b"\x00\x00\x00\x01video" * 11,
        audio=b"OggS\x00audio" * 5 if audio else b"",
    )


CALL = make_call()
FILE = pack(CALL)
HEADER_BYTES = payload_sizes(CALL)["header"]


def payload_span(payload: str) -> tuple[int, int]:
    """Where ``payload`` lies in FILE."""
    sizes = payload_sizes(CALL)
    start = HEADER_BYTES + sum(sizes[p] for p in PAYLOADS[: PAYLOADS.index(payload)])
    return start, start + sizes[payload]


def reseal(data: bytes | bytearray) -> bytes:
    """``data`` with its header CRC recomputed, so that unpack reaches the checks behind it."""
    crc_at = HEADER_BYTES - 4
    return bytes(data[:crc_at]) + struct.pack("<I", zlib.crc32(bytes(data[:crc_at]))) + bytes(data[HEADER_BYTES:])


def refused(data: bytes, *fragments: str) -> str:
    with pytest.raises(CodecFileError) as caught:
        unpack(data, name=NAME)
    message = str(caught.value)
    assert message.startswith(f"{NAME}: ") and "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


# --- round trip and sizes ---


@pytest.mark.parametrize("audio", [True, False], ids=["with_audio", "without_audio"])
def test_round_trip(audio):
    call = make_call(audio)
    data = pack(call)
    assert data.startswith(MAGIC + bytes([VERSION]))
    assert unpack(data) == call
    assert unpack(bytearray(data)) == call
    sizes = payload_sizes(call)
    assert list(sizes) == ["header", *PAYLOADS]
    assert sum(sizes.values()) == len(data)
    assert sizes["audio"] == (len(call.audio) if audio else 0)


def test_every_setting_survives_the_round_trip():
    for video_codec, pix_fmt, photo_format in itertools.product(VIDEO_CODECS, PIX_FMTS, PHOTO_FORMATS):
        header = make_header(
            video_codec=video_codec,
            pix_fmt=pix_fmt,
            photo_format=photo_format,
            lr_size=255,
            out_size=65535,
            fps_num=30000,
            fps_den=1001,
            n_frames=2**32 - 1,
            n_samples=0,
            mosaic=1,
            crf=0,
            photo_quality=100,
            audio_kbps=65535,
        )
        call = replace(CALL, header=header)
        assert unpack(pack(call)).header == header
    assert make_header(fps_num=30000, fps_den=1001).fps == pytest.approx(29.97, abs=1e-3)


def test_the_documented_byte_table_matches_the_bytes():
    """Every row of docs/codec.md's layout table: the value sits at its offset with its type."""
    rows = re.findall(r"^\| (\d+) +\| (\d+) +\| (\w[\w -]*?) +\| (uint\d+|bytes) +\|", DOC.read_text(), re.M)
    assert len(rows) == 3 + 17 + 7  # magic, version, length; the fields; the payload entries and the CRC
    codes = {"uint8": "<B", "uint16": "<H", "uint32": "<I"}
    sizes = payload_sizes(CALL)
    expected = {
        "magic": MAGIC,
        "version": VERSION,
        "header length": HEADER_BYTES - 7 - 3 * 8 - 4,
        "header CRC-32": zlib.crc32(FILE[: HEADER_BYTES - 4]),
    }
    for payload in PAYLOADS:
        expected[f"{payload} length"] = sizes[payload]
        expected[f"{payload} CRC-32"] = zlib.crc32(getattr(CALL, payload))
    tables = {
        "video_codec": VIDEO_CODECS,
        "pix_fmt": PIX_FMTS,
        "photo_format": PHOTO_FORMATS,
        "audio_codec": AUDIO_CODECS,
    }
    for field in CALL.header.__dataclass_fields__:
        value = getattr(CALL.header, field)
        expected[field] = tables[field].index(value) if field in tables else value
    end = 0
    for offset, size, field, kind in rows:
        offset, size = int(offset), int(size)
        assert offset == end, f"{field} at {offset}, the previous row ends at {end}"
        raw = FILE[offset : offset + size]
        value = raw if kind == "bytes" else struct.unpack(codes[kind], raw)[0]
        assert value == expected.pop(field), field
        end = offset + size
    assert end == HEADER_BYTES and not expected
    assert f"header is {HEADER_BYTES} bytes" in DOC.read_text()


# --- refusals of unpack ---


def test_an_empty_file_is_refused():
    refused(b"", "empty")


@pytest.mark.parametrize("data", [b"\x89PNG\r\n\x1a\n\x00\x00", b"\x1b[2Jhello", b"ESHX" + FILE[4:]])
def test_another_kind_of_file_is_refused_showing_its_first_bytes_as_hex(data):
    message = refused(data, "not an earshot codec file", data[:4].hex(" "))
    assert data[:4].decode("latin-1") not in message


def test_another_version_is_refused():
    refused(FILE[:4] + bytes([2]) + FILE[5:], "version 2", "reads version 1")
    refused(FILE[:5], "truncated")  # the right version, then nothing


def test_another_header_length_is_refused():
    data = bytearray(FILE)
    data[5:7] = struct.pack("<H", 40)
    refused(reseal(data), "header length 40", "(38)")


@pytest.mark.parametrize("size", range(1, len(FILE)))
def test_a_truncated_file_is_refused_at_every_length(size):
    # each size cuts into the header, into one of the payloads, or just before the audio's last byte
    refused(FILE[:size], "truncated", f"the file has {size} bytes")


@pytest.mark.parametrize("payload", PAYLOADS)
def test_truncation_inside_a_payload_says_how_long_the_file_should_be(payload):
    start, end = payload_span(payload)
    refused(FILE[: (start + end) // 2], f"its header says {len(FILE)}")


@pytest.mark.parametrize("offset", range(7, 73))
def test_a_flipped_header_byte_is_a_corrupted_header(offset):
    data = bytearray(FILE)
    data[offset] ^= 0x10
    refused(bytes(data), "header is corrupted", "CRC-32")


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_a_flipped_payload_byte_names_the_payload(payload, where):
    start, end = payload_span(payload)
    offset = {"first": start, "middle": (start + end) // 2, "last": end - 1}[where]
    data = bytearray(FILE)
    data[offset] ^= 0x01
    refused(bytes(data), f"the {payload} payload is corrupted (CRC-32")


@pytest.mark.parametrize("extra", [1, 1000])
def test_trailing_bytes_are_refused(extra):
    refused(FILE + b"\x00" * extra, f"{extra} bytes after the last payload")


@pytest.mark.parametrize(
    ("offset", "value", "fragment"),
    [
        (34, 2, "unknown video_codec code 2"),
        (35, 9, "unknown pix_fmt code 9"),
        (38, 3, "unknown photo_format code 3"),
        (40, 255, "unknown audio_codec code 255"),
        (39, 101, "photo_quality = 101 is out of range (0..100)"),
        (7, 0, "lr_size = 0 is out of range"),
        (36, 0, "mosaic = 0 is out of range"),
    ],
)
def test_a_crafted_header_with_a_bad_field_is_refused(offset, value, fragment):
    data = bytearray(FILE)
    data[offset] = value
    refused(reseal(data), fragment)


def test_a_crafted_header_with_zero_frames_is_refused():
    data = bytearray(FILE)
    data[14:18] = struct.pack("<I", 0)
    refused(reseal(data), "n_frames = 0 is out of range")


def test_audio_that_contradicts_the_audio_codec_is_refused():
    data = bytearray(FILE)
    data[40] = AUDIO_CODECS.index("none")
    refused(reseal(data), "audio holds", "'none'")


def test_a_huge_recorded_length_is_checked_against_the_file_before_anything_is_read():
    data = bytearray(FILE)
    data[51:55] = struct.pack("<I", 2**32 - 1)  # the video's length
    refused(reseal(data), "truncated", f"the file has {len(FILE)} bytes")


# --- refusals on construction ---


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"video_codec": "av1"}, "CallHeader.video_codec = 'av1' is not one of h264, hevc"),
        ({"pix_fmt": "rgb24"}, "CallHeader.pix_fmt"),
        ({"photo_format": "png"}, "CallHeader.photo_format"),
        ({"audio_codec": "aac"}, "CallHeader.audio_codec"),
        ({"lr_size": 0}, "CallHeader.lr_size = 0 is out of range (1..255)"),
        ({"lr_size": 256}, "CallHeader.lr_size = 256"),
        ({"out_size": 65536}, "CallHeader.out_size"),
        ({"fps_num": 0}, "CallHeader.fps_num"),
        ({"fps_den": 0}, "CallHeader.fps_den"),
        ({"n_frames": 0}, "CallHeader.n_frames"),
        ({"n_frames": 2**32}, "CallHeader.n_frames"),
        ({"sample_rate": 0}, "CallHeader.sample_rate"),
        ({"n_samples": -1}, "CallHeader.n_samples"),
        ({"mosaic": 0}, "CallHeader.mosaic"),
        ({"crf": 256}, "CallHeader.crf"),
        ({"photo_quality": 101}, "CallHeader.photo_quality = 101 is out of range (0..100)"),
        ({"audio_kbps": 70000}, "CallHeader.audio_kbps"),
        ({"lr_size": 8.0}, "CallHeader.lr_size = 8.0 is not an integer"),
        ({"mosaic": True}, "CallHeader.mosaic = True is not an integer"),
        ({"model_id": b"\x00" * 32}, "CallHeader.model_id"),
        ({"model_id": "0123abcd"}, "CallHeader.model_id"),
    ],
)
def test_a_bad_header_field_is_refused_on_construction(changes, fragment):
    with pytest.raises(CodecFileError, match=re.escape(fragment)):
        make_header(**changes)


@pytest.mark.parametrize(
    ("audio", "changes", "fragment"),
    [
        (True, {"photo": b""}, "CallFile.photo is empty"),
        (True, {"video": b""}, "CallFile.video is empty"),
        (True, {"audio": b""}, "CallFile.audio is empty but header.audio_codec is 'opus'"),
        (False, {"audio": b"abc"}, "CallFile.audio holds 3 bytes but header.audio_codec is 'none'"),
        (True, {"photo": bytearray(b"x")}, "CallFile.photo = bytearray(b'x') is not bytes"),
        (True, {"header": None}, "CallFile.header = None is not a CallHeader"),
    ],
)
def test_a_bad_call_is_refused_on_construction(audio, changes, fragment):
    with pytest.raises(CodecFileError, match=re.escape(fragment)):
        replace(make_call(audio), **changes)


def test_the_error_is_an_earshot_error():
    assert issubclass(CodecFileError, EarshotError)


# --- robustness ---

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def unpack_or_refuse(data: bytes) -> None:
    """unpack may accept ``data`` or refuse it with a CodecFileError, nothing else."""
    try:
        call = unpack(data, name=NAME)
    except CodecFileError as err:
        assert str(err).startswith(f"{NAME}: ")
    else:
        assert pack(call) == data


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_only_ever_raise_codec_file_errors(data):
    unpack_or_refuse(data)
    unpack_or_refuse(MAGIC + bytes([VERSION]) + data)


EDITS = st.tuples(st.sampled_from(["flip", "cut", "insert", "delete"]), st.integers(0, 10**6), st.integers(0, 255))


@FUZZ
@given(st.lists(EDITS, min_size=1, max_size=4))
def test_mutated_files_only_ever_raise_codec_file_errors(edits):
    data = bytearray(FILE)
    for kind, position, byte in edits:
        at = position % (len(data) + 1)
        if kind == "flip" and at < len(data):
            data[at] ^= byte or 1
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data.insert(at, byte)
        elif kind == "delete" and at < len(data):
            del data[at]
    unpack_or_refuse(bytes(data))
    unpack_or_refuse(reseal(data) if len(data) >= HEADER_BYTES else bytes(data))


FIELDS_END = 7 + 38  # the header fields: after magic, version and header length, before the payload entries
FIELD_BYTES = st.lists(st.one_of(st.integers(0, 3), st.integers(0, 255)), min_size=38, max_size=38).map(bytes)


@FUZZ
@given(FIELD_BYTES, st.booleans())
def test_resealed_random_headers_only_ever_raise_codec_file_errors(fields, random_entries):
    """Random header fields (small bytes often: enum codes in range) under a valid CRC, the
    payload entries kept or randomised: the checks behind the CRC hold."""
    entries = FILE[FIELDS_END : HEADER_BYTES - 4]
    if random_entries:
        entries = bytes(reversed(fields[:24]))
    unpack_or_refuse(reseal(FILE[:7] + fields + entries + FILE[HEADER_BYTES - 4 :]))


def test_the_reader_can_run_nothing_from_a_file():
    """The module imports only struct, zlib and plain types, and calls no eval, exec or compile."""
    tree = ast.parse(Path(container.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported == {"__future__", "struct", "zlib", "dataclasses", "typing", "components.errors"}
    called = {node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert not called & {"eval", "exec", "compile", "__import__"}
