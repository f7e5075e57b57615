"""Building blocks shared by the generator, the discriminator and the encoders.

Two families live here, because the two halves of "Face SR with an ear" come from two
traditions:

* StyleGAN layers (:class:`EqualLinear`, :class:`EqualConv2d`,
  :class:`ModulatedConv2d`, :class:`Downsample2d`, :class:`MinibatchStd`,
  :func:`pixel_norm`). They use the *equalized learning rate* of Karras et al.: weights
  are stored as N(0, 1) / lr_mul and scaled by ``lr_mul / sqrt(fan_in)`` at run time,
  so Adam's per-parameter step is the same relative change in every layer whatever its
  fan-in, and a layer can be slowed down (the mapping network's lr_mul = 0.01) without
  touching the optimiser. Activations are LeakyReLU(0.2) times sqrt(2) (He gain), which
  keeps unit variance through depth.
* Encoder layers (:class:`SameConv2d`, :func:`conv_block`): plain convolutions with
  TensorFlow's ``'SAME'`` padding, as in the reference encoders, where an even kernel
  (4x4) or an odd input (the 257-bin spectrogram) needs asymmetric padding for the
  output to be exactly ``ceil(input / stride)``.

Everything works with channels-last tensors and under ``torch.autocast``: no layer
reshapes the batch into groups (modulation is applied to activations, not weights) and
no layer hard-codes a dtype.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)

Norm = Literal["instance", "batch", "none"]


def lrelu(x: torch.Tensor) -> torch.Tensor:
    """LeakyReLU(0.2) scaled by sqrt(2): the StyleGAN activation, variance-preserving."""
    return F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN


def pixel_norm(x: torch.Tensor, dim: int = -1, eps: float = 1e-8) -> torch.Tensor:
    """Scale each vector along ``dim`` to unit RMS (StyleGAN normalises z this way).

    It makes the mapping network see only the direction of z, so the magnitude of an
    encoder's predicted z code is irrelevant and only its direction matters.
    """
    return x * torch.rsqrt(x.square().mean(dim, keepdim=True) + eps)


class EqualLinear(nn.Module):
    """Fully connected layer with equalized learning rate.

    ``bias_init`` is the bias value seen at run time (the affine layers that produce
    styles start at 1 so modulation starts as identity). ``activate`` applies
    :func:`lrelu`.
    """

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True, bias_init: float = 0.0,
                 lr_mul: float = 1.0, activate: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), bias_init / lr_mul)) if bias else None
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias * self.lr_mul if self.bias is not None else None
        x = F.linear(x, self.weight * self.weight_gain, bias)
        return lrelu(x) if self.activate else x

    def extra_repr(self) -> str:
        out_features, in_features = self.weight.shape
        return f"{in_features}, {out_features}, lr_mul={self.lr_mul}, activate={self.activate}"


class EqualConv2d(nn.Module):
    """Square-kernel convolution with equalized learning rate and "same" (odd k) padding."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, *, bias: bool = True,
                 activate: bool = False) -> None:
        super().__init__()
        if kernel % 2 != 1:
            raise ValueError(f"EqualConv2d needs an odd kernel for symmetric padding, got {kernel}")
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel * kernel)
        self.padding = kernel // 2
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.weight * self.weight_gain, self.bias, padding=self.padding)
        return lrelu(x) if self.activate else x

    def extra_repr(self) -> str:
        out_channels, in_channels, k, _ = self.weight.shape
        return f"{in_channels}, {out_channels}, kernel={k}, activate={self.activate}"


class ModulatedConv2d(nn.Module):
    """StyleGAN2 style-modulated convolution, with optional weight demodulation.

    A per-sample style s = affine(w) scales the input channels, then (demodulation)
    each output channel is divided by the norm its weights would have after that
    scaling, sqrt(sum_{i,k} (w_oik * s_i)^2). This replaces StyleGAN1's AdaIN (instance
    norm of the activations, then per-channel scale/bias from the style) with the same
    "style sets the channel statistics" effect but without normalising the data, which
    is what caused StyleGAN1's droplet artefacts.

    It is computed as ``conv(x * s, w) * d`` with one shared weight, not with a per-
    sample weight tensor and a grouped convolution: the two are mathematically equal
    (StyleGAN2-ADA's non-fused path), this one runs ordinary convolutions (fast cuDNN /
    oneDNN kernels, channels-last, autocast) and never loops over or regroups the batch.
    Demodulation is invariant to the scale of s, so s is first divided by its largest
    entry to keep fp16 activations bounded.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, w_dim: int, *,
                 demodulate: bool = True) -> None:
        super().__init__()
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel))
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel * kernel)
        self.padding = kernel // 2
        self.demodulate = demodulate

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w)
        weight = self.weight * self.weight_gain
        if self.demodulate:
            styles = styles / styles.detach().abs().amax(dim=1, keepdim=True).clamp_min(1e-8)
        x = F.conv2d(x * styles[:, :, None, None], weight, padding=self.padding)
        if self.demodulate:
            power = styles.square() @ weight.square().sum(dim=(2, 3)).t()  # (batch, out_channels)
            x = x * torch.rsqrt(power + 1e-8)[:, :, None, None]
        return x

    def extra_repr(self) -> str:
        out_channels, in_channels, k, _ = self.weight.shape
        return f"{in_channels}, {out_channels}, kernel={k}, demodulate={self.demodulate}"


class Downsample2d(nn.Module):
    """Blur with the [1, 3, 3, 1] binomial filter and keep every other pixel.

    StyleGAN2's anti-aliased downsampling: a plain stride-2 conv would alias, which
    makes a discriminator sensitive to sub-pixel shifts. Implemented as a fixed
    depthwise convolution so it is twice differentiable (R1 needs that).
    """

    def __init__(self) -> None:
        super().__init__()
        taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
        self.register_buffer("kernel", (torch.outer(taps, taps) / taps.sum() ** 2)[None, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        kernel = self.kernel.to(x.dtype).expand(channels, 1, 4, 4)
        return F.conv2d(x, kernel, stride=2, padding=1, groups=channels)


class MinibatchStd(nn.Module):
    """Append the mean feature standard deviation over small groups of the batch.

    Gives the discriminator a direct view of sample diversity, so a generator that
    collapses to a few outputs is easy to spot (Karras et al. 2018). Groups are
    ``gcd(group_size, batch)`` samples, so any batch size works (a batch of one gets a
    zero-variance channel).
    """

    def __init__(self, group_size: int = 4, n_channels: int = 1) -> None:
        super().__init__()
        self.group_size = group_size
        self.n_channels = n_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        group = math.gcd(self.group_size, n)
        y = x.float().reshape(group, -1, self.n_channels, c // self.n_channels, h, w)
        y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt()  # (n / group, F, c / F, h, w)
        y = y.mean(dim=(2, 3, 4))  # (n / group, F)
        y = y.repeat(group, 1)[:, :, None, None].expand(n, self.n_channels, h, w)
        return torch.cat([x, y.to(x.dtype)], dim=1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, n_channels={self.n_channels}"


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow ``'SAME'`` padding: output size is ``ceil(input / stride)``.

    The reference encoders use 4x4 kernels and a 257 x 257 spectrogram; matching their
    feature-map sizes (257 -> 129 -> 65 -> ... -> 3) needs asymmetric padding (one more
    pixel at the bottom/right), which ``nn.Conv2d`` cannot express. The padding is
    computed from the input size at run time; symmetric cases go straight to the conv.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, *,
                 bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel, stride=stride, padding=0, bias=bias)

    def _same_pads(self, size: int, kernel: int, stride: int) -> tuple[int, int]:
        total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
        return total // 2, total - total // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = self._same_pads(x.shape[-2], self.kernel_size[0], self.stride[0])
        left, right = self._same_pads(x.shape[-1], self.kernel_size[1], self.stride[1])
        if top == bottom and left == right:
            return F.conv2d(x, self.weight, self.bias, self.stride, (top, left))
        return F.conv2d(F.pad(x, (left, right, top, bottom)), self.weight, self.bias, self.stride)


def norm_layer(kind: Norm, channels: int) -> nn.Module:
    """Normalisation by name. Instance norm has learned scale/shift like TF's
    ``instance_norm``; batch norm keeps running statistics for evaluation."""
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown normalisation {kind!r}: expected 'instance', 'batch' or 'none'")


def conv_block(in_channels: int, out_channels: int, kernel: int, stride: int, norm: Norm) -> nn.Sequential:
    """SAME conv -> norm -> LeakyReLU(0.2), the reference encoders' unit.

    The conv has a bias only without a norm: a norm's shift makes it redundant.
    """
    return nn.Sequential(
        SameConv2d(in_channels, out_channels, kernel, stride, bias=norm == "none"),
        norm_layer(norm, out_channels),
        nn.LeakyReLU(LRELU_SLOPE),
    )


def init_encoder_weights(module: nn.Module) -> None:
    """He-normal weights for LeakyReLU(0.2) and zero biases on every conv/linear.

    Keeps the activation variance constant through the deep, partly un-normalised
    encoders (the audio encoder has 14 convs), which PyTorch's default init does not.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, a=LRELU_SLOPE, nonlinearity="leaky_relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def init_linear_output(layer: nn.Linear, gain: float = 1.0) -> None:
    """N(0, gain^2 / fan_in) weights and zero bias for a linear output (no activation).

    ``gain=1`` keeps the output at the input's scale; a tiny gain makes a residual
    branch start as (almost) nothing while still passing gradients to earlier layers.
    """
    nn.init.normal_(layer.weight, std=gain / math.sqrt(layer.in_features))
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter values (works on the meta device)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
