"""Batches for the training loop, in an order that is a pure function of (seed, epoch).

Every feed has one method, :meth:`Batches.epoch`, which yields the batches of an epoch
(dicts of tensors: images ``(B, 3, H, W)``, video frames ``(B, T, 3, H, W)``,
spectrograms, labels: whatever the stage's step reads), skipping the first ``skip``:
what a resumed run has already consumed. Three generic feeds; which keys they carry is
the business of the stage family that builds them (``components/training/face_sr/``):

* :class:`CachedFeed`: samples held in memory as tensors (possibly compressed, e.g.
  uint8 images, decoded per batch); an epoch is a seeded permutation of them.
  :func:`dataset_passes` reads k passes of a dataset's training stream to fill one.
* :class:`StreamingFeed`: a DataLoader over a dataset that shuffles per epoch
  (``set_epoch``), for data that does not fit in memory; resuming re-reads (and
  discards) the consumed batches.
* :class:`DrawnFeed`: batches drawn with replacement by a seeded ``torch.Generator``
  (random indices, augmentations); its epoch 0 never ends and batch k is the k-th draw,
  so resuming replays the k draws (without building their batches).

Under DDP the data a rank feeds on is its own share: the dataset deals its items to
ranks, or the stage gives each rank its own part or seed.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import islice
from typing import Any, Protocol

import torch
from torch.utils.data import DataLoader

Batch = dict[str, torch.Tensor]


class Batches(Protocol):
    batch_size: int

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[Batch]:
        """The batches of ``epoch`` after the first ``skip``; the same for the same epoch."""
        ...


class CachedFeed:
    """Samples in memory: ``tensors`` of equal length N, one sample per row.

    ``decode`` maps a key to what turns its stored rows into batch values (e.g. uint8
    pixels to floats); other keys are used as stored. ``sources`` says where each sample
    came from (e.g. its clip), for inspection.
    """

    def __init__(self, tensors: Mapping[str, torch.Tensor], *, batch_size: int, seed: int,
                 decode: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
                 sources: list[str] | None = None, hint: str = "lower batch_size") -> None:
        lengths = {len(t) for t in tensors.values()}
        if len(lengths) != 1:
            raise ValueError(f"cached tensors of different lengths: { {k: len(t) for k, t in tensors.items()} }")
        (n,) = lengths
        if n < batch_size:
            raise ValueError(f"{n} cached training samples cannot fill a batch of {batch_size}: {hint}")
        self.tensors, self.decode = dict(tensors), dict(decode or {})
        self.sources = sources if sources is not None else []
        self.batch_size, self.seed = batch_size, seed

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def order(self, epoch: int) -> torch.Tensor:
        """The sample order of ``epoch``: a permutation seeded by (seed, epoch) only."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self), generator=gen)

    def take(self, index: torch.Tensor, keys: Iterable[str] | None = None) -> Batch:
        """Rows ``index`` as batch values: of every key, or only of ``keys`` (the others not decoded)."""
        wanted = self.tensors.keys() if keys is None else keys
        return {k: self.decode[k](self.tensors[k][index]) if k in self.decode else self.tensors[k][index]
                for k in wanted}

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[Batch]:
        order = self.order(epoch)
        for start in range(skip * self.batch_size, len(order) - self.batch_size + 1, self.batch_size):
            yield self.take(order[start:start + self.batch_size])


def dataset_passes(dataset: Any, passes: int, *, num_workers: int = 0, batch_size: int = 64) -> Iterator[dict]:
    """Batches of ``passes`` passes over a dataset with ``set_epoch`` (pass e is its epoch e)."""
    for epoch in range(passes):
        dataset.set_epoch(epoch)
        yield from DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)


class StreamingFeed:
    """Batches of ``keys`` straight from a dataset that shuffles per ``set_epoch``."""

    def __init__(self, dataset: Any, *, batch_size: int, keys: tuple[str, ...], num_workers: int = 0,
                 pin_memory: bool = False) -> None:
        self.dataset, self.batch_size, self.keys = dataset, batch_size, keys
        self.num_workers, self.pin_memory = num_workers, pin_memory

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[Batch]:
        self.dataset.set_epoch(epoch)
        loader = DataLoader(self.dataset, batch_size=self.batch_size, num_workers=self.num_workers,
                            drop_last=True, pin_memory=self.pin_memory)
        for batch in islice(loader, skip, None):
            yield {k: batch[k] for k in self.keys}


class DrawnFeed:
    """Endless batches drawn by a generator seeded with ``seed``.

    ``draw(gen)`` makes the random draws of one batch (indices, augmentation
    parameters) and ``make(drawn)`` the batch itself. Epoch 0 is the only epoch and never
    ends: batch k is made from the k-th draw, and ``skip`` replays the draws only.
    """

    def __init__(self, draw: Callable[[torch.Generator], Any], make: Callable[[Any], Batch], *,
                 batch_size: int, seed: int) -> None:
        self.draw, self.make, self.batch_size, self.seed = draw, make, batch_size, seed

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[Batch]:
        if epoch != 0:
            raise ValueError(f"a drawn feed has one endless epoch 0, not epoch {epoch}")
        gen = torch.Generator().manual_seed(self.seed)
        for k in itertools.count():
            drawn = self.draw(gen)
            if k >= skip:
                yield self.make(drawn)


def preview_batch(data: Batches, n: int) -> Batch:
    """``n`` fixed training samples for the sample grids (the first ones of epoch 0).

    Reading them changes no RNG or data position, so the same grid inputs come back in
    every run and a resumed run is not disturbed by drawing them.
    """
    parts, have = [], 0
    for batch in data.epoch(0):
        parts.append(batch)
        have += len(next(iter(batch.values())))
        if have >= n:
            break
    return {k: torch.cat([p[k] for p in parts])[:n] for k in parts[0]}
