"""The lip-sync expert: does this mel window go with these lips?

:class:`SyncExpert` embeds the lower halves of ``window`` consecutive coarse faces (the
frames stacked as 3 * window channels) and the mel window of the same 0.2 s into one
space; both embeddings are positive (softplus) and L2-normalised, so their cosine lies
in (0, 1] and reads as a probability of being in sync (:func:`sync_probability`),
trained with binary cross-entropy as in Wav2Lip's expert. Frozen after its own stage,
it is the sync loss of the coarse upsampler and the lip-sync judge of the evaluation.

The lips branch sees each frame minus the window's mean frame: the MOTION of the lower
face, not its appearance (skin, beard, collar, background differ far more between speakers
than the mouth moves). Measured on the default corpus (48 px faces, batch 32, Adam 1e-3):
on the raw frames the expert stayed at chance (BCE 0.693 after 1500 steps, 0.48 accuracy
on unseen speakers); on the motion it reached 0.70 in 1000 steps.

The audio branch (:class:`MelEncoder`) is shared in design with the coarse upsampler,
which has its own instance.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from components.models.talking.blocks import ConvUnit

SYNC_EPS = 1e-6
# Both branches end on a small grid, flattened into the head, not a global mean: a mean over
# the mel map would make the embedding blind to WHICH frequencies carry the energy (the
# formants that shape the mouth), and one over the face to where the mouth is. With global
# means the expert stayed at chance (BCE 0.693 after 1500 steps on the default corpus).
MEL_GRID = (5, 2)  # mel bands x time steps
LIP_GRID = (2, 3)  # rows x columns of the lower face


def lower_half(frames: torch.Tensor) -> torch.Tensor:
    """The bottom ``H // 2`` rows of ``... x H x W`` frames (the mouth region the expert reads)."""
    height = frames.shape[-2]
    return frames[..., height - height // 2:, :]


def sync_probability(video_emb: torch.Tensor, audio_emb: torch.Tensor) -> torch.Tensor:
    """Per-sample cosine of two L2-normalised ``B x D`` embeddings, clamped into (0, 1) for BCE.

    Computed in float32 whatever the inputs' dtype: in bfloat16, 1 - 1e-6 rounds to 1.
    """
    return (video_emb.float() * audio_emb.float()).sum(dim=1).clamp(SYNC_EPS, 1.0 - SYNC_EPS)


def _widths(base: int, cap: int, n: int) -> list[int]:
    return [min(cap, base * 2**i) for i in range(n)]


class MelEncoder(nn.Module):
    """``B x 1 x n_mels x mel_steps`` log-mel -> ``B x dim``.

    The input is standardised by a (non-affine) batch norm, so the raw log-mel scale
    (about -11.5 for silence) needs no constant here; then a stem, ``stages`` stride-2
    stages of (conv, residual conv), an average pool to a :data:`MEL_GRID` map, flattened.
    """

    def __init__(self, dim: int, *, base: int, cap: int, stages: int) -> None:
        super().__init__()
        self.standardise = nn.BatchNorm2d(1, affine=False)
        widths = _widths(base, cap, stages + 1)
        layers: list[nn.Module] = [ConvUnit(1, widths[0], 3)]
        for cin, cout in zip(widths[:-1], widths[1:]):
            layers += [ConvUnit(cin, cout, 3, 2), ConvUnit(cout, cout, 3, residual=True)]
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(MEL_GRID), nn.Flatten())
        self.head = nn.Linear(widths[-1] * MEL_GRID[0] * MEL_GRID[1], dim)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.standardise(mel)))


class LipEncoder(nn.Module):
    """``B x T x 3 x h x w`` lower faces -> ``B x dim`` (frames stacked as channels; a :data:`LIP_GRID` map
    flattened into the head)."""

    def __init__(self, window: int, dim: int, *, base: int, cap: int, stages: int) -> None:
        super().__init__()
        widths = _widths(base, cap, stages + 1)
        layers: list[nn.Module] = [ConvUnit(3 * window, widths[0], 7)]
        for cin, cout in zip(widths[:-1], widths[1:]):
            layers += [ConvUnit(cin, cout, 3, 2), ConvUnit(cout, cout, 3, residual=True)]
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(LIP_GRID), nn.Flatten())
        self.head = nn.Linear(widths[-1] * LIP_GRID[0] * LIP_GRID[1], dim)

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(faces.flatten(1, 2)))


class SyncExpert(nn.Module):
    """Lip-sync expert: ``forward(faces, mel) -> (video_emb, audio_emb)``, each ``B x dim``, unit norm.

    ``faces``: ``B x window x 3 x (coarse_size // 2) x coarse_size`` in [-1, 1] (see
    :func:`lower_half`); ``mel``: ``B x 1 x n_mels x mel_steps``.
    """

    def __init__(self, window: int, dim: int, *, base: int, cap: int, face_stages: int, mel_stages: int) -> None:
        super().__init__()
        self.window = window
        self.lips = LipEncoder(window, dim, base=base, cap=cap, stages=face_stages)
        self.voice = MelEncoder(dim, base=base, cap=cap, stages=mel_stages)

    def forward(self, faces: torch.Tensor, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.embed_video(faces), self.embed_audio(mel)

    def embed_video(self, faces: torch.Tensor) -> torch.Tensor:
        """The unit-norm embedding of ``B x window x 3 x H x W`` lower-half faces (one branch alone:
        the evaluation embeds every window of a clip once and compares it with many audio offsets)."""
        if faces.dim() != 5 or faces.shape[1] != self.window:
            raise ValueError(f"faces must be B x {self.window} x 3 x H x W, got {tuple(faces.shape)}")
        motion = faces - faces.mean(dim=1, keepdim=True)  # see the module docstring: motion, not appearance
        return F.normalize(F.softplus(self.lips(motion)), dim=1)

    def embed_audio(self, mel: torch.Tensor) -> torch.Tensor:
        """The unit-norm embedding of ``B x 1 x n_mels x mel_steps`` mel windows."""
        return F.normalize(F.softplus(self.voice(mel)), dim=1)
