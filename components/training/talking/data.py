"""The training split of the video paper in memory, and the windows its stages draw from it.

Every stage of the video paper trains on short windows of consecutive frames (5 frames and
the 16 mel steps around their centre) at random places of random clips, plus, for the
animation stage, full-size target frames and an identity photo. Decoding a 256 px JPEG
frame costs about as much as a training step spends on it, so the split is read once per
stage (:func:`load_clips`: the shards' ``clip`` mode, reduced in DataLoader workers) into a
:class:`ClipStore`: every frame at ``coarse_size`` (uint8), its ``lr`` input (float16,
degraded from the stored 256 px crop exactly as evaluation and inference degrade) and its
mel window (float16), and ``hr_frames_per_clip`` evenly spaced frames per clip at
``out_size`` (uint8). On the default corpus (351 training clips, ~40 k frames) that is
about 0.4 GB at 48 px.

:class:`WindowDraws` turns a seeded ``torch.Generator`` into the batches of a
:class:`~components.training.feeds.DrawnFeed`: the loop's resume replays the draws.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from components.config import Params
from components.data.dataset import ShardDataset
from components.data.features import resize
from components.data.sources.ids import UNKNOWN_SPEAKER
from components.figures.images import from_pixels, to_pixels
from components.models.talking import ModelConfig
from components.training.feeds import Batch

log = logging.getLogger(__name__)


@dataclass
class ClipStore:
    """Frames of many clips, concatenated: clip c holds rows ``start[c] : start[c] + length[c]``.

    ``coarse`` (N x 3 x c x c uint8), ``lr`` (N x 3 x s x s float16), ``mel`` (N x 80 x 16
    float16); ``hr`` (C x k x 3 x R x R uint8) the full-size frames at positions
    ``hr_frame`` (C x k) of each clip (None when the stage needs none); ``speaker`` (C)
    each clip's speaker index, ``keys`` the clips' keys.
    """

    coarse: torch.Tensor
    lr: torch.Tensor
    mel: torch.Tensor
    start: torch.Tensor
    length: torch.Tensor
    speaker: torch.Tensor
    keys: list[str]
    hr: torch.Tensor | None = None
    hr_frame: torch.Tensor | None = None

    @property
    def n_clips(self) -> int:
        return len(self.keys)

    @property
    def nbytes(self) -> int:
        tensors = [self.coarse, self.lr, self.mel] + ([self.hr] if self.hr is not None else [])
        return sum(t.numel() * t.element_size() for t in tensors)


def clip_stream(shards: str, split: str, cfg: ModelConfig, *, full_frames: int, num_workers: int) -> Iterator[dict]:
    """Every clip of ``split``: frames at ``coarse_size``, lr frames, mel windows, ``full_frames`` full-size frames."""
    dataset = ShardDataset(shards, split, "clip", train=False, hr_size=cfg.coarse_size, lr_size=cfg.lr_size,
                           window=cfg.window, full_frames=full_frames)
    return iter(DataLoader(dataset, batch_size=None, num_workers=num_workers))


def load_clips(params: Params, cfg: ModelConfig, *, hr_frames: int, split: str = "train",
               min_frames: int | None = None, required: bool = True) -> ClipStore | None:
    """Read ``split`` once into a :class:`ClipStore` (``hr_frames``: full-size frames per clip, 0 for none).

    Clips shorter than ``min_frames`` (default: two windows) cannot give a window with its
    neighbours and are left out with a warning. A split without any usable clip is an
    error, or None when not ``required``.
    """
    started = time.perf_counter()
    min_frames = 2 * cfg.window if min_frames is None else min_frames
    coarse, lr, mel, lengths, speakers, keys, hr, hr_frame = [], [], [], [], [], [], [], []
    clips = clip_stream(params.data_path("shards"), split, cfg, full_frames=hr_frames,
                        num_workers=params.talking.num_workers)
    for clip in clips:
        n = len(clip["pixels"])
        if n < min_frames:
            log.warning("%s: %d frames, fewer than %d: left out of training", clip["key"], n, min_frames)
            continue
        coarse.append(clip["pixels"])
        lr.append(clip["lr"].half())
        mel.append(clip["mel"].half())
        lengths.append(n)
        speaker = clip["speaker_id"]
        speakers.append(speaker if speaker != UNKNOWN_SPEAKER else f"{UNKNOWN_SPEAKER}/{clip['key']}")
        keys.append(clip["key"])
        if hr_frames:
            full = clip["full"]
            hr.append(full if full.shape[-1] == cfg.out_size else to_pixels(resize(from_pixels(full), cfg.out_size)))
            hr_frame.append(clip["full_index"])
    if not keys:
        if not required:
            return None
        raise ValueError(f"no clip of {min_frames}+ frames in the {split!r} split of {params.data_path('shards')}")
    length = torch.tensor(lengths)
    names = sorted(set(speakers))
    store = ClipStore(torch.cat(coarse), torch.cat(lr), torch.cat(mel), torch.cumsum(length, 0) - length, length,
                      torch.tensor([names.index(s) for s in speakers]), keys,
                      torch.stack(hr) if hr else None, torch.stack(hr_frame) if hr_frame else None)
    log.info("cached %d %s clips (%d frames, %d speakers, %.0f MB) in %.1f s", store.n_clips, split,
             len(store.coarse), len(names), store.nbytes / 2**20, time.perf_counter() - started)
    return store


class WindowDraws:
    """Random windows of a :class:`ClipStore` (``draw``: indices from a generator; ``make``: the batch).

    A sample is a clip and a centre frame f. Its keys, depending on what the stage asks for:

    * ``lr`` (B x T x 3 x s x s) the window of lr frames around f, ``mel`` (B x 1 x 80 x 16)
      f's mel window, ``coarse`` (B x 3 x c x c) frame f at coarse size;
    * ``span > 0``: ``lr_span`` (B x S x T x 3 x s x s), ``mel_span`` and ``coarse_span``
      for the S = window consecutive centres around f (the sync loss needs 5 outputs);
    * ``sync``: ``faces`` (B x T x 3 x c x c, the window around f) and ``sync_mel``, the
      mel window at f (label 1) or at a frame at least ``min_shift`` away in the same clip
      (label 0), ``label``;
    * ``hr``: f is one of the clip's full-size frames: ``hr`` (B x 3 x R x R) and ``photo``
      (B x 3 x R x R): a full-size frame of another clip of the speaker when ``photo ==
      "other_clip"`` and there is one, else the clip's full-size frame farthest from f.
    """

    def __init__(self, store: ClipStore, cfg: ModelConfig, batch_size: int, *, span: bool = False,
                 sync: bool = False, hr: bool = False, min_shift: int = 5, photo: str = "other_clip") -> None:
        if hr and store.hr is None:
            raise ValueError("full-size frames asked for, but the store holds none (hr_frames=0)")
        self.store, self.cfg, self.batch_size = store, cfg, batch_size
        self.span, self.sync, self.hr, self.min_shift, self.photo = span, sync, hr, min_shift, photo
        self.half = cfg.window // 2
        self.margin = 2 * self.half if span else self.half
        self.others = self._other_clips() if photo == "other_clip" else [[] for _ in store.keys]

    def _other_clips(self) -> list[list[int]]:
        by_speaker: dict[int, list[int]] = {}
        for c, s in enumerate(self.store.speaker.tolist()):
            by_speaker.setdefault(s, []).append(c)
        return [[o for o in by_speaker[s] if o != c] for c, s in enumerate(self.store.speaker.tolist())]

    def draw(self, gen: torch.Generator) -> dict[str, torch.Tensor]:
        st, b = self.store, self.batch_size
        clip = torch.randint(st.n_clips, (b,), generator=gen)
        u = torch.rand(b, 3, generator=gen)
        out = {"clip": clip, "u": u}
        if self.hr:
            k = st.hr_frame.shape[1]
            slot = torch.randint(k, (b,), generator=gen)
            out |= {"slot": slot, "centre": st.hr_frame[clip, slot]}
        else:
            room = st.length[clip] - 2 * self.margin
            out["centre"] = self.margin + (u[:, 0] * room).long().clamp(max=room - 1)
        if self.sync:
            out["positive"] = torch.rand(b, generator=gen) < 0.5
        return out

    def _window(self, rows: torch.Tensor) -> torch.Tensor:
        """Row indices (B x T) of the window around each row."""
        return rows[:, None] + torch.arange(-self.half, self.half + 1)[None, :]

    def make(self, d: dict[str, torch.Tensor]) -> Batch:
        st = self.store
        rows = st.start[d["clip"]] + d["centre"]
        win = self._window(rows)
        batch: Batch = {"lr": st.lr[win].float(), "mel": st.mel[rows].float()[:, None],
                        "coarse": from_pixels(st.coarse[rows])}
        if self.span:
            spans = self._window(rows)  # B x S centres
            wins = spans[..., None] + torch.arange(-self.half, self.half + 1)  # B x S x T
            batch |= {"lr_span": st.lr[wins].float(), "mel_span": st.mel[spans].float()[:, :, None],
                      "coarse_span": from_pixels(st.coarse[spans])}
        if self.sync:
            batch |= self._sync(d, rows, win)
        if self.hr:
            batch |= {"hr": from_pixels(st.hr[d["clip"], d["slot"]]), "photo": self._photos(d)}
        return batch

    def _sync(self, d: dict[str, torch.Tensor], rows: torch.Tensor, win: torch.Tensor) -> Batch:
        """In-sync or off-sync mel for the faces of each window (negatives: same clip, >= min_shift away)."""
        st, f = self.store, d["centre"]
        n = st.length[d["clip"]]
        lo, hi = self.half, n - 1 - self.half  # valid audio centres
        # a shift drawn uniformly among the valid centres at least min_shift away from f
        left = (f - self.min_shift - lo + 1).clamp(min=0)
        right = (hi - (f + self.min_shift) + 1).clamp(min=0)
        pick = (d["u"][:, 1] * (left + right).clamp(min=1)).long()
        other = torch.where(pick < left, lo + pick, f + self.min_shift + (pick - left))
        usable = (left + right) > 0
        positive = d["positive"] | ~usable  # a clip too short for a negative gives a positive
        centre = torch.where(positive, f, other)
        mel = st.mel[st.start[d["clip"]] + centre].float()[:, None]
        return {"faces": from_pixels(st.coarse[win]), "sync_mel": mel, "label": positive.float()}

    def _photos(self, d: dict[str, torch.Tensor]) -> torch.Tensor:
        st = self.store
        k = st.hr_frame.shape[1]
        photos = []
        for i, (c, slot) in enumerate(zip(d["clip"].tolist(), d["slot"].tolist())):
            others = self.others[c]
            if others:
                o = others[int(d["u"][i, 2] * len(others)) % len(others)]
                photos.append(st.hr[o, int(d["u"][i, 1] * k) % k])
            else:  # the clip's full-size frame farthest from the target
                far = int((st.hr_frame[c] - st.hr_frame[c, slot]).abs().argmax())
                photos.append(st.hr[c, far])
        return from_pixels(torch.stack(photos))
