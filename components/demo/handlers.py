"""What the ``earshot demo`` page does, as pure functions: uploaded files in, images, videos and text out.

The page (:mod:`components.demo.app`) only lays these out; each one is a thin
composition of the library code the CLI commands use, testable without a browser:

* :func:`load_models` / :func:`missing_models`: both papers' trained models, from the
  folders ``dvc repro`` trains into (or a ``--models`` folder with ``face_sr/`` and
  ``talking/``), each with its :func:`model_line` (checkpoint, preset, the git sha and
  MLflow run of the stage that made it);
* :func:`face_panels`: face SR with an ear (:mod:`components.inference.face_sr`), the
  face found and degraded as ``earshot face-sr --detect`` does, and a second voice mixed
  in as ``--mix-audio`` does, plus a blend of the two voices' codes;
* :func:`upsample_video`: ``earshot video-sr --detect`` (:mod:`components.inference.video_sr`);
* :func:`codec_comparison`: ``earshot codec encode --report`` then ``decode``
  (:mod:`components.codec.call`), beside libx264 / libx265 of the face track at no more
  bytes (:func:`crf_within`).

No path a user types reaches the disk: the page passes only its uploads (files in
Gradio's cache) and picks from :func:`offered_clips`' fixed list, resolved by
:func:`chosen_file`. Uploads are checked against the limits below first
(:func:`check_upload`, :func:`check_video`), with a one-line
:class:`~components.errors.EarshotError` naming the file.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from components.errors import EarshotError
from components.models.checkpoint import CheckpointError

if TYPE_CHECKING:
    from components.codec.container import CallFile
    from components.config import Params
    from components.faces.detect import FaceDetector
    from components.inference.face_sr import FaceSR
    from components.models.talking import VideoUpsampler

MAX_UPLOAD_BYTES = 50 * 1024 * 1024
"""An uploaded file (image, voice, video) larger than this is refused (50 MiB); the page
also tells Gradio (``max_file_size``), which refuses it before it is stored."""
MAX_IMAGE_PIXELS = 4096 * 4096
"""An uploaded image with more pixels than this is refused from its header, before decoding."""
MAX_VIDEO_SECONDS = 20.0
"""An uploaded video longer than this is refused: the models run on the CPU while the page waits."""
MAX_VIDEO_PIXELS = 1920 * 1080
"""An uploaded video with larger frames than this (width x height) is refused."""
MAX_PICKS = 8
"""How many test clips the page offers to pick from (per split)."""
TEST_SPLITS = ("test_unseen", "test_seen")
FACE_STAGE, VIDEO_STAGE = "train_fusion", "train_animate"
MAKES = {FACE_STAGE: "dvc repro train_fusion", VIDEO_STAGE: "dvc repro train_animate"}
"""The command that trains each model the page needs."""
Progress = Callable[[float, str], None]


def _no_progress(fraction: float, text: str) -> None:
    """The progress callback when nobody watches."""


# --------------------------------------------------------------------------- models


def model_files(face_dir: Path, talking_dir: Path) -> dict[str, Path]:
    """The checkpoint the page loads for each stage."""
    return {FACE_STAGE: face_dir / FACE_STAGE / "model.pt", VIDEO_STAGE: talking_dir / VIDEO_STAGE / "model.pt"}


def missing_models(face_dir: Path, talking_dir: Path) -> str | None:
    """The one-line refusal naming each missing model and the command that makes it, or None."""
    missing = [f"{path} (make it with `{MAKES[stage]}`)" for stage, path in model_files(face_dir, talking_dir).items()
               if not path.is_file()]
    return f"no trained model: {'; '.join(missing)}" if missing else None


def check_host(host: str, allow_remote: bool) -> None:
    """Refuse a non-loopback ``host`` unless ``orchestration.allow_remote`` (as ``earshot server up``)."""
    from components.config.orchestration import is_loopback

    if not allow_remote and not is_loopback(host):
        raise EarshotError(f"--host {host!r} is not a loopback address (127.0.0.1, ::1, localhost): the demo has no "
                           "login; set orchestration.allow_remote: true to serve it to other machines")


def preset_name(config: Mapping[str, object], presets: Mapping[str, object]) -> str:
    """The name of the preset whose fields ``config`` has, else ``custom``."""
    for name, preset in presets.items():
        if preset.model_dump() == dict(config):  # type: ignore[attr-defined]
            return name
    return "custom"


def stage_run(stage: str, summary: Mapping[str, object], params: Params, root: Path) -> dict[str, str] | None:
    """The MLflow run that trained a checkpoint: the latest run of ``stage`` whose metrics are
    the numbers of the ``summary.json`` written beside it (the training loop logs them as
    metrics, :mod:`components.training.loop`); its id, experiment and git sha. None when the
    store or such a run is not there (nothing is created)."""
    from components.tracking import TrackingError, check_store, quote, resolve_tracking_uri, row_value, search_runs

    numbers = {k: float(v) for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if not numbers:
        return None
    uri = resolve_tracking_uri(params.tracking.uri, root)
    try:
        check_store(uri)
        import mlflow

        mlflow.set_tracking_uri(uri)
        runs = search_runs(f"tags.stage = {quote(stage)}", params.tracking.experiment,
                           order_by=["attributes.start_time DESC"], max_results=1000)
    except (TrackingError, EarshotError):
        return None
    for _, row in runs.iterrows():
        logged = {k: row_value(row, f"metrics.{k}") for k in numbers}
        if all(v is not None and math.isclose(v, numbers[k], rel_tol=1e-9, abs_tol=1e-9) for k, v in logged.items()):
            return {"run_id": row["run_id"], "experiment_id": row["experiment_id"],
                    "git_sha": row_value(row, "tags.git_sha") or "unknown"}
    return None


def model_line(stage: str, path: Path, preset: str, params: Params, root: Path) -> str:
    """The Markdown line under a result: checkpoint, preset, git sha and MLflow run (linked
    when the MLflow server of ``orchestration.mlflow_port`` answers on 127.0.0.1)."""
    from components.orchestration.servers import answers
    from components.tracking import run_url

    line = f"model: `{path}` (stage {stage}, preset {preset})"
    summary_file = path.parent / "summary.json"
    if not summary_file.is_file():
        return line + "; no summary.json beside it: the run that made it is unknown"
    try:
        summary = json.loads(summary_file.read_text())
    except (OSError, ValueError):
        return line + f"; {summary_file.name} is unreadable: the run that made it is unknown"
    run = stage_run(stage, summary if isinstance(summary, dict) else {}, params, root)
    if run is None:
        return line + f"; no MLflow run of {stage} logged its summary.json"
    server = f"http://127.0.0.1:{params.orchestration.mlflow_port}"
    name = f"MLflow run {run['run_id']}"
    if answers(server + "/health"):
        name = f"[{name}]({run_url(server, run['experiment_id'], run['run_id'])})"
    return f"{line}; git {run['git_sha'][:12]}, {name}"


@dataclass
class Models:
    """Everything the page runs: both models, their lines, the params and the picks."""

    face: FaceSR
    video: VideoUpsampler
    video_path: Path
    lines: dict[str, str]  # stage -> model_line
    params: Params
    voices: dict[str, Path] = field(default_factory=dict)  # label -> a test clip's voice
    clips: dict[str, Path] = field(default_factory=dict)  # label -> a test clip's video
    _detector: FaceDetector | None = None

    def detector(self) -> FaceDetector:
        """RetinaFace, loaded on first use (as ``earshot face-sr --detect`` makes it)."""
        if self._detector is None:
            from components.faces.detect import FaceDetector

            self._detector = FaceDetector(self.params.faces.score_threshold, max_side=640,
                                          threads=self.params.face_sr.threads)
        return self._detector


def load_models(face_dir: Path, talking_dir: Path, params: Params, root: Path,
                device: str | torch.device = "cpu") -> Models:
    """Both trained models (a :class:`CheckpointError` naming the missing one and its command)."""
    from components.inference.face_sr import load_face_sr
    from components.models import face_sr as face_models
    from components.models import talking
    from components.models.talking import load_video_sr

    if (refusal := missing_models(face_dir, talking_dir)) is not None:
        raise CheckpointError(refusal)
    files = model_files(face_dir, talking_dir)
    face = load_face_sr(face_dir, device)
    video = load_video_sr(files[VIDEO_STAGE], device)
    presets = {FACE_STAGE: preset_name(face.config.model_dump(), face_models.presets.PRESETS),
               VIDEO_STAGE: preset_name(video.cfg.model_dump(), talking.presets.PRESETS)}
    lines = {stage: model_line(stage, path, presets[stage], params, root) for stage, path in files.items()}
    voices, clips = offered_clips(root / params.common.data_dir)
    return Models(face, video, files[VIDEO_STAGE], lines, params, voices, clips)


def offered_clips(data_dir: Path, limit: int = MAX_PICKS) -> tuple[dict[str, Path], dict[str, Path]]:
    """The test clips' voices (``audio/<key>.wav``) and videos (``raw/<key>.mp4``) the page
    offers, labelled ``<split> <key>``; empty when the shards are not made."""
    import pyarrow.parquet as pq

    from components.data.shards.summary import shard_files

    voices: dict[str, Path] = {}
    clips: dict[str, Path] = {}
    for split in TEST_SPLITS:
        keys: list[str] = []
        for shard in shard_files(data_dir / "shards", split):
            if shard.is_file() and len(keys) < limit:
                keys += pq.read_table(shard, columns=["key"]).column("key").to_pylist()[:limit - len(keys)]
        for key in keys:
            label = f"{split.removeprefix('test_')} {key}"
            if (voice := data_dir / "audio" / f"{key}.wav").is_file():
                voices[label] = voice
            if (clip := data_dir / "raw" / f"{key}.mp4").is_file():
                clips[label] = clip
    return voices, clips


# --------------------------------------------------------------------------- inputs


def check_upload(path: str | Path, what: str) -> Path:
    """An uploaded file, refused when missing or over :data:`MAX_UPLOAD_BYTES`."""
    path = Path(path)
    if not path.is_file():
        raise EarshotError(f"{what}: no file uploaded")
    if (size := path.stat().st_size) > MAX_UPLOAD_BYTES:
        raise EarshotError(f"{path.name}: {size / 2**20:.1f} MiB is over the {MAX_UPLOAD_BYTES / 2**20:.0f} MiB "
                           f"upload limit")
    return path


def read_upload_image(path: str | Path, what: str = "image") -> np.ndarray:
    """An uploaded image as HxWx3 uint8, refused over :data:`MAX_IMAGE_PIXELS` (read from its header)."""
    from PIL import Image, UnidentifiedImageError

    from components.inference.inputs import read_image

    path = check_upload(path, what)
    try:
        with Image.open(path) as img:
            width, height = img.size
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise EarshotError(f"{path.name}: not an image ({type(exc).__name__})") from None
    if width * height > MAX_IMAGE_PIXELS:
        raise EarshotError(f"{path.name}: {width}x{height} is over the {MAX_IMAGE_PIXELS:,} pixel limit")
    return read_image(path)


def check_video(path: str | Path) -> Path:
    """An uploaded video, refused over the size, duration or frame-size limits, or without a video stream."""
    from components.media.probe import probe

    path = check_upload(path, "video")
    try:
        info = probe(path)
    except EarshotError as exc:
        raise EarshotError(f"{path.name}: not a video ({exc})") from None
    if not info.has_video:
        raise EarshotError(f"{path.name}: no video stream")
    if info.duration_s > MAX_VIDEO_SECONDS:
        raise EarshotError(f"{path.name}: {info.duration_s:.1f} s is over the {MAX_VIDEO_SECONDS:g} s limit")
    if info.width * info.height > MAX_VIDEO_PIXELS:
        raise EarshotError(f"{path.name}: {info.width}x{info.height} frames are over the {MAX_VIDEO_PIXELS:,} "
                           "pixel limit")
    return path


def chosen_file(upload: str | Path | None, pick: str | None, picks: Mapping[str, Path], what: str) -> Path | None:
    """The upload when there is one, else the picked test file (by its label in ``picks`` only)."""
    if upload:
        return check_upload(upload, what)
    if not pick:
        return None
    if pick not in picks:
        raise EarshotError(f"{what}: {pick!r} is not one of the test clips offered")
    return picks[pick]


# --------------------------------------------------------------------------- face SR


@dataclass(frozen=True)
class FacePanels:
    """The face-SR results: (image HxWx3 uint8, caption) panels, side by side on the page."""

    panels: list[tuple[np.ndarray, str]]


def face_crop(models: Models, image: np.ndarray, detect: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """What :func:`~components.inference.face_sr.face_input` is given for an upload, and the face
    shown (at the model's resolution; None for an ``lr_size`` image, used as it is): with
    ``detect`` the best face, cropped as ``face_input``'s detector crops it; else the image,
    whose centre square is the face."""
    from components.data.features import resize
    from components.figures.images import from_hwc, to_hwc
    from components.inference.video_sr import centre_square

    cfg = models.face.config
    if image.shape[:2] == (cfg.lr_size, cfg.lr_size):
        return image, None
    if not detect:
        return image, to_hwc(resize(from_hwc(centre_square(image, cfg.lr_size, name="image")), cfg.resolution))
    from components.faces.crop import crop_face, crop_geometry

    found = models.detector()(image)
    if len(found) == 0:
        raise EarshotError(f"image: no face found (RetinaFace, score >= {models.detector().score_threshold}); "
                           "untick 'find the face' for an image that is a face crop")
    crop = crop_face(image, crop_geometry(found.boxes[0], found.landmarks[0], margin=models.params.faces.margin,
                                          size=cfg.resolution, align=False))
    return crop, crop


def face_panels(models: Models, image: np.ndarray, voice: Path, second_voice: Path | None = None, mix: float = 0.5,
                *, detect: bool = True) -> FacePanels:
    """The face, its 8x8 input, bicubic, image only and with the voice; with a second voice
    also the face with it (``earshot face-sr --mix-audio``) and with the two voices' codes
    blended ``(1 - mix) : mix``."""
    from components.figures.images import nearest_up, to_hwc
    from components.inference.face_sr import face_input, voice_input
    from components.models.talking.upsampler import enlarge

    model, cfg = models.face, models.face.config
    if not 0.0 <= mix <= 1.0:
        raise EarshotError(f"mix: {mix} is not between 0 and 1")
    source, face = face_crop(models, image, detect)
    lr = face_input(source, cfg, name="image")[None]
    if face is None:  # an 8x8 upload: shown as its pixels
        face = to_hwc(nearest_up(lr, cfg.resolution))[0]
    specs = [voice_input(voice, cfg)] + ([voice_input(second_voice, cfg)] if second_voice is not None else [])
    wl = model.encode_image(lr)
    wa = model.encode_audio(torch.stack(specs))
    codes = [wa[0]] if second_voice is None else [wa[0], wa[1], (1.0 - mix) * wa[0] + mix * wa[1]]
    fused = model.generate(model.fuse(wl.expand(len(codes), -1, -1), torch.stack(codes)))
    shown = torch.cat([nearest_up(lr, cfg.resolution), enlarge(lr, cfg.resolution), model.image_only(lr), fused])
    names = [f"{cfg.lr_size}x{cfg.lr_size} input", "bicubic", "image only", "with the voice"]
    if second_voice is not None:
        names += ["with the second voice", f"voices mixed {1 - mix:.2f} : {mix:.2f}"]
    return FacePanels([(face, "face")] + list(zip(to_hwc(shown), names)))


# --------------------------------------------------------------------------- video upsampling


@dataclass(frozen=True)
class VideoResult:
    """The 256x256 upsampled video and the side-by-side one (input | bicubic | stage 1 | ours)."""

    result: Path
    side_by_side: Path


def upsample_video(models: Models, video: Path, photo: Path | None, out_dir: Path, *, detect: bool = True,
                   progress: Progress = _no_progress) -> VideoResult:
    """``earshot video-sr`` on an upload: the result and the side-by-side video, with their audio."""
    from components.inference.video_sr import Job, run_job

    video = check_video(video)
    if photo is not None:
        read_upload_image(photo, "photo")  # the limits; the job reads it again for its face
    cfg = models.params
    written = []
    for step, (name, side) in enumerate((("result", False), ("side_by_side", True))):
        progress(step / 2, f"upsampling ({name.replace('_', ' ')})")
        job = Job(video, str(photo) if photo is not None else "first", out_dir / f"{name}.mp4", detect=detect,
                  side_by_side=side)
        written.append(run_job(models.video, job, faces=cfg.faces, fps=cfg.common.fps, progress=False))
    progress(1.0, "done")
    return VideoResult(*written)


# --------------------------------------------------------------------------- codec


@dataclass(frozen=True)
class Baseline:
    """A codec of the face track at no more bytes than the call's picture payloads."""

    name: str
    crf: int
    bytes: int
    fits: bool  # False: even its highest CRF takes more bytes than the budget
    frames: list[np.ndarray]


def crf_within(frames: list[np.ndarray], codec: str, preset: str, fps: int, budget: int) -> Baseline:
    """The lowest CRF (best quality) whose stream of ``frames`` takes at most ``budget`` bytes:
    a bisection over 0-51 (bytes fall as the CRF rises); 51 when none fits, said by ``fits``."""
    from components.codec.streams import decode_video, encode_video

    def size(crf: int) -> tuple[bytes, int]:
        return encode_video(frames, codec, crf=crf, preset=preset, fps=fps)[0], crf

    low, high = 0, 51
    best = size(high)
    if len(best[0]) <= budget:
        while low < high:
            mid = (low + high) // 2
            trial = size(mid)
            if len(trial[0]) <= budget:
                best, high = trial, mid
            else:
                low = mid + 1
    stream, crf = best
    return Baseline({"h264": "H.264", "hevc": "H.265"}[codec], crf, len(stream), len(stream) <= budget,
                    decode_video(stream, codec))


@dataclass(frozen=True)
class CodecResult:
    """The call's report, its payloads, the baselines and the three decoded videos side by side."""

    report: str
    payloads: list[list[object]]  # rows: payload, bytes
    baselines: list[Baseline]
    side_by_side: Path  # earshot | H.264 | H.265


def call_budget(call: CallFile) -> int:
    """The bytes :func:`~components.codec.call.bits_per_pixel` counts: header + photo + video."""
    from components.codec.container import payload_sizes

    sizes = payload_sizes(call)
    return sizes["header"] + sizes["photo"] + sizes["video"]


def codec_comparison(models: Models, video: Path, out_dir: Path, *, detect: bool = True,
                     progress: Progress = _no_progress) -> CodecResult:
    """Encode the upload as a call and decode it; the face track in H.264 and H.265 at the
    call's bytes (the baselines' presets of ``evaluate_codec``); all three side by side."""
    from components.codec.call import decode_file, decode_inputs, encode_file, report_lines
    from components.codec.container import payload_sizes
    from components.data.features import resize
    from components.figures.images import from_hwc, to_hwc
    from components.inference.video_sr import centre_square, face_frames
    from components.media.read import iter_frames
    from components.media.write import write_video

    video = check_video(video)
    cfg, model = models.params, models.video
    out_size = model.cfg.out_size
    progress(0.0, "encoding the call")
    call = encode_file(video, out_dir / "call.esc", cfg.codec, models.video_path, faces=cfg.faces,
                       fps=cfg.common.fps, detect=detect, progress=False)
    progress(0.2, "decoding the call")
    decoded = decode_file(out_dir / "call.esc", out_dir / "decoded.mp4", model, models.video_path, progress=False)
    with tempfile.TemporaryDirectory(prefix="earshot-demo-track-", dir=out_dir) as workdir:
        _, faces = face_frames(video, detect, cfg.faces, cfg.common.fps, Path(workdir))
        truth = [to_hwc(resize(from_hwc(centre_square(f, model.cfg.lr_size, name=video.name)), out_size))
                 for f in faces()]
    budget = call_budget(call)
    baselines = []
    for step, key in enumerate(("h264", "h265")):
        progress(0.4 + 0.25 * step, f"{key}: searching the CRF within {budget:,} bytes")
        point = cfg.evaluate_codec.baselines[key]
        baselines.append(crf_within(truth, point.codec, point.preset, cfg.common.fps, budget))
    progress(0.9, "writing the side-by-side video")
    ours = [frame for _, frame in iter_frames(decoded, cfg.common.fps)]
    n = min(len(ours), *(len(b.frames) for b in baselines))
    panels = (np.concatenate([ours[i]] + [b.frames[i] for b in baselines], axis=1) for i in range(n))
    audio = decode_inputs(call).audio
    side = write_video(out_dir / "codec_side_by_side.mp4", panels, cfg.common.fps, audio=audio,
                       sample_rate=call.header.sample_rate)
    progress(1.0, "done")
    rows = [[part, size] for part, size in payload_sizes(call).items()]
    return CodecResult("\n".join(report_lines(call)), rows, baselines, side)


def baseline_lines(result: CodecResult) -> str:
    """One Markdown line per baseline: the CRF it landed on and its bytes against the call's."""
    lines = []
    for b in result.baselines:
        verdict = "within the call's bytes" if b.fits else "still over the call's bytes at its highest CRF"
        lines.append(f"- {b.name}: CRF {b.crf}, {b.bytes:,} bytes ({verdict})")
    return "\n".join(lines)
