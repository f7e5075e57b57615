"""The training loop of the face-SR stages, in one file (in the spirit of nanoGPT).

A stage (``components/training/face_sr/``) hands the loop a :class:`Stage`: its
networks, which of them train, their optimisers, a ``step(ctx, batch) -> losses``
function that does the forward passes, backward passes and optimiser steps of one
iteration (a GAN step is two optimisers and a lazy regulariser, an encoder step one),
and a ``sample(networks, batch) -> columns`` function that draws the grid images. The
loop owns everything else, the same for all five stages:

* devices: CPU (``torch.set_num_threads``) or CUDA with autocast (bf16 where the GPU
  has it, else fp16 with a loss scaler per optimiser); channels-last tensors on both;
* several processes (``torchrun``): when ``WORLD_SIZE > 1`` :func:`setup_runtime`
  joins the process group (gloo on CPU, NCCL on GPU) and the loop wraps the trained
  networks in ``DistributedDataParallel``, which averages gradients across ranks. Each
  rank feeds on its own share of the data; rank 0 alone logs, draws samples and writes
  files; all ranks meet at a barrier at the end;
* resuming: every ``checkpoint_every`` steps ``checkpoint.pt`` gets all the state
  (networks, optimisers, scalers, the stage's extra tensors, step, data position and
  each rank's RNG states). The data order is a pure function of (seed, epoch), so a run
  killed at any point and restarted continues as if never stopped: same batches, same
  random draws, bit-identical weights on CPU;
* outputs in the stage folder: ``metrics.tsv`` (window means every ``log_every``
  steps, also sent to MLflow), ``samples/step-NNNNNN.png`` every ``sample_every`` steps
  and ``samples/final.png``, ``model.pt`` (the exported networks) and ``summary.json``
  (wall time, samples/s, final losses).
"""

from __future__ import annotations

import contextlib
import logging
import os
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

from components.errors import ConfigError
from components.io import write_json_atomic
from components.models.face_sr import ModelConfig
from components.tracking import StageRun
from components.models import checkpoint as ckpt_io
from components.training.feeds import Batch, Batches, preview_batch
from components.figures.grids import save_grid
from components.training.metrics_table import MetricsTable

log = logging.getLogger(__name__)


# -- where the loop runs ------------------------------------------------------------------

@dataclass(frozen=True)
class Runtime:
    """Device, precision and process group of this process."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    amp_dtype: torch.dtype | None = None  # autocast dtype; None: full precision
    channels_last: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup_runtime(device: str = "auto", *, amp: bool = True, channels_last: bool = True,
                  threads: int = 2) -> Runtime:
    """Pick the device and join the process group when launched by ``torchrun``.

    AMP applies on CUDA only (CPU bf16 is slower than float32 on most processors).
    Channels-last (NHWC) applies on both: cuDNN's tensor-core kernels want it, and on
    CPU oneDNN's NHWC convolutions made every small-preset step 15-22% cheaper.

    CPU threads: the small networks run thousands of tiny parallel regions per step.
    OpenMP's default is to spin while waiting for the other threads; on a machine shared
    with other work (CI, a laptop) a spinning thread burns the time slice its partner
    needs, and a 2-thread train_g step measured 2-17x slower than a 1-thread one on a
    busy 2-core machine. The stage entry points therefore default ``OMP_WAIT_POLICY``
    to ``PASSIVE`` (it must be set before torch loads), which kept 2 threads within ~25%
    of 1 thread there while still using both cores when they are free.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("params.yaml: face_sr.device is 'cuda' but torch sees no CUDA device")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        torch.set_num_threads(threads)
        dev = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    amp_dtype = None
    if amp and device == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return Runtime(dev, rank, world_size, amp_dtype, channels_last)


def teardown_runtime(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


# -- what a stage gives the loop ---------------------------------------------------------------

@dataclass
class Stage:
    """One training stage; see the module docstring.

    ``networks`` is everything checkpointed (trained, frozen, EMA). ``views`` optionally
    replaces a network by the module ``step`` calls instead (e.g. a generator whose
    forward also returns its ws): DDP wraps the view, which shares the network's
    parameters. ``export`` maps names in ``model.pt`` to networks. ``state`` holds extra
    tensors the step updates in place (checkpointed). ``metrics`` are the loss names,
    the columns of ``metrics.tsv``.
    """

    name: str
    networks: dict[str, nn.Module]
    trained: tuple[str, ...]
    optimizers: dict[str, torch.optim.Optimizer]
    step: Callable[[StepContext, Batch], dict[str, torch.Tensor]]
    sample: Callable[[Mapping[str, nn.Module], Batch], list[tuple[str, torch.Tensor]]]
    export: dict[str, str]
    metrics: tuple[str, ...]
    views: dict[str, nn.Module] = field(default_factory=dict)
    state: dict[str, torch.Tensor] = field(default_factory=dict)
    n_preview: int = 8


@dataclass(frozen=True)
class LoopConfig:
    steps: int
    log_every: int
    sample_every: int
    checkpoint_every: int
    seed: int
    model_config: ModelConfig
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
        ckpt_io.save_model(out_dir / "model.pt", stage.name, cfg.model_config, exported, cfg.steps)
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
    """Sample grid of the preview batch with the networks in eval mode (then restored)."""
    modes = {name: net.training for name, net in stage.networks.items()}
    for net in stage.networks.values():
        net.eval()
    try:
        with torch.no_grad():
            columns = stage.sample(stage.networks, preview)
    finally:
        for name, net in stage.networks.items():
            net.train(modes[name])
    size = max(images.shape[-1] for _, images in columns if images.shape[1] == 3)  # faces, not spectrograms
    save_grid(path, columns, size)
    if tracker is not None:
        tracker.log_artifact(path, "samples")


# -- state: seeding, checkpoint, resume ------------------------------------------------------------

def seed_everything(seed: int, rank: int) -> None:
    """Seed torch, numpy and python RNGs; ranks differ so they draw different noise."""
    import random

    import numpy as np

    value = seed * 1000 + rank
    torch.manual_seed(value)
    np.random.seed(value)
    random.seed(value)


def gather_rng(runtime: Runtime) -> list[dict[str, Any]]:
    """The RNG states of every rank (a collective: all ranks call it at the same step)."""
    state = ckpt_io.rng_state()
    if not runtime.distributed:
        return [state]
    states: list[Any] = [None] * runtime.world_size
    dist.all_gather_object(states, state)
    return states


def save_state(stage: Stage, scalers: Mapping[str, torch.amp.GradScaler], cfg: LoopConfig, runtime: Runtime,
               path: Path, step: int, epoch: int, consumed: int, *, final: bool) -> None:
    rngs = gather_rng(runtime)
    if not runtime.is_main:
        return
    ckpt_io.save(path, "checkpoint", stage.name, cfg.model_config, {
        "fingerprint": cfg.fingerprint, "step": step, "epoch": epoch, "consumed": consumed, "final": final,
        "networks": {name: net.state_dict() for name, net in stage.networks.items()},
        "optimizers": {name: opt.state_dict() for name, opt in stage.optimizers.items()},
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
    for name, scaler in scalers.items():
        if ckpt["scalers"].get(name):
            scaler.load_state_dict(ckpt["scalers"][name])
    for name, value in stage.state.items():
        value.copy_(ckpt["state"][name])
    rngs = ckpt["rng"]
    if len(rngs) == runtime.world_size:
        ckpt_io.set_rng_state(rngs[runtime.rank])
    else:  # another number of processes: the data order changes anyway, reseed by step
        log.warning("checkpoint written by %d processes, resuming with %d: random draws restart",
                    len(rngs), runtime.world_size)
        seed_everything(int(ckpt["step"]), runtime.rank)
    return int(ckpt["step"]), int(ckpt["epoch"]), int(ckpt["consumed"])
