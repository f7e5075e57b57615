"""Encoding and decoding one call (components/codec/call.py), arrays in and out: what the
receiver decodes is what was sent, the bits per pixel and the report by value, the decoder
check (model id, sizes) and the decoder's frames, with a tiny untrained model."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from components.codec.call import (
    DecodedInputs,
    bits_per_pixel,
    check_decoder,
    decode_inputs,
    decoded_frames,
    encode_call,
    low_res_frames,
    model_id,
    report_lines,
)
from components.codec.container import CallFile, CodecFileError, pack, unpack
from components.config import CodecParams
from components.data.features import degrade
from components.errors import EarshotError
from components.models.talking import build_models
from components.models.talking.upsampler import VideoUpsampler
from tests._fixtures import draw_face, speech_like
from tests.conftest import tiny_params
from tests.inference.test_video_sr import FPS, SR, TINY, save_video_model

N_FRAMES = 30  # not a multiple of the 4x4 mosaic: the last picture is padded
MODEL_ID = bytes.fromhex("0123456789abcdef")


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> CodecParams:
    """The default operating point of params.yaml."""
    return tiny_params(tmp_path_factory.mktemp("params")).codec


@pytest.fixture(scope="module")
def sent() -> DecodedInputs:
    """What the sender has: 8x8 faces degraded from 64 px drawn ones, a 256 px photo, 1.2 s of voice."""
    rng = np.random.default_rng(0)
    faces = [draw_face(64, k, 3, rng)[0] for k in range(N_FRAMES)]
    return DecodedInputs(low_res_frames(faces, 8), draw_face(256, 0, 3, rng)[0],
                         speech_like(N_FRAMES * SR // FPS, SR, 3, rng).astype(np.float32))


def encode(sent: DecodedInputs, settings: CodecParams) -> CallFile:
    return encode_call(sent.lr, sent.photo, sent.audio, fps=FPS, settings=settings, model=MODEL_ID, out_size=256)


@pytest.fixture(scope="module")
def call(sent: DecodedInputs, settings: CodecParams) -> CallFile:
    return encode(sent, settings)


def mean_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b).mean())


def test_the_receiver_decodes_what_was_sent(call: CallFile, sent: DecodedInputs):
    got = decode_inputs(unpack(pack(call)))
    assert len(got.lr) == N_FRAMES and all(f.shape == (8, 8, 3) and f.dtype == np.uint8 for f in got.lr)
    assert np.mean([mean_error(a, b) for a, b in zip(got.lr, sent.lr)]) < 8  # CRF 18 on 8x8 faces
    assert got.photo.shape == (256, 256, 3) and mean_error(got.photo, sent.photo) < 8
    assert got.audio.shape == (N_FRAMES * SR // FPS,) and call.header.n_samples == len(got.audio)
    assert np.corrcoef(got.audio, sent.audio)[0, 1] > 0.9


def test_the_header_records_the_call_and_the_operating_point(call: CallFile, settings: CodecParams):
    h = call.header
    assert (h.lr_size, h.out_size, h.n_frames, h.fps, h.sample_rate, h.model_id) == (8, 256, N_FRAMES, FPS, SR,
                                                                                      MODEL_ID)
    assert (h.video_codec, h.pix_fmt, h.mosaic, h.crf) == (settings.video_codec, settings.pix_fmt, settings.mosaic,
                                                           settings.crf)
    assert (h.photo_format, h.photo_quality, h.audio_codec, h.audio_kbps) == (settings.photo_format,
                                                                              settings.photo_quality, "opus",
                                                                              settings.audio_kbps)


@pytest.mark.parametrize("change", [{}, {"video_codec": "hevc", "mosaic": 8, "preset": "ultrafast"}, {"mosaic": 1}],
                         ids=["h264", "hevc_mosaic_8", "one_frame_per_picture"])
def test_at_crf_0_each_frame_comes_back_in_its_place(sent: DecodedInputs, settings: CodecParams, change: dict):
    lossless = encode(sent, settings.model_copy(update={"crf": 0, **change}))
    got = decode_inputs(unpack(pack(lossless)))
    assert len(got.lr) == N_FRAMES and lossless.header.video_codec == change.get("video_codec", "h264")
    # x264's CRF 0 is lossless but for the RGB <-> YUV rounding, x265's nearly; neighbouring frames differ by ~6
    assert max(mean_error(a, b) for a, b in zip(got.lr, sent.lr)) < 2


def test_the_audio_is_cut_or_padded_to_the_frames_duration(sent: DecodedInputs, settings: CodecParams):
    short = encode_call(sent.lr, sent.photo, sent.audio[:SR // 2], fps=FPS, settings=settings, model=MODEL_ID,
                        out_size=256)
    audio = decode_inputs(short).audio
    assert len(audio) == N_FRAMES * SR // FPS and np.abs(audio[SR // 2 + 800:]).max() < 0.01  # silence after
    longer = np.concatenate([sent.audio, np.ones(SR, np.float32)])
    assert encode_call(sent.lr, sent.photo, longer, fps=FPS, settings=settings, model=MODEL_ID,
                       out_size=256).audio == encode(sent, settings).audio


def test_encode_refuses_no_frames_and_a_photo_of_another_size(sent: DecodedInputs, settings: CodecParams):
    with pytest.raises(CodecFileError, match="no frames"):
        encode_call([], sent.photo, sent.audio, fps=FPS, settings=settings, model=MODEL_ID, out_size=256)
    with pytest.raises(CodecFileError, match="the photo is 128x128, not 256x256"):
        encode_call(sent.lr, sent.photo[:128, :128], sent.audio, fps=FPS, settings=settings, model=MODEL_ID,
                    out_size=256)


def test_the_sent_faces_are_the_frames_centre_squares_degraded():
    frame = np.random.default_rng(0).integers(0, 256, (80, 64, 3), np.uint8)
    assert np.array_equal(low_res_frames([frame], 8)[0], degrade(frame[8:72], 8))


@pytest.mark.parametrize("change, message", [
    (dict(lr_size=16), "call.esht: the video payload's pictures are 32x32, the header says 64x64"),
    (dict(n_frames=N_FRAMES + 16), "call.esht: video payload: 2 pictures hold fewer than the 46 frames"),
    (dict(photo_size=128), "call.esht: the photo is 256x256, the header says 128x128"),
])
def test_payloads_that_disagree_with_the_header_are_refused(call: CallFile, change: dict, message: str):
    with pytest.raises(EarshotError, match=message):
        decode_inputs(replace(call, header=replace(call.header, **change)), name="call.esht")


def test_a_call_without_audio_decodes_to_silence_of_its_length(call: CallFile):
    mute = replace(call, header=replace(call.header, audio_codec="none", audio_kbps=0), audio=b"")
    audio = decode_inputs(unpack(pack(mute))).audio
    assert len(audio) == call.header.n_samples and not audio.any()


# --------------------------------------------------------------------------- rate


def test_bits_per_pixel_count_the_file_without_and_with_the_audio(call: CallFile):
    data = pack(call)
    pixels = 256 * 256 * N_FRAMES
    assert bits_per_pixel(call) == 8 * (len(data) - len(call.audio)) / pixels
    assert bits_per_pixel(call, audio=True) == 8 * len(data) / pixels


def test_the_report_gives_each_payloads_bytes_and_the_bits_per_pixel(call: CallFile):
    text = "\n".join(report_lines(call))
    header = len(pack(call)) - len(call.photo) - len(call.video) - len(call.audio)
    for part, size in [("header", header), ("photo", len(call.photo)), ("video", len(call.video)),
                       ("audio", len(call.audio)), ("total", len(pack(call)))]:
        assert any(line.split()[:2] == [part, f"{size:,d}"] for line in report_lines(call)), (part, text)
    assert f"{bits_per_pixel(call):.5f}" in text and f"{bits_per_pixel(call, audio=True):.5f}" in text
    assert f"{N_FRAMES} frames (1.20 s at 25 fps)" in text and MODEL_ID.hex() in text


# --------------------------------------------------------------------------- the decoder


@pytest.fixture(scope="module")
def model() -> VideoUpsampler:
    return VideoUpsampler(TINY, build_models(TINY))


def test_the_model_id_is_the_first_8_bytes_of_the_model_files_sha256(tmp_path: Path):
    path = save_video_model(tmp_path / "model.pt")
    other = save_video_model(tmp_path / "other.pt", TINY.model_copy(update={"expert_dim": 8}))
    assert model_id(path) == hashlib.sha256(path.read_bytes()).digest()[:8]
    assert model_id(other) != model_id(path)


def test_the_decoder_refuses_a_call_for_another_model_or_of_other_sizes(call: CallFile, model: VideoUpsampler):
    check_decoder(call, model, MODEL_ID)
    ours = bytes.fromhex("fedcba9876543210")
    with pytest.raises(CodecFileError) as error:
        check_decoder(call, model, ours, name="call.esht")
    message = str(error.value)
    assert message.startswith("call.esht: ") and MODEL_ID.hex() in message and ours.hex() in message
    assert "--model" in message
    cfg16 = TINY.model_copy(update={"lr_size": 16})
    with pytest.raises(CodecFileError, match="call.esht: 8 -> 256 px, the model is 16 -> 256"):
        check_decoder(call, VideoUpsampler(cfg16, build_models(cfg16)), MODEL_ID, name="call.esht")


def test_the_decoder_gives_one_out_size_frame_per_frame_sent(sent: DecodedInputs, settings: CodecParams,
                                                             model: VideoUpsampler):
    short = DecodedInputs(sent.lr[:5], sent.photo, sent.audio[:5 * SR // FPS])  # the model takes ~0.4 s a frame
    frames = list(decoded_frames(model, decode_inputs(encode(short, settings)), FPS, batch=2))
    assert len(frames) == 5 and all(f.shape == (256, 256, 3) and f.dtype == np.uint8 for f in frames)


def test_a_smaller_photo_costs_fewer_bytes_and_is_enlarged_to_the_output_size(sent: DecodedInputs,
                                                                              settings: CodecParams):
    full = encode_call(sent.lr, sent.photo, sent.audio, fps=FPS, settings=settings, model=MODEL_ID, out_size=256)
    small = encode_call(sent.lr, sent.photo, sent.audio, fps=FPS, settings=settings.model_copy(update={"photo_size": 96}),
                        model=MODEL_ID, out_size=256)
    assert small.header.photo_size == 96 and len(small.photo) < len(full.photo)
    photo = decode_inputs(unpack(pack(small))).photo
    assert photo.shape == (256, 256, 3)
    assert np.abs(photo.astype(int) - sent.photo.astype(int)).mean() < 12  # the same face, less detail
