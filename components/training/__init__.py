"""Training utilities shared by both papers (losses; loops live with their stages)."""

from components.training.losses import (
    PerceptualLoss,
    d_logistic,
    g_nonsaturating,
    latent_loss,
    path_length_penalty,
    r1_penalty,
    reconstruction_loss,
)

__all__ = [
    "PerceptualLoss",
    "d_logistic",
    "g_nonsaturating",
    "latent_loss",
    "path_length_penalty",
    "r1_penalty",
    "reconstruction_loss",
]
