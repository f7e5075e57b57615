"""Convolution blocks and coordinate helpers shared by the video paper's networks.

* :class:`ConvUnit` (conv -> norm -> ReLU, optionally residual), the unit of the lip-sync
  expert and the coarse upsampler, as in the same lab's Wav2Lip;
* :class:`DownBlock` / :class:`UpBlock` / :class:`ResBlock` / :class:`Hourglass`, the
  encoder-decoder pieces of the animation networks (first-order-motion style). Down
  blocks average-pool *before* their convolution, so each conv runs at the output
  resolution (a quarter of the work of conv-then-pool at 256x256) and the pool is the
  anti-aliasing filter;
* :func:`coordinate_grid`, :func:`resize` and :func:`film`.

Coordinates everywhere in this package follow ``F.grid_sample(..., align_corners=True)``:
(x, y) in [-1, 1], -1 and 1 the centres of the first and last pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from components.models.layers import Norm, norm_layer

ALIGN_CORNERS = True


def coordinate_grid(height: int, width: int, *, device: torch.device | None = None,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``height x width x 2`` grid of pixel-centre coordinates, (x, y) in [-1, 1]."""
    ys = torch.linspace(-1.0, 1.0, height, device=device, dtype=dtype)
    xs = torch.linspace(-1.0, 1.0, width, device=device, dtype=dtype)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx, yy], dim=-1)


def resize(img: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``B x C x H x W`` (anti-aliased when shrinking); identity at the same size."""
    target = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(img.shape[-2:]) == target:
        return img
    shrink = target[0] < img.shape[-2] or target[1] < img.shape[-1]
    return F.interpolate(img, size=target, mode="bilinear", align_corners=False, antialias=shrink)


def film(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Feature-wise modulation ``x * (1 + gamma) + beta`` with ``params = [gamma, beta]`` (B x 2C)."""
    gamma, beta = params.chunk(2, dim=1)
    return x * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]


class ConvUnit(nn.Module):
    """Conv -> norm -> ReLU; ``residual`` adds the input before the ReLU (same shape only)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int | tuple[int, int] = 3,
                 stride: int | tuple[int, int] = 1, *, norm: Norm = "batch", residual: bool = False) -> None:
        super().__init__()
        if residual and (in_channels != out_channels or stride not in (1, (1, 1))):
            raise ValueError("a residual ConvUnit keeps its shape: same channels, stride 1")
        k = (kernel, kernel) if isinstance(kernel, int) else kernel
        self.conv = nn.Conv2d(in_channels, out_channels, k, stride, padding=(k[0] // 2, k[1] // 2),
                              bias=norm == "none")
        self.norm = norm_layer(norm, out_channels)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm(self.conv(x))
        return F.relu(out + x if self.residual else out)


class ResBlock(nn.Module):
    """Pre-activation residual block (norm -> ReLU -> conv, twice), shape-preserving."""

    def __init__(self, channels: int, norm: Norm) -> None:
        super().__init__()
        self.body = nn.Sequential(
            norm_layer(norm, channels), nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1),
            norm_layer(norm, channels), nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class DownBlock(nn.Module):
    """Halve the resolution: 2x2 average pool, then 3x3 conv -> norm -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, norm: Norm) -> None:
        super().__init__()
        self.unit = ConvUnit(in_channels, out_channels, 3, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unit(F.avg_pool2d(x, 2))


class UpBlock(nn.Module):
    """Double the resolution: nearest upsampling, then 3x3 conv -> norm -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, norm: Norm) -> None:
        super().__init__()
        self.unit = ConvUnit(in_channels, out_channels, 3, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unit(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Hourglass(nn.Module):
    """U-Net of ``depth`` down and up blocks with skip concatenations.

    Widths are ``min(cap, expansion * 2**(i+1))`` after down block i; the output is the
    last up block's features concatenated with the input, ``out_channels`` =
    ``expansion + in_channels`` channels at the input resolution (which must be divisible
    by ``2**depth``).
    """

    def __init__(self, in_channels: int, expansion: int, cap: int, depth: int, norm: Norm) -> None:
        super().__init__()
        widths = [in_channels] + [min(cap, expansion * 2 ** (i + 1)) for i in range(depth)]
        self.down = nn.ModuleList(DownBlock(widths[i], widths[i + 1], norm) for i in range(depth))
        ups = []
        for i in reversed(range(depth)):
            incoming = widths[i + 1] if i == depth - 1 else 2 * widths[i + 1]
            ups.append(UpBlock(incoming, min(cap, expansion * 2**i), norm))
        self.up = nn.ModuleList(ups)
        self.out_channels = min(cap, expansion) + in_channels
        self.depth = depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [x]
        for block in self.down:
            skips.append(block(skips[-1]))
        out = skips.pop()
        for block in self.up:
            out = torch.cat([block(out), skips.pop()], dim=1)
        return out
