"""The three encoders of "Face SR with an ear": high-res face, low-res face, speech.

All three predict the generator's latent code, a (B, n_latents, latent_dim) tensor:
one z vector per synthesis layer ("Z+"), which the reference decodes by passing each
of them through G's mapping network (``Generator.forward`` does this for 3-D input).
Training them is therefore regression in G's latent space: Eh learns to invert G on
real faces, El and Ea learn to predict Eh's code from an 8x8 face and from 4 s of
speech, and the fusion network (``fusion.py``) combines the last two.

The layouts follow the reference implementation (``networks.py`` of the authors'
TF1 test code): 'SAME'-padded convolutions, LeakyReLU(0.2), flatten, fully connected
layers. With the paper's sizes El has 88.7M and Ea 402.6M parameters.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from components.models.layers import Norm, conv_block, init_encoder_weights, init_linear_output


def _same_out(size: int, n_halvings: int) -> int:
    """Spatial size after ``n_halvings`` stride-2 'SAME' convs: ceil(size / 2) each time."""
    for _ in range(n_halvings):
        size = -(-size // 2)
    return size


def _check_input(x: torch.Tensor, shape: tuple[int, ...], name: str) -> None:
    if x.ndim != 4 or tuple(x.shape[1:]) != shape:
        raise ValueError(f"{name} expects (B, {', '.join(map(str, shape))}), got {tuple(x.shape)}")


class HighResEncoder(nn.Module):
    """Eh: a face at the generator's resolution -> its latent code (inverts G).

    ``log2(R) - 1`` scales of a 4x4 stride-1 conv followed (except in the last scale) by
    a 4x4 stride-2 conv that doubles the channels (``base`` -> ``cap``), so 128 -> 4x4
    with 64, 128, 256, 512, 1024, 1024 channels; instance norm everywhere but the first
    conv; then one FC from the flattened 4x4 map to ``n_latents * latent_dim``.
    """

    def __init__(self, resolution: int, n_latents: int, latent_dim: int, *, base: int = 64, cap: int = 1024,
                 norm: Norm = "instance") -> None:
        super().__init__()
        n_scales = int(math.log2(resolution)) - 1
        layers: list[nn.Module] = []
        in_channels, channels = 3, base
        for i in range(n_scales):
            layers.append(conv_block(in_channels, channels, 4, 1, "none" if i == 0 else norm))
            in_channels = channels
            if i < n_scales - 1:
                channels = min(2 * channels, cap)
                layers.append(conv_block(in_channels, channels, 4, 2, norm))
                in_channels = channels
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(in_channels * _same_out(resolution, n_scales - 1) ** 2, n_latents * latent_dim)
        init_encoder_weights(self)
        init_linear_output(self.head)
        self.input_shape = (3, resolution, resolution)
        self.code_shape = (n_latents, latent_dim)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        _check_input(img, self.input_shape, "HighResEncoder")
        return self.head(self.features(img).flatten(1)).unflatten(1, self.code_shape)


class LowResEncoder(nn.Module):
    """El: an 8x8 face -> a latent code for G.

    A 3x3 conv to ``base`` channels, then ``n_scales`` scales of two 3x3 convs, with a
    stride-2 3x3 conv between scales that multiplies the channels by 3 (capped), all
    with instance norm: 8x8x128 -> 4x4x384 -> 2x2x1024 at the paper's sizes. Then FC to
    ``n_latents * latent_dim`` + LeakyReLU and a second FC of the same width.
    """

    def __init__(self, lr_size: int, n_latents: int, latent_dim: int, *, base: int = 128, cap: int = 1024,
                 n_scales: int = 3, norm: Norm = "instance") -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_block(3, base, 3, 1, "none")]
        channels = base
        for i in range(n_scales):
            layers += [conv_block(channels, channels, 3, 1, norm), conv_block(channels, channels, 3, 1, norm)]
            if i < n_scales - 1:
                wider = min(3 * channels, cap)
                layers.append(conv_block(channels, wider, 3, 2, norm))
                channels = wider
        self.features = nn.Sequential(*layers)
        code = n_latents * latent_dim
        self.head = nn.Sequential(
            nn.Linear(channels * _same_out(lr_size, n_scales - 1) ** 2, code),
            nn.LeakyReLU(0.2),
            nn.Linear(code, code),
        )
        init_encoder_weights(self)
        init_linear_output(self.head[-1])
        self.input_shape = (3, lr_size, lr_size)
        self.code_shape = (n_latents, latent_dim)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        _check_input(img, self.input_shape, "LowResEncoder")
        return self.head(self.features(img).flatten(1)).unflatten(1, self.code_shape)


class AudioEncoder(nn.Module):
    """Ea: the 257 x 257 log-spectrogram of 4 s of speech -> a latent code for G.

    Input: (B, 1, freq, time), as made by
    :func:`components.data.features.face_sr_spectrogram` (add the channel axis). A 4x4
    stride-2 conv to ``base`` channels, then ``n_blocks`` blocks of a 4x4 stride-1 conv
    and a 4x4 stride-2 conv that doubles the channels (capped): 257 -> 129 -> 65 -> 33
    -> 17 -> 9 -> 5 -> 3 and 64 -> 128 -> ... -> 2048 channels at the paper's sizes;
    then FC ``fc`` + LeakyReLU and FC to ``n_latents * latent_dim``.

    Normalisation: the reference audio encoder has none. The default here is batch
    norm (after every conv but the first), which makes this 14-conv, 400M-parameter
    stack much easier to optimise. Instance norm is a poor fit: the last maps are 3x3,
    and normalising each channel over 9 values per clip would erase its energy, the
    main thing the code is made from. ``norm="none"`` reproduces the reference.
    """

    def __init__(self, spec_shape: tuple[int, int], n_latents: int, latent_dim: int, *, base: int = 64,
                 cap: int = 2048, n_blocks: int = 6, fc: int = 8192, norm: Norm = "batch") -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_block(1, base, 4, 2, "none")]
        channels = base
        for _ in range(n_blocks):
            wider = min(2 * channels, cap)
            layers += [conv_block(channels, channels, 4, 1, norm), conv_block(channels, wider, 4, 2, norm)]
            channels = wider
        self.features = nn.Sequential(*layers)
        height, width = (_same_out(s, n_blocks + 1) for s in spec_shape)
        self.head = nn.Sequential(
            nn.Linear(channels * height * width, fc),
            nn.LeakyReLU(0.2),
            nn.Linear(fc, n_latents * latent_dim),
        )
        init_encoder_weights(self)
        init_linear_output(self.head[-1])
        self.input_shape = (1, *spec_shape)
        self.code_shape = (n_latents, latent_dim)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        _check_input(spec, self.input_shape, "AudioEncoder")
        return self.head(self.features(spec).flatten(1)).unflatten(1, self.code_shape)
