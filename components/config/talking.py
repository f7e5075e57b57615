"""The params of the talking-face video upsampling paper (Hegde et al., ACM MM 2022):
``talking`` (shared by its stages), ``train_sync``, ``train_coarse``, ``train_animate`` and
``evaluate_video``.

Only the paper's abstract is public: 8x8 video + audio + one high-res photo -> 256x256
video, a coarse audio-visual stage then an animation of the photo. Every other value here
(sizes, windows, losses, weights, how the photo is chosen) is this project's choice, and
``params.yaml`` says so next to it. The values live in ``params.yaml``; these classes say
what each key is and which values it accepts.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from components.config.base import Section
from components.config.face_sr import TrainStageParams


class TalkingParams(Section):
    """Shared by the video paper's training stages: which networks, where they train, how the
    training split is cached. Not a stage itself."""

    preset: Literal["small", "paper"] = Field(description="components.models.talking preset")
    overrides: dict[str, Any] = Field(description="ModelConfig fields changed from the preset, e.g. {coarse_size: 64}")
    seed: int = Field(description="network init, data draws and sampling noise")
    device: Literal["auto", "cpu", "cuda"]
    amp: bool = Field(description="GPU only: bf16 autocast (fp16 + loss scaling where bf16 is missing)")
    channels_last: bool = Field(description="NHWC convolutions")
    threads: int = Field(ge=1, description="CPU torch threads per process")
    num_workers: int = Field(ge=0, description="DataLoader processes decoding the shards into the cache")
    hr_frames_per_clip: int = Field(ge=1, description="full-size (out_size) frames per training clip kept in memory "
                                                      "as the animation stage's targets (every frame is kept at "
                                                      "coarse_size)")
    photo: Literal["other_clip", "same_clip"] = Field(
        description="the identity photo: a frame of another clip of the same speaker (falling back to a distant "
                    "frame of the same clip for a speaker with one clip), or always a frame of the same clip")
    out_dir: str = Field(description="stage folders <out_dir>/<stage>/ (dvc.yaml outs)")
    # The ablation knobs, their own keys so that dvc.yaml makes only the stages using them depend on them.
    lr_size: int = Field(ge=2, description="the input video is lr_size x lr_size (8 in the paper)")
    audio: bool = Field(description="false: the coarse stage gets a zero audio embedding (same network, no voice)")
    identity: bool = Field(description="false: the animation's source is the coarse frame upsampled, not the photo")


class TrainSyncParams(TrainStageParams):
    """The lip-sync expert: 5 lower-half coarse frames vs 16 mel steps, in sync or shifted."""

    min_shift: int = Field(ge=1, description="off-sync negatives are windows of the same clip at least this many "
                                             "frames away")
    eval_shift: int = Field(ge=1, description="the summary's accuracy: in sync vs shifted by at least this many frames")


class TrainCoarseParams(TrainStageParams):
    """Stage 1: a window of lr frames + the centre frame's mel window -> the coarse centre frame.
    A sample is 5 consecutive centres (``batch_size`` samples = 5 x as many outputs): L1 on
    each, and the expert judges the 5 together against their audio."""

    w_l1: float = Field(ge=0)
    w_sync: float = Field(ge=0, description="the frozen expert's BCE on the 5 consecutive outputs of a sample "
                                            "and their audio (0: no expert pass)")
    w_perc: float = Field(ge=0, description="shift-tolerant LPIPS (components.models.perceptual)")


class TrainAnimateParams(TrainStageParams):
    """Stage 2: the identity photo animated by the coarse frames (FOMM-style keypoints, dense
    motion, a warping generator), self-supervised: the target is the true frame."""

    driving: Literal["coarse", "truth"] = Field(
        description="the driving frame in training: stage 1's output (what inference gives it) or the true frame "
                    "resized to coarse_size")
    w_pyramid: float = Field(ge=0, description="multi-scale L1 (scales 1, 1/2, 1/4, 1/8): the perceptual pyramid "
                                               "without an ImageNet VGG")
    w_perc: float = Field(ge=0, description="shift-tolerant LPIPS at full size")
    w_equivariance: float = Field(ge=0, description="keypoints and Jacobians equivariant under random warps")
    warp_sigma_affine: float = Field(ge=0)
    warp_sigma_tps: float = Field(ge=0)
    warp_points: int = Field(ge=2, description="thin-plate control points per side")


class EvaluateVideoParams(Section):
    """Comparison of the video methods on the test splits (components/evaluation/video_sr.py)."""

    frames_per_clip: int = Field(ge=5, description="consecutive frames from the middle of each test clip (pixel, "
                                                   "identity, landmark and lip-sync metrics)")
    fid_frames_per_clip: int = Field(ge=1, description="of those, evenly spaced frames per clip in FID / KID and SSIM")
    detail_frames_per_clip: int = Field(ge=1, description="of those, evenly spaced frames per clip for the slow "
                                                          "metrics: ST-LPIPS, dlib identity, landmarks")
    stlpips_size: int = Field(ge=32, description="ST-LPIPS compares copies resized to this side (its shift-tolerant "
                                                 "AlexNet costs ~0.2 s a 256 px pair on 2 CPU cores)")
    batch_size: int = Field(ge=1)
    workers: int = Field(ge=1, description="processes scoring the test clips, one torch thread each (1: in the "
                                           "stage process, on talking.threads); InceptionV3 runs in the stage process")
    max_offset: int = Field(ge=1, description="LSE: audio offsets -k..k frames")
    fid_bootstrap: int = Field(ge=10, description="speaker resamples FID and KID are recomputed on for their intervals")
    kid_subsets: int = Field(ge=1)
    kid_subset_size: int = Field(ge=2)
    videos: int = Field(ge=0, description="side-by-side videos of test clips per split")
    grid_samples: int = Field(ge=1, description="rows of grid_<split>.png")
    seed: int = Field(description="the other clips' audio, figure samples and the bootstrap's resamples")
    bootstrap_samples: int = Field(ge=100)
    out_dir: str = Field(description="metrics.json, results.md and figures (dvc.yaml outs)")


class TalkingSections(Section):
    """The video paper's sections of ``Params``."""

    talking: TalkingParams
    train_sync: TrainSyncParams
    train_coarse: TrainCoarseParams
    train_animate: TrainAnimateParams
    evaluate_video: EvaluateVideoParams
