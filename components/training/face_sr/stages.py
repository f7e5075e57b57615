"""Running one training stage of "Face super-resolution with an ear": ``train_stage(name, params)``.

A training stage (:data:`~.plan.STAGES`) becomes a
:class:`~components.training.stage.StagePlan` (its folder, steps and cadences,
fingerprint, upstream files, runtime settings, and how to build its recipe and feed)
that :func:`~components.training.stage.run_stage` runs, resumes or skips. The judge
(stage ``evaluators``) has its own plan, :func:`.judge.judge_plan`, and entry point.
"""

from __future__ import annotations

from typing import Any

from components.config import Params
from components.models.face_sr import FAMILY, config_dict
from components.training import loop
from components.training.face_sr.data import training_data
from components.training.face_sr.plan import STAGES, model_config, run_fingerprint, stage_dir, steps_of, upstream_files
from components.training.face_sr.recipes import build_stage
from components.training.feeds import Batches
from components.training.runtime import Runtime
from components.training.stage import StagePlan, run_stage



def stage_plan(name: str, params: Params) -> StagePlan:
    """The run of training stage ``name`` (one of :data:`STAGES`) as the run policy needs it."""
    p, fs = getattr(params, name), params.face_sr
    cfg = model_config(fs)
    fp = run_fingerprint(params, name, cfg)
    config = loop.LoopConfig(steps_of(params, name, cfg), p.log_every, p.sample_every, p.checkpoint_every, fs.seed, fp)

    def build(runtime: Runtime) -> tuple[loop.Stage, Batches]:
        data = training_data(params, name, cfg, p.batch_size, runtime)
        return build_stage(name, params, cfg, runtime, data), data

    section = {**p.model_dump(mode="json"), "face_sr": fs.model_dump(mode="json"), "model": config_dict(cfg)}
    needs = upstream_files(params, name)
    return StagePlan(name, FAMILY, params, stage_dir(params, name), config, build, section, needs=needs,
                     inputs=[params.data_path("shards"), *needs], device=fs.device, amp=fs.amp,
                     channels_last=fs.channels_last, threads=fs.threads)


def train_stage(name: str, params: Params, *, progress: bool = True) -> dict[str, Any]:
    """Run (or resume, or skip as up to date) training stage ``name``.

    Launched by ``torchrun``, every rank calls this: rank 0 alone talks to MLflow, writes
    the stage folder and returns the summary (the other ranks return an empty dict).
    """
    if name not in STAGES:
        raise ValueError(f"unknown training stage {name!r}: expected one of {STAGES}")
    return run_stage(stage_plan(name, params), progress=progress)
