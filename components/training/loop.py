"""The one training loop of every network of the project, in one file (in the spirit of nanoGPT).

A stage family (``components/training/face_sr/``, ...) hands the loop a :class:`Stage`,
its recipe: the networks, which of them train, their optimisers (and optional LR
schedulers, stepped after every step), a ``step(ctx, batch) -> losses`` function that
does the forward passes, backward passes and optimiser steps of one iteration (a GAN
step is two optimisers and a lazy regulariser, an encoder step one), a
``sample(networks, batch) -> columns`` function that draws the grid images (images or
video frames), which networks ``model.pt`` exports, and the family and JSON config
those files record. The loop owns everything else, the same for every stage:

* devices (:mod:`components.training.runtime`): CPU or CUDA with autocast (bf16 where
  the GPU has it, else fp16 with a loss scaler per optimiser); channels-last tensors
  when the runtime asks for them;
* several processes (``torchrun``): the loop wraps the trained networks in
  ``DistributedDataParallel``, which averages gradients across ranks. Each rank feeds
  on its own share of the data; rank 0 alone logs, draws samples and writes files;
* resuming: every ``checkpoint_every`` steps ``checkpoint.pt`` gets all the state
  (networks, optimisers, schedulers, scalers, the stage's extra tensors, step, data
  position and each rank's RNG states). The data order is a pure function of (seed,
  epoch), so a run killed at any point and restarted continues as if never stopped:
  same batches, same random draws, bit-identical weights on CPU;
* outputs in the stage folder: ``metrics.tsv`` (window means every ``log_every``
  steps, also sent to MLflow), ``samples/step-NNNNNN.png`` every ``sample_every`` steps
  and ``samples/final.png``, ``model.pt`` (the exported networks) and ``summary.json``
  (wall time, samples/s, final losses).

When to run, resume or skip a stage is :mod:`components.training.stage`'s business.
"""

from __future__ import annotations

import contextlib
import logging
import resource
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from components.figures.grids import save_grid
from components.io import write_json_atomic
from components.models import checkpoint as ckpt_io
from components.tracking import StageRun
from components.training.feeds import Batch, Batches, preview_batch
from components.training.metrics_table import MetricsTable
from components.training.runtime import Runtime, gather_rng_states, seed_everything, set_rng_state

log = logging.getLogger(__name__)


# -- what a stage gives the loop ---------------------------------------------------------------

@dataclass
class Stage:
    """One training stage's recipe; see the module docstring.

    ``name`` is the stage (the checkpoint header's ``stage``), ``family`` and ``config``
    what its files record (:mod:`components.models.checkpoint`: the family's builder
    rebuilds the exported networks from that config). ``networks`` is everything
    checkpointed (trained, frozen, EMA). ``views`` optionally replaces a network by the
    module ``step`` calls instead (e.g. a generator whose forward also returns its ws):
    DDP wraps the view, which shares the network's parameters. ``schedulers`` (by
    optimiser name) are stepped after every step. ``export`` maps names in ``model.pt``
    to networks. ``state`` holds extra tensors the step updates in place
    (checkpointed). ``metrics`` are the loss names, the columns of ``metrics.tsv``.
    """

    name: str
    family: str
    config: dict[str, Any]
    networks: dict[str, nn.Module]
    trained: tuple[str, ...]
    optimizers: dict[str, torch.optim.Optimizer]
    step: Callable[[StepContext, Batch], dict[str, torch.Tensor]]
    sample: Callable[[Mapping[str, nn.Module], Batch], list[tuple[str, torch.Tensor]]]
    export: dict[str, str]
    metrics: tuple[str, ...]
    views: dict[str, nn.Module] = field(default_factory=dict)
    schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler] = field(default_factory=dict)
    state: dict[str, torch.Tensor] = field(default_factory=dict)
    n_preview: int = 8


@dataclass(frozen=True)
class LoopConfig:
    """How long and how often: steps, the cadences of logs, samples and checkpoints."""

    steps: int
    log_every: int
    sample_every: int
    checkpoint_every: int
    seed: int  # of the global RNGs (per rank): dropout, noise the step draws
    fingerprint: str  # identity of settings and inputs: a checkpoint of other ones is not resumed


class StepContext:
    """What a stage's ``step`` function sees: callable networks, AMP, optimisation."""

    def __init__(self, nets: Mapping[str, nn.Module], optimizers: Mapping[str, torch.optim.Optimizer],
                 scalers: Mapping[str, torch.amp.GradScaler], runtime: Runtime, batch_size: int) -> None:
        self.nets, self.optimizers, self.scalers = nets, optimizers, scalers
        self.runtime, self.batch_size = runtime, batch_size
        self.step = 0

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    @property
    def images_seen(self) -> int:
        """Training images consumed by all ranks after this step (for EMA schedules)."""
        return (self.step + 1) * self.batch_size * self.runtime.world_size

    def autocast(self) -> contextlib.AbstractContextManager:
        dtype = self.runtime.amp_dtype
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def optimize(self, name: str, loss: torch.Tensor) -> None:
        """One optimiser step on ``loss`` (zero grads, scaled backward, step)."""
        opt, scaler = self.optimizers[name], self.scalers[name]
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()


# -- the loop -----------------------------------------------------------------------------------

def train(stage: Stage, data: Batches, cfg: LoopConfig, out_dir: Path, runtime: Runtime,
          tracker: StageRun | None = None, resume: Mapping[str, Any] | None = None, *,
          progress: bool = True) -> dict[str, Any]:
    """Train ``stage`` to ``cfg.steps`` (from ``resume``, a loaded checkpoint, if given).

    ``progress=False`` demotes the per-window loss lines to debug level.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    table = MetricsTable(out_dir / "metrics.tsv", stage.metrics)
    scalers = {name: torch.amp.GradScaler(runtime.device.type, enabled=runtime.amp_dtype == torch.float16)
               for name in stage.optimizers}

    start_step, epoch, consumed = 0, 0, 0
    if resume is not None:
        start_step, epoch, consumed = load_state(stage, scalers, resume, runtime)
        log.info("%s: resuming at step %d (epoch %d, batch %d)", stage.name, start_step, epoch, consumed)
    else:
        seed_everything(cfg.seed, runtime.rank)
    if runtime.is_main:
        table.reset(keep_until=start_step)

    for name, net in stage.networks.items():
        net.train(name in stage.trained)
    nets = {name: stage.views.get(name, net) for name, net in stage.networks.items()}
    if runtime.distributed:
        ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        nets |= {name: DistributedDataParallel(nets[name], device_ids=ids) for name in stage.trained}
    ctx = StepContext(nets, stage.optimizers, scalers, runtime, data.batch_size)
    preview = to_device(preview_batch(data, stage.n_preview), runtime) if runtime.is_main else None

    window: dict[str, list[torch.Tensor]] = {}
    train_seconds, last = 0.0, {}
    batches = stream(data, epoch, consumed)
    for step in range(start_step, cfg.steps):
        ctx.step = step
        t0 = time.perf_counter()
        epoch, consumed, batch = next(batches)
        losses = stage.step(ctx, to_device(batch, runtime))
        for scheduler in stage.schedulers.values():
            scheduler.step()
        for key, value in losses.items():
            window.setdefault(key, []).append(value.detach().float())
        train_seconds += time.perf_counter() - t0
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            last = reduce_means(window, runtime)
            window = {}
            if runtime.is_main:
                table.append(done, last)
                if tracker is not None:
                    tracker.log_metrics(last, step=done)
                rate = (done - start_step) * data.batch_size * runtime.world_size / max(train_seconds, 1e-9)
                log.log(logging.INFO if progress else logging.DEBUG, "%s %d/%d | %s | %.1f samples/s", stage.name,
                        done, cfg.steps, " ".join(f"{k} {v:.4f}" for k, v in last.items()), rate)
        if done % cfg.sample_every == 0 and runtime.is_main:
            draw(stage, preview, out_dir / "samples" / f"step-{done:06d}.png", tracker)
        if done % cfg.checkpoint_every == 0 and done < cfg.steps:
            save_state(stage, scalers, cfg, runtime, out_dir / "checkpoint.pt", done, epoch, consumed, final=False)

    save_state(stage, scalers, cfg, runtime, out_dir / "checkpoint.pt", cfg.steps, epoch, consumed, final=True)
    summary: dict[str, Any] = {}
    if runtime.is_main:
        draw(stage, preview, out_dir / "samples" / "final.png", tracker)
        exported = {name: stage.networks[net] for name, net in stage.export.items()}
        ckpt_io.save_model(out_dir / "model.pt", family=stage.family, stage=stage.name, config=stage.config,
                           networks=exported, step=cfg.steps)
        steps_run = cfg.steps - start_step
        summary = {
            "stage": stage.name, "steps": cfg.steps, "resumed_from": start_step,
            "batch_size": data.batch_size, "world_size": runtime.world_size, "device": str(runtime.device),
            "wall_s": round(time.perf_counter() - started, 2), "train_s": round(train_seconds, 2),
            "samples_per_s": round(steps_run * data.batch_size * runtime.world_size / max(train_seconds, 1e-9), 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            **({"peak_cuda_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)}
               if runtime.device.type == "cuda" else {}),
            **{f"final.{k}": round(v, 6) for k, v in last.items()},
        }
        write_json_atomic(out_dir / "summary.json", summary)
        if tracker is not None:
            tracker.log_metrics({k: v for k, v in summary.items() if isinstance(v, (int, float))})
            for name in ("summary.json", "metrics.tsv"):
                tracker.log_artifact(out_dir / name)
    return summary


def stream(data: Batches, epoch: int, consumed: int) -> Iterator[tuple[int, int, Batch]]:
    """Endless (epoch, batches consumed in it, batch), starting after ``consumed`` batches."""
    while True:
        empty = True
        for i, batch in enumerate(data.epoch(epoch, skip=consumed), start=consumed + 1):
            empty = False
            yield epoch, i, batch
        if empty and consumed == 0:
            raise RuntimeError(f"epoch {epoch} has no batch of {data.batch_size}: too little training data")
        epoch, consumed = epoch + 1, 0


def to_device(batch: Batch, runtime: Runtime) -> Batch:
    out = {}
    for key, value in batch.items():
        value = value.to(runtime.device, non_blocking=True)
        if runtime.channels_last and value.ndim == 4:
            value = value.contiguous(memory_format=torch.channels_last)
        out[key] = value
    return out


def reduce_means(window: Mapping[str, list[torch.Tensor]], runtime: Runtime) -> dict[str, float]:
    """Mean of each loss over the logging window and over the ranks (one sync per log)."""
    if not window:
        return {}
    names = sorted(window)
    means = torch.stack([torch.stack(window[n]).mean() for n in names])
    if runtime.distributed:
        dist.all_reduce(means)
        means /= runtime.world_size
    return dict(zip(names, means.tolist()))


def draw(stage: Stage, preview: Batch | None, path: Path, tracker: StageRun | None) -> None:
    """Sample grid of the preview batch with the networks in eval mode (then restored);
    columns of images or video frames (:mod:`components.figures.grids`)."""
    modes = {name: net.training for name, net in stage.networks.items()}
    for net in stage.networks.values():
        net.eval()
    try:
        with torch.no_grad():
            columns = stage.sample(stage.networks, preview)
    finally:
        for name, net in stage.networks.items():
            net.train(modes[name])
    save_grid(path, columns)
    if tracker is not None:
        tracker.log_artifact(path, "samples")


# -- state: checkpoint, resume ---------------------------------------------------------------------

def save_state(stage: Stage, scalers: Mapping[str, torch.amp.GradScaler], cfg: LoopConfig, runtime: Runtime,
               path: Path, step: int, epoch: int, consumed: int, *, final: bool) -> None:
    rngs = gather_rng_states(runtime)
    if not runtime.is_main:
        return
    ckpt_io.save(path, "checkpoint", family=stage.family, stage=stage.name, config=stage.config, body={
        "fingerprint": cfg.fingerprint, "step": step, "epoch": epoch, "consumed": consumed, "final": final,
        "networks": {name: net.state_dict() for name, net in stage.networks.items()},
        "optimizers": {name: opt.state_dict() for name, opt in stage.optimizers.items()},
        "schedulers": {name: sched.state_dict() for name, sched in stage.schedulers.items()},
        "scalers": {name: scaler.state_dict() for name, scaler in scalers.items()},
        "state": {name: value.detach().cpu() for name, value in stage.state.items()},
        "rng": rngs,
    })


def load_state(stage: Stage, scalers: Mapping[str, torch.amp.GradScaler], ckpt: Mapping[str, Any],
               runtime: Runtime) -> tuple[int, int, int]:
    """Restore a checkpoint into the stage; returns (step, epoch, batches consumed)."""
    for name, net in stage.networks.items():
        net.load_state_dict(ckpt["networks"][name])
    for name, opt in stage.optimizers.items():
        opt.load_state_dict(ckpt["optimizers"][name])
    for name, sched in stage.schedulers.items():
        sched.load_state_dict(ckpt["schedulers"][name])
    for name, scaler in scalers.items():
        if ckpt["scalers"].get(name):
            scaler.load_state_dict(ckpt["scalers"][name])
    for name, value in stage.state.items():
        value.copy_(ckpt["state"][name])
    rngs = ckpt["rng"]
    if len(rngs) == runtime.world_size:
        set_rng_state(rngs[runtime.rank])
    else:  # another number of processes: the data order changes anyway, reseed by step
        log.warning("checkpoint written by %d processes, resuming with %d: random draws restart",
                    len(rngs), runtime.world_size)
        seed_everything(int(ckpt["step"]), runtime.rank)
    return int(ckpt["step"]), int(ckpt["epoch"]), int(ckpt["consumed"])
