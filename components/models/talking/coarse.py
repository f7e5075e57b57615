"""Stage 1 of the video paper: a window of tiny frames + the mel window -> the coarse centre face.

:class:`CoarseUpsampler` stacks the ``window`` low-res frames (``lr_size``, 8 or 16 px)
as channels and encodes them at their own resolution; the features are resized to the
decoder's base resolution (``coarse_size / 2**up_blocks``), concatenated with the
bilinearly enlarged centre frame, and decoded to ``coarse_size`` by ``up_blocks - 1``
doubling blocks and a last doubling by sub-pixel convolution (3 x 4 channels shuffled
into a twice larger image: no convolution runs at the full output size, where thin
layers are slowest on a CPU). The audio embedding of the centre frame's mel window modulates (FiLM:
per-channel scale and shift) the base features and every decoder scale, so the speech
can set the mouth's shape at coarse and fine scales alike. With ``use_audio=False`` the
embedding is zero whatever the mel (the no-audio ablation: same network, same weights'
shapes), so the output depends on the frames only.
"""

from __future__ import annotations

import torch
from torch import nn

from components.models.layers import init_linear_output
from components.models.talking.blocks import ConvUnit, film, resize
from components.models.talking.sync import MelEncoder


class CoarseUpsampler(nn.Module):
    """``forward(lr B x T x 3 x s x s, mel B x 1 x n_mels x steps) -> B x 3 x out x out`` in [-1, 1]."""

    def __init__(self, *, window: int, out_size: int, width: int, audio_dim: int, enc_blocks: int,
                 up_blocks: int, mel_base: int, mel_cap: int, mel_stages: int, use_audio: bool) -> None:
        super().__init__()
        if out_size % 2**up_blocks:
            raise ValueError(f"coarse out_size {out_size} is not divisible by 2**{up_blocks}")
        self.window = window
        self.base_size = out_size // 2**up_blocks
        self.use_audio = use_audio
        self.audio_dim = audio_dim
        self.voice = MelEncoder(audio_dim, base=mel_base, cap=mel_cap, stages=mel_stages)
        self.stem = ConvUnit(3 * window, width, 3)
        self.encoder = nn.Sequential(*(ConvUnit(width, width, 3, residual=True) for _ in range(enc_blocks)))
        self.merge = ConvUnit(width + 3, width, 3)
        widths = [max(width // 2**i, 16) for i in range(up_blocks)]
        self.film = nn.ModuleList(nn.Linear(audio_dim, 2 * w) for w in widths)
        self.up = nn.ModuleList(
            nn.Sequential(nn.Upsample(scale_factor=2.0, mode="nearest"), ConvUnit(cin, cout, 3),
                          ConvUnit(cout, cout, 3, residual=True))
            for cin, cout in zip(widths[:-1], widths[1:])
        )
        self.to_rgb = nn.Sequential(nn.Conv2d(widths[-1], 3 * 4, 3, padding=1), nn.PixelShuffle(2))
        for layer in self.film:  # modulation starts near the identity, gradients still reach the mel encoder
            init_linear_output(layer, gain=0.1)

    def audio_embedding(self, mel: torch.Tensor) -> torch.Tensor:
        """``B x audio_dim``: the mel encoder's output, or zeros without audio."""
        if not self.use_audio:
            return mel.new_zeros(mel.shape[0], self.audio_dim)
        return self.voice(mel)

    def forward(self, lr: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        if lr.dim() != 5 or lr.shape[1] != self.window:
            raise ValueError(f"lr must be B x {self.window} x 3 x s x s, got {tuple(lr.shape)}")
        audio = self.audio_embedding(mel)
        x = self.encoder(self.stem(lr.flatten(1, 2)))
        centre = resize(lr[:, self.window // 2], self.base_size)
        x = self.merge(torch.cat([resize(x, self.base_size), centre], dim=1))
        x = film(x, self.film[0](audio))
        for block, modulation in zip(self.up, self.film[1:]):
            x = film(block(x), modulation(audio))
        return torch.tanh(self.to_rgb(x))
