"""Networks of "Face super-resolution with an ear" (Meishvili et al., CVPR 2020).

* ``G`` (:class:`Generator`): StyleGAN-style face generator, z / per-layer codes -> face.
* ``D`` (:class:`Discriminator`): residual StyleGAN2 discriminator for training G.
* ``Eh`` (:class:`HighResEncoder`): high-res face -> G's latent code (inverts G).
* ``El`` (:class:`LowResEncoder`): 8x8 face -> latent code.
* ``Ea`` (:class:`AudioEncoder`): 257 x 257 log-spectrogram of 4 s of speech -> latent code.
* ``F`` (:class:`ResidualFusion`): (El code, Ea code) -> fused code, a residual on El's.

Sizes come from a :class:`ModelConfig` (presets ``paper`` and ``small``);
:func:`build_models` makes all six, deterministically from a seed. Their files are of
family ``"face_sr"`` (:mod:`components.models.checkpoint`, registered here). The judge
(:mod:`.judge`, the face classifier the evaluation scores outputs with) is a family of
its own, ``"face_judge"``, registered by its module: the training stages never import it.
"""

from collections.abc import Mapping
from typing import Any

from components.models.checkpoint import register_family
from components.models.face_sr.encoders import AudioEncoder, HighResEncoder, LowResEncoder
from components.models.face_sr.fusion import ResidualFusion
from components.models.face_sr.generator import Discriminator, Generator, MappingNetwork, SynthesisNetwork, n_latents_for
from components.models.face_sr.presets import (
    DEFAULT_PRESET,
    MODEL_NAMES,
    NETWORK_FIELDS,
    PRESETS,
    SHARED_FIELDS,
    ModelConfig,
    build_models,
    count_parameters,
    get_preset,
)

FAMILY = "face_sr"


def config_dict(cfg: ModelConfig) -> dict[str, Any]:
    """The config a face-SR file records (JSON-ready)."""
    return cfg.model_dump(mode="json")


def _build(config: Mapping[str, Any], names: tuple[str, ...]) -> dict:
    return build_models(ModelConfig(**config), names=names)


# Only the fields that shape the networks a file holds count: a 16x16 El trains on the G
# and Eh made for the 8x8 one.
register_family(FAMILY, build=_build, network_fields=NETWORK_FIELDS, shared_fields=SHARED_FIELDS,
                settings="params face_sr: preset, overrides, lr_size, audio_seconds, audio, fusion")

__all__ = [
    "AudioEncoder",
    "DEFAULT_PRESET",
    "Discriminator",
    "FAMILY",
    "Generator",
    "HighResEncoder",
    "LowResEncoder",
    "MODEL_NAMES",
    "MappingNetwork",
    "ModelConfig",
    "PRESETS",
    "ResidualFusion",
    "SynthesisNetwork",
    "build_models",
    "config_dict",
    "count_parameters",
    "get_preset",
    "n_latents_for",
]
