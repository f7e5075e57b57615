"""StyleGAN-style face generator G and its residual discriminator D.

"Face SR with an ear" (Meishvili et al., CVPR 2020) first trains an unconditional
StyleGAN on 128x128 faces, then freezes it and trains encoders that predict its latent
codes from a low-res face and from speech. The published test code uses the StyleGAN1
generator; this module keeps its structure and interfaces and takes StyleGAN2's
simplifications where they do not change them:

* Mapping network: pixel-norm of z, 8 equalized FC layers with LeakyReLU(0.2) and a
  0.01 learning-rate multiplier, z (512) -> w (512). It also tracks ``w_avg``, the
  running mean of w (decay 0.995, updated in ``train()`` mode only, like BatchNorm's
  running statistics), for the truncation trick.
* Synthesis network: a learned 4x4 constant, then two style-modulated 3x3 convs per
  resolution 4, 8, ..., R (StyleGAN1's layout: ``n_latents = 2 * log2(R / 4) + 2``
  style inputs, 12 at 128), the first of each resolution > 4 after a bilinear 2x
  upsampling (bilinear with half-pixel centres is the [1, 3, 3, 1] upsampling filter of
  StyleGAN2). Each conv is a :class:`~components.models.layers.ModulatedConv2d` with
  StyleGAN2 weight *demodulation* instead of StyleGAN1's AdaIN, then per-layer noise
  with a learned strength (initialised to 0), bias and activation. Every resolution
  has a toRGB (1x1 modulated conv, no demodulation, styled by that resolution's second
  latent) whose output is added to the upsampled image so far (StyleGAN2 "skip"
  generator), so there is no progressive growing.
* Noise is a training-time regulariser: ``noise=False`` (the default) adds none, which
  is what the reference does at inference (``use_noise=False``) and makes synthesis
  deterministic.
* The output is an image whose nominal range is [-1, 1] (the range of the training
  images). It is not squashed or clamped: clamping would zero the gradients of
  saturated pixels, so clamp only for display or metrics.

D is StyleGAN2's residual discriminator: fromRGB, one residual block per resolution
(3x3 conv, blur-downsample + 3x3 conv, with a blur-downsample + 1x1 skip, summed and
scaled by 1/sqrt(2)), then at 4x4 a minibatch-stddev channel, a 3x3 conv and two FC
layers to one logit per image.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from components.models.layers import (
    Downsample2d,
    EqualConv2d,
    EqualLinear,
    MinibatchStd,
    ModulatedConv2d,
    lrelu,
    pixel_norm,
)


def n_latents_for(resolution: int) -> int:
    """Style inputs of the synthesis network: two per resolution from 4x4 to ``resolution``."""
    return 2 * int(math.log2(resolution // 4)) + 2


def _check_resolution(resolution: int) -> None:
    if resolution < 4 or resolution & (resolution - 1):
        raise ValueError(f"resolution must be a power of two >= 4, got {resolution}")


class MappingNetwork(nn.Module):
    """z -> w: pixel norm, then ``n_layers`` equalized FC + LeakyReLU layers.

    Accepts any leading shape, ``(..., z_dim) -> (..., w_dim)``: the face-SR encoders
    predict one z per synthesis layer, (B, n_latents, z_dim), and the reference maps each
    of them separately. Also owns ``w_avg`` and the truncation trick.
    """

    def __init__(self, z_dim: int, w_dim: int, n_layers: int = 8, lr_mul: float = 0.01,
                 w_avg_beta: float = 0.995) -> None:
        super().__init__()
        dims = [z_dim] + [w_dim] * n_layers
        self.layers = nn.ModuleList(
            EqualLinear(dims[i], dims[i + 1], lr_mul=lr_mul, activate=True) for i in range(n_layers)
        )
        self.register_buffer("w_avg", torch.zeros(w_dim))
        self.z_dim, self.w_dim, self.w_avg_beta = z_dim, w_dim, w_avg_beta

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.shape[-1] != self.z_dim:
            raise ValueError(f"expected z (..., {self.z_dim}), got {tuple(z.shape)}")
        x = pixel_norm(z)
        for layer in self.layers:
            x = layer(x)
        if self.training:
            with torch.no_grad():
                batch_mean = x.detach().float().reshape(-1, self.w_dim).mean(dim=0)
                self.w_avg.copy_(batch_mean.lerp(self.w_avg, self.w_avg_beta))
        return x

    def truncate(self, w: torch.Tensor, psi: float) -> torch.Tensor:
        """Pull w towards ``w_avg``: psi = 1 leaves it, psi = 0 gives the average face.

        Trades diversity for fidelity at sampling time (Karras et al. 2019). Applied to
        every layer; w may be (B, w_dim) or (B, n_latents, w_dim).
        """
        return self.w_avg.to(w.dtype).lerp(w, psi)


class SynthesisLayer(nn.Module):
    """Optional 2x upsampling, modulated 3x3 conv, noise, bias, activation."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, *, up: bool) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, w_dim)
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.up = up

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: bool) -> torch.Tensor:
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = self.conv(x, w)
        if noise:
            x = x + torch.randn_like(x[:, :1]) * self.noise_strength
        return lrelu(x + self.bias[:, None, None])


class ToRGB(nn.Module):
    """Modulated 1x1 conv to RGB, without demodulation (colour depends on the style)."""

    def __init__(self, in_channels: int, w_dim: int) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, 3, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(3))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.conv(x, w) + self.bias[:, None, None]


class SynthesisBlock(nn.Module):
    """One resolution: two synthesis layers (two style inputs) and a toRGB skip output."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, *, up: bool) -> None:
        super().__init__()
        self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, up=up)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, up=False)
        self.to_rgb = ToRGB(out_channels, w_dim)

    def forward(self, x: torch.Tensor, img: torch.Tensor | None, w0: torch.Tensor, w1: torch.Tensor,
                noise: bool) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv1(self.conv0(x, w0, noise), w1, noise)
        rgb = self.to_rgb(x, w1)
        if img is not None:
            rgb = rgb + F.interpolate(img, scale_factor=2, mode="bilinear", align_corners=False)
        return x, rgb


class SynthesisNetwork(nn.Module):
    """ws (B, n_latents, w_dim) -> image (B, 3, R, R), nominal range [-1, 1]."""

    def __init__(self, resolution: int, w_dim: int, channels: Mapping[int, int]) -> None:
        super().__init__()
        _check_resolution(resolution)
        resolutions = [2**i for i in range(2, int(math.log2(resolution)) + 1)]
        self.const = nn.Parameter(torch.randn(channels[4], 4, 4))
        blocks, in_channels = [], channels[4]
        for res in resolutions:
            blocks.append(SynthesisBlock(in_channels, channels[res], w_dim, up=res > 4))
            in_channels = channels[res]
        self.blocks = nn.ModuleList(blocks)
        self.resolution, self.w_dim = resolution, w_dim
        self.n_latents = n_latents_for(resolution)

    def forward(self, ws: torch.Tensor, noise: bool = False) -> torch.Tensor:
        if ws.ndim != 3 or ws.shape[1:] != (self.n_latents, self.w_dim):
            raise ValueError(f"expected ws (B, {self.n_latents}, {self.w_dim}), got {tuple(ws.shape)}")
        x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
        img = None
        for i, block in enumerate(self.blocks):
            x, img = block(x, img, ws[:, 2 * i], ws[:, 2 * i + 1], noise)
        return img


class Generator(nn.Module):
    """G = synthesis(mapping(z)): ``G.mapping``, ``G.synthesis``, ``G.truncate``, ``G(z)``.

    ``G(z)`` accepts either one z per image, (B, z_dim), broadcast to every layer (the
    usual unconditional sampling), or one z per layer, (B, n_latents, z_dim): the
    encoders' output space, which the reference decodes by mapping each of the
    n_latents codes separately (its ``get_images``).
    """

    def __init__(self, resolution: int, z_dim: int, w_dim: int, channels: Mapping[int, int], *,
                 mapping_layers: int = 8, mapping_lr_mul: float = 0.01) -> None:
        super().__init__()
        self.mapping = MappingNetwork(z_dim, w_dim, mapping_layers, mapping_lr_mul)
        self.synthesis = SynthesisNetwork(resolution, w_dim, channels)
        self.resolution, self.z_dim, self.w_dim = resolution, z_dim, w_dim
        self.n_latents = self.synthesis.n_latents

    def truncate(self, w: torch.Tensor, psi: float) -> torch.Tensor:
        """See :meth:`MappingNetwork.truncate`."""
        return self.mapping.truncate(w, psi)

    def forward(self, z: torch.Tensor, psi: float = 1.0, noise: bool = False) -> torch.Tensor:
        w = self.mapping(z)
        if psi != 1.0:
            w = self.truncate(w, psi)
        ws = w.unsqueeze(1).expand(-1, self.n_latents, -1) if w.ndim == 2 else w
        return self.synthesis(ws, noise=noise)


class DiscriminatorBlock(nn.Module):
    """Residual block: (conv3x3, downsample + conv3x3) + (downsample + 1x1 skip), / sqrt 2.

    Downsampling happens before the second conv (blur-pool, then a 3x3 conv at half
    resolution), a cheaper equivalent of StyleGAN2's blur + stride-2 conv.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv0 = EqualConv2d(in_channels, in_channels, 3, activate=True)
        self.conv1 = EqualConv2d(in_channels, out_channels, 3, activate=True)
        self.skip = EqualConv2d(in_channels, out_channels, 1, bias=False)
        self.down = Downsample2d()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.skip(self.down(x))
        x = self.conv1(self.down(self.conv0(x)))
        return (x + y) * (1.0 / math.sqrt(2.0))


class Discriminator(nn.Module):
    """image (B, 3, R, R) -> one real/fake logit per image, shape (B,)."""

    def __init__(self, resolution: int, channels: Mapping[int, int], *, mbstd_group: int = 4) -> None:
        super().__init__()
        _check_resolution(resolution)
        self.from_rgb = EqualConv2d(3, channels[resolution], 1, activate=True)
        self.blocks = nn.Sequential(*(
            DiscriminatorBlock(channels[res], channels[res // 2])
            for res in (2**i for i in range(int(math.log2(resolution)), 2, -1))
        ))
        c4 = channels[4]
        self.mbstd = MinibatchStd(mbstd_group)
        self.conv = EqualConv2d(c4 + 1, c4, 3, activate=True)
        self.fc = EqualLinear(c4 * 16, c4, activate=True)
        self.out = EqualLinear(c4, 1)
        self.resolution = resolution

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if img.ndim != 4 or img.shape[1:] != (3, self.resolution, self.resolution):
            raise ValueError(f"expected images (B, 3, {self.resolution}, {self.resolution}), got {tuple(img.shape)}")
        x = self.blocks(self.from_rgb(img))
        x = self.conv(self.mbstd(x))
        return self.out(self.fc(x.flatten(1))).squeeze(1)
