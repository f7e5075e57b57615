"""Inference latency of "Face SR with an ear": per face, per method, CPU (and GPU).

``pytest -m benchmark -s tests/benchmarks/bench_inference.py``

Networks are built at their real sizes with untrained weights (latency does not depend
on the weight values) and run through :class:`~components.inference.face_sr.FaceSR`,
as the ``earshot face-sr`` command and the evaluate stage run them:

* ``small`` preset (8x8 -> 64x64) on CPU with ``face_sr.threads`` (2) threads, and the
  ``paper`` preset (8x8 -> 128x128, 861M parameters) on CPU at batch 1;
* both presets on the GPU when ``torch.cuda.is_available()``.

Per configuration: ms per face at batch 1 and batch 32 for image only ``G(El(x))``,
audio only ``G(Ea(a))`` and fused ``G(F(El(x), Ea(a)))``; the cost of preparing the
input spectrogram; the ratio fused / image only (the price of listening) and fused /
bicubic (the no-learning baseline, measured in the same run); peak memory (process
max RSS, ``torch.cuda.max_memory_allocated`` on GPU). Nothing is asserted about speed.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from components.data.features import face_sr_spectrogram
from components.inference.face_sr import NETWORKS, FaceSR
from components.models.face_sr import build_models, count_parameters, get_preset

pytestmark = pytest.mark.benchmark

THREADS = 2


def per_face_ms(fn: Callable[[], torch.Tensor], batch: int, device: torch.device, repeats: int) -> float:
    """Best of ``repeats`` timed calls (after one warm-up), in ms per face."""
    def call() -> None:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3 / batch


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench(preset: str, device: torch.device, batches: tuple[int, ...], repeats: int) -> None:
    cfg = get_preset(preset)
    with torch.device(device):
        nets = build_models(cfg, 0, NETWORKS)
    model = FaceSR({k: v.eval().requires_grad_(False) for k, v in nets.items()}, cfg, device)
    params_m = sum(count_parameters(n) for n in nets.values()) / 1e6
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{THREADS} threads"
    print(f"\n{preset} preset on {device} ({where}): {cfg.lr_size}x{cfg.lr_size} -> {cfg.resolution}x{cfg.resolution}, "
          f"G+El+Ea+F {params_m:.1f}M parameters")
    rng = np.random.default_rng(0)
    audio = rng.normal(0, 0.1, int(cfg.audio_seconds * 16000)).astype(np.float32)
    prep = per_face_ms(lambda: face_sr_spectrogram(audio, 16000, cfg.audio_seconds), 1, torch.device("cpu"), repeats)
    print(f"  input spectrogram (CPU): {prep:8.2f} ms per face")
    for batch in batches:
        lr = torch.rand(batch, 3, cfg.lr_size, cfg.lr_size, device=device) * 2 - 1
        spec = torch.rand(batch, 1, *cfg.spectrogram_shape, device=device) * 2 - 1
        times = {
            "bicubic": per_face_ms(lambda: F.interpolate(lr, size=cfg.resolution, mode="bicubic",
                                                         align_corners=False), batch, device, repeats),
            "image_only": per_face_ms(lambda: model.image_only(lr), batch, device, repeats),
            "audio_only": per_face_ms(lambda: model.audio_only(spec), batch, device, repeats),
            "fused": per_face_ms(lambda: model.fused(lr, spec), batch, device, repeats),
        }
        line = "  ".join(f"{k} {v:8.2f}" for k, v in times.items())
        print(f"  batch {batch:3d}, ms per face: {line}")
        print(f"  batch {batch:3d}: fused / image_only {times['fused'] / times['image_only']:.2f}x, "
              f"fused / bicubic {times['fused'] / times['bicubic']:.0f}x, "
              f"{1e3 / times['fused']:.1f} faces/s fused")
    if device.type == "cuda":
        print(f"  peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MB")
    print(f"  peak process RSS so far: {max_rss_mb():.0f} MB")


def test_inference_latency_cpu():
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        bench("small", torch.device("cpu"), (1, 32), repeats=5)
        bench("paper", torch.device("cpu"), (1,), repeats=3)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_inference_latency_gpu():
    device = torch.device("cuda")
    bench("small", device, (1, 32), repeats=20)
    bench("paper", device, (1, 32), repeats=10)
