"""Batches of face-SR training samples, in an order that is a pure function of (seed, epoch).

Two feeds with one interface, :meth:`epoch`, which yields the batches of an epoch,
skipping the first ``skip`` (what a resumed run has already consumed):

* :class:`CachedFaceSR` (``face_sr.cache_frames_per_clip > 0``, the CPU default):
  decoding a JPEG frame and the clip's FLAC audio and computing the spectrogram costs
  6-11 ms per sample, about what training the small networks on it costs (8-20 ms per
  sample, tests/benchmarks/bench_training.py), on the same two cores. So the split is
  read once, through
  :class:`~components.data.dataset.ShardDataset` itself (k passes over its training
  stream: k random frames per clip, each with the spectrogram of the 4 s of audio
  around it, computed exactly as the streaming path would), into uint8 images and
  float16 spectrograms in memory; an epoch is then a seeded permutation of them. The
  default corpus (129 training clips x 8 frames) takes 13 MB of images at 64 px, plus
  130 MB of spectrograms in the stages that use audio, and ~5-15 s to build.
* :class:`StreamingFaceSR` (``cache_frames_per_clip: 0``): a DataLoader over the
  ShardDataset, for corpora that do not fit in memory (a GPU run decodes in its
  DataLoader workers while the GPU computes). ShardDataset shuffles per (seed, epoch)
  and deals row groups to DDP ranks and DataLoader workers; resuming re-reads (and
  discards) the consumed batches.

Both are rank-aware: under DDP every rank feeds on its own share of the clips.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from itertools import islice
from typing import Protocol

import torch
from torch.utils.data import DataLoader

from components.data.dataset import ShardDataset
from components.figures.images import from_pixels, to_pixels

log = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]
TENSOR_KEYS = ("hr", "lr", "spec")


class Batches(Protocol):
    batch_size: int

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[Batch]:
        """The batches of ``epoch`` after the first ``skip``; the same for the same epoch."""
        ...


class CachedFaceSR:
    """The training split decoded once into memory; see the module docstring.

    ``hr`` (N, 3, R, R) uint8, ``lr`` (N, 3, s, s) float32, ``spec`` (N, 1, T, F) float16
    or None when the stage does not use audio, ``clip`` (N,) the index of each sample's
    clip in ``keys``.
    """

    def __init__(self, hr: torch.Tensor, lr: torch.Tensor, spec: torch.Tensor | None, clip: torch.Tensor,
                 keys: list[str], *, batch_size: int, seed: int) -> None:
        if len(hr) < batch_size:
            raise ValueError(f"{len(hr)} cached training samples cannot fill a batch of {batch_size}: "
                             "lower batch_size or raise face_sr.cache_frames_per_clip")
        self.hr, self.lr, self.spec, self.clip, self.keys = hr, lr, spec, clip, keys
        self.batch_size, self.seed = batch_size, seed

    @classmethod
    def from_dataset(cls, dataset: ShardDataset, frames_per_clip: int, *, batch_size: int, with_spec: bool,
                     num_workers: int = 0) -> CachedFaceSR:
        """Materialise ``frames_per_clip`` passes of ``dataset``'s training stream.

        Pass e is the dataset's epoch e (``set_epoch``): one random frame per clip,
        reproducible from the dataset's seed. ``with_spec=False`` drops the spectrograms
        (stages that do not use audio keep only the images).
        """
        if not dataset.train or dataset.mode != "face_sr":
            raise ValueError("the cache is built from a face_sr ShardDataset in training mode")
        started = time.perf_counter()
        hr, lr, spec, clip, keys = [], [], [], [], {}
        for epoch in range(frames_per_clip):
            dataset.set_epoch(epoch)
            loader = DataLoader(dataset, batch_size=64, num_workers=num_workers)
            for batch in loader:
                hr.append(to_pixels(batch["hr"]))
                lr.append(batch["lr"])
                if with_spec:
                    spec.append(batch["spec"].half())
                clip.extend(keys.setdefault(k, len(keys)) for k in batch["key"])
        if not hr:
            raise ValueError(f"no training samples in {dataset.files[:1] or 'the shards'} (split {dataset.split!r})")
        cache = cls(torch.cat(hr), torch.cat(lr), torch.cat(spec) if with_spec else None,
                    torch.tensor(clip), list(keys), batch_size=batch_size, seed=dataset.seed)
        log.info("cached %d samples of %d clips (%.0f MB) in %.1f s", len(cache), len(keys), cache.nbytes / 2**20,
                 time.perf_counter() - started)
        return cache

    def __len__(self) -> int:
        return len(self.hr)

    @property
    def nbytes(self) -> int:
        tensors = [self.hr, self.lr, self.clip] + ([self.spec] if self.spec is not None else [])
        return sum(t.numel() * t.element_size() for t in tensors)

    def order(self, epoch: int) -> torch.Tensor:
        """The sample order of ``epoch``: a permutation seeded by (seed, epoch) only."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self), generator=gen)

    def take(self, index: torch.Tensor) -> Batch:
        batch = {"hr": from_pixels(self.hr[index]), "lr": self.lr[index]}
        if self.spec is not None:
            batch["spec"] = self.spec[index].float()
        return batch

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[Batch]:
        order = self.order(epoch)
        for start in range(skip * self.batch_size, len(order) - self.batch_size + 1, self.batch_size):
            yield self.take(order[start:start + self.batch_size])


class StreamingFaceSR:
    """Batches straight from the shards (DataLoader over a training ShardDataset)."""

    def __init__(self, dataset: ShardDataset, *, batch_size: int, num_workers: int = 0,
                 pin_memory: bool = False) -> None:
        self.dataset, self.batch_size = dataset, batch_size
        self.num_workers, self.pin_memory = num_workers, pin_memory

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[Batch]:
        self.dataset.set_epoch(epoch)
        loader = DataLoader(self.dataset, batch_size=self.batch_size, num_workers=self.num_workers,
                            drop_last=True, pin_memory=self.pin_memory)
        for batch in islice(loader, skip, None):
            yield {k: batch[k] for k in TENSOR_KEYS}


def preview_batch(data: Batches, n: int) -> Batch:
    """``n`` fixed training samples for the sample grids (the first ones of epoch 0).

    Reading them changes no RNG or data position, so the same grid inputs come back in
    every run and a resumed run is not disturbed by drawing them.
    """
    parts, have = [], 0
    for batch in data.epoch(0):
        parts.append(batch)
        have += len(batch["hr"])
        if have >= n:
            break
    return {k: torch.cat([p[k] for p in parts])[:n] for k in parts[0]}
