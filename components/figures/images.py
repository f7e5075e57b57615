"""The one conversion between the networks' images and pixels, for every layer.

Networks see float images in [-1, 1], (..., 3, H, W); files and shards hold uint8
pixels. Every module converts through these functions, so a rounding or clamping
rule is written once:

* :func:`to_pixels`: float [-1, 1] (..., C, H, W) -> uint8 tensor, same layout;
* :func:`to_hwc`: float [-1, 1] (C, H, W) or (N, C, H, W) -> uint8 numpy, channels last
  (what PIL, PyAV and matplotlib take);
* :func:`from_pixels`: uint8 tensor (..., C, H, W) -> float [-1, 1];
* :func:`from_hwc`: uint8 H x W x 3 (numpy or tensor, e.g. a decoded JPEG) -> float (3, H, W);
* :func:`nearest_up`: pixel repetition, so an 8x8 input stays visibly 8x8 when shown.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def to_pixels(img: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float images -> uint8 (what the shards store, so no precision is lost)."""
    return img.detach().float().clamp(-1.0, 1.0).add(1.0).mul_(127.5).round_().to(torch.uint8)


def to_hwc(img: torch.Tensor) -> np.ndarray:
    """(3, H, W) or (N, 3, H, W) in [-1, 1] -> HxWx3 (or NxHxWx3) uint8 numpy."""
    return to_pixels(img).movedim(-3, -1).cpu().numpy()


def from_pixels(img: torch.Tensor) -> torch.Tensor:
    """uint8 (..., C, H, W) -> float32 in [-1, 1]."""
    return img.float().div_(127.5).sub_(1.0)


def from_hwc(img: np.ndarray | torch.Tensor) -> torch.Tensor:
    """HxWx3 uint8 (numpy or tensor) -> 3xHxW float32 tensor in [-1, 1]."""
    if isinstance(img, np.ndarray) and not (img.flags.writeable and img.flags.c_contiguous):
        img = np.array(img)  # torch cannot wrap read-only memory (e.g. a PIL buffer)
    t = torch.as_tensor(img)
    if t.dtype != torch.uint8 or t.ndim != 3 or t.shape[-1] != 3:
        raise ValueError(f"expected an HxWx3 uint8 image, got {tuple(t.shape)} {t.dtype}")
    return from_pixels(t.permute(2, 0, 1))


def nearest_up(img: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 3, s, s) -> (N, 3, size, size) by pixel repetition (no smoothing)."""
    return F.interpolate(img.float(), size=(size, size), mode="nearest")
