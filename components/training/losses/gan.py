"""GAN losses and their regularisers (StyleGAN2's choices).

The non-saturating logistic pair of Goodfellow et al. as used by StyleGAN: D minimises
softplus(D(fake)) + softplus(-D(real)), G minimises softplus(-D(fake)) (same fixed point
as the minimax loss but strong gradients early, when D easily rejects fakes).
Regularisers are written for *lazy* regularisation (StyleGAN2): they return the
unscaled penalty, and the step adds ``weight * interval * penalty`` every ``interval``
steps. Discriminator outputs are raw logits.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def g_nonsaturating(d_fake: torch.Tensor) -> torch.Tensor:
    """Generator loss ``mean(softplus(-D(G(z))))`` = -log sigmoid(D(G(z)))."""
    return F.softplus(-d_fake).mean()


def d_logistic(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator loss ``mean(softplus(D(fake))) + mean(softplus(-D(real)))``."""
    return F.softplus(d_fake).mean() + F.softplus(-d_real).mean()


def r1_penalty(d_real_out: torch.Tensor, real_img: torch.Tensor) -> torch.Tensor:
    """R1 gradient penalty: mean over the batch of ||d D(x) / d x||^2 on real images.

    Penalising D's gradient on real data keeps it from growing steep around the data
    manifold, which stabilises GAN training (Mescheder et al. 2018). Call with
    ``real_img.requires_grad_(True)`` and ``d_real_out = D(real_img)`` computed with
    autograd on; the result is differentiable (``create_graph=True``). StyleGAN2 adds
    ``gamma / 2 * interval * r1_penalty(...)`` every ``interval`` (16) D steps.
    """
    if not real_img.requires_grad:
        raise ValueError("real_img must require grad: call real_img.requires_grad_(True) before D(real_img)")
    if not d_real_out.requires_grad:
        raise ValueError("d_real_out has no autograd graph: compute D(real_img) outside torch.no_grad()")
    (grad,) = torch.autograd.grad(d_real_out.sum(), real_img, create_graph=True, allow_unused=True)
    if grad is None:  # D ignores its input: its gradient is zero
        return real_img.new_zeros((), dtype=torch.float32)
    return grad.float().square().flatten(1).sum(dim=1).mean()


def path_length_penalty(fake_img: torch.Tensor, ws: torch.Tensor, pl_mean: torch.Tensor,
                        decay: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """StyleGAN2 path-length regulariser; returns ``(penalty, new_pl_mean)``.

    Encourages a fixed-size step in w to change the image by a fixed amount in every
    direction (|J_w^T y| constant for random image-space y), which makes G smoother and
    easier to invert, exactly what the encoders of face SR then have to do.
    ``fake_img = G.synthesis(ws)`` with ``ws`` requiring grad; ``pl_mean`` is the running
    mean of the path lengths (a scalar the loop keeps, starting at 0), updated with
    ``decay``. The loop adds ``weight * interval * penalty`` every ``interval`` G steps
    (StyleGAN2: weight 2, interval 4).
    """
    if not ws.requires_grad:
        raise ValueError("ws must require grad: call ws.requires_grad_(True) before G.synthesis(ws)")
    height, width = fake_img.shape[-2:]
    noise = torch.randn_like(fake_img) / math.sqrt(height * width)
    (grad,) = torch.autograd.grad((fake_img * noise).sum(), ws, create_graph=True)
    squared = grad.float().square().sum(dim=-1)
    if squared.ndim == 2:  # per-layer ws (B, n_latents, w_dim): average over layers
        squared = squared.mean(dim=1)
    lengths = squared.sqrt()
    new_mean = pl_mean.detach().lerp(lengths.detach().mean(), decay)
    return (lengths - new_mean).square().mean(), new_mean
