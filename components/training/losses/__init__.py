"""Losses shared by both papers; every stage combines them with its own weights.

* :mod:`.reconstruction`: pixel (L1/L2, a multi-scale L1 pyramid) and latent-code regression;
* :mod:`.gan`: the non-saturating logistic GAN pair, R1 and the path-length regulariser;
* :class:`PerceptualLoss` (shift-tolerant LPIPS, a frozen network) lives with the
  networks, :mod:`components.models.perceptual`, since evaluation scores with it too.

Images are (B, 3, H, W) in [-1, 1]; each loss returns a scalar averaged over the batch.
"""

from components.models.perceptual import PerceptualLoss
from components.training.losses.gan import d_logistic, g_nonsaturating, path_length_penalty, r1_penalty
from components.training.losses.reconstruction import latent_loss, pyramid_l1, reconstruction_loss

__all__ = ["PerceptualLoss", "d_logistic", "g_nonsaturating", "latent_loss", "path_length_penalty", "pyramid_l1",
           "r1_penalty", "reconstruction_loss"]
