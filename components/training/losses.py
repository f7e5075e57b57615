"""Losses shared by both papers: reconstruction, perceptual, latent, GAN, regularisers.

All are pure functions of tensors (plus :class:`PerceptualLoss`, a frozen network)
returning a scalar averaged over the batch, so a training loop combines them with its
own weights. Images are (B, 3, H, W) in [-1, 1]; discriminator outputs are raw logits.

GAN losses are the non-saturating logistic pair of Goodfellow et al. as used by
StyleGAN: D minimises softplus(D(fake)) + softplus(-D(real)), G minimises
softplus(-D(fake)) (same fixed point as the minimax loss but strong gradients early,
when D easily rejects fakes). Regularisers are written for *lazy* regularisation
(StyleGAN2): they return the unscaled penalty, and the loop adds ``weight * interval *
penalty`` every ``interval`` steps.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn


def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, kind: Literal["l1", "l2"] = "l1") -> torch.Tensor:
    """Mean absolute (``l1``) or squared (``l2``) pixel error.

    L1 is the usual choice for faces: L2 over-penalises the few large errors at edges
    and so prefers blurry outputs.
    """
    if pred.shape != target.shape:
        raise ValueError(f"shape mismatch: {tuple(pred.shape)} vs {tuple(target.shape)}")
    if kind == "l1":
        return F.l1_loss(pred, target)
    if kind == "l2":
        return F.mse_loss(pred, target)
    raise ValueError(f"unknown reconstruction loss {kind!r}: expected 'l1' or 'l2'")


def latent_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error to target latent codes (e.g. El/Ea/F regressing Eh's code)."""
    if pred.shape != target.shape:
        raise ValueError(f"shape mismatch: {tuple(pred.shape)} vs {tuple(target.shape)}")
    return F.mse_loss(pred, target)


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


class PerceptualLoss(nn.Module):
    """Shift-tolerant LPIPS distance (Ghildyal & Liu, ECCV 2022), averaged over the batch.

    LPIPS compares deep features of two images through weights trained to match human
    judgements; the shift-tolerant variant uses an anti-aliased AlexNet with blur-pool
    so that a misalignment of a pixel or two, which face crops always have, is not
    counted as an error. The trained weights ship in the ``stlpips-pytorch`` wheel (no
    download). The network is frozen and always in eval mode (its dropout layers stay
    off whatever ``.train()`` is called on a parent module); gradients flow to the
    inputs. Computed in float32 even under autocast: the feature normalisation divides
    by small norms. Images must be at least :attr:`MIN_SIZE` pixels on each side (the
    trunk's reflection padding fails on smaller feature maps).
    """

    MIN_SIZE = 21

    def __init__(self, net: Literal["alex", "vgg"] = "alex") -> None:
        super().__init__()
        self.net = _load_stlpips(net)
        self.net.requires_grad_(False)
        self.net.eval()

    def train(self, mode: bool = True) -> PerceptualLoss:
        super().train(mode)
        self.net.eval()
        return self

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected two (B, 3, H, W) images, got {tuple(x.shape)} and {tuple(y.shape)}")
        if min(x.shape[-2:]) < self.MIN_SIZE:
            raise ValueError(f"images must be at least {self.MIN_SIZE} px on each side, got {tuple(x.shape[-2:])}")
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.net(x.float(), y.float()).mean()


def _load_stlpips(net: str) -> nn.Module:
    """The pretrained shift-tolerant LPIPS model, with its weights checked to be complete.

    ``stlpips.LPIPS`` loads its checkpoint with ``strict=False``, which would silently
    leave layers random if the file did not match; here every parameter must come from
    the file (the only keys allowed to be absent are ``lins.*``, aliases of ``lin0-4``).
    """
    try:
        from stlpips_pytorch import stlpips
    except ImportError as err:
        raise ImportError(
            "PerceptualLoss needs the 'stlpips-pytorch' package (and its imports torchvision, torchsummary, "
            f"IPython): pip install stlpips-pytorch torchsummary ipython ({err})"
        ) from err
    model = stlpips.LPIPS(net=net, variant="shift_tolerant", pretrained=False, verbose=False)
    weights = Path(stlpips.__file__).parent / "weights" / "vST0.0" / f"{net}_shift_tolerant.pth"
    if not weights.is_file():
        raise FileNotFoundError(f"shift-tolerant LPIPS weights not found at {weights}")
    result = model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("lins.")]
    if missing or result.unexpected_keys:
        raise RuntimeError(f"{weights} does not match the {net} model: missing {missing}, "
                           f"unexpected {result.unexpected_keys}")
    return model
