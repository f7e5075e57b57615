"""Faults of the media a user hands the pipeline: files cut short, phone videos stored
sideways, and the odd-but-valid files (audio longer than the video, two video streams,
10-bit and 4:4:4 H.264, HEVC in MOV, variable frame rate, no audio, 4K) beside the
broken ones (zero-length, random bytes) (issue 10, items 3 and 4).

Every input is made here with ffmpeg, a few seconds of tiny frames each.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from components.audio.sync import gray_frames
from components.data.download import run_stage as download_stage
from components.data.faces import extract_faces
from components.errors import Rejected
from components.media.ffmpeg import run_ffmpeg
from components.media.probe import probe
from components.media.read import iter_frames
from components.media.write import write_video
from tests.conftest import tiny_params
from tests.data.test_faces import make_video, render

TESTSRC = ["-f", "lavfi", "-i", "testsrc2=s=96x64:r=25:d=2"]
SINE = ["-f", "lavfi", "-i", "sine=frequency=300:duration=2"]
H264 = ["-c:v", "libx264", "-preset", "ultrafast"]


def _ffmpeg(dest: Path, *args: str) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    run_ffmpeg(["-y", *args, str(dest)])
    return dest


def cut_in_half(path: Path, dest: Path) -> Path:
    """The first half of ``path``'s bytes: a download that stopped half way."""
    data = path.read_bytes()
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data[: len(data) // 2])
    return dest


def single_keyframe_faststart(dest: Path) -> Path:
    """5.2 s, one keyframe, index at the front: cut short, it still opens and decodes from t=0."""
    return _ffmpeg(dest, "-f", "lavfi", "-i", "color=gray:s=96x64:r=25:d=5.2", "-f", "lavfi", "-i", "sine=d=5.2",
                   *H264, "-g", "1000", "-pix_fmt", "yuv420p", "-c:a", "aac", "-movflags", "+faststart")


def rotated_copy(src: Path, dest: Path, degrees: int) -> Path:
    """``src``'s stream with a display matrix turning it ``degrees`` counter-clockwise (as a
    phone records it), pixels untouched. ffmpeg >= 6 has ``-display_rotation``; 5.1 maps
    the ``rotate`` tag to the same matrix."""
    try:
        return _ffmpeg(dest, "-display_rotation", str(degrees), "-i", str(src), "-c", "copy")
    except subprocess.CalledProcessError:
        return _ffmpeg(dest, "-i", str(src), "-c", "copy", "-metadata:s:v", f"rotate={degrees}")


def displayed_by_ffmpeg(path: Path, width: int, height: int) -> np.ndarray:
    """The first frame as the ffmpeg CLI shows it (it autorotates), RGB ``height x width``."""
    raw = run_ffmpeg(["-i", str(path), "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"])
    return np.frombuffer(raw, np.uint8).reshape(height, width, 3)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- probing and ingest

@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A VoxCeleb-layout folder: one file per fault, good and odd-but-valid ones beside them."""
    src = tmp_path_factory.mktemp("media_faults") / "vox"
    made = tmp_path_factory.mktemp("made")
    _ffmpeg(src / "spk/v/good.mp4", *TESTSRC, *SINE, *H264, "-c:a", "aac")
    cut_in_half(single_keyframe_faststart(made / "long.mp4"), src / "spk/v/truncated.mp4")
    _ffmpeg(src / "spk/v/long_audio.mp4", *TESTSRC, "-f", "lavfi", "-i", "sine=duration=12", *H264, "-c:a", "aac")
    _ffmpeg(src / "spk/v/two_video.mp4", *TESTSRC, "-f", "lavfi", "-i", "testsrc=s=128x96:r=25:d=2", *SINE,
            "-map", "0", "-map", "1", "-map", "2", *H264, "-c:a", "aac")
    _ffmpeg(src / "spk/v/hi10.mp4", *TESTSRC, *H264, "-pix_fmt", "yuv420p10le")
    _ffmpeg(src / "spk/v/yuv444.mp4", *TESTSRC, *H264, "-pix_fmt", "yuv444p")
    _ffmpeg(src / "spk/v/hevc.mov", *TESTSRC, *SINE, "-c:v", "libx265", "-x265-params", "log-level=error",
            "-tag:v", "hvc1", "-c:a", "aac")
    _ffmpeg(src / "spk/v/vfr.mp4", *TESTSRC, "-vf", "setpts='if(lt(N,20),N/25,N/12.5)/TB'", "-fps_mode", "vfr", *H264)
    _ffmpeg(src / "spk/v/no_audio.mp4", *TESTSRC, *H264)
    _ffmpeg(src / "spk/v/uhd.mp4", "-f", "lavfi", "-i", "testsrc2=s=3840x2160:r=25:d=0.2", *H264)
    rotated_copy(_ffmpeg(made / "sideways.mp4", *TESTSRC, *H264), src / "spk/v/rotated.mp4", 90)
    (src / "spk/v/zero.mp4").write_bytes(b"")
    (src / "spk/v/random.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    return src


def test_truncated_single_keyframe_clip_is_rejected_with_both_durations(tmp_path: Path) -> None:
    cut = cut_in_half(single_keyframe_faststart(tmp_path / "long.mp4"), tmp_path / "cut.mp4")
    with pytest.raises(Rejected) as caught:
        probe(cut)
    assert caught.value.reason == "truncated"
    assert str(cut) in caught.value.detail and "but the container records 5.20s" in caught.value.detail


def test_ingest_quarantines_cut_and_broken_files_and_keeps_odd_valid_ones(folder: Path, tmp_path: Path) -> None:
    before = {p: _digest(p) for p in folder.rglob("*") if p.is_file()}
    params = tiny_params(tmp_path, **{"download.source": "local", "download.input": str(folder)})
    raw = params.data_path("raw")
    outcome = download_stage(params, raw, progress=False)
    reasons = {q["key"].rsplit("/", 1)[1]: q["reason"] for q in outcome.quarantine}
    assert reasons == {"truncated": "truncated", "zero": "empty_file", "random": "corrupt"}
    kept = {r["key"].rsplit("/", 1)[1]: r for r in outcome.records}
    assert set(kept) == {"good", "long_audio", "two_video", "hi10", "yuv444", "hevc", "vfr", "no_audio", "uhd",
                         "rotated"}
    assert not (raw / "spk/v/truncated.mp4").exists()
    assert (kept["rotated"]["width"], kept["rotated"]["height"]) == (64, 96)  # as displayed
    assert (kept["uhd"]["width"], kept["two_video"]["width"]) == (3840, 96)  # the first video stream
    assert not kept["no_audio"]["has_audio"] and kept["hevc"]["vcodec"] == "hevc"
    placed = {p: os.stat(p).st_mtime_ns for p in raw.rglob("*.m*")}
    again = download_stage(params, raw, progress=False)  # resumed: nothing earlier is rewritten
    assert {p: os.stat(p).st_mtime_ns for p in raw.rglob("*.m*")} == placed
    assert len(again.records) == len(kept)
    assert {p: _digest(p) for p in folder.rglob("*") if p.is_file()} == before  # the user's files untouched


@pytest.mark.parametrize("name", ["long_audio", "two_video", "hi10", "yuv444", "hevc", "vfr", "no_audio"])
def test_odd_valid_videos_decode_for_their_whole_video_length(folder: Path, name: str) -> None:
    path = next((folder / "spk/v").glob(f"{name}.*"))
    frames = [f for _, f in iter_frames(path, 25)]
    assert len(frames) == (100 if name == "vfr" else 50)  # 2 s at 25 fps; the slowed vfr clip spans 4 s
    assert frames[0].shape == (64, 96, 3)


# ----------------------------------------------------------------------------- rotation

@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_every_video_decode_path_shows_frames_as_displayed(tmp_path: Path, degrees: int) -> None:
    top_white = np.zeros((48, 64, 3), np.uint8)
    top_white[:24] = 255
    stored = write_video(tmp_path / "stored.mp4", [top_white] * 5, 25, crf=0, preset="ultrafast")
    phone = rotated_copy(stored, tmp_path / "phone.mp4", degrees)
    width, height = (48, 64) if degrees % 180 else (64, 48)
    shown = displayed_by_ffmpeg(phone, width, height).astype(int)
    frame = next(iter_frames(phone, 25))[1]
    assert frame.shape == shown.shape and np.abs(frame.astype(int) - shown).mean() < 4
    small = next(iter_frames(phone, 25, size=(width // 2, height // 2)))[1]
    assert small.shape == (height // 2, width // 2, 3)
    grey = next(gray_frames(phone))
    assert grey.shape == (height, width) and np.abs(grey.astype(int) - shown.mean(axis=2)).mean() < 4
    info = probe(phone)
    assert (info.rotation, info.width, info.height) == (degrees, width, height)


def test_faces_of_a_sideways_phone_video_are_cropped_upright(tmp_path: Path) -> None:
    params = tiny_params(tmp_path)
    face = [(80, 84, 90)]
    upright = make_video(tmp_path / "upright.mp4", 30, 25, (160, 160), lambda i: face)
    sideways = (np.rot90(render(160, 160, face), -1) for _ in range(30))  # pixels stored turned clockwise
    phone = rotated_copy(write_video(tmp_path / "stored.mp4", sideways, 25, crf=16, preset="ultrafast"),
                         tmp_path / "phone.mp4", 90)
    ref = extract_faces(upright, tmp_path / "ref.mp4", params.faces, 25)
    got = extract_faces(phone, tmp_path / "got.mp4", params.faces, 25)
    assert got.n_frames == ref.n_frames == 30
    assert np.abs(got.path.boxes - ref.path.boxes).max() <= 3
    ref_crop = next(iter_frames(tmp_path / "ref.mp4", 25))[1].astype(int)
    got_crop = next(iter_frames(tmp_path / "got.mp4", 25))[1].astype(int)
    assert np.abs(got_crop - ref_crop).mean() < 6
