"""Networks of "Face super-resolution with an ear" (Meishvili et al., CVPR 2020).

* ``G`` (:class:`Generator`): StyleGAN-style face generator, z / per-layer codes -> face.
* ``D`` (:class:`Discriminator`): residual StyleGAN2 discriminator for training G.
* ``Eh`` (:class:`HighResEncoder`): high-res face -> G's latent code (inverts G).
* ``El`` (:class:`LowResEncoder`): 8x8 face -> latent code.
* ``Ea`` (:class:`AudioEncoder`): 257 x 257 log-spectrogram of 4 s of speech -> latent code.
* ``F`` (:class:`ResidualFusion`): (El code, Ea code) -> fused code, a residual on El's.

Sizes come from a :class:`ModelConfig` (presets ``paper`` and ``small``);
:func:`build_models` makes all six, deterministically from a seed.
"""

from components.models.face_sr.encoders import AudioEncoder, HighResEncoder, LowResEncoder
from components.models.face_sr.fusion import ResidualFusion
from components.models.face_sr.generator import Discriminator, Generator, MappingNetwork, SynthesisNetwork, n_latents_for
from components.models.face_sr.presets import (
    DEFAULT_PRESET,
    MODEL_NAMES,
    PRESETS,
    ModelConfig,
    build_models,
    count_parameters,
    get_preset,
)

__all__ = [
    "AudioEncoder",
    "DEFAULT_PRESET",
    "Discriminator",
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
    "count_parameters",
    "get_preset",
    "n_latents_for",
]
