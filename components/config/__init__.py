"""Typed, validated view of ``params.yaml``.

One section per DVC stage (stage name = module in ``pipelines/`` = section here), plus
``common`` (shared by every stage) and ``tracking`` (MLflow). Every section is a strict
pydantic model: an unknown key or a bad value is an error that names the file, the
section and the key, e.g. ``params.yaml: faces.detect_every: Input should be greater
than or equal to 1``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from components.errors import ConfigError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CommonParams(Section):
    seed: int = 0
    fps: int = Field(25, ge=1, le=120, description="pipeline frame rate: every video is resampled to it")
    sample_rate: int = Field(16000, ge=8000, le=48000, description="pipeline audio rate (mono)")
    data_dir: str = Field("data", description="root folder of every stage's outputs")
    workers: int = Field(2, ge=1, description="processes for per-video work inside a stage")


class TrackingParams(Section):
    uri: str | None = Field(
        None,
        description="MLflow tracking URI; null means $MLFLOW_TRACKING_URI or sqlite:///<project>/mlflow.db",
    )
    experiment: str = "earshot"
    enabled: bool = True


class SynthParams(Section):
    """The embedded procedural talking-face corpus (``earshot data synth``)."""

    seed: int = 1234
    n_speakers: int = Field(48, ge=2)
    videos_per_speaker: int = Field(2, ge=1)
    clips_per_video: int = Field(2, ge=1)
    clip_seconds: float = Field(4.6, gt=0.5, le=60)
    clip_seconds_jitter: float = Field(0.4, ge=0)
    frame_size: int = Field(256, ge=64, le=1024, description="rendered video is frame_size x frame_size")
    glasses_prob: float = Field(0.25, ge=0, le=1)
    beard_prob: float = Field(0.3, ge=0, le=1)
    crf: int = Field(18, ge=0, le=51)


class DownloadParams(Section):
    source: Literal["synthetic", "local", "manifest"] = "synthetic"
    input: str | None = Field(None, description="folder (local) or CSV/Parquet/VoxCeleb2 txt folder (manifest)")
    layout: Literal["auto", "voxceleb", "flat"] = "auto"
    synth: SynthParams = SynthParams()
    concurrency: int = Field(4, ge=1, le=64)
    retries: int = Field(3, ge=0, le=20)
    backoff_seconds: float = Field(1.0, ge=0)
    timeout_seconds: float = Field(120.0, gt=0)
    max_bytes: int = Field(2_000_000_000, gt=0, description="refuse downloads larger than this")
    extensions: list[str] = [".mp4", ".mkv", ".webm", ".avi", ".mov", ".mpg", ".mpeg", ".m4v", ".flv"]
    ytdlp_format: str = Field(
        "bv*[height<=720]+ba/b[height<=720]/bv*+ba/b",
        description="yt-dlp format selector for YouTube rows (720p is plenty for 256 px face crops)",
    )

    @model_validator(mode="after")
    def _input_needed(self) -> "DownloadParams":
        if self.source in ("local", "manifest") and not self.input:
            raise ValueError(f"download.input is required when download.source is {self.source!r}")
        return self


class FacesParams(Section):
    detect_every: int = Field(5, ge=1, description="run RetinaFace every k frames, track in between")
    detect_size: int = Field(320, ge=64, description="longest side of the downscaled detection frame")
    score_threshold: float = Field(0.8, gt=0, lt=1)
    min_face: int = Field(48, ge=8, description="minimum face box side in source pixels")
    competing_ratio: float = Field(0.6, gt=0, le=1, description="a 2nd face this big relative to the main one competes")
    max_lost_fraction: float = Field(0.2, ge=0, le=1, description="reject when the track is lost in more frames")
    max_competing_fraction: float = Field(0.2, ge=0, le=1, description="reject when a competing face is in more keyframes")
    max_yaw: float = Field(0.6, gt=0, description="landmark yaw proxy beyond which the pose is extreme")
    max_extreme_fraction: float = Field(0.3, ge=0, le=1, description="reject when the pose is extreme in more keyframes")
    smoothing: float = Field(0.6, ge=0, lt=1, description="exponential box smoothing factor between detections")
    margin: float = Field(0.35, ge=0, le=2, description="crop margin around the box, as a fraction of its size")
    align: bool = Field(False, description="rotate crops so the eyes are level (landmark alignment)")
    crop_size: int = Field(256, ge=32, description="stored crop side: the largest resolution later stages need")
    min_seconds: float = Field(1.0, ge=0)
    crf: int = Field(14, ge=0, le=51)


class AudioParams(Section):
    vad: Literal["silero", "pyannote"] = "silero"
    pyannote_checkpoint: str | None = Field(None, description="path to a pyannote segmentation checkpoint (vad: pyannote)")
    vad_threshold: float = Field(0.5, gt=0, lt=1)
    min_speech_seconds: float = Field(0.5, ge=0)
    max_offset_frames: int = Field(15, ge=0, description="search range of the audio-video offset")
    offset_tolerance_frames: int = Field(6, ge=0, description="shift within this, reject beyond")
    min_sync_confidence: float = Field(0.45, ge=0, description="below it the offset estimate is unreliable: no shift")
    min_reject_confidence: float = Field(0.6, ge=0, description="rejecting a clip (offset beyond tolerance) needs this much")
    speaker_check: bool = True
    speaker_threshold: float = Field(0.6, ge=-1, le=1, description="min cosine to the speaker's other clips")


class ShardsParams(Section):
    rows_per_shard: int = Field(64, ge=1)
    row_group_size: int = Field(4, ge=1)
    jpeg_quality: int = Field(95, ge=50, le=100)
    unseen_speaker_fraction: float = Field(0.2, ge=0, lt=1, description="speakers held out entirely (open set)")
    seen_test_fraction: float = Field(0.15, ge=0, lt=1, description="clips of training speakers held out (closed set)")
    seed: int = 0


class ReportParams(Section):
    contact_sheet_clips: int = Field(24, ge=1)


class FaceSRParams(Section):
    """Shared by the five face-SR training stages (``train_g`` ... ``train_fusion``): which
    networks, where they train, how the training split is fed. Not a stage itself."""

    preset: Literal["small", "paper"] = Field("small", description="components.models.face_sr preset")
    overrides: dict[str, Any] = Field({}, description="ModelConfig fields changed from the preset, "
                                                      "e.g. {resolution: 32} (hr_size follows resolution)")
    seed: int = Field(0, description="network init, data order and sampling noise")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = Field(True, description="GPU only: bf16 autocast (fp16 + loss scaling where bf16 is missing)")
    channels_last: bool = Field(True, description="NHWC convolutions (GPU tensor cores; ~20% faster on CPU too)")
    threads: int = Field(2, ge=1, description="CPU torch threads per process")
    cache_frames_per_clip: int = Field(
        8, ge=0, description="frames per training clip decoded once into memory (with their spectrograms); "
                             "0 streams the shards instead (large data, GPU)")
    num_workers: int = Field(2, ge=0, description="DataLoader processes decoding the shards (cache or stream)")
    shuffle_buffer: int = Field(256, ge=1, description="samples mixed by the streaming dataset")
    out_dir: str = Field("models/face_sr", description="stage folders <out_dir>/<stage>/ (dvc.yaml outs)")
    # The knobs the ablations turn. They are their own keys (not `overrides`) so that dvc.yaml
    # can make only the stages that use them depend on them: a sweep over the audio length
    # retrains Ea and F, not G.
    lr_size: int = Field(8, ge=2, description="El's input: the low-res face is lr_size x lr_size (8 in the paper)")
    audio_seconds: float = Field(4.0, gt=0, le=30, description="speech per sample fed to Ea (4 s in the paper)")
    audio: bool = Field(True, description="false: F gets a zero audio code (same network and training, no voice)")
    fusion: bool = Field(True, description="false: no F; the 'fused' code is El's (image only)")


class TrainStageParams(Section):
    """What every face-SR training stage has: optimisation length, Adam, and cadences."""

    steps: int = Field(ge=1, description="optimisation steps (raise it to continue a finished run)")
    batch_size: int = Field(16, ge=1, description="per process (DDP ranks each take a batch)")
    lr: float = Field(1e-3, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    log_every: int = Field(25, ge=1, description="MLflow metrics and metrics.tsv rows (window means)")
    sample_every: int = Field(200, ge=1, description="PNG grids input | output | target")
    checkpoint_every: int = Field(100, ge=1, description="checkpoint.pt for resuming after a kill")


class TrainGParams(TrainStageParams):
    """G + D: non-saturating logistic GAN, lazy R1, optional path length, EMA of G."""

    steps: int = Field(1500, ge=1)
    lr: float = 2.5e-3
    betas: tuple[float, float] = (0.0, 0.99)
    r1_gamma: float = Field(0.05, ge=0, description="R1 weight (StyleGAN2: 2e-4 * resolution^2 / batch)")
    r1_every: int = Field(16, ge=1, description="lazy R1: every k D steps, scaled by k")
    pl_weight: float = Field(0.0, ge=0, description="path-length regulariser weight (0: off)")
    pl_every: int = Field(4, ge=1)
    ema_kimg: float = Field(5.0, gt=0, description="half-life of the G EMA, thousands of images")
    ema_rampup: float | None = Field(0.05, gt=0, description="half-life at most this fraction of images seen")


class TrainEhParams(TrainStageParams):
    """Eh inverts G (reconstruction + perceptual, optional latent cycle); G fine-tuned slowly."""

    steps: int = Field(600, ge=1)
    lr: float = Field(2e-3, gt=0)
    g_lr: float = Field(1e-3, ge=0, description="lr of the G fine-tune (0 freezes G)")
    w_rec: float = Field(1.0, ge=0)
    w_perc: float = Field(0.0, ge=0, description="shift-tolerant LPIPS (see params.yaml)")
    w_latent: float = Field(0.0, ge=0, description="latent cycle |Eh(G(z)) - z|^2 on random codes")


class TrainElParams(TrainStageParams):
    """El: 8x8 face -> code; image loss through the frozen G + latent loss to Eh's code."""

    steps: int = Field(300, ge=1)
    w_rec: float = Field(1.0, ge=0)
    w_perc: float = Field(0.0, ge=0)
    w_latent: float = Field(1.0, ge=0)


class TrainEaParams(TrainStageParams):
    """Ea: 4 s of speech -> Eh's code of the same person's face (latent regression)."""

    steps: int = Field(300, ge=1)
    w_latent: float = Field(1.0, ge=0)
    w_rec: float = Field(0.0, ge=0, description="optional image loss through G (costs a G pass)")
    w_perc: float = Field(0.0, ge=0)


class TrainFusionParams(TrainStageParams):
    """F fuses El's and Ea's codes (both frozen) into a code G decodes into the high-res face."""

    steps: int = Field(300, ge=1)
    w_rec: float = Field(1.0, ge=0)
    w_perc: float = Field(0.0, ge=0)
    w_latent: float = Field(1.0, ge=0)


class EvaluatorsParams(Section):
    """The judge of face-SR outputs: a CNN trained on the high-res training faces
    (components/evaluation/judge.py), at the face-SR model's resolution."""

    frames_per_clip: int = Field(4, ge=1, description="random frames drawn from each training clip")
    steps: int = Field(300, ge=1)
    batch_size: int = Field(32, ge=2)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    width: int = Field(24, ge=4, description="channels of the first conv (doubling per scale, up to 8x)")
    embedding_dim: int = Field(128, ge=8)
    age_weight: float = Field(1.0, ge=0)
    seed: int = 0
    face_recognition_path: str | None = Field(
        None, description="ONNX face-recognition model (N, 3, 112, 112) RGB in [-1, 1] -> embedding "
                          "(e.g. ArcFace), used for the identity embedding instead of the trained one")


class EvaluateParams(Section):
    """Comparison of face-SR methods on the test splits (components/evaluation/face_sr.py)."""

    batch_size: int = Field(32, ge=1)
    frames_per_clip: int = Field(4, ge=1, description="evenly spaced test frames scored per clip (more samples, "
                                                     "less noise; they share the clip's speaker)")
    grid_samples: int = Field(8, ge=1, description="rows of grid_<split>.png")
    mix_faces: int = Field(4, ge=1, description="rows (low-res faces) of mixing_<split>.png")
    mix_voices: int = Field(6, ge=1, description="columns (voices of different speakers) of mixing_<split>.png")
    seed: int = Field(0, description="draws the mismatched voices and the figure samples")
    lpips_alexnet_path: str | None = Field(
        None, description="torchvision's alexnet-owt-7be5be79.pth for LPIPS; null: the torch hub cache, "
                          "else LPIPS is skipped")
    out_dir: str = Field("results/face_sr", description="metrics.json, results.md and figures (dvc.yaml outs)")


class OrchestrationParams(Section):
    """Prefect and MLflow servers, the pipeline and ablation flows, fan-out of per-video work.
    Not a stage. Ports may also come from $EARSHOT_PREFECT_PORT / $EARSHOT_MLFLOW_PORT."""

    host: str = Field("127.0.0.1", description="the servers bind here (local only by default)")
    prefect_port: int = Field(4200, ge=1, le=65535)
    mlflow_port: int = Field(5000, ge=1, le=65535)
    state_dir: str = Field(".earshot", description="servers' SQLite databases, PID files and logs")
    task_runner: Literal["process", "thread", "dask"] = Field(
        "process", description="per-video work inside the data stages (common.workers of them)")
    dask_address: str | None = Field(None, description="scheduler of a running Dask cluster (tcp://host:8786); "
                                                       "null with task_runner dask: a LocalCluster")
    prefect_tasks: bool = Field(False, description="each item also a Prefect task run through Prefect's task runner "
                                                   "of that kind (needs a Prefect server; off: the plain pool)")
    stage_retries: int = Field(1, ge=0, description="retries of a pipeline-flow stage after a transient failure")
    retry_delay_seconds: float = Field(10.0, ge=0)


class SweepParams(Section):
    """A named ablation: each variant is a set of dotted param overrides (`dvc exp run -S`)."""

    description: str = ""
    baseline: str = Field(description="the variant the others are compared with")
    variants: dict[str, dict[str, Any]] = Field(min_length=1)

    @model_validator(mode="after")
    def _baseline_is_a_variant(self) -> "SweepParams":
        if self.baseline not in self.variants:
            raise ValueError(f"baseline {self.baseline!r} is not one of the variants {sorted(self.variants)}")
        return self


class Params(Section):
    common: CommonParams = CommonParams()
    tracking: TrackingParams = TrackingParams()
    download: DownloadParams = DownloadParams()
    faces: FacesParams = FacesParams()
    audio: AudioParams = AudioParams()
    shards: ShardsParams = ShardsParams()
    report: ReportParams = ReportParams()
    face_sr: FaceSRParams = FaceSRParams()
    train_g: TrainGParams = TrainGParams()
    train_eh: TrainEhParams = TrainEhParams()
    train_el: TrainElParams = TrainElParams()
    train_ea: TrainEaParams = TrainEaParams()
    train_fusion: TrainFusionParams = TrainFusionParams()
    evaluators: EvaluatorsParams = EvaluatorsParams()
    evaluate: EvaluateParams = EvaluateParams()
    orchestration: OrchestrationParams = OrchestrationParams()
    sweeps: dict[str, SweepParams] = {}

    @model_validator(mode="after")
    def _sweeps_are_valid_overrides(self) -> "Params":
        """Every variant's overrides must give valid params: a typo fails at load, not mid-sweep."""
        base = self.model_dump(mode="json", exclude={"sweeps"})
        for name, sweep in self.sweeps.items():
            for variant, overrides in sweep.variants.items():
                tree = copy.deepcopy(base)
                try:
                    for key, value in overrides.items():
                        set_dotted(tree, key, value)
                    Params.model_validate(tree)
                except (ValidationError, ConfigError) as exc:
                    detail = _format_errors(f"variant {variant}", exc) if isinstance(exc, ValidationError) else str(exc)
                    raise ValueError(f"sweep {name}: {detail}") from None
        return self

    def data_path(self, *parts: str) -> Path:
        return Path(self.common.data_dir).joinpath(*parts)


def _format_errors(source: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check its spelling and section)"
        lines.append(f"{source}: {loc}: {msg}")
    return "\n".join(lines)


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``tree['a']['b'] = value`` for ``dotted='a.b'``, creating sections as needed."""
    *parents, leaf = dotted.split(".")
    node = tree
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: {key} is not a section")
    node[leaf] = value


def parse_params(tree: dict[str, Any] | None, *, source: str = "params.yaml") -> Params:
    try:
        return Params.model_validate(tree or {})
    except ValidationError as exc:
        raise ConfigError(_format_errors(source, exc)) from None


def load_params(path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None) -> Params:
    """Read, override (dotted keys, e.g. ``{"faces.detect_every": 3}``) and validate params."""
    path = Path(path)
    try:
        tree = yaml.safe_load(path.read_text()) if path.exists() else {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if tree is not None and not isinstance(tree, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    tree = dict(tree or {})
    for key, value in (overrides or {}).items():
        set_dotted(tree, key, value)
    return parse_params(tree, source=str(path))
