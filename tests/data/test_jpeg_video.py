"""Crop tracks as Motion-JPEG (components.media.jpeg_video) and the shards stage copying them."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from components.data.shards.encode import _jpeg_frames
from components.errors import Rejected
from components.media.jpeg_video import (decode_jpeg, encode_jpeg, is_jpeg_video, iter_crop_frames, read_jpegs,
                                         write_jpeg_video)
from components.media.write import write_video


def _frames(n: int = 12, size: int = 64) -> np.ndarray:
    """Smooth frames whose brightness encodes the frame index (JPEG keeps it within a level or two)."""
    yy, xx = np.mgrid[:size, :size]
    base = np.stack([xx, yy, (xx + yy) // 2], -1) * (120 / size)
    return np.stack([np.clip(base + 8 * i, 0, 255) for i in range(n)]).astype(np.uint8)


def test_a_crop_track_is_one_jpeg_per_frame_and_bit_exact(tmp_path: Path) -> None:
    frames = _frames()
    a = write_jpeg_video(tmp_path / "a.mkv", iter(frames), 25, quality=95)
    b = write_jpeg_video(tmp_path / "b.mkv", frames, 25, quality=95)
    assert a.read_bytes() == b.read_bytes()  # the same crops give the same bytes
    assert is_jpeg_video(a) and sorted(p.name for p in tmp_path.iterdir()) == ["a.mkv", "b.mkv"]  # no temp file left
    jpegs, size = read_jpegs(a)
    assert size == (64, 64) and jpegs == [encode_jpeg(f, 95) for f in frames]  # the packets are the JPEGs
    decoded = np.stack(list(iter_crop_frames(a)))
    assert decoded.shape == frames.shape and np.abs(decoded.astype(int) - frames).mean() < 1.5
    grey = np.stack(list(iter_crop_frames(a, "gray")))
    expected = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in decoded])
    assert grey.shape == (12, 64, 64) and np.abs(grey.astype(int) - expected).max() <= 2


def test_any_player_reads_it_as_a_25_fps_video(tmp_path: Path) -> None:
    import av

    path = write_jpeg_video(tmp_path / "crop.mkv", _frames(n=50), 25, quality=90)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        times = [frame.time for frame in container.decode(stream)]
        assert stream.codec_context.name == "mjpeg" and stream.average_rate == 25
    assert times == pytest.approx([i / 25 for i in range(50)])


def test_bad_crop_files_are_refused_by_name(tmp_path: Path) -> None:
    good = write_jpeg_video(tmp_path / "good.mkv", _frames(), 25, quality=95)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size * 2 // 3])  # a copy cut short mid-packet
    jpegs, _ = read_jpegs(cut)  # the whole frames before the cut, never a partial JPEG: the shards
    assert 0 < len(jpegs) < 12 and all(decode_jpeg(j).shape == (64, 64, 3) for j in jpegs)  # count check rejects it
    junk = tmp_path / "junk.mkv"
    junk.write_bytes(np.random.default_rng(0).bytes(5000))
    for reader in (read_jpegs, lambda p: list(iter_crop_frames(p))):
        with pytest.raises(Rejected) as caught:
            reader(junk)
        assert caught.value.reason == "corrupt" and "junk.mkv" in caught.value.detail
    h264 = write_video(tmp_path / "h264.mp4", _frames(), 25, crf=10, preset="ultrafast")
    with pytest.raises(Rejected, match="h264 video, not Motion-JPEG"):
        read_jpegs(h264)
    with pytest.raises(ValueError, match="no frames"):
        write_jpeg_video(tmp_path / "none.mkv", [], 25, quality=95)
    with pytest.raises(ValueError, match="shape changed"):
        write_jpeg_video(tmp_path / "mixed.mkv", [_frames()[0], _frames(size=32)[0]], 25, quality=95)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.mkv", "good.mkv", "h264.mp4", "junk.mkv"]
    with pytest.raises(ValueError, match="not a decodable JPEG"):
        decode_jpeg(b"\xff\xd8 not really")


def test_the_shards_copy_motion_jpeg_crops_and_encode_other_codecs(tmp_path: Path) -> None:
    frames = _frames()
    mjpeg = write_jpeg_video(tmp_path / "crop.mkv", frames, 25, quality=95)
    copied, size = _jpeg_frames(mjpeg, quality=50)  # quality only applies to crops that need encoding
    assert copied == read_jpegs(mjpeg)[0] and size == (64, 64)  # byte for byte: no second lossy step
    h264 = write_video(tmp_path / "crop.mp4", frames, 25, crf=0, preset="ultrafast")  # another tool's crops
    encoded, size = _jpeg_frames(h264, quality=95)
    assert len(encoded) == 12 and size == (64, 64)
    decoded = np.stack([decode_jpeg(j) for j in encoded])
    assert np.abs(decoded.astype(int) - frames).mean() < 2.5  # x264 crf 0 (yuv420p) + one JPEG


def test_a_crop_track_can_be_watched_as_h264_with_its_audio(tmp_path: Path) -> None:
    """``earshot data crops KEY``: the Motion-JPEG track as an MP4 a browser plays, with the aligned wav."""
    import av

    from components.data.report import crop_track_video
    from components.errors import EarshotError
    from tests._fixtures import make_upstream

    upstream = make_upstream(tmp_path, n_speakers=1, videos_per_speaker=1, clips_per_video=1, unknown_videos=0)
    key = "spk0/vid0/00000"
    out = crop_track_video(upstream.data_dir, key, tmp_path / "watch.mp4")
    with av.open(str(out)) as container:
        kinds = sorted(s.type for s in container.streams)
        frames = sum(1 for _ in container.decode(video=0))
    assert kinds == ["audio", "video"] and frames == 30
    with pytest.raises(EarshotError, match="'spk9/x/1' is not a clip the faces stage kept"):
        crop_track_video(upstream.data_dir, "spk9/x/1", tmp_path / "none.mp4")
