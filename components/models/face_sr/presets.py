"""Network sizes of "Face SR with an ear" as one validated config, and the model factory.

Two presets:

* ``paper``: the published sizes (128x128 output, 12 x 512 latents; El 88.7M and Ea
  402.6M parameters). The field defaults of :class:`ModelConfig` are these values,
  so the class itself documents the paper's architecture.
* ``small`` (:data:`DEFAULT_PRESET`): the same architecture at 64x64 with a 10 x 128
  latent and narrow layers (about 8M parameters in all), sized so a G+D training step
  on a batch of 16 takes a fraction of a second on two CPU cores: a pipeline run on a
  laptop trains for real, in minutes.

:func:`build_models` turns a config into the six networks, each initialised from its
own seed so that one network's weights do not depend on which others were built. To
inspect the paper preset without allocating its 861M parameters, build it on
the meta device: ``with torch.device("meta"): build_models(get_preset("paper"))``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from components.audio.spectrogram import SPEC_HOP, SPEC_N_FFT, SPEC_SAMPLE_RATE
from components.models.checkpoint import fields_of
from components.models.face_sr.encoders import AudioEncoder, HighResEncoder, LowResEncoder
from components.models.face_sr.fusion import ResidualFusion
from components.models.face_sr.generator import Discriminator, Generator, n_latents_for
from components.models.layers import count_parameters

log = logging.getLogger(__name__)

MODEL_NAMES = ("G", "D", "Eh", "El", "Ea", "F")
DEFAULT_PRESET = "small"


class ModelConfig(BaseModel):
    """Sizes of G, D, Eh, El, Ea and F. Defaults are the paper's.

    Channel widths of G and D follow StyleGAN: ``min(base // res, max)`` channels at
    resolution ``res`` (512, 512, 512, 512, 256, 128 from 4x4 to 128x128 at the
    defaults). Encoder widths start at ``*_base`` and grow per scale up to ``*_cap``.
    ``n_latents`` is derived from the resolution (two per resolution from 4x4 up); it
    may be written explicitly, but must then agree.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    resolution: int = Field(128, ge=8, description="G output / Eh input size (power of two)")
    n_latents: int = Field(12, ge=2, description="style inputs of G = 2 * log2(resolution / 4) + 2")
    latent_dim: int = Field(512, ge=1, description="size of z, w and every encoder code vector")
    mapping_layers: int = Field(8, ge=1)
    mapping_lr_mul: float = Field(0.01, gt=0, le=1)
    g_channel_base: int = Field(16384, ge=1)
    g_channel_max: int = Field(512, ge=1)
    d_channel_base: int = Field(16384, ge=1)
    d_channel_max: int = Field(512, ge=1)
    eh_base: int = Field(64, ge=1)
    eh_cap: int = Field(1024, ge=1)
    el_base: int = Field(128, ge=1)
    el_cap: int = Field(1024, ge=1)
    el_scales: int = Field(3, ge=1)
    ea_base: int = Field(64, ge=1)
    ea_cap: int = Field(2048, ge=1)
    ea_blocks: int = Field(6, ge=1)
    ea_fc: int = Field(8192, ge=1)
    ea_norm: Literal["batch", "instance", "none"] = Field("batch", description="reference: none; see AudioEncoder")
    fusion_hidden: int = Field(6144, ge=1)
    fusion_layers: int = Field(3, ge=1)
    lr_size: int = Field(8, ge=2, description="low-res input size of El")
    audio_seconds: float = Field(4.0, gt=0, description="speech per sample fed to Ea")
    fusion: bool = Field(True, description="false: F is not used, the fused code is El's (ablation)")
    fusion_audio: bool = Field(True, description="false: F sees a zero audio code (ablation: capacity without voice)")

    @model_validator(mode="before")
    @classmethod
    def _derive_n_latents(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("n_latents") is None:
            resolution = data.get("resolution", cls.model_fields["resolution"].default)
            if isinstance(resolution, int) and resolution >= 4:
                data = {**data, "n_latents": n_latents_for(resolution)}
        return data

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.resolution & (self.resolution - 1):
            raise ValueError(f"resolution must be a power of two, got {self.resolution}")
        if self.n_latents != n_latents_for(self.resolution):
            raise ValueError(f"n_latents must be {n_latents_for(self.resolution)} at resolution "
                             f"{self.resolution} (two per resolution from 4x4), got {self.n_latents}")
        if self.spectrogram_shape[0] < 1:
            raise ValueError(f"audio_seconds={self.audio_seconds} is shorter than one STFT window")
        return self

    def g_channels(self, res: int) -> int:
        return min(self.g_channel_base // res, self.g_channel_max)

    def d_channels(self, res: int) -> int:
        return min(self.d_channel_base // res, self.d_channel_max)

    @property
    def resolutions(self) -> list[int]:
        return [2**i for i in range(2, int(math.log2(self.resolution)) + 1)]

    @property
    def spectrogram_shape(self) -> tuple[int, int]:
        """(frames, frequency bins) of ``face_sr_spectrogram`` for ``audio_seconds``, time
        first as in the reference: 257 x 257 for 4 s (no centre padding: 1 + (64000 - 512) // 248)."""
        samples = round(self.audio_seconds * SPEC_SAMPLE_RATE)
        return 1 + (samples - SPEC_N_FFT) // SPEC_HOP, SPEC_N_FFT // 2 + 1


# Which config fields shape which network (the rest, SHARED_FIELDS, shape them all). A file
# holding some networks is checked, and a stage fingerprinted, on their fields only: a
# 16x16 El can be trained on the G and Eh made for the 8x8 one.
SHARED_FIELDS = frozenset({"resolution", "n_latents", "latent_dim"})
NETWORK_FIELDS: dict[str, frozenset[str]] = {
    "G": frozenset({"mapping_layers", "mapping_lr_mul", "g_channel_base", "g_channel_max"}),
    "D": frozenset({"d_channel_base", "d_channel_max"}),
    "Eh": frozenset({"eh_base", "eh_cap"}),
    "El": frozenset({"el_base", "el_cap", "el_scales", "lr_size"}),
    "Ea": frozenset({"ea_base", "ea_cap", "ea_blocks", "ea_fc", "ea_norm", "audio_seconds"}),
    "F": frozenset({"fusion_hidden", "fusion_layers", "fusion", "fusion_audio"}),
}


def config_fields(cfg: ModelConfig, networks: Iterable[str]) -> dict[str, Any]:
    """The part of ``cfg`` that shapes ``networks`` (JSON-ready)."""
    return fields_of(cfg.model_dump(mode="json"), NETWORK_FIELDS, networks, SHARED_FIELDS)


PRESETS: dict[str, ModelConfig] = {
    "paper": ModelConfig(),
    "small": ModelConfig(
        resolution=64,
        latent_dim=128,
        mapping_layers=4,
        g_channel_base=1024,  # 128, 128, 64, 32, 16 channels at 4 ... 64
        g_channel_max=128,
        d_channel_base=1024,
        d_channel_max=128,
        eh_base=16,
        eh_cap=64,
        el_base=32,
        el_cap=96,
        ea_base=8,  # the first blocks run at 129x129 and 65x65: keep them thin
        ea_cap=64,
        ea_fc=256,
        fusion_hidden=256,
    ),
}


def get_preset(name: str = DEFAULT_PRESET, **overrides: Any) -> ModelConfig:
    """A named preset, optionally with some fields changed (validated again)."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}: expected one of {sorted(PRESETS)}")
    base = PRESETS[name].model_dump()
    if "resolution" in overrides and "n_latents" not in overrides:
        base.pop("n_latents")
    return ModelConfig(**{**base, **overrides})


def _build(name: str, cfg: ModelConfig) -> nn.Module:
    if name == "G":
        return Generator(cfg.resolution, cfg.latent_dim, cfg.latent_dim,
                         {r: cfg.g_channels(r) for r in cfg.resolutions},
                         mapping_layers=cfg.mapping_layers, mapping_lr_mul=cfg.mapping_lr_mul)
    if name == "D":
        return Discriminator(cfg.resolution, {r: cfg.d_channels(r) for r in cfg.resolutions})
    if name == "Eh":
        return HighResEncoder(cfg.resolution, cfg.n_latents, cfg.latent_dim, base=cfg.eh_base, cap=cfg.eh_cap)
    if name == "El":
        return LowResEncoder(cfg.lr_size, cfg.n_latents, cfg.latent_dim, base=cfg.el_base, cap=cfg.el_cap,
                             n_scales=cfg.el_scales)
    if name == "Ea":
        return AudioEncoder(cfg.spectrogram_shape, cfg.n_latents, cfg.latent_dim, base=cfg.ea_base,
                            cap=cfg.ea_cap, n_blocks=cfg.ea_blocks, fc=cfg.ea_fc, norm=cfg.ea_norm)
    if name == "F":
        return ResidualFusion(cfg.n_latents, cfg.latent_dim, hidden=cfg.fusion_hidden, n_layers=cfg.fusion_layers,
                              enabled=cfg.fusion, use_audio=cfg.fusion_audio)
    raise AssertionError(name)


def build_models(cfg: ModelConfig, seed: int = 0, names: tuple[str, ...] = MODEL_NAMES) -> dict[str, nn.Module]:
    """Build the networks ``names`` (default all six) of ``cfg``, deterministically.

    Network i of :data:`MODEL_NAMES` is initialised from ``seed * 6 + i`` in a forked
    RNG, so the same (cfg, seed) always gives the same weights, building a subset gives
    the same weights as building all, and the global RNG is untouched. Modules are
    created on the current default device (``with torch.device(...)``).
    """
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
