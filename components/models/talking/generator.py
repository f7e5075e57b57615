"""The animation generator (stage 2): the identity photo's features, moved as the coarse face moves.

:class:`AnimationGenerator` encodes the source (``out_size``, 256 px) down by
``down_blocks`` halvings to the dense motion's resolution (``kp_size``), samples those
features with the deformation grid (backward warp), multiplies them by the occlusion
map (hidden regions fade to zero and the decoder fills them in), refines them with
residual blocks and decodes back to ``out_size`` (tanh). ``edge_kernel`` is the kernel of
the first and last convolutions, at full resolution (FOMM: 7; 3 is far cheaper on a CPU). :meth:`encode` and
:meth:`decode` are the two halves, so a video's source features are computed once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from components.models.layers import Norm
from components.models.talking.blocks import ALIGN_CORNERS, ConvUnit, DownBlock, ResBlock, UpBlock

class AnimationGenerator(nn.Module):
    """``forward(source B x 3 x S x S, deformation B x s x s x 2, occlusion B x 1 x s x s) -> B x 3 x S x S``."""

    def __init__(self, *, out_size: int, expansion: int, cap: int, down_blocks: int, bottleneck_blocks: int,
                 edge_kernel: int, norm: Norm) -> None:
        super().__init__()
        if out_size % 2**down_blocks:
            raise ValueError(f"generator out_size {out_size} is not divisible by 2**{down_blocks}")
        self.out_size = out_size
        self.feature_size = out_size // 2**down_blocks
        widths = [min(cap, expansion * 2**i) for i in range(down_blocks + 1)]
        self.stem = ConvUnit(3, widths[0], edge_kernel, norm=norm)
        self.down = nn.Sequential(*(DownBlock(widths[i], widths[i + 1], norm) for i in range(down_blocks)))
        self.bottleneck = nn.Sequential(*(ResBlock(widths[-1], norm) for _ in range(bottleneck_blocks)))
        self.up = nn.Sequential(*(UpBlock(widths[i + 1], widths[i], norm) for i in reversed(range(down_blocks))))
        self.to_rgb = nn.Conv2d(widths[0], 3, edge_kernel, padding=edge_kernel // 2)

    def encode(self, source: torch.Tensor) -> torch.Tensor:
        """``B x C x s x s`` features of the source (s = out_size / 2**down_blocks)."""
        if tuple(source.shape[-2:]) != (self.out_size, self.out_size):
            raise ValueError(f"source must be {self.out_size} x {self.out_size}, got {tuple(source.shape[-2:])}")
        return self.down(self.stem(source))

    def decode(self, features: torch.Tensor, deformation: torch.Tensor, occlusion: torch.Tensor) -> torch.Tensor:
        """Warp ``features`` by ``deformation``, mask them by ``occlusion`` (both at the features' size), decode.

        A batch of one source's features serves a batch of deformations (one video's frames).
        """
        size = tuple(features.shape[-2:])
        if tuple(deformation.shape[1:3]) != size or tuple(occlusion.shape[-2:]) != size:
            raise ValueError(f"deformation {tuple(deformation.shape)} and occlusion {tuple(occlusion.shape)} "
                             f"must be at the features' resolution {size}")
        if features.shape[0] != deformation.shape[0]:  # one source's features for a batch of frames
            features = features.expand(deformation.shape[0], -1, -1, -1)
        x = F.grid_sample(features, deformation.to(features.dtype), align_corners=ALIGN_CORNERS)
        x = self.bottleneck(x * occlusion.to(x.dtype))
        return torch.tanh(self.to_rgb(self.up(x)))

    def forward(self, source: torch.Tensor, deformation: torch.Tensor, occlusion: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(source), deformation, occlusion)
