"""probe(): stream facts of good files, the right rejection code for each kind of broken one."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from components.errors import Rejected
from components.media.ffmpeg import run_ffmpeg
from components.media.probe import probe


def _lavfi_video(path: Path, seconds: float, *, audio: bool = True, faststart: bool = False) -> Path:
    args = ["-y", "-f", "lavfi", "-i", f"testsrc=size=64x48:rate=25:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=16000:duration={seconds}", "-c:a", "aac"]
    args += ["-c:v", "libx264", "-g", "25", "-pix_fmt", "yuv420p"]
    if faststart:
        args += ["-movflags", "+faststart"]
    run_ffmpeg([*args, str(path)])
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One good file and every kind of broken file, made here from ffmpeg's test sources."""
    d = tmp_path_factory.mktemp("probe")
    good = _lavfi_video(d / "good.mp4", 2)
    silent = _lavfi_video(d / "silent.mp4", 2, audio=False)
    data = good.read_bytes()
    assert data.find(b"moov") > data.find(b"mdat"), "ffmpeg writes the index last by default"
    files = {"good": good, "silent": silent}
    # Cut in half: the index (moov, at the end) is gone: the container does not parse.
    (d / "truncated.mp4").write_bytes(data[: len(data) // 2])
    # Index at the front, tail cut off: the container parses and the first frames decode.
    long = _lavfi_video(d / "long.mp4", 6, audio=False, faststart=True).read_bytes()
    (d / "truncated_faststart.mp4").write_bytes(long[: int(len(long) * 0.7)])
    (d / "random.mp4").write_bytes(os.urandom(20_000))
    run_ffmpeg(["-y", "-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac", str(d / "audio_only.m4a")])
    (d / "empty.mp4").write_bytes(b"")
    (d / "folder.mp4").mkdir()
    # Rename the video sample entry 'avc1' (inside moov/.../stsd) to a fourcc no decoder knows.
    stsd = data.index(b"stsd")
    at = data.index(b"avc1", stsd)
    (d / "unknown_codec.mp4").write_bytes(data[:at] + b"zzzz" + data[at + 4:])
    files.update({name: d / f"{name}.mp4" for name in
                  ("truncated", "truncated_faststart", "random", "empty", "folder", "unknown_codec")})
    files["audio_only"] = d / "audio_only.m4a"
    files["missing"] = d / "missing.mp4"
    return files


def test_good_file(media: dict[str, Path]) -> None:
    info = probe(media["good"])
    assert (info.width, info.height, info.rotation, info.fps, info.n_frames) == (64, 48, 0, 25.0, 50)
    assert info.duration_s == pytest.approx(2.0, abs=0.05)
    assert (info.vcodec, info.acodec, info.audio_rate, info.audio_channels) == ("h264", "aac", 16000, 1)
    assert info.has_video and info.has_audio
    assert info.bytes == media["good"].stat().st_size
    assert info.container.startswith("mov,mp4")


def test_silent_video_is_reported_not_rejected(media: dict[str, Path]) -> None:
    info = probe(media["silent"])
    assert not info.has_audio and info.acodec is None and info.audio_rate is None
    assert info.n_frames == 50


@pytest.mark.parametrize(("name", "reason"), [
    ("truncated", "corrupt"),
    ("truncated_faststart", "truncated"),
    ("random", "corrupt"),
    ("audio_only", "no_video_stream"),
    ("empty", "empty_file"),
    ("folder", "unreadable"),
    ("missing", "unreadable"),
    ("unknown_codec", "unsupported_codec"),
])
def test_broken_files_rejected_with_reason(media: dict[str, Path], name: str, reason: str) -> None:
    with pytest.raises(Rejected) as caught:
        probe(media[name])
    assert caught.value.reason == reason
    assert str(media[name]) in caught.value.detail  # the message names the file


def test_truncated_faststart_is_caught_by_the_tail_check(media: dict[str, Path]) -> None:
    with pytest.raises(Rejected, match="last 1s"):
        probe(media["truncated_faststart"])


@pytest.mark.realdata
def test_every_real_clip_probes(real_data: Path) -> None:
    clips = real_data / "clips"
    with open(clips / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows
    for row in rows:
        info = probe(clips / row["file"])
        width, height = (int(v) for v in row["resolution"].split("x"))
        assert (info.width, info.height) == (width, height), row["file"]
        assert info.fps == pytest.approx(float(row["fps"]), abs=0.01), row["file"]
        assert info.duration_s == pytest.approx(float(row["duration_s"]), abs=0.15), row["file"]
        assert info.has_audio and info.acodec == row["audio"].split()[0], row["file"]
        assert info.n_frames == pytest.approx(info.duration_s * info.fps, abs=2), row["file"]
