"""The params of the data stages: ``common``, ``download`` (with the embedded ``synth``
corpus), ``faces``, ``audio``, ``shards`` and ``report``.

The values are in ``params.yaml``; these classes say what each key is and which values
it accepts. Fields without a default are required; a ``None`` default is a documented
"not given" (e.g. no input folder for the synthetic source).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from components.config.base import Section


class CommonParams(Section):
    seed: int
    fps: int = Field(ge=1, le=120, description="pipeline frame rate: every video is resampled to it")
    sample_rate: int = Field(ge=8000, le=48000, description="pipeline audio rate (mono)")
    data_dir: str = Field(description="root folder of every stage's outputs")
    workers: int = Field(ge=1, description="processes for per-video work inside a stage")
    max_unexpected_errors: int = Field(ge=0, description="a stage fails when more items than this raise an "
                                       "unexpected error (a bug, not bad input), or all of them do")


class SynthParams(Section):
    """The embedded procedural talking-face corpus (``earshot data synth``)."""

    seed: int
    n_speakers: int = Field(ge=2)
    videos_per_speaker: int = Field(ge=1)
    clips_per_video: int = Field(ge=1)
    clip_seconds: float = Field(gt=0.5, le=60)
    clip_seconds_jitter: float = Field(ge=0)
    frame_size: int = Field(ge=64, le=1024, description="rendered video is frame_size x frame_size")
    glasses_prob: float = Field(ge=0, le=1)
    beard_prob: float = Field(ge=0, le=1)
    crf: int = Field(ge=0, le=51)
    keyframe_seconds: float = Field(gt=0, description="longest keyframe interval of the rendered videos (real "
                                                      "uploads: 2-10 s); probing a clip decodes up to one")


class DownloadParams(Section):
    source: Literal["synthetic", "local", "manifest"]
    input: str | None = Field(None, description="folder (local) or CSV/Parquet/VoxCeleb2 txt folder (manifest)")
    layout: Literal["auto", "voxceleb", "flat"]
    synth: SynthParams
    concurrency: int = Field(ge=1, le=64)
    retries: int = Field(ge=0, le=20)
    backoff_seconds: float = Field(ge=0)
    timeout_seconds: float = Field(gt=0, description="per socket read; also the grace before the rate is checked")
    deadline_seconds: float = Field(gt=0, description="total time one download may take, retries included")
    min_bytes_per_second: float = Field(ge=0, description="an attempt slower than this on average is abandoned")
    max_bytes: int = Field(gt=0, description="refuse downloads larger than this")
    extensions: list[str] = Field(description="video files a local folder or a manifest may hold")
    ytdlp_format: str = Field(description="yt-dlp format selector for YouTube rows "
                                          "(720p is plenty for 256 px face crops)")

    @model_validator(mode="after")
    def _input_needed(self) -> "DownloadParams":
        if self.source in ("local", "manifest") and not self.input:
            raise ValueError(f"download.input is required when download.source is {self.source!r}")
        return self


class FacesParams(Section):
    detect_every: int = Field(ge=1, description="RetinaFace at least every k frames where tracking is not "
                                                "confident (moving face, faces coming or going)")
    detect_every_max: int = Field(ge=1, description="gap between keyframes where tracking is confident "
                                                    "(bisected down to detect_every where it is not)")
    track_iou: float = Field(gt=0, le=1, description="tracking is confident at a keyframe when the main track's "
                                                     "predicted box overlaps a detection by this IoU (and the "
                                                     "number of faces is unchanged)")
    detect_size: int = Field(ge=64, description="longest side of the downscaled detection frame")
    score_threshold: float = Field(gt=0, lt=1)
    min_face: int = Field(ge=8, description="minimum face box side in source pixels")
    competing_ratio: float = Field(gt=0, le=1, description="a 2nd face this big relative to the main one competes")
    max_lost_fraction: float = Field(ge=0, le=1, description="reject when the track is lost in more frames")
    max_competing_fraction: float = Field(ge=0, le=1, description="reject when a competing face is in more keyframes")
    max_yaw: float = Field(gt=0, description="landmark yaw proxy beyond which the pose is extreme")
    max_extreme_fraction: float = Field(ge=0, le=1, description="reject when the pose is extreme in more keyframes")
    smoothing: float = Field(ge=0, lt=1, description="exponential box smoothing factor between detections")
    margin: float = Field(ge=0, le=2, description="crop margin around the box, as a fraction of its size")
    align: bool = Field(description="rotate crops so the eyes are level (landmark alignment)")
    crop_size: int = Field(ge=32, description="stored crop side: the largest resolution later stages need")
    min_seconds: float = Field(ge=0)
    jpeg_quality: int = Field(ge=50, le=100, description="JPEG quality of the stored crops (Motion-JPEG, copied "
                                                         "into the shards as they are)")

    @model_validator(mode="after")
    def _max_gap_covers_base(self) -> "FacesParams":
        if self.detect_every_max < self.detect_every:
            raise ValueError(f"detect_every_max ({self.detect_every_max}) < detect_every ({self.detect_every})")
        return self


class AudioParams(Section):
    vad: Literal["silero", "pyannote"]
    pyannote_checkpoint: str | None = Field(None, description="path to a pyannote segmentation checkpoint "
                                                              "(vad: pyannote)")
    vad_threshold: float = Field(gt=0, lt=1)
    min_speech_seconds: float = Field(ge=0)
    max_offset_frames: int = Field(ge=0, description="search range of the audio-video offset")
    offset_tolerance_frames: int = Field(ge=0, description="shift within this, reject beyond")
    min_sync_confidence: float = Field(ge=0, description="below it the offset estimate is unreliable: no shift")
    min_reject_confidence: float = Field(ge=0, description="rejecting a clip (offset beyond tolerance) "
                                                           "needs this much")
    speaker_check: bool
    speaker_threshold: float = Field(ge=-1, le=1, description="min cosine to the speaker's other clips")


class ShardsParams(Section):
    rows_per_shard: int = Field(ge=1)
    row_group_size: int = Field(ge=1)
    unseen_speaker_fraction: float = Field(ge=0, lt=1, description="speakers held out entirely (open set)")
    seen_test_fraction: float = Field(ge=0, lt=1, description="clips of training speakers held out (closed set)")
    seed: int


class ReportParams(Section):
    contact_sheet_clips: int = Field(ge=1)


class DataSections(Section):
    """The data stages' sections of ``Params``, and ``common`` (shared by every stage)."""

    common: CommonParams
    download: DownloadParams
    faces: FacesParams
    audio: AudioParams
    shards: ShardsParams
    report: ReportParams

    def data_path(self, *parts: str) -> Path:
        return Path(self.common.data_dir).joinpath(*parts)
