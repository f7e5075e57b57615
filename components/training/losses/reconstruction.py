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
