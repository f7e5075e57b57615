"""Typed, validated view of ``params.yaml``.

One section per DVC stage (stage name = module in ``pipelines/`` = section here), plus
``common`` (shared by every stage), ``tracking`` (MLflow), ``orchestration`` and
``sweeps``. The sections are defined by concern: the data stages in
:mod:`components.config.data`, the face-SR paper in :mod:`components.config.face_sr`, the video paper in
:mod:`components.config.talking`, its codec in :mod:`components.config.codec`,
the running of it all in :mod:`components.config.orchestration`; :class:`Params` is
their union. A second paper brings its own module with one ``...Sections`` class, which
becomes one more base of :class:`Params`.

The values live in ``params.yaml`` only: the classes validate (types, bounds, unknown
keys) and hold no values of their own, and a params file that lacks a section or key
gets it from the project's ``params.yaml`` (:mod:`components.config.base`).
An invalid value is an error naming the file, the section and the key, e.g.
``params.yaml: faces.detect_every: Input should be greater than or equal to 1``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from pydantic import ValidationError, model_validator

from components.config import base
from components.config.base import Section, format_errors, project_params_path, set_dotted
from components.config.data import (
    AudioParams,
    CommonParams,
    DataSections,
    DownloadParams,
    FacesParams,
    ReportParams,
    ShardsParams,
    SynthParams,
)
from components.config.face_sr import (
    EvaluateParams,
    EvaluatorsParams,
    FaceSRParams,
    FaceSRSections,
    JudgeFacesParams,
    TrainEaParams,
    TrainEhParams,
    TrainElParams,
    TrainFusionParams,
    TrainGParams,
    TrainStageParams,
)
from components.config.codec import BaselineParams, CodecParams, CodecSections, EvaluateCodecParams
from components.config.talking import (
    EvaluateVideoParams,
    TalkingParams,
    TalkingSections,
    TrainAnimateParams,
    TrainCoarseParams,
    TrainSyncParams,
)
from components.config.orchestration import OrchestrationParams, OrchestrationSections, SweepParams, TrackingParams
from components.errors import ConfigError

__all__ = [
    "AudioParams", "BaselineParams", "CodecParams", "CommonParams", "EvaluateCodecParams", "EvaluateVideoParams", "TalkingParams", "TrainAnimateParams", "TrainCoarseParams",
    "TrainSyncParams", "DownloadParams", "EvaluateParams", "EvaluatorsParams", "FaceSRParams",
    "FacesParams", "JudgeFacesParams", "OrchestrationParams", "Params", "ReportParams", "Section", "ShardsParams",
    "SweepParams", "SynthParams", "TrackingParams", "TrainEaParams", "TrainEhParams", "TrainElParams", "TrainFusionParams",
    "TrainGParams", "TrainStageParams", "default_params", "load_params", "parse_params", "project_params_path",
    "set_dotted",
]


class Params(OrchestrationSections, CodecSections, TalkingSections, FaceSRSections, DataSections):
    """Every section of ``params.yaml``."""

    @model_validator(mode="after")
    def _sweeps_are_valid_overrides(self) -> "Params":
        """Every variant's overrides must give valid params: a typo fails at load, not mid-sweep."""
        params = {**self.model_dump(mode="json", exclude={"sweeps"}), "sweeps": {}}
        for name, sweep in self.sweeps.items():
            for variant, overrides in sweep.variants.items():
                tree = copy.deepcopy(params)
                try:
                    for key, value in overrides.items():
                        set_dotted(tree, key, value)
                    Params.model_validate(tree)
                except (ValidationError, ConfigError) as exc:
                    detail = format_errors(f"variant {variant}", exc) if isinstance(exc, ValidationError) else str(exc)
                    raise ValueError(f"sweep {name}: {detail}") from None
        return self


def parse_params(tree: dict[str, Any] | None, *, source: str = "params.yaml") -> Params:
    """Validate a params tree; the sections and keys it lacks come from the project's params.yaml."""
    return base.parse(Params, tree, source)


def load_params(path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None) -> Params:
    """Read ``path`` (completed from the project's params.yaml), apply ``overrides`` (dotted
    keys, e.g. ``{"faces.detect_every": 3}``) and validate."""
    return base.load(Params, path, overrides)


def default_params(overrides: dict[str, Any] | None = None) -> Params:
    """The project's params.yaml, with ``overrides`` (dotted keys) applied."""
    return load_params(project_params_path(), overrides)
