"""Dense motion from keypoints (stage 2): where each driving pixel reads the source, and what is hidden.

Each keypoint k gives a local motion of the driving frame's coordinates z into the
source's, the first-order expansion around the keypoints:

    T_k(z) = s_k + J_sk J_dk^-1 (z - d_k)

(s, d: source and driving keypoints, J their Jacobians), plus the identity for the
background. :class:`DenseMotion` warps the (small) source with each of these K + 1
motions, adds the difference of the driving and source keypoints' Gaussian heatmaps,
and lets an hourglass choose, per pixel, a softmax mixture of the motions (the dense
backward deformation ``sum_k m_k T_k``) and an occlusion map in (0, 1): where the
source has nothing to show (an opening mouth), the generator must inpaint.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from components.models.layers import Norm
from components.models.talking.blocks import ALIGN_CORNERS, Hourglass, coordinate_grid

DET_FLOOR = 1e-4


def inverse_2x2(m: torch.Tensor) -> torch.Tensor:
    """Closed-form inverse of ``... x 2 x 2`` matrices; |det| is kept >= DET_FLOOR (sign kept)."""
    a, b, c, d = m[..., 0, 0], m[..., 0, 1], m[..., 1, 0], m[..., 1, 1]
    det = a * d - b * c
    det = torch.where(det >= 0, det.clamp_min(DET_FLOOR), det.clamp_max(-DET_FLOOR))
    inv = torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], -2)
    return inv / det[..., None, None]


def keypoint_heatmaps(kp: torch.Tensor, grid: torch.Tensor, variance: float) -> torch.Tensor:
    """``B x K x H x W`` Gaussians exp(-|z - kp|^2 / (2 variance)) on ``grid`` (H x W x 2)."""
    diff = grid[None, None] - kp[:, :, None, None, :]
    return torch.exp(-0.5 * diff.square().sum(-1) / variance)


def sparse_motions(grid: torch.Tensor, kp_driving: dict[str, torch.Tensor],
                   kp_source: dict[str, torch.Tensor]) -> torch.Tensor:
    """``B x (K+1) x H x W x 2``: the identity, then T_k for every keypoint (see the module doc)."""
    d, s = kp_driving["value"], kp_source["value"]
    affine = kp_source["jacobian"] @ inverse_2x2(kp_driving["jacobian"])  # B x K x 2 x 2
    rel = grid[None, None] - d[:, :, None, None, :]  # B x K x H x W x 2
    moved = torch.einsum("bkij,bkhwj->bkhwi", affine, rel) + s[:, :, None, None, :]
    identity = grid[None, None].expand(d.shape[0], 1, *grid.shape)
    return torch.cat([identity, moved], dim=1)


class DenseMotion(nn.Module):
    """``forward(source_small, kp_driving, kp_source) -> {"deformation", "occlusion"}`` at ``size``.

    ``deformation``: ``B x size x size x 2``, a backward-warp grid for ``F.grid_sample``
    (align_corners=True); ``occlusion``: ``B x 1 x size x size`` in (0, 1). Also returns
    ``"mask"`` (``B x (K+1) x size x size``, the mixture weights) for figures.
    """

    def __init__(self, *, num_kp: int, size: int, expansion: int, cap: int, depth: int, kp_variance: float,
                 head_kernel: int, norm: Norm) -> None:
        super().__init__()
        if size % 2**depth:
            raise ValueError(f"dense motion size {size} is not divisible by 2**{depth}")
        self.num_kp = num_kp
        self.size = size
        self.kp_variance = kp_variance
        self.hourglass = Hourglass((num_kp + 1) * 4, expansion, cap, depth, norm)
        features = self.hourglass.out_channels
        self.mask = nn.Conv2d(features, num_kp + 1, head_kernel, padding=head_kernel // 2)
        self.occlusion = nn.Conv2d(features, 1, head_kernel, padding=head_kernel // 2)
        self.register_buffer("grid", coordinate_grid(size, size), persistent=False)

    def forward(self, source_small: torch.Tensor, kp_driving: dict[str, torch.Tensor],
                kp_source: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        b, c, h, w = source_small.shape
        if (h, w) != (self.size, self.size):
            raise ValueError(f"source_small must be {self.size} x {self.size}, got {h} x {w}")
        k1 = self.num_kp + 1
        grid = self.grid.to(source_small.dtype)
        motions = sparse_motions(grid, kp_driving, kp_source).to(source_small.dtype)  # B x K+1 x H x W x 2
        warped = F.grid_sample(source_small.repeat_interleave(k1, dim=0), motions.flatten(0, 1),
                               align_corners=ALIGN_CORNERS).reshape(b, k1, c, h, w)
        heat = (keypoint_heatmaps(kp_driving["value"], grid, self.kp_variance)
                - keypoint_heatmaps(kp_source["value"], grid, self.kp_variance))
        heat = torch.cat([heat.new_zeros(b, 1, h, w), heat.to(source_small.dtype)], dim=1)
        x = torch.cat([heat[:, :, None], warped], dim=2).reshape(b, k1 * (c + 1), h, w)
        features = self.hourglass(x)
        mask = torch.softmax(self.mask(features), dim=1)
        deformation = torch.einsum("bkhw,bkhwi->bhwi", mask, motions)
        occlusion = torch.sigmoid(self.occlusion(features))
        return {"deformation": deformation, "occlusion": occlusion, "mask": mask}
