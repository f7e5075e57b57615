"""The plan of "Face super-resolution with an ear": which stages, on what, shaped by which keys.

* :data:`STAGES`: the five training stages in order (the judge of the evaluation, stage
  ``evaluators``, trains like them: ``components/training/face_sr/judge.py``);
* :data:`UPSTREAM`: the networks each stage takes from earlier stages' ``model.pt``;
* :data:`TRAINS`: the networks each stage trains, i.e. what of the model config its
  fingerprint covers (the upstream networks enter it through their files' hashes);
* :data:`KNOBS`: the ``face_sr`` keys that are model config fields too (the ablations),
  and ``components.config.base.RUN_ONLY``, the settings that change how a run goes, not what it learns;
* :func:`model_config`, :func:`run_fingerprint`, :func:`steps_of`: params -> what a
  stage builds, whether its checkpoint still belongs to it, how long it trains.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from components.config import FaceSRParams, Params
from components.config.base import RUN_ONLY
from components.errors import ConfigError
from components.io import fingerprint, sha256_file
from components.models.face_sr import ModelConfig, get_preset
from components.models.face_sr.presets import config_fields

STAGES = ("train_g", "train_eh", "train_el", "train_ea", "train_fusion")
# The networks each stage takes from the model.pt of earlier stages.
UPSTREAM: dict[str, dict[str, tuple[str, ...]]] = {
    "train_g": {},
    "train_eh": {"train_g": ("G",)},
    "train_el": {"train_eh": ("Eh", "G")},
    "train_ea": {"train_eh": ("Eh", "G")},
    "train_fusion": {"train_eh": ("Eh", "G"), "train_el": ("El",), "train_ea": ("Ea",)},
}
USES_AUDIO = {"train_ea", "train_fusion"}
# The networks each stage trains (what its fingerprint covers of the model config; the
# upstream networks enter it through the hashes of their model.pt files).
TRAINS = {"train_g": ("G", "D"), "train_eh": ("Eh", "G"), "train_el": ("El",), "train_ea": ("Ea",),
          "train_fusion": ("F",)}
# face_sr keys that are model config fields too (the ablation knobs), by their config name.
KNOBS = {"lr_size": "lr_size", "audio_seconds": "audio_seconds", "audio": "fusion_audio", "fusion": "fusion"}


def model_config(face_sr: FaceSRParams) -> ModelConfig:
    """The networks' sizes: ``face_sr.preset`` with ``face_sr.overrides`` and the ablation
    knobs (``face_sr.lr_size``, ``audio_seconds``, ``audio``, ``fusion``) applied."""
    clash = sorted(set(face_sr.overrides) & set(KNOBS.values()))
    if clash:
        raise ConfigError(f"params.yaml: face_sr.overrides: set {clash} with face_sr."
                          f"{', face_sr.'.join(k for k, v in KNOBS.items() if v in clash)} instead")
    knobs = {field: getattr(face_sr, key) for key, field in KNOBS.items()}
    try:
        return get_preset(face_sr.preset, **face_sr.overrides, **knobs)
    except (ValidationError, ValueError, TypeError) as exc:
        raise ConfigError(f"params.yaml: face_sr.overrides: {exc}") from None


def stage_dir(params: Params, stage: str) -> Path:
    return Path(params.face_sr.out_dir) / stage


def upstream_files(params: Params, stage: str) -> list[Path]:
    return [stage_dir(params, up) / "model.pt" for up in UPSTREAM[stage]]


def run_fingerprint(params: Params, name: str, cfg: ModelConfig) -> str:
    """What the stage learns from: its settings, the model, the shards and upstream models."""
    section = getattr(params, name).model_dump(mode="json", exclude=RUN_ONLY)
    face_sr = params.face_sr.model_dump(mode="json", exclude=set(RUN_ONLY) | set(KNOBS))  # knobs: in the config part
    files = {"shards": params.data_path("shards", "index.json")}  # index.json holds every shard's sha256
    files |= {up: stage_dir(params, up) / "model.pt" for up in UPSTREAM[name]}
    inputs = {key: sha256_file(path) for key, path in files.items() if path.is_file()}
    return fingerprint(name, section, face_sr, config_fields(cfg, TRAINS[name]), inputs)


def steps_of(params: Params, name: str, cfg: ModelConfig) -> int:
    """Steps the stage trains: none for ``train_fusion`` with fusion off (F is unused then;
    the stage only bundles G, El and Ea into the model file inference reads)."""
    return 0 if name == "train_fusion" and not cfg.fusion else getattr(params, name).steps
