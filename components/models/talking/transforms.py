"""Random smooth warps of images and points, for the keypoints' equivariance losses.

A :class:`RandomWarp` is one random map T of the plane per sample (coordinates (x, y)
in [-1, 1], the ``grid_sample(align_corners=True)`` convention): an affine part
``A z + t`` with A, t drawn around the identity (``sigma_affine``), plus a thin-plate
spline over a ``points x points`` grid of control points p_n with random weights w_n
(``sigma_tps``, one per axis):

    T(z) = A z + t + sum_n w_n U(|z - p_n|),   U(r) = r^2 log r

:meth:`warp_image` resamples an image so that the output at z is the input at T(z).
A keypoint at p in the input therefore appears at the z with T(z) = p, which is what
the equivariance losses state: ``warp_points(kp(warped)) == kp(image)`` and, for the
local frames, ``jacobian(kp(warped)) @ J(warped) == J(image)``. :meth:`jacobian` is
the analytic dT/dz. Every draw comes from the given ``torch.Generator``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from components.models.talking.blocks import ALIGN_CORNERS, coordinate_grid

R2_FLOOR = 1e-12


class RandomWarp:
    """``batch`` random warps; :meth:`warp_image`, :meth:`warp_points`, :meth:`jacobian`."""

    def __init__(self, batch: int, *, sigma_affine: float, sigma_tps: float, points: int,
                 generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> None:
        if batch < 1 or points < 1 or sigma_affine < 0 or sigma_tps < 0:
            raise ValueError(f"RandomWarp needs batch, points >= 1 and sigmas >= 0, got batch={batch}, "
                             f"points={points}, sigma_affine={sigma_affine}, sigma_tps={sigma_tps}")
        noise = torch.randn(batch, 2, 3, generator=generator) * sigma_affine
        self.theta = (torch.eye(2, 3).expand(batch, 2, 3) + noise).to(device)  # [A | t]
        self.control = coordinate_grid(points, points).reshape(-1, 2).to(device)  # N x 2
        self.weights = (torch.randn(batch, points * points, 2, generator=generator) * sigma_tps).to(device)
        self.batch = batch

    @classmethod
    def identity(cls, batch: int, device: torch.device | str = "cpu") -> RandomWarp:
        """The warp T(z) = z (both sigmas zero)."""
        return cls(batch, sigma_affine=0.0, sigma_tps=0.0, points=1, device=device)

    def _offsets(self, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z - p_n) as B x M x N x 2 and |z - p_n|^2 as B x M x N (floored)."""
        diff = coords[:, :, None, :] - self.control.to(coords.dtype)[None, None]
        return diff, diff.square().sum(-1).clamp_min(R2_FLOOR)

    def warp_points(self, coords: torch.Tensor) -> torch.Tensor:
        """T(coords) for ``B x M x 2`` coordinates."""
        self._check(coords)
        theta = self.theta.to(coords.dtype)
        out = coords @ theta[:, :, :2].transpose(1, 2) + theta[:, None, :, 2]
        _, r2 = self._offsets(coords)
        radial = 0.5 * r2 * torch.log(r2)  # U(r) = r^2 log r = r2 log(r2) / 2
        return out + radial @ self.weights.to(coords.dtype)

    def jacobian(self, coords: torch.Tensor) -> torch.Tensor:
        """dT/dz at ``B x M x 2`` coordinates: ``B x M x 2 x 2``, row i = gradient of output i."""
        self._check(coords)
        diff, r2 = self._offsets(coords)
        grad_u = diff * (torch.log(r2) + 1.0)[..., None]  # dU/dz = (z - p)(2 log r + 1): B x M x N x 2
        tps = torch.einsum("bni,bmnj->bmij", self.weights.to(coords.dtype), grad_u)
        return self.theta[:, None, :, :2].to(coords.dtype) + tps

    def warp_image(self, img: torch.Tensor) -> torch.Tensor:
        """``B x C x H x W`` resampled so that output(z) = img(T(z)) (reflection at the borders)."""
        b, _, h, w = img.shape
        grid = coordinate_grid(h, w, device=img.device, dtype=img.dtype).reshape(1, h * w, 2).expand(b, -1, -1)
        source = self.warp_points(grid).reshape(b, h, w, 2)
        return F.grid_sample(img, source, padding_mode="reflection", align_corners=ALIGN_CORNERS)

    def _check(self, coords: torch.Tensor) -> None:
        if coords.dim() != 3 or coords.shape[0] != self.batch or coords.shape[2] != 2:
            raise ValueError(f"coordinates must be {self.batch} x M x 2, got {tuple(coords.shape)}")
