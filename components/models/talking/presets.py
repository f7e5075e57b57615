"""Network sizes of the video paper (Hegde et al., ACM MM 2022) as one validated config, and the factory.

Only the paper's abstract is public: its input (8x8), output (256x256) and two-stage
design are the paper's, every other number here is ours (Wav2Lip's conventions for the
sync expert and stage 1, FOMM's vox-256 sizes for stage 2). Two presets:

* ``paper``: coarse faces at 96 px (Wav2Lip's face size), a 512-d expert, stage 2 at
  FOMM's vox-256 widths (keypoints: hourglass 32 / 1024 / 5 blocks, dense motion 64 /
  1024 / 5, generator 64 / 512, 2 down blocks, 6 bottleneck blocks). The field
  defaults of :class:`ModelConfig` are these values. Sized for a GPU.
* ``small`` (:data:`DEFAULT_PRESET`): coarse faces at 48 px and narrow nets (1.7M
  parameters in all), output still 256x256, sized so every stage trains for real on
  two CPU cores (forward + backward, measured on 2 shared cores: expert batch 32 about
  0.05-0.08 s, coarse batch 32 about 0.06-0.1 s, stage 2 batch 4 at 256 px about
  0.2-0.35 s; the cheap 3x3 ``head_kernel`` matters: 7x7 convs with 3 output channels
  at 256x256 are slow on oneDNN).

Five networks (:data:`MODEL_NAMES`): ``expert`` (:class:`SyncExpert`), ``coarse``
(:class:`CoarseUpsampler`), ``kp`` (:class:`KeypointDetector`), ``motion``
(:class:`DenseMotion`), ``generator`` (:class:`AnimationGenerator`).
:func:`build_models` makes them deterministically from a seed, each from its own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from components.models.checkpoint import fields_of
from components.models.layers import Norm, count_parameters
from components.models.talking.coarse import CoarseUpsampler
from components.models.talking.generator import AnimationGenerator
from components.models.talking.keypoints import KeypointDetector
from components.models.talking.motion import DenseMotion
from components.models.talking.sync import SyncExpert

log = logging.getLogger(__name__)

FAMILY = "talking"
MODEL_NAMES = ("expert", "coarse", "kp", "motion", "generator")
DEFAULT_PRESET = "small"


class ModelConfig(BaseModel):
    """Inputs, ablation switches and the widths of the five networks. Defaults are the ``paper`` preset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # data shapes
    lr_size: int = Field(8, ge=2, description="side of the low-res input frames (8; 16 in the ablation)")
    window: int = Field(5, ge=1, description="video frames per stage-1 / expert sample (odd: a centre frame)")
    n_mels: int = Field(80, ge=1, description="mel bands")
    mel_steps: int = Field(16, ge=1, description="mel frames per window (0.2 s at 80 per second)")
    coarse_size: int = Field(96, ge=8, description="stage-1 output side; the expert reads its lower half")
    out_size: int = Field(256, ge=16, description="stage-2 output side (the paper's 256)")
    # ablation switches
    audio: bool = Field(True, description="false: the coarse net gets a zero audio embedding")
    identity: bool = Field(True, description="false: stage 2's source is the coarse frame enlarged, no photo")
    # lip-sync expert
    expert_dim: int = Field(512, ge=1, description="embedding size")
    expert_base: int = Field(32, ge=1, description="channels of the first conv of both branches")
    expert_cap: int = Field(512, ge=1, description="channels double per stage up to this")
    expert_face_stages: int = Field(5, ge=1, description="stride-2 stages of the face branch")
    expert_mel_stages: int = Field(4, ge=1, description="stride-2 stages of the mel branch")
    # stage 1: coarse upsampler
    coarse_width: int = Field(256, ge=16, description="channels of the encoder and the decoder's base")
    coarse_audio_dim: int = Field(256, ge=1, description="audio embedding size (FiLM input)")
    coarse_enc_blocks: int = Field(3, ge=0, description="residual convs at the input resolution")
    coarse_up_blocks: int = Field(3, ge=1, description="doublings from coarse_size / 2**n to coarse_size")
    coarse_mel_base: int = Field(32, ge=1)
    coarse_mel_cap: int = Field(256, ge=1)
    coarse_mel_stages: int = Field(4, ge=1)
    # stage 2: keypoints, dense motion, generator (FOMM vox-256 names in brackets)
    num_kp: int = Field(10, ge=1, description="keypoints")
    kp_size: int = Field(64, ge=4, description="side keypoints and dense motion work at")
    kp_expansion: int = Field(32, ge=1, description="[kp block_expansion]")
    kp_cap: int = Field(1024, ge=1, description="[kp max_features]")
    kp_blocks: int = Field(5, ge=1, description="[kp num_blocks]: hourglass depth")
    kp_temperature: float = Field(0.1, gt=0, description="softmax temperature of the heatmaps")
    motion_expansion: int = Field(64, ge=1, description="[dense motion block_expansion]")
    motion_cap: int = Field(1024, ge=1, description="[dense motion max_features]")
    motion_blocks: int = Field(5, ge=1, description="[dense motion num_blocks]")
    kp_variance: float = Field(0.01, gt=0, description="variance of the keypoint Gaussians")
    gen_expansion: int = Field(64, ge=1, description="[generator block_expansion]")
    gen_cap: int = Field(512, ge=1, description="[generator max_features]")
    gen_down_blocks: int = Field(2, ge=1, description="[num_down_blocks]: out_size / 2**n is the warp's resolution")
    gen_bottleneck_blocks: int = Field(6, ge=0, description="[num_bottleneck_blocks]")
    anim_norm: Norm = Field("batch", description="normalisation in the three stage-2 networks")
    head_kernel: int = Field(7, ge=1, description="odd kernel of the stage-2 heads and the generator's edge convs")

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        problems = []
        if self.head_kernel % 2 != 1:
            problems.append(f"head_kernel must be odd (same padding), got {self.head_kernel}")
        if self.window % 2 != 1:
            problems.append(f"window must be odd (the target is the centre frame), got {self.window}")
        if self.coarse_size % 2**self.coarse_up_blocks:
            problems.append(f"coarse_size {self.coarse_size} must be a multiple of 2**coarse_up_blocks "
                            f"= {2**self.coarse_up_blocks}")
        for field in ("kp_blocks", "motion_blocks"):
            factor = 2 ** getattr(self, field)
            if self.kp_size % factor:
                problems.append(f"kp_size {self.kp_size} must be a multiple of 2**{field} = {factor}")
        if self.out_size != self.kp_size * 2**self.gen_down_blocks:
            problems.append(f"out_size {self.out_size} must be kp_size * 2**gen_down_blocks = "
                            f"{self.kp_size * 2**self.gen_down_blocks} (the generator warps at kp_size)")
        if problems:
            raise ValueError("; ".join(problems))
        return self


# Which config fields shape (or, for the ablation switches, train) each network. A file
# holding some networks is checked, and a stage fingerprinted, on their fields only.
NETWORK_FIELDS: dict[str, tuple[str, ...]] = {
    "expert": ("window", "coarse_size", "n_mels", "mel_steps", "expert_dim", "expert_base", "expert_cap",
               "expert_face_stages", "expert_mel_stages"),
    "coarse": ("lr_size", "window", "n_mels", "mel_steps", "coarse_size", "audio", "coarse_width",
               "coarse_audio_dim", "coarse_enc_blocks", "coarse_up_blocks", "coarse_mel_base", "coarse_mel_cap",
               "coarse_mel_stages"),
    "kp": ("num_kp", "kp_size", "kp_expansion", "kp_cap", "kp_blocks", "kp_temperature", "anim_norm",
           "head_kernel", "identity"),
    "motion": ("num_kp", "kp_size", "motion_expansion", "motion_cap", "motion_blocks", "kp_variance", "anim_norm",
               "head_kernel", "identity"),
    "generator": ("out_size", "kp_size", "gen_expansion", "gen_cap", "gen_down_blocks", "gen_bottleneck_blocks",
                  "anim_norm", "head_kernel", "identity"),
}


def config_fields(cfg: ModelConfig, names: Iterable[str]) -> dict[str, Any]:
    """The part of ``cfg`` that shapes the networks ``names`` (JSON-ready)."""
    return fields_of(cfg.model_dump(mode="json"), NETWORK_FIELDS, names)


PRESETS: dict[str, ModelConfig] = {
    "paper": ModelConfig(),
    "small": ModelConfig(
        coarse_size=48,
        expert_dim=128,
        expert_base=16,
        expert_cap=128,
        expert_face_stages=4,  # 24 x 48 -> 2 x 3
        expert_mel_stages=3,  # 80 x 16 -> 10 x 2
        coarse_width=64,
        coarse_audio_dim=64,
        coarse_enc_blocks=2,
        coarse_up_blocks=2,  # decoder from 12 x 12
        coarse_mel_base=16,
        coarse_mel_cap=64,
        coarse_mel_stages=3,
        kp_expansion=8,
        kp_cap=64,
        kp_blocks=4,
        motion_expansion=16,
        motion_cap=64,
        motion_blocks=4,
        gen_expansion=8,
        gen_cap=32,
        gen_bottleneck_blocks=3,
        head_kernel=3,
    ),
}


def get_preset(name: str = DEFAULT_PRESET, **overrides: Any) -> ModelConfig:
    """A named preset, optionally with some fields changed (validated again)."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}: expected one of {sorted(PRESETS)}")
    return ModelConfig(**{**PRESETS[name].model_dump(), **overrides})


def _build(name: str, cfg: ModelConfig) -> nn.Module:
    if name == "expert":
        return SyncExpert(cfg.window, cfg.expert_dim, base=cfg.expert_base, cap=cfg.expert_cap,
                          face_stages=cfg.expert_face_stages, mel_stages=cfg.expert_mel_stages)
    if name == "coarse":
        return CoarseUpsampler(window=cfg.window, out_size=cfg.coarse_size, width=cfg.coarse_width,
                               audio_dim=cfg.coarse_audio_dim, enc_blocks=cfg.coarse_enc_blocks,
                               up_blocks=cfg.coarse_up_blocks, mel_base=cfg.coarse_mel_base,
                               mel_cap=cfg.coarse_mel_cap, mel_stages=cfg.coarse_mel_stages, use_audio=cfg.audio)
    if name == "kp":
        return KeypointDetector(num_kp=cfg.num_kp, size=cfg.kp_size, expansion=cfg.kp_expansion, cap=cfg.kp_cap,
                                depth=cfg.kp_blocks, temperature=cfg.kp_temperature, head_kernel=cfg.head_kernel,
                                norm=cfg.anim_norm)
    if name == "motion":
        return DenseMotion(num_kp=cfg.num_kp, size=cfg.kp_size, expansion=cfg.motion_expansion, cap=cfg.motion_cap,
                           depth=cfg.motion_blocks, kp_variance=cfg.kp_variance, head_kernel=cfg.head_kernel,
                           norm=cfg.anim_norm)
    if name == "generator":
        return AnimationGenerator(out_size=cfg.out_size, expansion=cfg.gen_expansion, cap=cfg.gen_cap,
                                  down_blocks=cfg.gen_down_blocks, bottleneck_blocks=cfg.gen_bottleneck_blocks,
                                  edge_kernel=cfg.head_kernel, norm=cfg.anim_norm)
    raise AssertionError(name)


def build_models(cfg: ModelConfig, names: Iterable[str] = MODEL_NAMES, seed: int = 0) -> dict[str, nn.Module]:
    """Build the networks ``names`` (default all five) of ``cfg``, deterministically.

    Network i of :data:`MODEL_NAMES` is initialised from ``seed * 5 + i`` in a forked
    RNG: the same (cfg, seed) always gives the same weights, a subset the same weights
    as the full set, and the global RNG is untouched. Modules are created on the
    current default device (``with torch.device(...)``).
    """
    names = tuple(names)
    unknown = [name for name in names if name not in MODEL_NAMES]
    if unknown:
        raise ValueError(f"unknown models {unknown}: expected names from {MODEL_NAMES}")
    models = {}
    for name in names:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed * len(MODEL_NAMES) + MODEL_NAMES.index(name))
            models[name] = _build(name, cfg)
        log.debug("built %s: %d parameters", name, count_parameters(models[name]))
    return models
