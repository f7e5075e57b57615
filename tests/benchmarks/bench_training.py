"""Training throughput of the five face-SR stages (``pytest -m benchmark -s``).

For each stage: one training step (forward, backward, optimiser; the GAN step of
train_g is a D step, a G step and its share of the lazy R1) timed on a fixed in-memory
batch, reported as samples/s with the process's peak memory (max RSS; CUDA: max
allocated). CPU: the ``small`` preset at the batch sizes of params.yaml, channels-last,
at 1 and at 2 threads; GPU (when torch sees one): the ``paper`` preset under bf16
autocast and channels-last. Each configuration runs in a fresh process, as a stage does.

Baseline, measured in the same run (and process): how many samples/s the streaming
ShardDataset decodes from shards of 256 px crops (one JPEG + the clip's FLAC + resize +
spectrogram per sample). On two shared cores decoding and training take turns, so
streaming would make every sample cost 1/train + 1/decode seconds instead of 1/train:
a stage streamed (1 + train/decode) times slower, which is what the in-memory cache of
CPU training avoids.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from components.config import load_params, parse_params
from components.data.dataset import ShardDataset
from components.data.shards import write_shards
from components.figures.images import from_pixels
from components.models.face_sr import ModelConfig, build_models, get_preset
from components.models.perceptual import PerceptualLoss
from components.training import loop
from components.training.face_sr import plan, recipes
from components.training.feeds import CachedFeed
from components.training.runtime import Runtime, setup_runtime
from tests._fixtures import make_upstream
from tests.conftest import ROOT

pytestmark = pytest.mark.benchmark

SPEAKERS = 4  # of the random training faces a stage is built on
NEEDS = {"train_eh": ("G",), "train_el": ("Eh", "G"), "train_ea": ("Eh", "G"), "train_fusion": ("Eh", "G", "El", "Ea")}


def build(name: str, cfg: ModelConfig, runtime: Runtime) -> loop.Stage:
    """The stage with randomly initialised upstream networks (speed does not depend on them)."""
    p = getattr(load_params(ROOT / "params.yaml"), name)
    up = build_models(cfg, 1, NEEDS.get(name, ()))
    for net in up.values():
        net.eval().requires_grad_(False)
    perceptual = PerceptualLoss().to(runtime.device) if getattr(p, "w_perc", 0) > 0 else None
    gen = torch.Generator().manual_seed(1)
    faces = CachedFeed({"hr": torch.randint(0, 256, (SPEAKERS * 2, 3, cfg.resolution, cfg.resolution),
                                            dtype=torch.uint8, generator=gen),
                        "speaker": torch.arange(SPEAKERS * 2) % SPEAKERS}, batch_size=1, seed=0,
                       decode={"hr": from_pixels})  # what per-speaker targets (train_ea) are computed from
    stage = recipes.BUILDERS[name](p, cfg, 0, runtime.device, up, perceptual, faces)
    if runtime.channels_last:
        for net in stage.networks.values():
            net.to(memory_format=torch.channels_last)
    return stage


def throughput(name: str, cfg: ModelConfig, runtime: Runtime, batch_size: int, steps: int) -> dict[str, float]:
    stage = build(name, cfg, runtime)
    for net_name, net in stage.networks.items():
        net.train(net_name in stage.trained)
    gen = torch.Generator().manual_seed(0)
    batch = {"hr": torch.rand(batch_size, 3, cfg.resolution, cfg.resolution, generator=gen) * 2 - 1,
             "lr": torch.rand(batch_size, 3, cfg.lr_size, cfg.lr_size, generator=gen) * 2 - 1,
             "spec": torch.rand(batch_size, 1, *cfg.spectrogram_shape, generator=gen) * 2 - 1,
             "speaker": torch.arange(batch_size) % SPEAKERS}
    batch = loop.to_device(batch, runtime)
    scalers = {n: torch.amp.GradScaler(runtime.device.type, enabled=runtime.amp_dtype == torch.float16)
               for n in stage.optimizers}
    ctx = loop.StepContext({n: stage.views.get(n, m) for n, m in stage.networks.items()}, stage.optimizers,
                           scalers, runtime, batch_size)
    cuda = runtime.device.type == "cuda"
    for i in range(2):  # warm-up (allocator, kernels)
        ctx.step = i + 1
        stage.step(ctx, batch)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for i in range(steps):
        ctx.step = i  # includes the R1 steps (every r1_every) in their proportion
        stage.step(ctx, batch)
    if cuda:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / steps
    out = {"batch": batch_size, "ms_per_step": seconds * 1000, "samples_per_s": batch_size / seconds}
    if cuda:
        out["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def make_shards(root: Path) -> Path:
    """Shards of 4 clips of 100 frames of 256 px crops (the size the faces stage writes)."""
    up = make_upstream(root, n_speakers=2, videos_per_speaker=1, clips_per_video=2, unknown_videos=0,
                       n_frames=100, crop_size=256)
    params = parse_params({"common": {"data_dir": str(up.data_dir), "workers": 1},
                           "shards": {"unseen_speaker_fraction": 0.0, "seen_test_fraction": 0.0}})
    write_shards(params, up.raw, up.faces, up.audio, up.data_dir / "shards", progress=False)
    return up.data_dir / "shards"


def decode_rate(shards: Path, samples: int = 64) -> float:
    """Samples/s of the streaming dataset (one JPEG, 4 s of FLAC, resize, spectrogram each)."""
    ds = ShardDataset(shards, "train", "face_sr", train=True, hr_size=64, shuffle_buffer=1)
    started, n = time.perf_counter(), 0
    while n < samples:
        ds.set_epoch(n)
        n += sum(1 for _ in ds)
    return n / (time.perf_counter() - started)


def measure_all(device: str, threads: int, steps: int, shards: str) -> dict[str, dict[str, float]]:
    """The decode baseline and every stage's throughput, in this process."""
    params = load_params(ROOT / "params.yaml")
    runtime = setup_runtime(device, threads=threads)
    cfg = get_preset("small" if device == "cpu" else "paper")
    out = {"decode": {"samples_per_s": decode_rate(Path(shards))}}
    out |= {name: throughput(name, cfg, runtime, getattr(params, name).batch_size, steps) for name in plan.STAGES}
    out["process"] = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    return out


def measure_in_subprocess(device: str, threads: int, steps: int, shards: Path) -> dict[str, dict[str, float]]:
    """As the stages run: a fresh process with OMP_WAIT_POLICY=PASSIVE set before torch
    loads (pipelines/face_sr/train.py does the same)."""
    code = ("import json; from tests.benchmarks.bench_training import measure_all; "
            f"print(json.dumps(measure_all({device!r}, {threads}, {steps}, {str(shards)!r})))")
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_training_throughput_per_stage(device: str, tmp_path: Path):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    shards = make_shards(tmp_path)
    if device == "cpu":
        runs = {threads: measure_in_subprocess("cpu", threads, 16, shards) for threads in (1, 2)}
        decode = runs[2]["decode"]["samples_per_s"]
        print(f"\ncpu, small preset (64 px), batch sizes of params.yaml, samples/s at 1 and 2 threads; baseline: "
              f"streaming decode {runs[1]['decode']['samples_per_s']:.1f} / {decode:.1f} samples/s")
        print(f"{'stage':14s} {'batch':>5s} {'1 thread':>9s} {'2 threads':>10s} {'2 vs 1':>7s} {'2t / decode':>12s}")
        for name in plan.STAGES:
            one, two = runs[1][name], runs[2][name]
            print(f"{name:14s} {int(two['batch']):5d} {one['samples_per_s']:9.1f} {two['samples_per_s']:10.1f} "
                  f"{two['samples_per_s'] / one['samples_per_s']:7.2f} {two['samples_per_s'] / decode:12.2f}")
            assert two["samples_per_s"] > 0
        print(f"peak RSS per process: {runs[1]['process']['peak_rss_mb']:.0f} MB (1 thread), "
              f"{runs[2]['process']['peak_rss_mb']:.0f} MB (2 threads)")
    else:
        run = measure_in_subprocess("cuda", 1, 50, shards)
        decode = run["decode"]["samples_per_s"]
        print(f"\ncuda, paper preset (128 px), bf16 autocast, channels-last; baseline: streaming decode "
              f"{decode:.1f} samples/s")
        print(f"{'stage':14s} {'batch':>5s} {'ms/step':>9s} {'samples/s':>10s} {'/ decode':>9s} {'peak MB':>8s}")
        for name in plan.STAGES:
            r = run[name]
            print(f"{name:14s} {int(r['batch']):5d} {r['ms_per_step']:9.1f} {r['samples_per_s']:10.1f} "
                  f"{r['samples_per_s'] / decode:9.2f} {r['peak_mb']:8.0f}")
            assert r["samples_per_s"] > 0
