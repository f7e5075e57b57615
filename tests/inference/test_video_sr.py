"""``earshot video-sr``: windows, streamed output (size, audio, duration), the model's
inputs, side by side, face detection, one-line errors, and every shared real clip."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from PIL import Image
from typer.testing import CliRunner

from components.audio.extract import load_audio
from components.data.faces import extract_faces, geometry
from components.data.features import degrade, mel_windows, resize
from components.errors import EarshotError
from components.faces.crop import crop_face
from components.faces.detect import FaceDetector
from components.figures.images import from_hwc, to_hwc
from components.inference.video_sr import Job, low_res, run_job, sliding_windows
from components.io import iter_chunks
from components.media.jpeg_video import iter_crop_frames
from components.media.probe import probe
from components.media.read import iter_frames
from components.media.write import write_video
from components.models.checkpoint import save_model
from components.models.talking import (FAMILY, MODEL_STAGE, ModelConfig, build_models, config_dict, get_preset,
                                       load_video_sr)
from pipelines.cli import app
from tests._fixtures import draw_face, speech_like
from tests.conftest import tiny_params
from tests.data.test_faces import render
from tests.inference.test_face_sr_cli import save_tiny_model

SR, FPS = 16000, 25
N_FRAMES = 30  # 1.2 s: above the faces stage's min_seconds (1 s)


TINY = get_preset("small", coarse_width=16, coarse_audio_dim=16, coarse_mel_base=8, coarse_mel_cap=16, num_kp=4,
                  kp_expansion=4, kp_cap=16, motion_expansion=4, motion_cap=16, gen_expansion=4, gen_cap=16,
                  gen_bottleneck_blocks=1, expert_dim=16, expert_base=4, expert_cap=16)
"""The small preset's shapes (8x8 in, 256x256 out), narrower: the tests check files, not faces."""


def save_video_model(path: Path, cfg: ModelConfig = TINY) -> Path:
    """An untrained model saved as the train_animate stage saves it."""
    save_model(path, family=FAMILY, stage=MODEL_STAGE, config=config_dict(cfg), networks=build_models(cfg), step=0)
    return path


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_video_model(tmp_path_factory.mktemp("models") / MODEL_STAGE / "model.pt")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An 8x8 talking clip (H.264 + AAC, 1.2 s), the same without sound, clips of a face
    RetinaFace finds (128 px, centred; 192x128, off centre), one without a face, a face
    photo, a photo without a face and a 3 s voice of another speaker."""
    root = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    voice = speech_like(N_FRAMES * SR // FPS, SR, 3, rng)
    tiny = [degrade(draw_face(64, f, 3, rng)[0], 8) for f in range(N_FRAMES)]
    write_video(root / "tiny.mp4", tiny, FPS, audio=voice)
    write_video(root / "mute.mp4", tiny, FPS)
    face = render(128, 128, [(64, 64, 80)])
    write_video(root / "talk.mp4", [face] * N_FRAMES, FPS, audio=voice, crf=16, preset="ultrafast")
    aside = render(192, 128, [(136, 64, 72)])  # off centre: the crop is not the frame's centre square
    write_video(root / "aside.mp4", [aside] * N_FRAMES, FPS, audio=voice, crf=16, preset="ultrafast")
    write_video(root / "empty.mp4", [render(128, 128, [])] * N_FRAMES, FPS, audio=voice)
    Image.fromarray(face).save(root / "face.png")
    Image.fromarray(render(128, 128, [])).save(root / "wall.png")
    sf.write(root / "other.wav", speech_like(3 * SR, SR, 0, rng), SR)
    return {p.name: p for p in root.iterdir()}


def video_sr(*args: str | Path, progress: bool = False) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["video-sr", "--progress" if progress else "--no-progress", *map(str, args)])
    return result.exit_code, result.output


def frame_size(path: Path) -> tuple[int, int]:
    return next(iter_frames(path))[1].shape[:2]


def assert_video_with_audio_of(out: Path, source: Path, size: tuple[int, int]) -> None:
    """``out``: frames of ``size`` (height, width), audio, the duration of ``source``."""
    info, expected = probe(out), probe(source)
    assert (info.height, info.width) == size and frame_size(out) == size
    assert info.has_audio and info.fps == FPS
    assert abs(info.duration_s - expected.duration_s) <= 0.1, (info.duration_s, expected.duration_s)
    audio_s = len(load_audio(out, SR)) / SR
    assert abs(audio_s - expected.duration_s) <= 0.1, (audio_s, expected.duration_s)


# --------------------------------------------------------------------------- pure pieces


def test_every_item_gets_a_window_centred_on_it_with_the_ends_repeated():
    assert list(sliding_windows(range(4), 5)) == [[0, 0, 0, 1, 2], [0, 0, 1, 2, 3], [0, 1, 2, 3, 3],
                                                  [1, 2, 3, 3, 3]]
    assert list(sliding_windows([7], 5)) == [[7] * 5]
    assert list(sliding_windows(range(3), 4)) == [[0, 0, 0, 1], [0, 0, 1, 2], [0, 1, 2, 2]]  # centre at 4 // 2
    assert list(sliding_windows(range(3), 1)) == [[0], [1], [2]]
    assert list(sliding_windows([], 5)) == []
    assert list(iter_chunks(range(5), 2)) == [[0, 1], [2, 3], [4]]


def test_windows_are_streamed_not_collected():
    seen = []

    def frames():
        for i in range(100):
            seen.append(i)
            yield i

    windows = sliding_windows(frames(), 5)
    assert next(windows) == [0, 0, 0, 1, 2] and seen == [0, 1, 2]


def test_a_larger_frame_is_cut_to_its_centre_square_and_degraded_as_training_degrades():
    frame = np.random.default_rng(0).integers(0, 256, (80, 64, 3), np.uint8)
    assert torch.equal(low_res(frame, 8), degrade(from_hwc(frame[8:72]), 8))
    assert torch.equal(low_res(frame[:8, :8], 8), from_hwc(frame[:8, :8]))  # already the model's input
    with pytest.raises(EarshotError, match="clip.mp4: 4x4 frames are smaller than the 8x8 model input"):
        low_res(frame[:4, :4], 8, name="clip.mp4")


# --------------------------------------------------------------------------- the command


def test_an_8x8_video_becomes_a_256_px_video_with_its_audio_and_duration(model_file: Path, inputs: dict,
                                                                          tmp_path: Path):
    out = tmp_path / "out.mp4"
    code, text = video_sr("--video", inputs["tiny.mp4"], "--identity", inputs["face.png"], "--out", out,
                          "--model", model_file, "--device", "cpu", progress=True)
    assert code == 0, text
    assert "video-sr tiny.mp4" in text and f"{N_FRAMES}/{N_FRAMES}" in text  # the progress bar, at its end
    assert_video_with_audio_of(out, inputs["tiny.mp4"], (256, 256))
    assert probe(out).vcodec == "h264" and probe(out).acodec == "aac"


def test_side_by_side_shows_four_256_px_panels(model_file: Path, inputs: dict, tmp_path: Path):
    out = tmp_path / "sbs.mp4"
    code, text = video_sr("--video", inputs["tiny.mp4"], "--identity", inputs["face.png"], "--out", out,
                          "--model", model_file, "--side-by-side")
    assert code == 0, text
    assert_video_with_audio_of(out, inputs["tiny.mp4"], (256, 4 * 256))
    panels = np.split(next(iter_frames(out))[1].astype(np.int16), 4, axis=1)
    lr = next(iter_frames(inputs["tiny.mp4"]))[1]
    nearest = np.repeat(np.repeat(lr, 32, 0), 32, 1).astype(np.int16)
    bicubic = to_hwc(resize(from_hwc(lr), 256)).astype(np.int16)
    # input (each pixel a 32 px block) | bicubic | ..., within H.264's error (the two differ by ~6 levels)
    assert np.abs(panels[0] - nearest).mean() < 2.5 < np.abs(panels[0] - bicubic).mean()
    assert np.abs(panels[1] - bicubic).mean() < 2.5 < np.abs(panels[1] - nearest).mean()
    assert np.abs(panels[3] - bicubic).mean() > 10  # ours is the model's, not the input's


class Recorder:
    """The real model, with the identity photo and the inputs of every ``coarse`` call kept."""

    def __init__(self, model):  # noqa: ANN001 - a VideoUpsampler
        self.model, self.cfg, self.device = model, model.cfg, model.device
        self.photos: list[torch.Tensor] = []
        self.lr: list[torch.Tensor] = []
        self.mel: list[torch.Tensor] = []

    def prepare_identity(self, photo: torch.Tensor):  # noqa: ANN201
        self.photos.append(photo)
        return self.model.prepare_identity(photo)

    def coarse(self, lr: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        self.lr.append(lr)
        self.mel.append(mel)
        return self.model.coarse(lr, mel)

    def animate(self, state, coarse: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        return self.model.animate(state, coarse)


def test_each_frame_is_upsampled_from_its_window_of_frames_and_its_mel_window(model_file: Path, inputs: dict,
                                                                               tmp_path: Path):
    recorder = Recorder(load_video_sr(model_file))
    job = Job(inputs["tiny.mp4"], str(inputs["face.png"]), tmp_path / "o.mp4", audio=inputs["other.wav"])
    faces = tiny_params(tmp_path).faces
    run_job(recorder, job, faces=faces, fps=FPS, batch=4, progress=False)
    lr, mel = torch.cat(recorder.lr), torch.cat(recorder.mel)
    frames = torch.stack([from_hwc(f) for _, f in iter_frames(inputs["tiny.mp4"])])
    assert lr.shape == (N_FRAMES, 5, 3, 8, 8) and len(recorder.lr) == -(-N_FRAMES // 4)
    for i in (0, 1, 13, N_FRAMES - 1):
        expected = frames[[min(max(j, 0), N_FRAMES - 1) for j in range(i - 2, i + 3)]]
        assert torch.equal(lr[i], expected), i
    # --audio replaces the video's own: the other voice's first 1.2 s, a window per frame
    voice = sf.read(inputs["other.wav"], dtype="float32")[0][:N_FRAMES * SR // FPS]
    assert torch.allclose(mel[:, 0], torch.from_numpy(mel_windows(voice, SR, FPS, n_frames=N_FRAMES)), atol=1e-4)
    # the photo's face, cut out as the faces stage cuts its crops, at 256 px
    photo = np.array(Image.open(inputs["face.png"]))
    found = FaceDetector(faces.score_threshold, faces.detect_size)(photo)
    crop = crop_face(photo, geometry(found.boxes[0], found.landmarks[0], faces))
    assert len(recorder.photos) == 1 and torch.equal(recorder.photos[0][0], resize(from_hwc(crop), 256))


def test_detect_feeds_the_faces_stage_crops_and_first_is_the_first_crop(model_file: Path, inputs: dict,
                                                                        tmp_path: Path):
    recorder = Recorder(load_video_sr(model_file))
    faces = tiny_params(tmp_path).faces
    job = Job(inputs["aside.mp4"], "first", tmp_path / "o.mp4", detect=True)
    run_job(recorder, job, faces=faces, fps=FPS, progress=False)
    extract_faces(inputs["aside.mp4"], tmp_path / "crops.mkv", faces, FPS)
    crops = torch.stack([from_hwc(c) for c in iter_crop_frames(tmp_path / "crops.mkv")])
    lr = torch.cat(recorder.lr)
    assert len(lr) == len(crops) == N_FRAMES
    assert torch.equal(lr[:, 2], degrade(crops, 8))  # the centre of each window: its frame's crop, degraded
    assert torch.equal(recorder.photos[0][0], resize(crops[0], 256))


def test_the_replacement_audio_is_the_one_in_the_output(model_file: Path, inputs: dict, tmp_path: Path):
    out = tmp_path / "dub.mp4"
    code, text = video_sr("--video", inputs["tiny.mp4"], "--identity", inputs["face.png"], "--out", out,
                          "--model", model_file, "--audio", inputs["other.wav"])
    assert code == 0, text
    assert_video_with_audio_of(out, inputs["tiny.mp4"], (256, 256))  # cut to the video's 1.2 s
    written = load_audio(out, SR)[:SR]
    other = sf.read(inputs["other.wav"], dtype="float32")[0][:SR]
    own = load_audio(inputs["tiny.mp4"], SR)[:SR]
    assert np.corrcoef(written, other)[0, 1] > 0.9 > np.corrcoef(written, own)[0, 1]


def test_detect_tracks_the_face_and_first_takes_the_identity_from_it(model_file: Path, inputs: dict,
                                                                     tmp_path: Path):
    out = tmp_path / "detected.mp4"
    code, text = video_sr("--video", inputs["talk.mp4"], "--identity", "first", "--detect", "--out", out,
                          "--model", model_file)
    assert code == 0, text
    assert_video_with_audio_of(out, inputs["talk.mp4"], (256, 256))


@pytest.mark.parametrize("case, message", [
    ("mute", "mute.mp4: the video has no audio stream"),
    ("no_face", "empty.mp4: no_face"),
    ("photo", "wall.png: no face found in the identity photo"),
    ("first", "--identity first"),
    ("face_sr_model", "'face_sr'"),
    ("missing_model", "`dvc repro train_animate`"),
    ("not_mp4", "name it .mp4"),
])
def test_bad_inputs_are_one_line_errors(model_file: Path, inputs: dict, tmp_path: Path, case: str, message: str):
    video, identity, model, extra = inputs["tiny.mp4"], inputs["face.png"], model_file, []
    out = tmp_path / "o.mp4"
    if case == "mute":
        video = inputs["mute.mp4"]
    elif case == "no_face":
        video, identity, extra = inputs["empty.mp4"], "first", ["--detect"]
    elif case == "photo":
        identity = inputs["wall.png"]
    elif case == "first":
        identity = "first"
    elif case == "face_sr_model":
        model = save_tiny_model(tmp_path / "face_sr") / "train_fusion" / "model.pt"
    elif case == "missing_model":
        model = tmp_path / "nothing" / "model.pt"
    elif case == "not_mp4":
        out = tmp_path / "o.avi"
    code, text = video_sr("--video", video, "--identity", identity, "--out", out, "--model", model, *extra)
    assert code == 2, text
    assert message in text and len(text.strip().splitlines()) == 1, text
    assert not out.exists()


def test_without_model_the_one_train_animate_writes_is_used(inputs: dict, tmp_path: Path):
    code, text = video_sr("--video", inputs["tiny.mp4"], "--identity", inputs["face.png"], "--out", tmp_path / "o.mp4",
                          "--set", f"talking.out_dir={tmp_path / 'models'}")
    assert code == 2
    assert f"{tmp_path / 'models' / 'train_animate' / 'model.pt'}: no such checkpoint" in text, text
    assert "`dvc repro train_animate`" in text


@pytest.mark.realdata
@pytest.mark.slow
def test_every_real_clip_gives_a_256_px_video_with_its_audio(model_file: Path, real_data: Path, tmp_path: Path):
    clips = pd.read_csv(real_data / "clips" / "manifest.csv")["file"]
    for name in clips:
        clip = real_data / "clips" / name
        out = tmp_path / f"{Path(name).stem}.mp4"
        start = time.perf_counter()
        code, text = video_sr("--video", clip, "--identity", "first", "--detect", "--out", out, "--model", model_file)
        assert code == 0, f"{name}: {text}"
        assert_video_with_audio_of(out, clip, (256, 256))
        print(f"{name}: {time.perf_counter() - start:.1f} s")
