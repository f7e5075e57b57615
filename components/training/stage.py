"""The run policy of every training stage: run, resume, or skip as up to date.

A stage family describes one run of one of its stages as a :class:`StagePlan`: where
its folder is, how many steps, the fingerprint of what it learns from (settings, model
config, input files), the files it needs, the runtime it wants, and how to build its
recipe (:class:`~components.training.loop.Stage`) and feed. :func:`run_stage` then does
what every stage needs, written once:

* a missing upstream file is an error naming it;
* the folder's ``checkpoint.pt`` is resumed only when it belongs to this family, stage
  and fingerprint; a finished run at the same step count, with its outputs all there,
  makes the stage a no-op that returns the old summary; a checkpoint beyond the steps
  asked for, or of other settings or inputs, means starting over in an emptied folder;
* one MLflow run per execution (rank 0; the other ranks of a ``torchrun`` launch get a
  no-op recorder), around :func:`~components.training.loop.train` and the plan's
  optional ``report`` (e.g. the judge's scores on held-out faces).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from components.config import Params
from components.models.checkpoint import CheckpointError, load_checkpoint, load_model
from components.tracking import StageRun, stage_run
from components.training import loop
from components.training.feeds import Batches
from components.training.runtime import Runtime, setup_runtime, teardown_runtime

log = logging.getLogger(__name__)

OUTPUTS = ("checkpoint.pt", "model.pt", "metrics.tsv", "summary.json")
"""What :func:`~components.training.loop.train` writes into a stage folder (and ``samples/``)."""


@dataclass
class StagePlan:
    """One run of one stage, as its family plans it; see the module docstring.

    ``config`` is what the loop gets (steps, cadences, seed, and the fingerprint a
    checkpoint must carry to be resumed). ``build(runtime)`` returns the recipe and the feed, in that process, on that device.
    ``report(stage, runtime, tracker)``, called on rank 0 after training, writes the
    stage's extra ``outputs`` (file names in ``out_dir``). ``needs`` are the files that
    must exist before the stage starts (upstream models), ``inputs`` those tagged on the
    MLflow run, ``section`` the params logged with it.
    """

    name: str
    family: str
    params: Params
    out_dir: Path
    config: loop.LoopConfig
    build: Callable[[Runtime], tuple[loop.Stage, Batches]]
    section: dict[str, Any]
    needs: list[Path] = field(default_factory=list)
    inputs: list[Path] = field(default_factory=list)
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    threads: int = 2
    report: Callable[[loop.Stage, Runtime, StageRun], None] | None = None
    outputs: tuple[str, ...] = ()


def previous_run(plan: StagePlan) -> dict[str, Any] | None:
    """The stage's checkpoint when it belongs to this plan, else None (start over)."""
    path = plan.out_dir / "checkpoint.pt"
    if not path.exists():
        return None
    try:
        ckpt = load_checkpoint(path, expect_family=plan.family, expect_stage=plan.name, expect_kind="checkpoint")
    except CheckpointError as exc:
        log.warning("%s: cannot resume (%s): training from scratch", plan.name, exc)
        return None
    if ckpt.get("fingerprint") != plan.config.fingerprint:
        log.info("%s: settings or inputs changed since %s: training from scratch", plan.name, path)
        return None
    if ckpt["step"] > plan.config.steps:
        log.info("%s: checkpoint is at step %d, beyond steps=%d: training from scratch", plan.name, ckpt["step"],
                 plan.config.steps)
        return None
    return ckpt


def up_to_date(plan: StagePlan, ckpt: dict[str, Any] | None) -> bool:
    """A finished run of this plan whose outputs are all in the folder."""
    return (ckpt is not None and bool(ckpt["final"]) and ckpt["step"] == plan.config.steps
            and all((plan.out_dir / name).is_file() for name in ("model.pt", "summary.json", *plan.outputs)))


def clear_outputs(plan: StagePlan) -> None:
    for name in (*OUTPUTS, *plan.outputs):
        (plan.out_dir / name).unlink(missing_ok=True)
    shutil.rmtree(plan.out_dir / "samples", ignore_errors=True)


def run_stage(plan: StagePlan, *, progress: bool = True) -> dict[str, Any]:
    """Run (or resume, or skip as up to date) the planned stage; returns its summary.

    Launched by ``torchrun``, every rank calls this: rank 0 alone talks to MLflow, writes
    the stage folder and returns the summary (the other ranks return an empty dict).
    """
    for path in plan.needs:
        if not path.is_file():
            raise CheckpointError(f"{path}: no such model: run the earlier stages first (`dvc repro {plan.name}`)")
    resume = previous_run(plan)
    if up_to_date(plan, resume):
        log.info("%s: up to date (%d steps, same settings and inputs): nothing to do", plan.name, plan.config.steps)
        return json.loads((plan.out_dir / "summary.json").read_text())

    runtime = setup_runtime(plan.device, amp=plan.amp, channels_last=plan.channels_last, threads=plan.threads)
    try:
        if resume is None and runtime.is_main:
            clear_outputs(plan)
        plan.out_dir.mkdir(parents=True, exist_ok=True)
        stage, data = plan.build(runtime)
        tracking = stage_run(plan.name, plan.params, section=plan.section, inputs=plan.inputs) if runtime.is_main \
            else contextlib.nullcontext(StageRun(None))
        with tracking as tracker:
            summary = loop.train(stage, data, plan.config, plan.out_dir, runtime, tracker, resume, progress=progress)
            if plan.report is not None and runtime.is_main:
                plan.report(stage, runtime, tracker)
        return summary
    finally:
        teardown_runtime(runtime)


# -- what every family's recipes need around their builders ---------------------------------------

def load_upstream(upstream: Mapping[str, tuple[str, ...]], folder: Callable[[str], Path], *, family: str,
                  config: dict[str, Any]) -> dict[str, nn.Module]:
    """The networks a stage takes from earlier stages: ``upstream`` maps each earlier stage to
    the names it gives, read from ``folder(stage) / "model.pt"`` of ``family`` and checked
    against ``config``."""
    up: dict[str, nn.Module] = {}
    for prev, names in upstream.items():
        up |= load_model(folder(prev) / "model.pt", names, expect_family=family, expect_stage=prev,
                         expect_config=config).networks
    return up


def to_runtime_layout(stage: loop.Stage, runtime: Runtime) -> loop.Stage:
    """The stage's networks in channels-last memory when the runtime asks for it."""
    if runtime.channels_last:
        for net in stage.networks.values():
            net.to(memory_format=torch.channels_last)
    return stage
