"""F: fuse the low-res face code with the speech code, as a residual on the face code.

``F(wl, wa) = wl + mlp(concat(wl, wa))``. The low-res image determines most of the
face (pose, colours, rough shape); speech can only add what 8x8 pixels lose (e.g. cues
to gender and age), so the audio path is a correction on top of El's code rather than
a new code. The last layer starts near zero, so at initialisation F is (almost) the
identity on wl and training starts from the image-only result instead of from noise;
its weights are small but not zero, so every layer gets gradients from the first step.

Two switches exist for the ablations: ``use_audio=False`` feeds F a zero audio code (the
same network and training, without the voice: what F gains from capacity alone), and
``enabled=False`` makes F the identity on ``wl`` (no fusion: the image-only model).
"""

from __future__ import annotations

import torch
from torch import nn

from components.models.layers import init_encoder_weights, init_linear_output

RESIDUAL_INIT_GAIN = 1e-4


class ResidualFusion(nn.Module):
    """(wl, wa), both (B, n_latents, latent_dim) -> fused code of the same shape.

    An MLP of ``n_layers`` FC layers (``hidden`` wide, LeakyReLU(0.2) between) from the
    concatenated flattened codes to one code: 12288 -> 6144 -> 6144 -> 6144 in the paper.
    """

    def __init__(self, n_latents: int, latent_dim: int, *, hidden: int = 6144, n_layers: int = 3,
                 residual_init_gain: float = RESIDUAL_INIT_GAIN, enabled: bool = True,
                 use_audio: bool = True) -> None:
        super().__init__()
        self.enabled, self.use_audio = enabled, use_audio
        if n_layers < 1:
            raise ValueError(f"fusion needs at least one layer, got {n_layers}")
        code = n_latents * latent_dim
        dims = [2 * code] + [hidden] * (n_layers - 1) + [code]
        layers: list[nn.Module] = []
        for i in range(n_layers):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < n_layers - 1:
                layers.append(nn.LeakyReLU(0.2))
        self.mlp = nn.Sequential(*layers)
        init_encoder_weights(self)
        init_linear_output(self.mlp[-1], gain=residual_init_gain)
        self.code_shape = (n_latents, latent_dim)

    def forward(self, wl: torch.Tensor, wa: torch.Tensor) -> torch.Tensor:
        if wl.shape != wa.shape or tuple(wl.shape[1:]) != self.code_shape:
            raise ValueError(f"expected two codes (B, {self.code_shape[0]}, {self.code_shape[1]}), "
                             f"got {tuple(wl.shape)} and {tuple(wa.shape)}")
        if not self.enabled:
            return wl
        if not self.use_audio:
            wa = torch.zeros_like(wa)
        return wl + self.mlp(torch.cat([wl.flatten(1), wa.flatten(1)], dim=1)).view_as(wl)
