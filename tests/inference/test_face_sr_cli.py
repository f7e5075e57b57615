"""``earshot face-sr``: inputs from files, checkpoints, batch mode, one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image
from typer.testing import CliRunner

from components.figures.images import from_hwc
from components.data.features import degrade, face_sr_spectrogram, resize
from components.inference.face_sr import ENCODER_STAGE, FINAL_STAGE, face_input, load_face_sr
from components.inference.inputs import pair_by_stem
from components.media.ffmpeg import run_ffmpeg
from components.models.face_sr import FAMILY, ModelConfig, build_models, config_dict, get_preset
from components.models.checkpoint import save_model
from pipelines.cli import app
from tests._fixtures import draw_face, speech_like

TINY = get_preset("small", resolution=32, latent_dim=32)
SR = 16000


def save_tiny_model(out_dir: Path, cfg: ModelConfig = TINY, stage: str = FINAL_STAGE, seed: int = 0) -> Path:
    """A randomly initialised model saved where the train_fusion stage saves its networks.

    F starts as (almost) the identity on the image code (its last layer is initialised
    near zero); its last layer is redrawn larger here so the voice visibly matters, as
    it does after training.
    """
    nets = build_models(cfg, seed, ("G", "El", "Ea", "F", "Eh"))
    with torch.no_grad():
        nets["F"].mlp[-1].weight.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(seed))
    path = out_dir / stage / "model.pt"
    save_model(path, family=FAMILY, stage=stage, config=config_dict(cfg),
               networks={k: v for k, v in nets.items() if k != "Eh"}, step=1)
    if stage == FINAL_STAGE:  # Eh with the same G, where train_eh saves them (the reconstruction G(Eh(x)))
        save_model(out_dir / ENCODER_STAGE / "model.pt", family=FAMILY, stage=ENCODER_STAGE, config=config_dict(cfg),
                   networks={"Eh": nets["Eh"], "G": nets["G"]}, step=1)
    return out_dir


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Faces (64 px drawn, 8x8, a flat image without a face, a text file) and voices
    (WAV, MP3 of 2 s, digital silence, a WAV without samples, bytes that are no media)."""
    root = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    face, _ = draw_face(64, 0, 3, rng)
    Image.fromarray(face).save(root / "face.png")
    Image.fromarray(degrade(face, 8)).save(root / "tiny.png")
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(root / "blank.png")
    (root / "notes.png").write_text("not an image")
    sf.write(root / "face.wav", speech_like(5 * SR, SR, 3, rng), SR)
    sf.write(root / "other.wav", speech_like(4 * SR, SR, 0, rng), SR)
    run_ffmpeg(["-y", "-f", "lavfi", "-i", "sine=frequency=220:duration=2", "-ar", "44100", str(root / "short.mp3")])
    sf.write(root / "silent.wav", np.zeros(4 * SR, np.float32), SR)
    sf.write(root / "empty.wav", np.zeros(0, np.float32), SR)
    (root / "garbage.wav").write_bytes(rng.bytes(3000))
    return {p.name: p for p in root.iterdir()}


def face_sr(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["face-sr", *map(str, args)])
    return result.exit_code, result.output


def image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:
        return img.size


def test_an_8x8_face_and_any_audio_give_a_face_at_the_model_resolution(checkpoint: Path, inputs: dict,
                                                                        tmp_path: Path):
    # a 2 s MP3 at 44.1 kHz: decoded by ffmpeg at 16 kHz, repeated to 4 s
    code, out = face_sr("--image", inputs["tiny.png"], "--audio", inputs["short.mp3"], "--out", tmp_path / "o.png",
                        "--checkpoint", checkpoint)
    assert code == 0, out
    assert image_size(tmp_path / "o.png") == (32, 32)


def test_output_is_the_fused_model_applied_to_the_prepared_inputs(checkpoint: Path, inputs: dict, tmp_path: Path):
    code, out = face_sr("--image", inputs["face.png"], "--audio", inputs["face.wav"], "--out", tmp_path / "o.png",
                        "--checkpoint", checkpoint)
    assert code == 0, out
    model = load_face_sr(checkpoint)
    # a larger image is brought to the model resolution and degraded, as training samples are
    face = np.array(Image.open(inputs["face.png"]).convert("RGB"))
    lr = face_input(face, model.config)
    assert torch.equal(lr, degrade(resize(from_hwc(face), 32), 8))
    # the first 4 s of the 5 s voice
    spec = face_sr_spectrogram(sf.read(inputs["face.wav"], dtype="float32")[0], SR, 4.0)[None]
    expected = model.fused(lr[None], spec[None])[0]
    written = torch.from_numpy(np.array(Image.open(tmp_path / "o.png"))).permute(2, 0, 1).float() / 127.5 - 1
    assert (written - expected).abs().max() <= 1 / 127.5 + 1e-4  # 8-bit rounding only


def test_mix_audio_writes_input_own_voice_and_other_voice_side_by_side(checkpoint: Path, inputs: dict,
                                                                        tmp_path: Path):
    code, out = face_sr("--image", inputs["tiny.png"], "--audio", inputs["face.wav"], "--mix-audio",
                        inputs["other.wav"], "--out", tmp_path / "mix.png", "--checkpoint", checkpoint)
    assert code == 0, out
    assert image_size(tmp_path / "mix.png") == (3 * 32 + 2 * 4, 32)
    panels = np.array(Image.open(tmp_path / "mix.png"))
    own, mixed = panels[:, 36:68], panels[:, 72:104]
    assert not np.array_equal(own, mixed)  # the second voice changes the fused code


def test_batch_mode_pairs_files_by_stem(checkpoint: Path, inputs: dict, tmp_path: Path):
    images, voices = tmp_path / "faces", tmp_path / "voices"
    images.mkdir()
    voices.mkdir()
    for stem in ("a", "b"):
        (images / f"{stem}.png").write_bytes(inputs["tiny.png"].read_bytes())
        (voices / f"{stem}.wav").write_bytes(inputs["face.wav"].read_bytes())
    (voices / "lonely.wav").write_bytes(inputs["face.wav"].read_bytes())
    code, out = face_sr("--image", images, "--audio", voices, "--out", tmp_path / "out", "--checkpoint", checkpoint)
    assert code == 0, out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png"]
    assert "lonely.wav" in out
    # the same folder can hold both (face.png beside face.wav)
    pairs, _ = pair_by_stem(inputs["face.png"].parent, inputs["face.png"].parent)
    assert ("face", inputs["face.png"], inputs["face.wav"]) in pairs


def test_batch_mode_reports_failed_pairs_and_keeps_the_others(checkpoint: Path, inputs: dict, tmp_path: Path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "good.png").write_bytes(inputs["tiny.png"].read_bytes())
    (folder / "good.wav").write_bytes(inputs["face.wav"].read_bytes())
    (folder / "quiet.png").write_bytes(inputs["tiny.png"].read_bytes())
    (folder / "quiet.wav").write_bytes(inputs["silent.wav"].read_bytes())
    code, out = face_sr("--image", folder, "--audio", folder, "--out", tmp_path / "out", "--checkpoint", checkpoint)
    assert code == 2
    assert (tmp_path / "out" / "good.png").is_file() and not (tmp_path / "out" / "quiet.png").exists()
    assert "1 of 2 pairs failed" in out and "quiet.wav" in out


@pytest.mark.parametrize("image, audio, message", [
    ("notes.png", "face.wav", "notes.png: not an image"),
    ("tiny.png", "silent.wav", "silent.wav: digital silence"),
    ("tiny.png", "empty.wav", "empty.wav: empty audio"),
    ("tiny.png", "garbage.wav", "garbage.wav: not a readable media container"),
    ("tiny.png", "face.png", "face.png: the file has no audio stream"),
])
def test_bad_inputs_are_one_line_errors_naming_the_input(checkpoint: Path, inputs: dict, tmp_path: Path,
                                                         image: str, audio: str, message: str):
    code, out = face_sr("--image", inputs[image], "--audio", inputs[audio], "--out", tmp_path / "o.png",
                        "--checkpoint", checkpoint)
    assert code == 2
    assert message in out and len(out.strip().splitlines()) == 1, out
    assert not (tmp_path / "o.png").exists()


def test_detect_without_a_face_is_an_error(checkpoint: Path, inputs: dict, tmp_path: Path):
    code, out = face_sr("--image", inputs["blank.png"], "--audio", inputs["face.wav"], "--out", tmp_path / "o.png",
                        "--checkpoint", checkpoint, "--detect")
    assert code == 2
    assert "blank.png: no face found" in out


def test_missing_checkpoint_says_to_run_dvc_repro(inputs: dict, tmp_path: Path):
    code, out = face_sr("--image", inputs["tiny.png"], "--audio", inputs["face.wav"], "--out", tmp_path / "o.png",
                        "--checkpoint", tmp_path / "nothing")
    assert code == 2 and "dvc repro" in out
    (tmp_path / "empty" / FINAL_STAGE).mkdir(parents=True)
    code, out = face_sr("--image", inputs["tiny.png"], "--audio", inputs["face.wav"], "--out", tmp_path / "o.png",
                        "--checkpoint", tmp_path / "empty")
    assert code == 2 and "model.pt" in out and "dvc repro" in out


def test_checkpoints_of_another_stage_version_or_kind_of_file_are_refused(inputs: dict, tmp_path: Path):
    def run(folder: Path) -> str:
        code, out = face_sr("--image", inputs["tiny.png"], "--audio", inputs["face.wav"], "--out",
                            tmp_path / "o.png", "--checkpoint", folder)
        assert code == 2
        return out

    wrong_stage = tmp_path / "stage"
    save_tiny_model(wrong_stage, stage="train_el")
    (wrong_stage / "train_el").rename(wrong_stage / FINAL_STAGE)
    assert "written by stage 'train_el'" in run(wrong_stage)

    old = tmp_path / "old"
    save_tiny_model(old)
    ckpt = torch.load(old / FINAL_STAGE / "model.pt", weights_only=True)
    torch.save({**ckpt, "version": 0}, old / FINAL_STAGE / "model.pt")
    assert "version 0" in run(old)

    pickled = tmp_path / "pickled"
    (pickled / FINAL_STAGE).mkdir(parents=True)
    torch.save({"format": "earshot.face_sr", "model": Path("x")}, pickled / FINAL_STAGE / "model.pt")
    assert "not a readable checkpoint" in run(pickled)  # weights_only=True refuses arbitrary objects


@pytest.mark.realdata
def test_real_stills_downscaled_to_8x8(real_data: Path, checkpoint: Path, tmp_path: Path):
    stills = real_data / "stills"
    for png in sorted(stills.glob("*.png")):
        tiny = tmp_path / png.name
        Image.fromarray(degrade(np.array(Image.open(png).convert("RGB")), 8)).save(tiny)
        code, out = face_sr("--image", tiny, "--audio", png.with_suffix(".wav"), "--out", tmp_path / "out" / png.name,
                            "--checkpoint", checkpoint)
        assert code == 0, out
        assert image_size(tmp_path / "out" / png.name) == (32, 32)
    # the 128 px crops themselves, paired by stem in their folder, with RetinaFace cropping
    code, out = face_sr("--image", stills, "--audio", stills, "--out", tmp_path / "batch", "--checkpoint", checkpoint,
                        "--detect")
    assert code == 0, out
    assert sorted(p.name for p in (tmp_path / "batch").iterdir()) == sorted(p.name for p in stills.glob("*.png"))
