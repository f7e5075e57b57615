"""Learned facial keypoints with local affine frames (stage 2, first-order-motion style).

:class:`KeypointDetector` resizes any face to ``size`` (64 px), runs an hourglass and
predicts one heatmap per keypoint; a softmax (with a temperature) over each heatmap
makes it a distribution whose mean is the keypoint, (x, y) in [-1, 1] as
``F.grid_sample(align_corners=True)`` reads them. A second head predicts a 2x2 matrix
per pixel and keypoint; its heatmap-weighted mean is the keypoint's Jacobian, the local
linear frame the dense motion uses to move the neighbourhood of the keypoint. That head
starts at zero weights and identity bias, so every Jacobian starts as the identity.
No supervision: the equivariance losses of the training recipe (with
:mod:`components.models.talking.transforms`) make the keypoints consistent.
"""

from __future__ import annotations

import torch
from torch import nn

from components.models.layers import Norm
from components.models.talking.blocks import Hourglass, coordinate_grid, resize

class KeypointDetector(nn.Module):
    """``forward(img B x 3 x H x W) -> {"value": B x K x 2, "jacobian": B x K x 2 x 2}``."""

    def __init__(self, *, num_kp: int, size: int, expansion: int, cap: int, depth: int, temperature: float,
                 head_kernel: int, norm: Norm) -> None:
        super().__init__()
        if size % 2**depth:
            raise ValueError(f"keypoint input size {size} is not divisible by 2**{depth}")
        self.num_kp = num_kp
        self.size = size
        self.temperature = temperature
        self.hourglass = Hourglass(3, expansion, cap, depth, norm)
        features = self.hourglass.out_channels
        self.heatmaps = nn.Conv2d(features, num_kp, head_kernel, padding=head_kernel // 2)
        self.frames = nn.Conv2d(features, 4 * num_kp, head_kernel, padding=head_kernel // 2)
        nn.init.zeros_(self.frames.weight)
        with torch.no_grad():
            self.frames.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 1.0]).repeat(num_kp))
        self.register_buffer("grid", coordinate_grid(size, size), persistent=False)

    def forward(self, img: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.hourglass(resize(img, self.size))
        logits = self.heatmaps(features)
        b, k, h, w = logits.shape
        weights = torch.softmax(logits.flatten(2).float() / self.temperature, dim=2)  # B x K x HW
        value = weights @ self.grid.reshape(h * w, 2).float()  # B x K x 2
        frames = self.frames(features).float().reshape(b, k, 4, h * w)
        jacobian = (frames * weights[:, :, None, :]).sum(dim=3).reshape(b, k, 2, 2)
        return {"value": value, "jacobian": jacobian}
