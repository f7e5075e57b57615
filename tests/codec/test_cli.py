"""``earshot codec encode`` / ``earshot codec decode``: a talking clip into a call file and back
into a 256x256 video with its audio and duration, the report, one-line refusals that leave no
file behind, and the round trip of every shared real clip against H.264 at CRF 23."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from components.codec.call import bits_per_pixel
from components.codec.container import pack, unpack
from components.codec.streams import decode_photo, encode_video
from components.data.faces import extract_faces
from components.media.jpeg_video import iter_crop_frames
from components.media.probe import probe
from components.media.write import write_video
from pipelines.cli import app
from tests._fixtures import draw_face, speech_like
from tests.conftest import tiny_params
from tests.data.test_faces import render
from tests.inference.test_video_sr import FPS, N_FRAMES, SR, TINY, assert_video_with_audio_of, save_video_model


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 64 px face clip with a voice (1.2 s), the same without sound, a 128 px rendered face
    clip RetinaFace finds, two decoder models (different files, so different ids)."""
    root = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    voice = speech_like(N_FRAMES * SR // FPS, SR, 3, rng)
    faces = [draw_face(64, k, 3, rng)[0] for k in range(N_FRAMES)]
    write_video(root / "face.mp4", faces, FPS, audio=voice)
    write_video(root / "mute.mp4", faces, FPS)
    write_video(root / "talk.mp4", [render(128, 128, [(64, 64, 80)])] * N_FRAMES, FPS, audio=voice, crf=16,
                preset="ultrafast")
    save_video_model(root / "model.pt")
    save_video_model(root / "other.pt", TINY.model_copy(update={"expert_dim": 8}))
    return {p.name: p for p in root.iterdir()}


def codec(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["codec", *map(str, args)])
    return result.exit_code, result.output


def encode(video: Path, out: Path, model: Path, *extra: str) -> tuple[int, str]:
    return codec("encode", video, "--out", out, "--model", model, "--no-progress", *extra)


def decode(call: Path, out: Path, model: Path) -> tuple[int, str]:
    return codec("decode", call, "--out", out, "--model", model, "--device", "cpu", "--no-progress")


@pytest.fixture(scope="module")
def call_file(inputs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 64 px clip encoded without detection (every frame is the face), with the report printed."""
    out = tmp_path_factory.mktemp("calls") / "face.esc"
    code, text = encode(inputs["face.mp4"], out, inputs["model.pt"], "--no-detect", "--report")
    assert code == 0, text
    return out


def test_the_report_prints_each_payloads_bytes_and_the_bits_per_pixel(inputs: dict[str, Path], tmp_path: Path):
    out = tmp_path / "call.esc"
    code, text = encode(inputs["face.mp4"], out, inputs["model.pt"], "--no-detect", "--report")
    assert code == 0, text
    call = unpack(out.read_bytes())
    lines = text.splitlines()
    for part, size in [("photo", len(call.photo)), ("video", len(call.video)), ("audio", len(call.audio)),
                       ("total", len(pack(call)))]:
        assert any(line.split()[:2] == [part, f"{size:,d}"] for line in lines), (part, text)
    assert f"bits per pixel: {bits_per_pixel(call):.5f}" in text
    assert lines[-1] == str(out)
    assert (call.header.n_frames, call.header.lr_size, call.header.out_size) == (N_FRAMES, 8, 256)
    # the photo is the first frame (its stamp block black; the last frame's is grey 6 x 29), at 256 px
    photo = decode_photo(call.photo, call.header.photo_format)
    assert photo.shape == (256, 256, 3) and photo[4:28, 4:28].mean() < 20


def test_a_face_clip_comes_back_as_a_256_px_video_with_its_audio(inputs: dict[str, Path], call_file: Path,
                                                                  tmp_path: Path):
    out = tmp_path / "out.mp4"
    code, text = decode(call_file, out, inputs["model.pt"])
    assert code == 0, text
    assert text.strip() == str(out)
    assert_video_with_audio_of(out, inputs["face.mp4"], (256, 256))
    assert probe(out).vcodec == "h264" and probe(out).acodec == "aac"


def test_detect_tracks_the_face_of_a_larger_clip(inputs: dict[str, Path], tmp_path: Path):
    call, out = tmp_path / "talk.esc", tmp_path / "talk.mp4"
    code, text = encode(inputs["talk.mp4"], call, inputs["model.pt"], "--detect")
    assert code == 0, text
    assert unpack(call.read_bytes()).header.n_frames == N_FRAMES
    code, text = decode(call, out, inputs["model.pt"])
    assert code == 0, text
    assert_video_with_audio_of(out, inputs["talk.mp4"], (256, 256))


# --------------------------------------------------------------------------- refusals


def damaged(call_file: Path, folder: Path, case: str) -> Path:
    """``call_file`` truncated, with a byte of its video payload flipped, or not a call file."""
    data = bytearray(call_file.read_bytes())
    if case == "truncated":
        data = data[:-10]
    elif case == "corrupted":
        call = unpack(bytes(data))
        header = len(data) - len(call.photo) - len(call.video) - len(call.audio)
        data[header + len(call.photo) + len(call.video) // 2] ^= 0x40
    else:
        data = bytearray(b"RIFF\x00\x00\x00\x00WEBPVP8 ")
    path = folder / f"{case}.esc"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("case, message", [
    ("truncated", "truncated (the file has"),
    ("corrupted", "the video payload is corrupted"),
    ("not_a_call", "not an earshot codec file"),
    ("other_model", "(decode with the model.pt the file was encoded for: --model)"),
    ("not_mp4", "the output is an MP4 file (name it .mp4)"),
])
def test_decode_refuses_with_one_line_and_writes_nothing(inputs: dict[str, Path], call_file: Path,
                                                         tmp_path: Path, case: str, message: str):
    call, model, out = call_file, inputs["model.pt"], tmp_path / "out.mp4"
    if case in ("truncated", "corrupted", "not_a_call"):
        call = damaged(call_file, tmp_path, case)
    elif case == "other_model":
        model = inputs["other.pt"]
    elif case == "not_mp4":
        out = tmp_path / "out.avi"
    code, text = decode(call, out, model)
    assert code == 2, text
    named = out if case == "not_mp4" else call
    assert message in text and str(named) in text and len(text.strip().splitlines()) == 1, text
    assert not out.exists() and list(tmp_path.iterdir()) == ([call] if call != call_file else [])


@pytest.mark.parametrize("case, message", [
    ("missing", "missing.mp4: no such video file"),
    ("mute", "mute.mp4: the video has no audio stream"),
    ("missing_model", "`dvc repro train_animate`"),
])
def test_encode_refuses_with_one_line_and_writes_nothing(inputs: dict[str, Path], tmp_path: Path, case: str,
                                                         message: str):
    video = tmp_path / "missing.mp4" if case == "missing" else inputs["mute.mp4" if case == "mute" else "face.mp4"]
    model = tmp_path / "nothing" / "model.pt" if case == "missing_model" else inputs["model.pt"]
    out = tmp_path / "call.esc"
    code, text = encode(video, out, model, "--no-detect")
    assert code == 2, text
    assert message in text and len(text.strip().splitlines()) == 1, text
    assert list(tmp_path.iterdir()) == []


def test_a_mute_video_is_refused_without_pointing_to_an_option_encode_lacks(inputs: dict[str, Path], tmp_path: Path):
    code, text = encode(inputs["mute.mp4"], tmp_path / "call.esc", inputs["model.pt"], "--no-detect")
    assert code == 2 and "--audio" not in text, text


# --------------------------------------------------------------------------- real clips


@pytest.mark.realdata
def test_every_real_clip_round_trips_smaller_than_its_face_track_in_h264_crf_23(inputs: dict[str, Path],
                                                                                 real_data: Path, tmp_path: Path):
    """Each shared real clip, encoded with --detect and decoded (the untrained tiny model: the
    frames are not judged, the file is), gives a 256x256 video with audio of the clip's
    duration. The comparison: the whole call file (photo + video + audio) against the same
    face track, the faces stage's 256 px crops that the decoder outputs, encoded with libx264
    at CRF 23, preset medium, 4:2:0, video only (no audio counted on its side)."""
    faces = tiny_params(tmp_path).faces
    for name in pd.read_csv(real_data / "clips" / "manifest.csv")["file"]:
        clip, call, out = real_data / "clips" / name, tmp_path / f"{name}.esc", tmp_path / f"{name}.mp4"
        start = time.perf_counter()
        code, text = encode(clip, call, inputs["model.pt"], "--detect")
        assert code == 0, f"{name}: {text}"
        code, text = decode(call, out, inputs["model.pt"])
        assert code == 0, f"{name}: {text}"
        seconds = time.perf_counter() - start
        assert_video_with_audio_of(out, clip, (256, 256))
        crops = tmp_path / f"{name}.crops.mkv"
        track = extract_faces(clip, crops, faces, FPS)
        h264, pictures = encode_video(iter_crop_frames(crops), "h264", crf=23, preset="medium", fps=FPS)
        size = call.stat().st_size
        assert pictures == track.n_frames == unpack(call.read_bytes()).header.n_frames
        print(f"{name}: call {size:,d} bytes, H.264 CRF 23 {len(h264):,d} bytes, ratio {len(h264) / size:.1f}x, "
              f"{seconds:.1f} s")
        assert size < len(h264), name
