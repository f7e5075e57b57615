"""``earshot demo``'s handlers on tiny untrained models: outputs, limits, picks, lines, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from PIL import Image
from typer.testing import CliRunner

from components.codec.container import pack
from components.codec.streams import encode_video
from components.data.features import degrade
from components.demo import handlers
from components.errors import EarshotError
from components.figures.images import nearest_up, to_hwc
from components.inference.face_sr import face_input, voice_input
from components.media.probe import probe
from components.media.write import write_video
from components.models.face_sr import get_preset
from components.models.face_sr.presets import PRESETS
from components.models.talking import MODEL_STAGE
from pipelines.cli import app
from tests._fixtures import draw_face, speech_like
from tests.conftest import tiny_params
from tests.data.test_faces import render
from tests.inference.test_face_sr_cli import TINY as TINY_FACE
from tests.inference.test_face_sr_cli import save_tiny_model
from tests.inference.test_video_sr import save_video_model

SR, FPS, N_FRAMES = 16000, 25, 30
KEY = "id00900/vid000/00000"


def save_tiny_models(root: Path) -> Path:
    """A --models folder: face_sr/ and talking/ as `dvc repro` fills models/."""
    save_tiny_model(root / "face_sr")
    save_video_model(root / "talking" / MODEL_STAGE / "model.pt")
    return root


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project folder: tiny models, one test clip in shards/audio/raw, inputs to upload."""
    root = tmp_path_factory.mktemp("project")
    save_tiny_models(root / "models")
    rng = np.random.default_rng(0)
    data = root / "data"
    (data / "shards" / "test_unseen").mkdir(parents=True)
    pq.write_table(pa.table({"key": [KEY]}), data / "shards" / "test_unseen" / "shard-00000.parquet")
    (data / "audio" / KEY).parent.mkdir(parents=True)
    sf.write(data / "audio" / f"{KEY}.wav", speech_like(2 * SR, SR, 1, rng), SR)
    uploads = root / "uploads"
    uploads.mkdir()
    voice = speech_like(N_FRAMES * SR // FPS, SR, 3, rng)
    face = render(128, 128, [(64, 64, 80)])
    (data / "raw" / KEY).parent.mkdir(parents=True)
    write_video(data / "raw" / f"{KEY}.mp4", [face] * N_FRAMES, FPS, audio=voice, crf=16, preset="ultrafast")
    write_video(uploads / "talk.mp4", [face] * N_FRAMES, FPS, audio=voice, crf=16, preset="ultrafast")
    tiny = [degrade(draw_face(64, f, 3, rng)[0], 8) for f in range(N_FRAMES)]  # an 8x8 face video: no detection
    write_video(uploads / "tiny.mp4", tiny, FPS, audio=voice)
    Image.fromarray(face).save(uploads / "face.png")
    Image.fromarray(render(128, 128, [])).save(uploads / "wall.png")
    Image.fromarray(draw_face(64, 0, 3, rng)[0]).save(uploads / "crop.png")
    sf.write(uploads / "own.wav", voice, SR)
    sf.write(uploads / "other.wav", speech_like(3 * SR, SR, 0, rng), SR)
    (uploads / "notes.txt").write_text("not media")
    return root


@pytest.fixture(scope="module")
def models(project: Path) -> handlers.Models:
    params = tiny_params(project, **{"common.data_dir": str(project / "data"),
                                     "evaluate_codec.baselines.h264.preset": "ultrafast",
                                     "evaluate_codec.baselines.h265.preset": "ultrafast"})
    return handlers.load_models(project / "models" / "face_sr", project / "models" / "talking", params, project)


def up(project: Path, name: str) -> Path:
    return project / "uploads" / name


def test_face_panels_are_the_models_outputs_side_by_side(models: handlers.Models, project: Path):
    model, cfg = models.face, models.face.config
    image = handlers.read_upload_image(up(project, "crop.png"))
    result = handlers.face_panels(models, image, up(project, "own.wav"), detect=False)
    assert [c for _, c in result.panels] == ["face", "8x8 input", "bicubic", "image only", "with the voice"]
    assert all(p.shape == (cfg.resolution, cfg.resolution, 3) and p.dtype == np.uint8 for p, _ in result.panels)
    lr = face_input(image, cfg)[None]  # the CLI's input for the same upload
    spec = voice_input(up(project, "own.wav"), cfg)[None]
    expected = {"8x8 input": nearest_up(lr, cfg.resolution), "image only": model.image_only(lr),
                "with the voice": model.fused(lr, spec)}
    shown = dict((c, p) for p, c in result.panels)
    for caption, tensor in expected.items():
        assert np.array_equal(shown[caption], to_hwc(tensor)[0]), caption
    assert not np.array_equal(shown["bicubic"], shown["8x8 input"])


def test_a_second_voice_changes_the_face_and_the_slider_blends_the_two(models: handlers.Models, project: Path):
    image = handlers.read_upload_image(up(project, "crop.png"))
    own, other = up(project, "own.wav"), up(project, "other.wav")
    ends = [dict((c, p) for p, c in handlers.face_panels(models, image, own, other, mix, detect=False).panels)
            for mix in (0.0, 1.0)]
    assert not np.array_equal(ends[0]["with the voice"], ends[0]["with the second voice"])
    assert np.array_equal(ends[0]["voices mixed 1.00 : 0.00"], ends[0]["with the voice"])
    assert np.array_equal(ends[1]["voices mixed 0.00 : 1.00"], ends[1]["with the second voice"])
    half = dict((c, p) for p, c in handlers.face_panels(models, image, own, other, 0.5, detect=False).panels)
    assert not np.array_equal(half["voices mixed 0.50 : 0.50"], half["with the voice"])
    with pytest.raises(EarshotError, match="mix: 1.5 is not between 0 and 1"):
        handlers.face_panels(models, image, own, other, 1.5, detect=False)


def test_an_8x8_upload_is_used_as_it_is(models: handlers.Models, project: Path):
    cfg = models.face.config
    tiny = np.random.default_rng(1).integers(0, 256, (cfg.lr_size, cfg.lr_size, 3), dtype=np.uint8)
    shown = dict((c, p) for p, c in handlers.face_panels(models, tiny, up(project, "own.wav"), detect=False).panels)
    assert np.array_equal(shown["8x8 input"][::cfg.resolution // cfg.lr_size, ::cfg.resolution // cfg.lr_size], tiny)
    assert np.array_equal(shown["face"], shown["8x8 input"])  # its pixels, not smoothed


def test_detect_finds_the_face_and_an_image_without_one_is_a_clear_error(models: handlers.Models, project: Path):
    image = handlers.read_upload_image(up(project, "face.png"))
    detector = models.detector()
    source, found = handlers.face_crop(models, image, detect=True)
    assert np.array_equal(face_input(source, models.face.config),
                          face_input(image, models.face.config, detector=detector, margin=models.params.faces.margin))
    whole, centre = handlers.face_crop(models, image, detect=False)
    assert whole is image
    assert found.shape == centre.shape == (TINY_FACE.resolution, TINY_FACE.resolution, 3)
    assert not np.array_equal(found, centre)  # the faces stage's crop (margin), not the whole square
    with pytest.raises(EarshotError, match="image: no face found"):
        handlers.face_panels(models, handlers.read_upload_image(up(project, "wall.png")), up(project, "own.wav"))


def test_limits_refuse_uploads_with_a_one_line_message(project: Path, monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(EarshotError, match="not an image"):
        handlers.read_upload_image(up(project, "notes.txt"))
    with pytest.raises(EarshotError, match="notes.txt: not a video"):
        handlers.check_video(up(project, "notes.txt"))
    with pytest.raises(EarshotError, match="video: no file uploaded"):
        handlers.check_video(project / "uploads" / "gone.mp4")
    monkeypatch.setattr(handlers, "MAX_IMAGE_PIXELS", 127 * 128)
    with pytest.raises(EarshotError, match=r"face.png: 128x128 is over the 16,256 pixel limit"):
        handlers.read_upload_image(up(project, "face.png"))
    monkeypatch.setattr(handlers, "MAX_VIDEO_SECONDS", 1.0)
    with pytest.raises(EarshotError, match=r"talk.mp4: 1.2 s is over the 1 s limit"):
        handlers.check_video(up(project, "talk.mp4"))
    monkeypatch.setattr(handlers, "MAX_VIDEO_PIXELS", 100 * 100)
    monkeypatch.setattr(handlers, "MAX_VIDEO_SECONDS", 20.0)
    with pytest.raises(EarshotError, match=r"talk.mp4: 128x128 frames are over the 10,000 pixel limit"):
        handlers.check_video(up(project, "talk.mp4"))
    size = up(project, "own.wav").stat().st_size
    monkeypatch.setattr(handlers, "MAX_UPLOAD_BYTES", size)
    assert handlers.chosen_file(up(project, "own.wav"), None, {}, "voice") == up(project, "own.wav")
    monkeypatch.setattr(handlers, "MAX_UPLOAD_BYTES", size - 1)
    with pytest.raises(EarshotError, match=r"own.wav: .* MiB is over the .* MiB upload limit"):
        handlers.chosen_file(up(project, "own.wav"), None, {}, "voice")


def test_only_the_offered_test_clips_can_be_picked(models: handlers.Models, project: Path):
    label = f"unseen {KEY}"
    assert models.voices == {label: project / "data" / "audio" / f"{KEY}.wav"}
    assert models.clips == {label: project / "data" / "raw" / f"{KEY}.mp4"}
    assert handlers.chosen_file(None, label, models.voices, "voice") == models.voices[label]
    for typed in ("/etc/passwd", str(up(project, "own.wav")), "unseen id00900"):
        with pytest.raises(EarshotError, match="voice: .* is not one of the test clips offered"):
            handlers.chosen_file(None, typed, models.voices, "voice")
    assert handlers.chosen_file(None, None, models.voices, "voice") is None
    assert handlers.offered_clips(project / "nothing") == ({}, {})


def test_the_video_comes_out_at_256_px_with_its_audio_and_the_side_by_side(models: handlers.Models, project: Path,
                                                                            tmp_path: Path):
    seen = []
    result = handlers.upsample_video(models, up(project, "tiny.mp4"), up(project, "face.png"), tmp_path, detect=False,
                                     progress=lambda f, text: seen.append(f))
    for path, width in ((result.result, 256), (result.side_by_side, 4 * 256)):
        info = probe(path)
        assert (info.width, info.height, info.n_frames, info.has_audio) == (width, 256, N_FRAMES, True)
        assert info.duration_s == pytest.approx(N_FRAMES / FPS, abs=0.05)
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) >= 3


def test_the_lowest_crf_within_the_budget_is_chosen():
    frames = [np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8) for i in range(4)]
    sizes = {crf: len(encode_video(frames, "h264", crf=crf, preset="ultrafast", fps=FPS)[0]) for crf in (20, 21)}
    budget = sizes[21]
    found = handlers.crf_within(frames, "h264", "ultrafast", FPS, budget)
    assert found.fits and found.bytes <= budget and found.crf <= 21 and len(found.frames) == 4
    above = len(encode_video(frames, "h264", crf=found.crf - 1, preset="ultrafast", fps=FPS)[0])
    assert above > budget  # one step better no longer fits
    tight = handlers.crf_within(frames, "h264", "ultrafast", FPS, 10)
    assert (tight.crf, tight.fits) == (51, False)


def test_the_codec_tab_reports_payloads_and_puts_the_baselines_beside_the_decoded_call(
        models: handlers.Models, project: Path, tmp_path: Path):
    from components.codec.call import read_call

    result = handlers.codec_comparison(models, up(project, "tiny.mp4"), tmp_path, detect=False)
    call = read_call(tmp_path / "call.esc")
    assert dict((p, b) for p, b in result.payloads) == {"header": 73, "photo": len(call.photo),
                                                        "video": len(call.video), "audio": len(call.audio)}
    assert sum(b for _, b in result.payloads) == len(pack(call))
    assert "bits per pixel:" in result.report
    assert [b.name for b in result.baselines] == ["H.264", "H.265"]
    budget = len(pack(call)) - len(call.audio)  # what bits_per_pixel counts: header + photo + video
    assert handlers.call_budget(call) == budget
    for baseline in result.baselines:
        assert baseline.fits == (baseline.bytes <= budget)
        assert f"{baseline.name}: CRF {baseline.crf}, {baseline.bytes:,} bytes" in handlers.baseline_lines(result)
    info = probe(result.side_by_side)
    assert (info.width, info.height, info.n_frames, info.has_audio) == (3 * 256, 256, N_FRAMES, True)


def test_the_model_line_names_checkpoint_preset_and_the_run_that_logged_its_summary(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import mlflow

    from components.tracking import use_experiment

    params = tiny_params(tmp_path)
    path = tmp_path / "train_fusion" / "model.pt"
    path.parent.mkdir()
    path.write_bytes(b"a checkpoint")
    line = handlers.model_line("train_fusion", path, "small", params, tmp_path)
    assert line == f"model: `{path}` (stage train_fusion, preset small); no summary.json beside it: the run that " \
                   "made it is unknown"
    summary = {"stage": "train_fusion", "steps": 600, "wall_s": 84.31, "final.loss": 0.104604, "device": "cpu"}
    (path.parent / "summary.json").write_text(json.dumps(summary))
    assert handlers.model_line("train_fusion", path, "small", params, tmp_path).endswith(
        "no MLflow run of train_fusion logged its summary.json")  # no store: and none is created
    assert not (tmp_path / "mlflow.db").exists()
    experiment = use_experiment(params.tracking.experiment, params.tracking.uri)
    logged = {"steps": 600, "wall_s": 84.31, "final.loss": 0.104604}
    runs = {}
    for name, stage, sha, metrics in (("made it", "train_fusion", "a" * 40, logged),
                                      ("another stage", "train_g", "b" * 40, logged),
                                      ("a later run", "train_fusion", "c" * 40, {**logged, "wall_s": 90.0})):
        with mlflow.start_run(experiment_id=experiment, tags={"stage": stage, "git_sha": sha}) as run:
            mlflow.log_metrics(metrics)
            runs[name] = run.info.run_id
    made = runs["made it"]
    line = handlers.model_line("train_fusion", path, "small", params, tmp_path)
    assert line == f"model: `{path}` (stage train_fusion, preset small); git aaaaaaaaaaaa, MLflow run {made}"
    monkeypatch.setattr("components.orchestration.servers.answers", lambda url, timeout=2.0: True)
    port = params.orchestration.mlflow_port
    assert line.replace(f"MLflow run {made}", f"[MLflow run {made}](http://127.0.0.1:{port}/#/experiments/"
                                              f"{experiment}/runs/{made})") == \
        handlers.model_line("train_fusion", path, "small", params, tmp_path)
    assert handlers.preset_name(get_preset("small").model_dump(), PRESETS) == "small"
    assert handlers.preset_name(TINY_FACE.model_dump(), PRESETS) == "custom"


def test_page_errors_are_messages_not_tracebacks(models: handlers.Models, tmp_path: Path):
    import gradio as gr

    from components.demo.app import build_app, shown_errors

    def bad() -> None:
        raise EarshotError("voice: upload a voice")

    with pytest.raises(gr.Error, match="voice: upload a voice"):
        shown_errors(bad)()
    assert isinstance(build_app(models, tmp_path), gr.Blocks)


def test_only_files_in_gradios_upload_folder_reach_the_handlers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from components.demo.app import uploaded

    folder = tmp_path / "gradio"
    (folder / "abc").mkdir(parents=True)
    (folder / "abc" / "face.png").write_bytes(b"x")
    (tmp_path / "secret.txt").write_bytes(b"x")
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(folder))
    assert uploaded(str(folder / "abc" / "face.png")) == str(folder / "abc" / "face.png")
    assert uploaded(None) is None and uploaded("") is None
    for outside in (tmp_path / "secret.txt", folder / ".." / "secret.txt"):
        with pytest.raises(EarshotError, match="secret.txt: not an upload of this page"):
            uploaded(str(outside))


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """What `earshot demo` would serve, recorded instead of serving (which blocks)."""
    calls: list[dict] = []
    monkeypatch.setattr("components.demo.app.serve", lambda models, **kwargs: calls.append(kwargs))
    return calls


def test_demo_refuses_to_start_without_models_naming_the_command(tmp_path: Path, served: list):
    save_tiny_model(tmp_path / "half" / "face_sr")
    result = CliRunner().invoke(app, ["demo", "--models", str(tmp_path / "half")])
    assert result.exit_code == 2
    assert f"{tmp_path / 'half' / 'talking' / 'train_animate' / 'model.pt'} (make it with `dvc repro train_animate`)" \
        in result.output
    assert "train_fusion" not in result.output
    result = CliRunner().invoke(app, ["demo", "--models", str(tmp_path / "none")])
    assert result.exit_code == 2 and "dvc repro train_fusion" in result.output and "Traceback" not in result.output
    assert served == []


def test_demo_binds_loopback_only_unless_allow_remote(project: Path, tmp_path: Path, served: list):
    args = ["demo", "--models", str(project / "models"), "--port", "7999",
            "--set", f"tracking.uri=sqlite:///{tmp_path / 'none.db'}"]
    result = CliRunner().invoke(app, [*args, "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "--host '0.0.0.0' is not a loopback address" in result.output
    assert served == []
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert served == [{"host": "127.0.0.1", "port": 7999, "allow_remote": False}]
    result = CliRunner().invoke(app, [*args, "--host", "0.0.0.0", "--set", "orchestration.allow_remote=true"])
    assert result.exit_code == 0, result.output
    assert served[-1] == {"host": "0.0.0.0", "port": 7999, "allow_remote": True}
    for host in ("127.0.0.1", "localhost", "::1"):
        handlers.check_host(host, allow_remote=False)
