"""The call file's payload streams (components/codec/streams.py), by value: every video codec
gives its frames back in order, no SEI in the H.264 / HEVC streams, the mosaic's tile order,
photos and Opus audio round trip (sizes, length, timing, rate), garbage is a named error."""

from __future__ import annotations

import numpy as np
import pytest

from components.codec.streams import (
    decode_audio,
    decode_photo,
    decode_video,
    encode_audio,
    encode_photo,
    encode_video,
    mosaic,
    unmosaic,
)
from components.errors import EarshotError
from tests._fixtures import FRAME_STEP, STAMP, draw_face, speech_like

FPS, SR = 25, 16000
FAST = {"h264": "ultrafast", "hevc": "ultrafast", "av1": "10"}
"""A fast preset per codec: the tests check streams, not compression."""


def faces(n: int, size: int) -> list[np.ndarray]:
    """``n`` drawn face frames; frame k's top-left 8x8 block is grey ``FRAME_STEP * k``."""
    rng = np.random.default_rng(0)
    return [draw_face(size, k, 3, rng)[0] for k in range(n)]


def stamp_of(frame: np.ndarray) -> float:
    return float(frame[:STAMP, :STAMP].mean()) / FRAME_STEP


def nal_types(stream: bytes, codec: str) -> list[int]:
    """The NAL unit types of an Annex B stream, read after each 00 00 01 start code."""
    types, start = [], stream.find(b"\x00\x00\x01")
    while start >= 0:
        first = stream[start + 3]
        types.append(first & 0x1F if codec == "h264" else (first >> 1) & 0x3F)
        start = stream.find(b"\x00\x00\x01", start + 3)
    return types


# --------------------------------------------------------------------------- video


@pytest.mark.parametrize("codec, size", [("h264", 32), ("hevc", 64), ("av1", 64)])
def test_every_video_codec_gives_back_its_frames_in_order_close_to_the_input(codec: str, size: int):
    frames = faces(7, size)
    stream, pictures = encode_video(frames, codec, crf=10, preset=FAST[codec], fps=FPS, threads=1)
    decoded = decode_video(stream, codec)
    assert pictures == len(decoded) == 7
    assert all(d.shape == (size, size, 3) and d.dtype == np.uint8 for d in decoded)
    errors = [np.abs(d.astype(np.int16) - f).mean() for d, f in zip(decoded, frames)]
    assert max(errors) < 6, errors  # the drawn faces carry sensor noise of 4 levels
    assert [round(stamp_of(d)) for d in decoded] == list(range(7))  # each frame where it was sent


def test_a_lower_crf_costs_more_bytes():
    frames = faces(4, 32)
    sizes = [len(encode_video(frames, "h264", crf=crf, preset="ultrafast", fps=FPS, threads=1)[0])
             for crf in (10, 40)]
    assert sizes[0] > 2 * sizes[1], sizes


@pytest.mark.parametrize("codec, size, sei", [("h264", 32, {6}), ("hevc", 64, {39, 40})])
def test_h264_and_hevc_streams_carry_no_sei(codec: str, size: int, sei: set[int]):
    stream, _ = encode_video(faces(3, size), codec, crf=20, preset="medium", fps=FPS, threads=1)
    types = nal_types(stream, codec)
    parameter_sets = {"h264": {7, 8}, "hevc": {32, 33, 34}}[codec]  # the parse found real NAL units
    assert parameter_sets <= set(types) and not sei & set(types), types


def test_decode_video_limit_gives_the_first_pictures():
    stream, _ = encode_video(faces(6, 32), "h264", crf=10, preset="ultrafast", fps=FPS, threads=1)
    every, first = decode_video(stream, "h264"), decode_video(stream, "h264", limit=2)
    assert len(first) == 2 and all(np.array_equal(a, b) for a, b in zip(first, every))


def test_an_unknown_codec_or_no_frames_is_an_error():
    with pytest.raises(EarshotError, match="unknown video codec 'vp9'"):
        encode_video(faces(1, 32), "vp9", crf=10, preset="fast", fps=FPS)
    with pytest.raises(EarshotError, match="call.esht: unknown video codec 'vp9'"):
        decode_video(b"\x00\x00\x00\x01", "vp9", name="call.esht")
    with pytest.raises(EarshotError, match="no frames"):
        encode_video([], "h264", crf=10, preset="fast", fps=FPS)


# --------------------------------------------------------------------------- mosaic


def flat_frames(n: int) -> list[np.ndarray]:
    """Frame k: 2x3 (not square: rows and columns cannot be swapped unseen), every value k."""
    return [np.full((2, 3, 3), k, np.uint8) for k in range(n)]


def test_the_mosaic_puts_frame_k_at_row_k_div_m_column_k_mod_m_and_pads_with_the_last():
    pictures = mosaic(flat_frames(7), 2)
    assert len(pictures) == 2 and all(p.shape == (4, 6, 3) for p in pictures)
    tiles = [[int(p[r * 2, c * 3, 0]) for r in range(2) for c in range(2)] for p in pictures]
    assert tiles == [[0, 1, 2, 3], [4, 5, 6, 6]]  # the last picture padded with frame 6
    assert all(len(np.unique(p[r * 2:(r + 1) * 2, c * 3:(c + 1) * 3])) == 1
               for p in pictures for r in range(2) for c in range(2))  # whole tiles
    assert all(np.array_equal(a, b) for a, b in zip(mosaic(flat_frames(3), 1), flat_frames(3)))
    assert mosaic([], 4) == []


@pytest.mark.parametrize("n, side", [(1, 2), (4, 2), (7, 2), (17, 4), (3, 1)])
def test_unmosaic_gives_back_the_frames(n: int, side: int):
    frames = flat_frames(n)
    back = unmosaic(mosaic(frames, side), side, n)
    assert len(back) == n and all(np.array_equal(a, b) for a, b in zip(back, frames))


def test_unmosaic_refuses_too_few_pictures_and_pictures_that_do_not_split():
    pictures = mosaic(flat_frames(8), 2)
    with pytest.raises(EarshotError, match="call.esht: video: 2 pictures hold fewer than the 9 frames"):
        unmosaic(pictures, 2, 9, name="call.esht: video")
    with pytest.raises(EarshotError, match="call.esht: video: 6x4 pictures do not split into 3x3 frames"):
        unmosaic(pictures, 3, 1, name="call.esht: video")


# --------------------------------------------------------------------------- photo

PHOTO = faces(1, 64)[0][:48]  # 64 wide, 48 high


@pytest.mark.parametrize("fmt", ["jpeg", "webp", "avif"])
def test_every_photo_format_round_trips_and_a_lower_quality_costs_fewer_bytes(fmt: str):
    good, poor = encode_photo(PHOTO, fmt, 90), encode_photo(PHOTO, fmt, 20)
    decoded = decode_photo(good, fmt)
    assert decoded.shape == (48, 64, 3) and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(np.int16) - PHOTO).mean() < 6
    assert len(poor) < len(good)
    for other in {"jpeg", "webp", "avif"} - {fmt}:
        with pytest.raises(EarshotError, match=f"call.esht: photo: not a decodable {other} image"):
            decode_photo(good, other, name="call.esht: photo")


def test_an_unknown_photo_format_is_an_error():
    with pytest.raises(EarshotError, match="unknown photo format 'png'"):
        encode_photo(PHOTO, "png", 90)


# --------------------------------------------------------------------------- audio

N_SAMPLES = SR + 123  # not a whole number of Opus frames


def tone_from_half_a_second() -> np.ndarray:
    audio = np.zeros(N_SAMPLES, np.float32)
    audio[SR // 2:] = 0.5 * np.sin(2 * np.pi * 440 * np.arange(N_SAMPLES - SR // 2) / SR)
    return audio


def test_opus_keeps_the_length_and_the_timing():
    audio = tone_from_half_a_second()
    decoded = decode_audio(encode_audio(audio, SR, 16), SR, N_SAMPLES)
    assert decoded.shape == (N_SAMPLES,) and decoded.dtype == np.float32
    onset = int(np.argmax(np.abs(decoded) > 0.1))
    assert abs(onset - SR // 2) <= SR // 100, onset  # within 10 ms: no pre-skip left, no shift
    assert np.corrcoef(decoded[SR // 2 + 480:], audio[SR // 2 + 480:])[0, 1] > 0.95


def test_opus_is_cut_or_zero_padded_to_the_length_asked():
    stream = encode_audio(speech_like(N_SAMPLES, SR, 1, np.random.default_rng(0)), SR, 16)
    short, long = decode_audio(stream, SR, 800), decode_audio(stream, SR, N_SAMPLES + 4000)
    assert np.array_equal(short, long[:800])
    assert len(long) == N_SAMPLES + 4000 and not long[N_SAMPLES + 1000:].any()


def test_a_higher_opus_bitrate_costs_more_bytes_and_the_stream_is_bit_exact():
    voice = speech_like(N_SAMPLES, SR, 2, np.random.default_rng(0))
    assert len(encode_audio(voice, SR, 8)) < len(encode_audio(voice, SR, 32))
    assert encode_audio(voice, SR, 12) == encode_audio(voice, SR, 12)
    with pytest.raises(EarshotError, match="no samples"):
        encode_audio(np.zeros(0), SR, 12)


# --------------------------------------------------------------------------- garbage

GARBAGE = b"this is not a stream " * 8


@pytest.mark.parametrize("decode, message", [
    (lambda data, name: decode_video(data, "h264", name=name), "the h264 stream cannot be decoded"),
    (lambda data, name: decode_video(data, "hevc", name=name), "the hevc stream cannot be decoded"),
    (lambda data, name: decode_video(data, "av1", name=name), "the av1 stream cannot be decoded"),
    (lambda data, name: decode_photo(data, "webp", name=name), "not a decodable webp image"),
    (lambda data, name: decode_audio(data, SR, 100, name=name), "the Opus stream cannot be decoded"),
], ids=["h264", "hevc", "av1", "photo", "audio"])
def test_garbage_bytes_are_an_error_naming_the_stream(decode, message: str):  # noqa: ANN001
    with pytest.raises(EarshotError) as error:
        decode(GARBAGE, "call.esht: payload")
    assert str(error.value).startswith(f"call.esht: payload: {message}") and "\n" not in str(error.value)


@pytest.mark.parametrize("data", [b"", b"\x00\x00\x01 start codes, no picture " * 8], ids=["empty", "start_codes"])
def test_a_video_stream_without_a_picture_is_an_error(data: bytes):
    with pytest.raises(EarshotError, match="call.esht: video"):
        decode_video(data, "hevc", name="call.esht: video")
