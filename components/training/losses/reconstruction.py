"""Pixel and latent regression losses: pure functions of tensors, averaged over the batch."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F


def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, kind: Literal["l1", "l2"] = "l1") -> torch.Tensor:
    """Mean absolute (``l1``) or squared (``l2``) pixel error.

    L1 is the usual choice for faces: L2 over-penalises the few large errors at edges
    and so prefers blurry outputs.
    """
    if pred.shape != target.shape:
        raise ValueError(f"shape mismatch: {tuple(pred.shape)} vs {tuple(target.shape)}")
    if kind == "l1":
        return F.l1_loss(pred, target)
    if kind == "l2":
        return F.mse_loss(pred, target)
    raise ValueError(f"unknown reconstruction loss {kind!r}: expected 'l1' or 'l2'")


def latent_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error to target latent codes (e.g. El/Ea/F regressing Eh's code)."""
    if pred.shape != target.shape:
        raise ValueError(f"shape mismatch: {tuple(pred.shape)} vs {tuple(target.shape)}")
    return F.mse_loss(pred, target)


def pyramid_l1(pred: torch.Tensor, target: torch.Tensor, scales: int = 4) -> torch.Tensor:
    """Sum of the L1 errors at ``scales`` resolutions (1, 1/2, 1/4, ...; area downsampling).

    FOMM's perceptual pyramid compares VGG features at these scales; without ImageNet
    weights the pixels themselves are compared, so that a misplaced face (a low-frequency
    error, large at the coarse scales) weighs as much as a blurred texture.
    """
    if pred.shape != target.shape:
        raise ValueError(f"shape mismatch: {tuple(pred.shape)} vs {tuple(target.shape)}")
    total = F.l1_loss(pred, target)
    for _ in range(scales - 1):
        pred, target = F.avg_pool2d(pred, 2), F.avg_pool2d(target, 2)
        total = total + F.l1_loss(pred, target)
    return total
