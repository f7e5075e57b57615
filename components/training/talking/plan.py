"""The plan of the video paper (Hegde et al., ACM MM 2022): which stages, on what, shaped by which keys.

* :data:`STAGES`: ``train_sync`` (the lip-sync expert), ``train_coarse`` (stage 1, the
  audio-visual upsampler), ``train_animate`` (stage 2, the photo animated by stage 1);
* :data:`UPSTREAM`: the networks each stage takes from earlier stages' ``model.pt``;
* :data:`TRAINS`: the networks each stage trains (what of the model config its fingerprint
  covers; the upstream networks enter it through their files' hashes);
* :data:`KNOBS`: the ``talking`` keys that are model config fields too (the ablations);
* :func:`model_config`, :func:`run_fingerprint`: params -> what a stage builds, whether its
  checkpoint still belongs to it.

``components.config.base.RUN_ONLY`` keys stay out of the fingerprints, as in every family.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from components.config import Params
from components.config.talking import TalkingParams
from components.config.base import RUN_ONLY
from components.errors import ConfigError
from components.io import fingerprint, sha256_file
from components.models.talking import ModelConfig, config_fields, get_preset

STAGES = ("train_sync", "train_coarse", "train_animate")
UPSTREAM: dict[str, dict[str, tuple[str, ...]]] = {
    "train_sync": {},
    "train_coarse": {"train_sync": ("expert",)},
    "train_animate": {"train_sync": ("expert",), "train_coarse": ("coarse",)},
}
TRAINS = {"train_sync": ("expert",), "train_coarse": ("coarse",), "train_animate": ("kp", "motion", "generator")}
KNOBS = {"lr_size": "lr_size", "audio": "audio", "identity": "identity"}
# Full-size frames a stage keeps per training clip (only the animation has full-size targets).
HR_FRAMES = {"train_sync": False, "train_coarse": False, "train_animate": True}


def model_config(talking: TalkingParams) -> ModelConfig:
    """The networks' sizes: ``talking.preset`` with ``talking.overrides`` and the ablation knobs applied."""
    clash = sorted(set(talking.overrides) & set(KNOBS.values()))
    if clash:
        raise ConfigError(f"params.yaml: talking.overrides: set {clash} with talking.{', talking.'.join(clash)} instead")
    knobs = {field: getattr(talking, key) for key, field in KNOBS.items()}
    try:
        return get_preset(talking.preset, **talking.overrides, **knobs)
    except (ValidationError, ValueError, TypeError) as exc:
        raise ConfigError(f"params.yaml: talking.overrides: {exc}") from None


def stage_dir(params: Params, stage: str) -> Path:
    return Path(params.talking.out_dir) / stage


def upstream_files(params: Params, stage: str) -> list[Path]:
    return [stage_dir(params, up) / "model.pt" for up in UPSTREAM[stage]]


def run_fingerprint(params: Params, name: str, cfg: ModelConfig) -> str:
    """What the stage learns from: its settings, the model, the shards and upstream models."""
    section = getattr(params, name).model_dump(mode="json", exclude=RUN_ONLY)
    talking = params.talking.model_dump(mode="json", exclude=set(RUN_ONLY) | set(KNOBS))
    files = {"shards": params.data_path("shards", "index.json")}
    files |= {up: stage_dir(params, up) / "model.pt" for up in UPSTREAM[name]}
    inputs = {key: sha256_file(path) for key, path in files.items() if path.is_file()}
    return fingerprint(name, section, talking, config_fields(cfg, TRAINS[name]), inputs)
