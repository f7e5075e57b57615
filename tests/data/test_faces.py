"""The ``faces`` stage: frame reading, RetinaFace detection, tracking, crops, rejections.

Inputs are made here: faces drawn with OpenCV (RetinaFace scores them ~0.99), encoded
with the project's writer, and the shared real clips (``EARSHOT_REAL_DATA``).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from components.config import Params
from components.data.faces import extract_faces, quality_rules, run_stage
from components.errors import Rejected
from components.faces.crop import crop_face, crop_geometry, eye_angle
from components.faces.detect import Detections, FaceDetector
from components.faces.track import (Observation, PathBuilder, TrackLinker, keyframe_weights, main_track,
                                    pairwise_iou, yaw_proxy)
from components.media.jpeg_video import is_jpeg_video
from components.media.read import iter_frames, nearest_frames
from components.media.write import write_video
from pipelines.faces import main as faces_main
from tests.conftest import tiny_params

BACKGROUND = (90, 120, 150)

# ----------------------------------------------------------------------------- drawing

Face = tuple[float, float, float]  # centre x, centre y, face height (px)


def draw_face(img: np.ndarray, cx: float, cy: float, h: float) -> None:
    """A frontal cartoon face of height ``h`` centred at (cx, cy): hair, skin, eyes with
    brows, nose, mouth. RetinaFace finds it from ~30 px up."""

    def ellipse(c: tuple[float, float], axes: tuple[float, float], colour: tuple[int, int, int]) -> None:
        cv2.ellipse(img, (round(c[0]), round(c[1])), (max(1, round(axes[0])), max(1, round(axes[1]))), 0, 0, 360,
                    colour, -1, cv2.LINE_AA)

    ellipse((cx, cy - 0.12 * h), (0.42 * h, 0.5 * h), (60, 40, 30))
    ellipse((cx, cy), (0.36 * h, 0.48 * h), (225, 190, 160))
    for side in (-1, 1):
        ex, ey = cx + side * 0.16 * h, cy - 0.08 * h
        ellipse((ex, ey), (0.08 * h, 0.04 * h), (255, 255, 255))
        ellipse((ex, ey), (0.035 * h, 0.035 * h), (50, 30, 20))
        cv2.line(img, (round(ex - 0.09 * h), round(ey - 0.09 * h)), (round(ex + 0.09 * h), round(ey - 0.1 * h)),
                 (70, 50, 40), max(1, round(0.025 * h)), cv2.LINE_AA)
    nose = np.array([[cx, cy - 0.05 * h], [cx - 0.06 * h, cy + 0.12 * h], [cx + 0.06 * h, cy + 0.12 * h]])
    cv2.fillPoly(img, [nose.round().astype(np.int32)], (200, 150, 125), cv2.LINE_AA)
    ellipse((cx, cy + 0.25 * h), (0.13 * h, 0.045 * h), (170, 60, 60))


def render(width: int, height: int, faces: Sequence[Face]) -> np.ndarray:
    img = np.empty((height, width, 3), np.uint8)
    img[:] = BACKGROUND
    for face in faces:
        draw_face(img, *face)
    return img


def make_video(path: Path, n_frames: int, fps: float, size: tuple[int, int],
               faces_at: Callable[[int], Sequence[Face]]) -> Path:
    """An H.264 video whose frame ``i`` shows ``faces_at(i)``."""
    frames = (render(*size, faces_at(i)) for i in range(n_frames))
    return write_video(path, frames, fps, crf=16, preset="ultrafast")


def stamped_video(path: Path, n_frames: int, fps: float) -> Path:
    """Frame ``j`` is flat grey level ``4 * j``: the decoded level tells the source frame."""
    frames = (np.full((32, 32, 3), 4 * j, np.uint8) for j in range(n_frames))
    return write_video(path, frames, fps, crf=0, preset="ultrafast")


def stamp(frame: np.ndarray) -> int:
    return round(float(frame.mean()) / 4)


# ----------------------------------------------------------------------------- reading


def test_nearest_frames_maps_rates_to_the_nearest_source_frame() -> None:
    assert list(nearest_frames([0.0, 0.04, 0.08], 25)) == [(0, 0), (1, 1), (2, 2)]
    # 30 -> 25 fps: output t = 0, .04, .08, .12, .16 -> source t = 0, .033, .067/.1, .133, .167
    mapping = dict(nearest_frames([j / 30 for j in range(60)], 25))
    assert len(mapping) == 50  # 2 s kept
    assert [mapping[i] for i in range(6)] == [0, 1, 2, 4, 5, 6]
    assert all(abs(mapping[i] / 30 - i / 25) <= 1 / 60 + 1e-9 for i in mapping)
    # 29.97 fps for 2.002 s: one more output frame fits inside the source's span
    assert len(list(nearest_frames([j * 1001 / 30000 for j in range(60)], 25))) == 51
    # 12.5 -> 25 fps: each source frame is shown twice; times need not start at 0
    assert list(nearest_frames([10 + j / 12.5 for j in range(3)], 25)) == [(i, i // 2) for i in range(6)]
    # a one-frame video lasts one nominal frame
    assert list(nearest_frames([0.0], 25, nominal_fps=5)) == [(i, 0) for i in range(5)]
    assert list(nearest_frames([], 25)) == []


def test_iter_frames_resamples_30_fps_to_25_with_time_kept(tmp_path: Path) -> None:
    video = stamped_video(tmp_path / "s30.mp4", 60, 30)
    frames = list(iter_frames(video, 25))
    assert [i for i, _ in frames] == list(range(50))
    expected = dict(nearest_frames([j / 30 for j in range(60)], 25))
    assert [stamp(f) for _, f in frames] == [expected[i] for i in range(50)]
    assert not frames[0][1].flags.writeable  # shared when repeated: read-only


def test_iter_frames_scales_and_rejects_broken_files(tmp_path: Path) -> None:
    video = stamped_video(tmp_path / "s.mp4", 5, 25)
    assert {f.shape for _, f in iter_frames(video, 25, size=(16, 8))} == {(8, 16, 3)}
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(Rejected) as caught:
        list(iter_frames(junk))
    assert caught.value.reason == "corrupt" and "junk.mp4" in caught.value.detail


@pytest.mark.realdata
def test_mpeg1_clips_decode_exactly_like_ffmpeg(real_data: Path) -> None:
    """GRID .mpg (MPEG-1 program stream): every frame, in order, as the ffmpeg CLI decodes
    it (decord drops the first GOP of these files; the reader must not)."""
    for clip in sorted((real_data / "clips").glob("*.mpg")):
        ours = np.stack([f for _, f in iter_frames(clip, 25)])
        raw = subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(clip), "-f", "rawvideo", "-pix_fmt", "rgb24",
                              "-"], capture_output=True, check=True).stdout
        reference = np.frombuffer(raw, np.uint8).reshape(ours.shape)
        assert np.array_equal(ours, reference), clip.name


# ----------------------------------------------------------------------------- detection


def test_detector_finds_a_drawn_face_in_source_pixels() -> None:
    frame = render(640, 480, [(400, 200, 160)])
    full = FaceDetector(max_side=None)(frame)
    small = FaceDetector(max_side=160)(frame)  # 4x smaller for the network
    assert len(full) == len(small) == 1 and full.scores[0] > 0.95
    assert pairwise_iou(full.boxes, small.boxes)[0, 0] > 0.85
    x0, y0, x1, y1 = full.boxes[0]
    assert x0 < 400 < x1 and y0 < 200 < y1 and 100 < y1 - y0 < 200
    eyes, nose = full.landmarks[0, :2], full.landmarks[0, 2]
    assert eyes[0, 0] < 400 < eyes[1, 0] and abs(nose[0] - 400) < 10  # left eye on the image's left
    assert len(FaceDetector()(np.full((240, 320, 3), 128, np.uint8))) == 0


# ----------------------------------------------------------------------------- tracking


def _obs(box: Sequence[float], score: float = 0.9) -> Observation:
    x0, y0, x1, y1 = box
    w = x1 - x0
    landmarks = np.array([[x0 + 0.3 * w, y0 + 0.4 * w], [x0 + 0.7 * w, y0 + 0.4 * w], [x0 + 0.5 * w, y0 + 0.55 * w],
                          [x0 + 0.35 * w, y0 + 0.75 * w], [x0 + 0.65 * w, y0 + 0.75 * w]])
    return Observation(np.array(box, float), landmarks, score)


def _dets(*observations: Observation) -> Detections:
    return Detections(np.array([o.box for o in observations], np.float32).reshape(-1, 4),
                      np.array([o.score for o in observations], np.float32),
                      np.array([o.landmarks for o in observations], np.float32).reshape(-1, 5, 2))


def test_path_builder_interpolates_holds_and_backfills() -> None:
    builder = PathBuilder(smoothing=0.0)
    a, b = _obs([0, 0, 10, 10], 0.8), _obs([10, 0, 20, 10], 1.0)
    assert builder.add_keyframe(0, None) == []  # nothing known yet
    first = builder.add_keyframe(4, a)  # frames 0-3 back-filled with a
    assert [p.frame for p in first] == [0, 1, 2, 3, 4]
    assert [p.detected for p in first] == [False] * 4 + [True]
    assert all(np.allclose(p.box, a.box) for p in first)
    between = builder.add_keyframe(8, b)
    assert [round(float(p.box[0]), 2) for p in between] == [2.5, 5.0, 7.5, 10.0]
    assert all(p.detected for p in between) and between[1].score == pytest.approx(0.9)
    held = builder.add_keyframe(12, None)
    assert all(np.allclose(p.box, b.box) and not p.detected and p.score == 0 for p in held)
    with pytest.raises(ValueError):
        builder.add_keyframe(12, a)

    smooth = PathBuilder(smoothing=0.5)
    smooth.add_keyframe(0, a)
    step = smooth.add_keyframe(1, b)[0]
    assert float(step.box[0]) == 10.0 and float(step.smooth_box[0]) == pytest.approx(5.0)  # the crop lags


def test_linker_follows_a_moving_face_and_picks_the_largest_track() -> None:
    linker = TrackLinker()
    for k in range(6):
        x = 30.0 * k  # 30 px per keyframe: IoU of raw boxes 0.25, velocity prediction keeps it
        linker.update(5 * k, _dets(_obs([x, 0, x + 60, 60]), _obs([300, 300, 320, 320])))
    big, small = sorted(linker.tracks, key=lambda t: -t.mass)
    assert len(linker.tracks) == 2 and len(big.observations) == len(small.observations) == 6
    assert linker.leader() is big


def _linker(frames: int, *per_frame: Callable[[int], Observation | None]) -> TrackLinker:
    linker = TrackLinker()
    for k in range(frames):
        linker.update(k, _dets(*[o for f in per_frame if (o := f(k)) is not None]))
    return linker


def test_quality_rules(params: Params) -> None:
    rules = quality_rules(params.faces)
    face = _obs([100, 100, 200, 220])
    main, stats = main_track(_linker(10, lambda k: face), **rules)
    assert stats.lost_fraction == 0 and stats.face_px == pytest.approx(np.sqrt(100 * 120))

    def rejected(linker: TrackLinker) -> str:
        with pytest.raises(Rejected) as caught:
            main_track(linker, **rules)
        return caught.value.reason

    assert rejected(_linker(10, lambda k: None)) == "no_face"
    assert rejected(_linker(10, lambda k: _obs([0, 0, 30, 30]))) == "face_too_small"
    assert rejected(_linker(10, lambda k: face if k < 7 else None)) == "track_lost"
    twin = _obs([300, 100, 390, 210])  # 82 % of the main face's area, elsewhere
    assert rejected(_linker(10, lambda k: face, lambda k: twin if k < 5 else None)) == "multiple_faces"
    main_track(_linker(10, lambda k: face, lambda k: twin if k < 2 else None), **rules)  # briefly: kept
    duplicate = _obs([110, 105, 205, 215])  # overlaps the main face: the same face, not a rival
    main_track(_linker(10, lambda k: face, lambda k: duplicate), **rules)
    turned = Observation(face.box, face.landmarks + [[0, 0], [0, 0], [30, 0], [0, 0], [0, 0]], 0.9)
    assert yaw_proxy(turned.landmarks) > params.faces.max_yaw
    assert rejected(_linker(10, lambda k: turned if k % 2 else face)) == "extreme_pose"


def test_yaw_proxy_is_zero_frontal_and_ignores_roll() -> None:
    frontal = _obs([0, 0, 100, 100]).landmarks
    assert yaw_proxy(frontal) == pytest.approx(0.0)
    turned = frontal.copy()
    turned[2, 0] += 24  # nose 24 px towards the right eye; eyes 40 px apart
    assert yaw_proxy(turned) == pytest.approx(0.6)
    angle = np.radians(30)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    assert yaw_proxy(turned @ rot.T) == pytest.approx(0.6)


# ----------------------------------------------------------------------------- cropping


def test_crop_geometry_maps_landmarks_and_pads_outside_the_frame() -> None:
    frame = np.zeros((200, 300, 3), np.uint8)
    frame[:, :150] = 200  # left half bright
    box = np.array([-20.0, 50, 80, 150])  # a face half outside the left edge
    landmarks = _obs(box).landmarks
    geom = crop_geometry(box, landmarks, margin=0.25, size=64, align=False)
    assert geom.box.tolist() == [-45, 25, 105, 175]  # 150 px square around the box centre
    crop = crop_face(frame, geom)
    assert crop.shape == (64, 64, 3) and crop.min() == 200  # repeated border, no black band
    assert np.allclose(geom.to_crop(np.array([[-45.0, 25.0], [105.0, 175.0]])), [[0, 0], [64, 64]])

    tilted = landmarks.copy()
    tilted[1, 1] += 20  # right eye lower: head rolled by atan(20/40)
    aligned = crop_geometry(box, tilted, margin=0.25, size=64, align=True)
    eyes = aligned.to_crop(tilted[:2])
    assert abs(eyes[0, 1] - eyes[1, 1]) < 1e-6 and aligned.angle == pytest.approx(np.degrees(np.arctan2(20, 40)))
    assert crop_face(frame, aligned).shape == (64, 64, 3)


def test_aligned_crop_levels_a_rolled_drawn_face() -> None:
    frame = render(320, 320, [(160, 160, 140)])
    rolled = cv2.warpAffine(frame, cv2.getRotationMatrix2D((160, 160), 20, 1.0), (320, 320),
                            borderMode=cv2.BORDER_REPLICATE)
    found = FaceDetector(max_side=None)(rolled)
    assert abs(eye_angle(found.landmarks[0])) > 15
    geom = crop_geometry(found.boxes[0], found.landmarks[0], margin=0.3, size=256, align=True)
    crop = crop_face(rolled, geom)
    again = FaceDetector(max_side=None)(crop)
    assert abs(eye_angle(again.landmarks[0])) < 5  # RetinaFace's landmark noise on drawn eyes: ~3 degrees
    assert np.abs(again.landmarks[0] - geom.to_crop(found.landmarks[0])).max() < 6


def test_crops_average_when_shrinking_and_are_exact_at_integer_scales() -> None:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (300, 400, 3), np.uint8)
    box = np.array([100.0, 50, 200, 150])
    for size in (100, 50, 25):  # 1:1, 2:1 and 4:1 are exact box averages
        crop = crop_face(frame, crop_geometry(box, np.zeros((5, 2)), margin=0.0, size=size, align=False))
        reference = cv2.resize(frame[50:150, 100:200], (size, size), interpolation=cv2.INTER_AREA)
        assert np.abs(crop.astype(int) - reference).max() <= 1, size
    stripes = np.zeros((1080, 1920, 3), np.uint8)
    stripes[:, ::2] = 255  # 1-px stripes: sampling aliases them, averaging gives flat grey
    for side in (600, 900, 1001):  # 2.3x to 3.9x smaller
        box = np.array([500.0, 100, 500 + side, 100 + side])
        crop = crop_face(stripes, crop_geometry(box, np.zeros((5, 2)), margin=0.0, size=256, align=False))
        assert abs(float(crop.mean()) - 127.5) < 2 and crop.std() < 8, side


# ----------------------------------------------------------------------------- the stage


def _moving(i: int) -> list[Face]:
    return [(70 + 1.2 * i, 84 + 0.4 * np.sin(i / 5), 90 + 0.3 * i)]


def test_tracked_boxes_match_per_frame_detection_on_a_moving_face(tmp_path: Path, params: Params) -> None:
    video = make_video(tmp_path / "moving.mp4", 60, 25, (256, 192), _moving)
    clip = extract_faces(video, tmp_path / "crop.mkv", params.faces, 25)
    detector = FaceDetector(params.faces.score_threshold, max_side=None)
    per_frame = np.stack([detector(f).boxes[0] for _, f in iter_frames(video, 25)])
    iou = np.diag(pairwise_iou(clip.path.boxes, per_frame))
    assert clip.n_frames == 60 and not clip.recropped
    assert iou.mean() >= 0.9 and iou.min() >= 0.8, iou.round(2)


def _raw_index(raw: Path, videos: dict[str, Path]) -> None:
    rows = []
    for key, path in videos.items():
        speaker, video, clip = key.split("/")
        rows.append({"key": key, "speaker_id": speaker, "video_id": video, "clip_id": clip,
                     "path": path.relative_to(raw).as_posix(), "sha256": "", "source": "test"})
    pd.DataFrame(rows).to_parquet(raw / "index.parquet", index=False)


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> tuple[Params, dict, dict]:
    """The stage run once over one clip per outcome (shared by the tests below)."""
    root = tmp_path_factory.mktemp("faces_stage")
    params = tiny_params(root)
    raw = params.data_path("raw")
    small = (160, 160)
    videos = {
        "spk1/vid/good": make_video(raw / "spk1/vid/good.mp4", 50, 25, small, lambda i: [(80, 84, 90)]),
        "spk1/vid/fps30": make_video(raw / "spk1/vid/fps30.mp4", 60, 30, small, lambda i: [(80 + i / 3, 84, 90)]),
        "spk1/vid/late": make_video(raw / "spk1/vid/late.mp4", 60, 25, small,  # no face in keyframe 0
                                    lambda i: [(80, 84, 90)] if i >= 3 else []),
        "spk1/vid/switch": make_video(raw / "spk1/vid/switch.mp4", 60, 25, (320, 240),  # the big face comes later
                                      lambda i: [(40, 50, 64)] + ([(200, 130, 150)] if i >= 10 else [])),
        "spk2/vid/noface": make_video(raw / "spk2/vid/noface.mp4", 50, 25, small, lambda i: []),
        "spk2/vid/tiny": make_video(raw / "spk2/vid/tiny.mp4", 50, 25, small, lambda i: [(80, 80, 40)]),
        "spk2/vid/two": make_video(raw / "spk2/vid/two.mp4", 50, 25, (320, 160),
                                   lambda i: [(80, 84, 90), (240, 84, 90)]),
        "spk2/vid/lost": make_video(raw / "spk2/vid/lost.mp4", 50, 25, small,
                                    lambda i: [(80, 84, 90)] if i < 25 else []),
        "spk2/vid/short": make_video(raw / "spk2/vid/short.mp4", 15, 25, small, lambda i: [(80, 84, 90)]),
    }
    broken = raw / "spk3/vid/broken.mp4"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(np.random.default_rng(1).bytes(3000))
    videos["spk3/vid/broken"] = broken
    _raw_index(raw, videos)
    faces_main(["--no-progress", "-S", f"common.data_dir={params.common.data_dir}", "-S", "common.workers=1",
                "-S", "tracking.enabled=false"])
    out = params.data_path("faces")
    records = pd.read_parquet(out / "index.parquet").set_index("key").to_dict("index")
    reasons = pd.read_parquet(out / "quarantine.parquet").set_index("key")["reason"].to_dict()
    return params, records, reasons


def test_stage_keeps_good_clips_and_quarantines_bad_ones(stage: tuple[Params, dict, dict]) -> None:
    params, records, reasons = stage
    assert sorted(records) == ["spk1/vid/fps30", "spk1/vid/good", "spk1/vid/late", "spk1/vid/switch"]
    assert reasons == {"spk2/vid/noface": "no_face", "spk2/vid/tiny": "face_too_small",
                       "spk2/vid/two": "multiple_faces", "spk2/vid/lost": "track_lost",
                       "spk2/vid/short": "too_short", "spk3/vid/broken": "corrupt"}
    out = params.data_path("faces")
    for name in ("noface", "tiny", "two", "lost", "short", "broken"):
        assert not list(out.glob(f"spk*/vid/{name}.*")), name  # nothing half-written is left
    summary = (out / "summary.json").read_text()
    assert '"kept": 4' in summary and '"recropped": 2' in summary


def test_stage_outputs_follow_the_contract(stage: tuple[Params, dict, dict]) -> None:
    params, records, _ = stage
    out = params.data_path("faces")
    expected_frames = {"spk1/vid/good": 50, "spk1/vid/fps30": 50, "spk1/vid/late": 60, "spk1/vid/switch": 60}
    for key, record in records.items():
        n = expected_frames[key]
        assert (record["n_frames"], record["fps"], record["duration_s"]) == (n, 25, n / 25), key
        assert list(record["outputs"]) == [f"{key}.mkv", f"{key}.npz"]
        assert is_jpeg_video(out / record["crop_path"])  # Motion-JPEG: the shards copy its frames
        assert record["speaker_id"] == key.split("/")[0] and 60 < record["face_px"] < 150
        frames = [f for _, f in iter_frames(out / record["crop_path"], 25)]
        assert len(frames) == n and frames[0].shape == (256, 256, 3), key
        track = np.load(out / record["track_path"])
        assert track["boxes"].shape == (n, 4) and track["crop_boxes"].shape == (n, 4)
        assert track["landmarks"].shape == (n, 5, 2) and track["scores"].shape == track["detected"].shape == (n,)
        keyframes = np.flatnonzero(track["keyframe"])
        assert keyframes[0] == 0 and keyframes[-1] == n - 1
        assert np.diff(keyframes).max() <= params.faces.detect_every_max
        lm = track["landmarks"]
        assert (lm > 0).all() and (lm < 256).all()
        # the crop shows the face where the landmarks say: RetinaFace on the crop agrees
        found = FaceDetector(max_side=None)(frames[n // 2])
        assert np.abs(found.landmarks[0] - lm[n // 2]).max() < 8, key
    assert records["spk1/vid/fps30"]["src_fps"] == 30


def test_clips_whose_first_keyframe_misleads_are_cropped_again(stage: tuple[Params, dict, dict]) -> None:
    params, records, _ = stage
    out = params.data_path("faces")
    late, switch = records["spk1/vid/late"], records["spk1/vid/switch"]
    assert late["recropped"] and switch["recropped"] and not records["spk1/vid/good"]["recropped"]
    track = np.load(out / late["track_path"])
    assert not track["detected"][:5].any() and track["detected"][5:].all()
    assert np.allclose(track["boxes"][0], track["boxes"][5])  # back-filled from the first detection
    track = np.load(out / switch["track_path"])
    centres = (track["crop_boxes"][:, :2] + track["crop_boxes"][:, 2:]) / 2
    assert np.abs(centres - [200, 130]).max() < 15  # the big face all along, never the small one


def test_rerun_resumes_every_clip(stage: tuple[Params, dict, dict]) -> None:
    params, records, reasons = stage
    outcome = run_stage(params, params.data_path("raw"), params.data_path("faces"), progress=False)
    assert outcome.skipped == len(records) + len(reasons)


@pytest.mark.realdata
def test_stage_finds_the_face_in_every_real_clip(tmp_path: Path, real_data: Path) -> None:
    params = tiny_params(tmp_path, **{"common.workers": 2})  # spawned workers, as in production
    raw = params.data_path("raw")
    manifest = pd.read_csv(real_data / "clips" / "manifest.csv")
    videos = {}
    for row in manifest.itertuples():
        link = raw / "real" / Path(row.file).stem / f"00000{Path(row.file).suffix}"
        link.parent.mkdir(parents=True)
        link.symlink_to(real_data / "clips" / row.file)
        videos[f"real/{Path(row.file).stem}/00000"] = link
    _raw_index(raw, videos)
    outcome = run_stage(params, raw, params.data_path("faces"), progress=False)
    assert not outcome.quarantine, outcome.quarantine
    by_video = {r["video_id"]: r for r in outcome.records}
    for row in manifest.itertuples():
        record = by_video[Path(row.file).stem]
        assert abs(record["n_frames"] - row.duration_s * 25) <= 2, row.file
        assert record["lost_fraction"] == 0 and 0.6 < record["face_px"] / row.face_h_px < 1.2, row.file
        track = np.load(params.data_path("faces") / record["track_path"])
        assert track["detected"].all()


# ----------------------------------------------------------------------------- the adaptive schedule


def _keyframes(clip) -> list[int]:  # noqa: ANN001 - ClipFaces
    return np.flatnonzero(clip.path.keyframe).tolist()


def test_a_steady_face_is_detected_every_detect_every_max_frames(tmp_path: Path, params: Params) -> None:
    video = make_video(tmp_path / "steady.mp4", 100, 25, (256, 192), lambda i: [(120 + 0.1 * i, 90, 90)])
    faces = params.faces.model_copy(update={"detect_every": 5, "detect_every_max": 40})
    clip = extract_faces(video, tmp_path / "crop.mkv", faces, 25)
    assert _keyframes(clip) == [0, 40, 80, 99]  # 4 detections for 100 frames (a fixed schedule of 5: 21)
    fixed = extract_faces(video, tmp_path / "fixed.mkv", faces.model_copy(update={"detect_every_max": 5}), 25)
    assert _keyframes(fixed) == [*range(0, 100, 5), 99]
    assert np.diag(pairwise_iou(clip.path.boxes, fixed.path.boxes)).min() > 0.95


def test_a_face_that_jumps_between_keyframes_is_found_at_the_base_rate(tmp_path: Path, params: Params) -> None:
    """The face jumps 25 px at frame 50, between keyframes 40 and 80: the gap is bisected
    down to detect_every around the jump, and the boxes follow per-frame detection there."""
    video = make_video(tmp_path / "jump.mp4", 100, 25, (320, 192), lambda i: [(130 if i < 50 else 155, 96, 90)])
    faces = params.faces.model_copy(update={"detect_every": 5, "detect_every_max": 40})
    clip = extract_faces(video, tmp_path / "crop.mkv", faces, 25)
    keyframes = _keyframes(clip)
    before, after = max(k for k in keyframes if k < 50), min(k for k in keyframes if k >= 50)
    assert after - before <= faces.detect_every  # the jump is bracketed at the base rate
    assert len(keyframes) < 100 / 5  # fewer detections than the fixed schedule even so
    detector = FaceDetector(faces.score_threshold, max_side=None)
    frames = [f for _, f in iter_frames(video, 25)]
    per_frame = np.stack([detector(f).boxes[0] for f in frames])
    iou = np.diag(pairwise_iou(clip.path.boxes, per_frame))
    steady = np.r_[0:45, 55:100]  # away from the jump itself (interpolated over <= 5 frames)
    assert iou[steady].min() > 0.85, iou.round(2)


def test_a_second_face_joining_between_keyframes_is_seen(tmp_path: Path, params: Params) -> None:
    """A face as large as the main one joins at frame 45 (between keyframes 40 and 80):
    the changed face count is not confident, the schedule goes back over the gap, and the
    clip is rejected as multiple_faces as a fixed schedule rejects it."""
    def faces_at(i: int) -> list[Face]:
        return [(90, 96, 90)] + ([(240, 96, 90)] if i >= 45 else [])

    video = make_video(tmp_path / "join.mp4", 120, 25, (330, 192), faces_at)
    for every_max in (5, 40):
        faces = params.faces.model_copy(update={"detect_every": 5, "detect_every_max": every_max})
        with pytest.raises(Rejected) as caught:
            extract_faces(video, tmp_path / "crop.mkv", faces, 25)
        assert caught.value.reason == "multiple_faces", every_max


def test_keyframe_weights_are_shares_of_the_clip_time() -> None:
    assert keyframe_weights([0, 5, 10]) == pytest.approx({0: 0.25, 5: 0.5, 10: 0.25})
    weights = keyframe_weights([0, 40, 45, 50, 90])  # dense where the schedule looked closer
    assert weights == pytest.approx({0: 20 / 90, 40: 22.5 / 90, 45: 5 / 90, 50: 22.5 / 90, 90: 20 / 90})
    assert keyframe_weights([7]) == {7: 1.0}


def test_lost_fraction_is_the_share_of_time_not_of_keyframes(params: Params) -> None:
    """One of five keyframes misses the face, but it is one of the dense ones the schedule
    added (5 frames apart) in a 90-frame clip: the face is missing 5/90 of the time, not
    1/5 of the keyframes."""
    seen = Detections(np.array([[10, 10, 60, 60]], np.float32), np.array([0.99], np.float32),
                      np.array([[[25, 30], [45, 30], [35, 40], [28, 50], [42, 50]]], np.float32))
    linker = TrackLinker()
    for frame in (0, 40, 45, 50, 90):
        linker.update(frame, Detections.empty() if frame == 45 else seen)
    _, stats = main_track(linker, **quality_rules(params.faces))
    assert stats.n_keyframes == 5 and stats.lost_fraction == pytest.approx(5 / 90)
