"""Exponential moving averages of network weights (StyleGAN's G_ema), for any network.

:func:`update_ema` moves an averaged copy towards the trained network after each step;
:func:`ema_beta` is StyleGAN2-ADA's decay schedule, a half-life in images seen.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def update_ema(ema: nn.Module, net: nn.Module, beta: float) -> None:
    """ema = beta * ema + (1 - beta) * net (parameters); buffers (e.g. G's w_avg) are copied."""
    for p_ema, p in zip(ema.parameters(), net.parameters()):
        p_ema.copy_(p.detach().lerp(p_ema, beta))
    for b_ema, b in zip(ema.buffers(), net.buffers()):
        b_ema.copy_(b)


def ema_beta(images_seen: int, batch: int, kimg: float, rampup: float | None) -> float:
    """StyleGAN2-ADA's EMA decay: half-life ``kimg`` thousand images, at most ``rampup``
    times the images seen so far (early weights are noise and must be forgotten fast)."""
    half_life = kimg * 1000
    if rampup is not None:
        half_life = min(half_life, images_seen * rampup)
    return 0.5 ** (batch / max(half_life, 1e-8))
