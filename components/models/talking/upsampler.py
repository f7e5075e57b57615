"""The trained video upsampler as one object: stage 1 then stage 2, for inference and evaluation.

:class:`VideoUpsampler` holds the config and the five networks (eval mode, no
gradients). Per video: :meth:`prepare_identity` once with the identity photo (its
keypoints, its shrunk copy for the dense motion and the generator's encoding of it),
then per batch of frames :meth:`coarse` (8x8 window + mel -> coarse face) and
:meth:`animate` (coarse faces -> ``out_size`` faces). With ``identity=False`` (the
ablation) the photo is ignored: each coarse frame, bicubic-enlarged to ``out_size``, is
its own source. :func:`load_video_sr` reads the ``train_animate`` stage's ``model.pt``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from components.models.checkpoint import load_model
from components.models.talking.blocks import resize
from components.models.talking.presets import FAMILY, MODEL_NAMES, ModelConfig

MODEL_STAGE = "train_animate"


@dataclass(frozen=True)
class IdentityState:
    """What stage 2 needs of a source, computed once: keypoints, the ``kp_size`` copy, generator features."""

    kp: dict[str, torch.Tensor]
    small: torch.Tensor
    features: torch.Tensor


def enlarge(frames: torch.Tensor, size: int) -> torch.Tensor:
    """Bicubic enlargement of ``B x 3 x h x w`` faces in [-1, 1] to ``size`` (clamped back into range)."""
    return F.interpolate(frames, size=(size, size), mode="bicubic", align_corners=False).clamp(-1.0, 1.0)


class VideoUpsampler:
    """Stage 1 and stage 2 of a trained model; every method runs under ``torch.no_grad``."""

    def __init__(self, cfg: ModelConfig, nets: dict[str, nn.Module]) -> None:
        missing = [n for n in MODEL_NAMES if n not in nets]
        if missing:
            raise ValueError(f"a VideoUpsampler needs the networks {MODEL_NAMES}, missing {missing}")
        self.cfg = cfg
        self.nets = {name: nets[name].eval().requires_grad_(False) for name in MODEL_NAMES}

    @property
    def device(self) -> torch.device:
        return next(self.nets["generator"].parameters()).device

    @torch.no_grad()
    def coarse(self, lr: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        """``B x window x 3 x lr_size^2`` frames + ``B x 1 x n_mels x mel_steps`` -> ``B x 3 x coarse_size^2``."""
        return self.nets["coarse"](lr, mel)

    @torch.no_grad()
    def _state(self, source: torch.Tensor) -> IdentityState:
        return IdentityState(self.nets["kp"](source), resize(source, self.cfg.kp_size),
                             self.nets["generator"].encode(source))

    @torch.no_grad()
    def prepare_identity(self, photo: torch.Tensor) -> IdentityState | None:
        """The photo's stage-2 state (``B x 3 x out_size^2``, B = 1 for a whole video); None without identity."""
        if not self.cfg.identity:
            return None
        size = self.cfg.out_size
        if photo.dim() != 4 or tuple(photo.shape[1:]) != (3, size, size):
            raise ValueError(f"the identity photo must be B x 3 x {size} x {size}, got {tuple(photo.shape)}")
        return self._state(photo)

    @torch.no_grad()
    def animate(self, state: IdentityState | None, coarse_frames: torch.Tensor) -> torch.Tensor:
        """``B x 3 x H x W`` coarse faces -> ``B x 3 x out_size^2``, moved like them, with the photo's identity.

        A one-photo ``state`` serves any number of frames. With ``cfg.identity`` false
        ``state`` is ignored and each enlarged coarse frame is its own source.
        """
        if not self.cfg.identity:
            state = self._state(enlarge(coarse_frames, self.cfg.out_size))
        elif state is None:
            raise ValueError("this model animates an identity photo: call prepare_identity(photo) first")
        n = coarse_frames.shape[0]
        kp_source = {k: v.expand(n, *v.shape[1:]) for k, v in state.kp.items()}
        small = state.small.expand(n, *state.small.shape[1:])
        kp_driving = self.nets["kp"](coarse_frames)
        motion = self.nets["motion"](small, kp_driving, kp_source)
        return self.nets["generator"].decode(state.features, motion["deformation"], motion["occlusion"])


def load_video_sr(path: str | Path, device: str | torch.device = "cpu") -> VideoUpsampler:
    """The :class:`VideoUpsampler` of a ``train_animate`` ``model.pt`` (CheckpointError if it is not one)."""
    model = load_model(path, MODEL_NAMES, expect_family=FAMILY, expect_stage=MODEL_STAGE)
    nets = {name: net.to(device) for name, net in model.networks.items()}
    return VideoUpsampler(ModelConfig(**model.config), nets)
