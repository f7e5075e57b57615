"""Shift-tolerant LPIPS as a frozen network: a training loss and an evaluation metric.

One module for both uses (the training stages weight it as a loss, evaluation scores
outputs with it), so the weights and their completeness check live in one place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch import nn


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
        return self.distances(x, y).mean()

    def distances(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The distance of each pair, (B,) (the evaluation scores per image in one pass)."""
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected two (B, 3, H, W) images, got {tuple(x.shape)} and {tuple(y.shape)}")
        if min(x.shape[-2:]) < self.MIN_SIZE:
            raise ValueError(f"images must be at least {self.MIN_SIZE} px on each side, got {tuple(x.shape[-2:])}")
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.net(x.float(), y.float()).flatten()


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
