"""Networks of the video paper (Hegde et al., ACM MM 2022: talking-face video upsampling).

* ``expert`` (:class:`SyncExpert`): lower faces + mel window -> embeddings (lip sync);
* ``coarse`` (:class:`CoarseUpsampler`): stage 1, 8x8 window + mel -> coarse face;
* ``kp`` (:class:`KeypointDetector`), ``motion`` (:class:`DenseMotion`), ``generator``
  (:class:`AnimationGenerator`): stage 2, the identity photo animated by the coarse
  face (:func:`animate`); :class:`RandomWarp` for the keypoints' equivariance losses.

Sizes come from a :class:`ModelConfig` (presets ``paper`` and ``small``);
:func:`build_models` makes the five networks from a seed. Their files are of family
``"talking"`` (registered here); :func:`load_video_sr` gives the trained
:class:`VideoUpsampler`.
"""

from collections.abc import Mapping
from typing import Any

from components.models.checkpoint import register_family
from components.models.talking.animation import animate
from components.models.talking.coarse import CoarseUpsampler
from components.models.talking.generator import AnimationGenerator
from components.models.talking.keypoints import KeypointDetector
from components.models.talking.motion import DenseMotion
from components.models.talking.presets import (
    DEFAULT_PRESET,
    FAMILY,
    MODEL_NAMES,
    NETWORK_FIELDS,
    PRESETS,
    ModelConfig,
    build_models,
    config_fields,
    count_parameters,
    get_preset,
)
from components.models.talking.sync import SyncExpert, lower_half, sync_probability
from components.models.talking.transforms import RandomWarp
from components.models.talking.upsampler import MODEL_STAGE, IdentityState, VideoUpsampler, enlarge, load_video_sr


def config_dict(cfg: ModelConfig) -> dict[str, Any]:
    """The config a talking-face file records (JSON-ready)."""
    return cfg.model_dump(mode="json")


def _build(config: Mapping[str, Any], names: tuple[str, ...]) -> dict:
    return build_models(ModelConfig(**config), names=names)


# Only the fields of the networks a file holds count: an expert file serves any stage-2 setting.
register_family(FAMILY, build=_build, network_fields=NETWORK_FIELDS,
                settings="params talking: preset, overrides, lr_size, audio, identity")

__all__ = [
    "AnimationGenerator",
    "CoarseUpsampler",
    "DEFAULT_PRESET",
    "DenseMotion",
    "FAMILY",
    "IdentityState",
    "KeypointDetector",
    "MODEL_NAMES",
    "MODEL_STAGE",
    "ModelConfig",
    "NETWORK_FIELDS",
    "PRESETS",
    "RandomWarp",
    "SyncExpert",
    "VideoUpsampler",
    "animate",
    "build_models",
    "config_dict",
    "config_fields",
    "count_parameters",
    "enlarge",
    "get_preset",
    "load_video_sr",
    "lower_half",
    "sync_probability",
]
