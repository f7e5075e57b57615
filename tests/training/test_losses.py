"""Losses: exact values on hand-made inputs, regularisers on real networks, and the
shift-tolerant LPIPS on a drawn face blurred by different amounts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from components.models.face_sr.generator import Discriminator, Generator
from components.training.losses import (
    PerceptualLoss,
    d_logistic,
    g_nonsaturating,
    latent_loss,
    path_length_penalty,
    r1_penalty,
    reconstruction_loss,
)

LOG2 = math.log(2.0)


def test_reconstruction_loss() -> None:
    pred, target = torch.tensor([[0.0, 1.0, -1.0]]), torch.tensor([[0.5, -1.0, -1.0]])
    assert reconstruction_loss(pred, target).item() == pytest.approx((0.5 + 2.0) / 3)
    assert reconstruction_loss(pred, target, "l2").item() == pytest.approx((0.25 + 4.0) / 3)
    assert reconstruction_loss(pred, pred).item() == 0.0
    with pytest.raises(ValueError, match="unknown reconstruction loss"):
        reconstruction_loss(pred, target, "huber")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shape mismatch"):
        reconstruction_loss(pred, target[:, :2])


def test_latent_loss() -> None:
    codes = torch.randn(2, 12, 8)
    assert latent_loss(codes, codes).item() == 0.0
    assert latent_loss(codes + 0.5, codes).item() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="shape mismatch"):
        latent_loss(codes, codes[:, :10])


def test_gan_losses_values_and_directions() -> None:
    zeros = torch.zeros(4)
    assert g_nonsaturating(zeros).item() == pytest.approx(LOG2)
    assert d_logistic(zeros, zeros).item() == pytest.approx(2 * LOG2)
    # D is rewarded for high real logits and low fake logits; G for high fake logits.
    assert d_logistic(zeros + 3, zeros - 3) < d_logistic(zeros, zeros) < d_logistic(zeros - 3, zeros + 3)
    d_fake = torch.zeros(4, requires_grad=True)
    g_nonsaturating(d_fake).backward()
    assert (d_fake.grad < 0).all()  # gradient descent on G's loss raises D(fake)
    # Non-saturating: G still gets a strong gradient when D confidently rejects fakes.
    rejected = torch.full((4,), -10.0, requires_grad=True)
    g_nonsaturating(rejected).backward()
    assert rejected.grad.abs().sum() == pytest.approx(1.0, rel=1e-3)


def test_r1_penalty_is_zero_when_d_ignores_its_input() -> None:
    bias = torch.nn.Parameter(torch.tensor(0.7))
    real = torch.randn(3, 3, 8, 8, requires_grad=True)
    d_out = bias.expand(3) * 2.0  # depends on D's weights, not on the images
    assert r1_penalty(d_out, real).item() == 0.0


def test_r1_penalty_of_a_linear_d_is_its_squared_weight_norm() -> None:
    weight = torch.randn(3, 8, 8)
    real = torch.randn(4, 3, 8, 8, requires_grad=True)
    penalty = r1_penalty((real * weight).sum(dim=(1, 2, 3)), real)
    assert penalty.item() == pytest.approx(weight.square().sum().item(), rel=1e-5)
    with pytest.raises(ValueError, match="requires_grad_"):
        r1_penalty((real.detach() * weight).sum(dim=(1, 2, 3)), real.detach())
    with pytest.raises(ValueError, match="no autograd graph"), torch.no_grad():
        r1_penalty((real * weight).sum(dim=(1, 2, 3)), real)


def test_r1_penalty_trains_a_real_discriminator() -> None:
    """R1 needs a second derivative through every layer of D (blur, mbstd, lrelu)."""
    torch.manual_seed(0)
    D = Discriminator(16, {16: 8, 8: 8, 4: 8})
    real = torch.randn(4, 3, 16, 16).requires_grad_(True)
    penalty = r1_penalty(D(real), real)
    assert penalty.item() > 0
    penalty.backward()
    # Every weight shapes dD/dx; only the last bias cannot (it shifts D, not its slope).
    for name, p in D.named_parameters():
        assert (p.grad is None) == (name == "out.bias"), name
        assert p.grad is None or torch.isfinite(p.grad).all(), name
    assert D.from_rgb.weight.grad.abs().sum() > 0 and D.fc.weight.grad.abs().sum() > 0


def test_path_length_penalty() -> None:
    torch.manual_seed(0)
    G = Generator(16, 16, 16, {4: 8, 8: 8, 16: 8}, mapping_layers=2)
    ws = G.mapping(torch.randn(4, 16)).unsqueeze(1).repeat(1, G.n_latents, 1).detach().requires_grad_(True)
    penalty, new_mean = path_length_penalty(G.synthesis(ws, noise=True), ws, torch.zeros(()), decay=0.5)
    assert new_mean.item() > 0 and not new_mean.requires_grad
    assert torch.isfinite(penalty) and penalty.item() >= 0
    penalty.backward()  # needs a second derivative through G's upsampling and modulation
    assert G.synthesis.blocks[1].conv0.conv.weight.grad.abs().sum() > 0
    # An isometry (scaled orthogonal Jacobian) changes the image by the same amount in
    # every direction: its path lengths vary only with the random image-space probe,
    # relatively far less than those of a map that mostly moves along one direction.
    w = torch.randn(256, 48, requires_grad=True)
    q, _ = torch.linalg.qr(torch.randn(48, 48))
    scales = torch.full((48,), 0.1)
    scales[0] = 10.0
    relative = {}
    for name, jacobian in {"isometric": 3.0 * q, "one direction": torch.diag(scales) @ q}.items():
        img = (w @ jacobian).reshape(256, 3, 4, 4)
        penalty, mean = path_length_penalty(img, w, torch.zeros(()), decay=1.0)
        relative[name] = penalty / mean.square()
        if name == "isometric":  # |3 q^T y| = 3 |y|, y ~ N(0, I / 16) in 48 dims: about 3 sqrt(3)
            assert mean.item() == pytest.approx(3.0 * math.sqrt(3.0), rel=0.1)
    assert relative["isometric"] < 0.1 * relative["one direction"]
    with pytest.raises(ValueError, match="requires_grad_"):
        path_length_penalty(img, w.detach(), torch.zeros(()))


# --- perceptual ----------------------------------------------------------------------


def drawn_face(size: int = 64) -> torch.Tensor:
    """A face-like test image in [-1, 1]: skin ellipse, eyes, brows, mouth, textured hair."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.zeros((size, size, 3))
    img[:] = (0.25, 0.35, 0.55)
    face = ((xx - 0.5) / 0.32) ** 2 + ((yy - 0.55) / 0.42) ** 2 < 1
    img[face] = (0.85, 0.65, 0.55)
    hair = (((xx - 0.5) / 0.36) ** 2 + ((yy - 0.3) / 0.25) ** 2 < 1) & (yy < 0.3)
    img[hair] = np.stack([0.2 + 0.1 * np.sin(xx[hair] * 90)] * 3, axis=-1) * (0.8, 0.6, 0.4)
    for cx in (0.38, 0.62):
        img[((xx - cx) / 0.06) ** 2 + ((yy - 0.48) / 0.03) ** 2 < 1] = (0.1, 0.1, 0.1)
        img[(np.abs(xx - cx) < 0.07) & (np.abs(yy - 0.41) < 0.012)] = (0.25, 0.15, 0.1)
    img[((xx - 0.5) / 0.12) ** 2 + ((yy - 0.75) / 0.025) ** 2 < 1] = (0.6, 0.2, 0.2)
    return torch.from_numpy(img).float().permute(2, 0, 1)[None] * 2 - 1


def gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = int(math.ceil(3 * sigma))
    taps = torch.exp(-torch.arange(-radius, radius + 1).float() ** 2 / (2 * sigma**2))
    taps = taps / taps.sum()
    x = F.pad(img, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, taps.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
    return F.conv2d(x, taps.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)


@pytest.fixture(scope="module")
def perceptual() -> PerceptualLoss:
    return PerceptualLoss()


def test_perceptual_loss_orders_blur_levels(perceptual: PerceptualLoss) -> None:
    face = drawn_face()
    with torch.no_grad():
        same = perceptual(face, face).item()
        dists = [perceptual(face, gaussian_blur(face, s)).item() for s in (0.5, 1.0, 2.0, 4.0)]
    print(f"\nST-LPIPS(face, face)={same:.2e}; blurred by sigma 0.5/1/2/4:", [f"{d:.4f}" for d in dists])
    assert abs(same) < 1e-6
    assert dists[0] > 0
    assert dists == sorted(dists) and len(set(dists)) == 4  # less blur, smaller distance


def test_perceptual_loss_is_frozen_deterministic_and_differentiable(perceptual: PerceptualLoss) -> None:
    assert not any(p.requires_grad for p in perceptual.parameters())
    torch.nn.ModuleDict({"lpips": perceptual}).train()  # what a training loop does to its modules
    assert not perceptual.net.training
    face = drawn_face()
    blurred = gaussian_blur(face, 1.0).requires_grad_(True)
    first = perceptual(face, blurred)
    assert first.item() == perceptual(face, blurred).item()  # dropout stays off
    first.backward()
    assert blurred.grad is not None and blurred.grad.abs().sum() > 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = perceptual(face, blurred.detach())
    assert low.dtype == torch.float32 and low.item() == pytest.approx(first.item(), rel=1e-5)
    with pytest.raises(ValueError, match="expected two"):
        perceptual(face, face[:, :, :32])
    small = face[:, :, :20, :20]
    with pytest.raises(ValueError, match="at least 21 px"):
        perceptual(small, small)
    assert perceptual(face[:, :, :21, :21], face[:, :, :21, :21]).item() == 0.0


def test_pyramid_l1_sums_the_l1_of_every_scale():
    from components.training.losses import pyramid_l1

    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert pyramid_l1(x, x).item() == 0.0
    assert pyramid_l1(x + 0.1, x, scales=4).item() == pytest.approx(0.4, abs=1e-5)  # a constant error at each of 4 scales
    # a checkerboard error averages out at every coarser scale: only the full scale sees it
    board = (torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2 * 0.2 - 0.1
    assert pyramid_l1(x + board, x, scales=3).item() == pytest.approx(0.1, abs=1e-5)
