"""Streaming training samples from the Parquet shards of ``data/shards``.

:class:`ShardDataset` reads the shard files of one split row group by row group
(only the columns the mode needs), decodes the chosen JPEG frames and the FLAC audio on
the fly and computes the model inputs with :mod:`components.data.features`:

* ``mode="face_sr"`` (Meishvili et al., CVPR 2020): one frame per clip -> ``hr``
  (3 x hr_size x hr_size in [-1, 1]), ``lr`` (3 x lr_size x lr_size, antialiased
  bicubic of ``hr``), ``spec`` (1 x 257 x 257, the 4 s of audio centred on the frame),
  ``speaker_id`` and the speaker attributes; with ``audio=False`` the faces only (the
  audio column is not read, no ``spec``: judges and identity galleries);
* ``mode="video"`` (Hegde et al., ACM MM 2022): ``window`` consecutive frames ->
  ``hr`` (T x 3 x R x R), ``lr`` (T x 3 x s x s), ``mel`` (T x 80 x 16 log-mel windows
  centred on each frame), ``audio`` (the window's samples), ``ref`` (an identity photo:
  another frame of the clip, outside the window when there is one);
* ``mode="clip"``: every frame of the clip, for caches that draw their own windows
  (the video paper's training stages): ``pixels`` (T x 3 x R x R uint8 at ``hr_size``),
  ``lr`` (T x 3 x s x s, degraded from the stored crop as in video mode), ``mel``
  (T x 80 x 16; ``pixels`` and ``lr`` from a JPEG decode at the smallest DCT scale still
  >= ``hr_size``: :func:`decode_jpeg`), ``audio`` (the clip's samples at ``sample_rate``), and ``full_frames``
  evenly spaced frames at the stored crop size (``full``: k x 3 x S x S uint8, at positions ``full_index``, at least ``window``
  frames from either end: see :func:`evenly_spaced`). Meant for ``train=False``
  reading (deterministic and complete); the frames are reduced in the reading process,
  so a DataLoader worker hands over small tensors.

Parallelism: the row groups of the split are dealt out round-robin to the
``world_size x num_workers`` consumers (the DDP rank from ``torch.distributed`` when it is
initialised, read when the dataset is made so that DataLoader worker processes get it too,
or explicit ``rank``/``world_size``; the DataLoader worker from
``get_worker_info``), so every row is read by exactly one consumer. Training
(``train=True``) shuffles the row-group order with (seed, epoch), mixes samples in a
shuffle buffer and draws random frames, all from a generator seeded by (seed, epoch,
consumer): call :meth:`set_epoch` before each epoch (the epoch lives in shared memory,
so persistent DataLoader workers see it too). A training epoch is cut to the same number
of samples on every rank (DDP needs equal step counts; clips shorter than the video
window, which are skipped with a warning, can still make a rank come up short). Evaluation (``train=False``) is
deterministic and complete: row-group order, the middle frame (or ``eval_frames`` evenly
spaced ones; the centred window in video mode), no buffer.

Samples are dicts of tensors plus ``key``/``speaker_id`` strings, ready for the default
``collate_fn``. The speaker's scalar attributes (``attr_*``) come along: numbers and
booleans as float32 scalars, NaN when unknown; text as str, "" when unknown.
List-valued attributes (e.g. an RGB colour) stay in the shards only.
"""

from __future__ import annotations

import io
import logging
import multiprocessing as mp
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from components.figures.images import from_hwc, to_pixels
from components.data.features import degrade, face_sr_spectrogram, mel_windows, resize
from components.data.shards import shard_files

log = logging.getLogger(__name__)

Mode = Literal["face_sr", "video", "clip"]
COLUMNS = ["key", "speaker_id", "fps", "frames", "audio"]  # + the scalar attr_* columns


@dataclass(frozen=True)
class RowGroup:
    """The unit of work dealt to consumers: one row group of one shard file."""

    path: str
    index: int
    rows: int


def row_groups(files: list[Path]) -> list[RowGroup]:
    """Every row group of ``files`` from the Parquet footers (nothing else is read)."""
    out = []
    for path in files:
        meta = pq.ParquetFile(path).metadata
        out.extend(RowGroup(str(path), i, meta.row_group(i).num_rows) for i in range(meta.num_row_groups))
    return out


def distributed_rank() -> tuple[int, int]:
    """(rank, world_size) of torch.distributed when initialised, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def deal(units: list[RowGroup], rank: int, world_size: int, worker: int, num_workers: int) -> list[RowGroup]:
    """The units of one consumer: round-robin over the world_size x num_workers consumers."""
    return units[rank * num_workers + worker::world_size * num_workers]


def even_quota(units: list[RowGroup], world_size: int, worker: int, num_workers: int, rank: int) -> int:
    """Samples this consumer may yield so that every rank yields the same number.

    The ranks' budget is the smallest rank's row count; inside a rank it is handed out to
    the workers in order, each taking what it has until the budget is spent. Every
    consumer computes the same numbers from the same unit list: no communication needed.
    """
    rows = [[sum(u.rows for u in deal(units, r, world_size, w, num_workers)) for w in range(num_workers)]
            for r in range(world_size)]
    budget = min(sum(r) for r in rows)
    if budget == 0 and sum(map(sum, rows)):
        raise ValueError(f"{len(units)} row groups cannot feed {world_size} ranks: "
                         "write smaller row groups (shards.row_group_size)")
    for w in range(worker):
        budget -= min(rows[rank][w], budget)
    return min(rows[rank][worker], budget)


class ShardDataset(IterableDataset):
    """Samples of one split of a shards folder; see the module docstring."""

    def __init__(
        self,
        shards_dir: str | Path,
        split: str = "train",
        mode: Mode = "face_sr",
        *,
        train: bool | None = None,
        hr_size: int = 128,
        lr_size: int = 8,
        window: int = 5,
        spec_seconds: float = 4.0,
        shuffle_buffer: int = 256,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        stretch: bool = False,
        eval_frames: int = 1,
        audio: bool = True,
        full_frames: int = 0,
    ):
        if mode not in ("face_sr", "video", "clip"):
            raise ValueError(f"mode must be 'face_sr', 'video' or 'clip', got {mode!r}")
        if eval_frames < 1:
            raise ValueError(f"eval_frames must be >= 1, got {eval_frames}")
        if not audio and mode != "face_sr":
            raise ValueError("audio=False (faces only) is a face_sr mode option: video samples need their audio")
        if (rank is None) != (world_size is None):
            raise ValueError("give both rank and world_size, or neither (then torch.distributed decides)")
        if rank is None and torch.distributed.is_available() and torch.distributed.is_initialized():
            # Read now: DataLoader workers started by spawn or forkserver have no process group,
            # and would each take themselves for rank 0 of 1 (every rank reading every row).
            rank, world_size = distributed_rank()
        self.files = shard_files(shards_dir, split)
        self.units = row_groups(self.files)
        self.split, self.mode = split, mode
        self.train = split == "train" if train is None else train
        self.hr_size, self.lr_size, self.window = hr_size, lr_size, window
        self.spec_seconds, self.shuffle_buffer, self.seed = spec_seconds, shuffle_buffer, seed
        self.rank, self.world_size, self.stretch = rank, world_size, stretch
        self.eval_frames, self.audio, self.full_frames = eval_frames, audio, full_frames
        # In shared memory, so that set_epoch reaches DataLoader workers that already exist
        # (persistent_workers=True); plain attributes are copied into workers once.
        self._epoch = mp.RawValue("q", 0)
        schema = pq.read_schema(self.files[0]) if self.files else pa.schema([])
        scalar = [f for f in schema if f.name.startswith("attr_") and not pa.types.is_nested(f.type)]
        self.attributes = [f.name for f in scalar]
        self.text_attributes = {f.name for f in scalar if pa.types.is_string(f.type)}
        self.columns = [c for c in COLUMNS if audio or c != "audio"] + self.attributes

    @property
    def num_rows(self) -> int:
        return sum(u.rows for u in self.units)

    @property
    def epoch(self) -> int:
        return self._epoch.value

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for ``epoch`` (training); the same epoch always gives the same stream.

        Call it before iterating; it reaches persistent DataLoader workers too.
        """
        self._epoch.value = epoch

    def _consumer(self) -> tuple[int, int, int, int]:
        rank, world = (self.rank, self.world_size) if self.rank is not None else distributed_rank()
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return rank, world, worker, workers

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rank, world, worker, workers = self._consumer()
        units = list(self.units)
        if not self.train:
            yield from self._samples(deal(units, rank, world, worker, workers), None)
            return
        np.random.default_rng([self.seed, self.epoch]).shuffle(units)
        quota = even_quota(units, world, worker, workers, rank)
        rng = np.random.default_rng([self.seed, self.epoch, rank, worker])
        samples = self._samples(deal(units, rank, world, worker, workers), rng)
        yield from shuffled(islice(samples, quota), self.shuffle_buffer, rng)

    def _samples(self, units: list[RowGroup], rng: np.random.Generator | None) -> Iterator[dict[str, Any]]:
        files: dict[str, pq.ParquetFile] = {}
        for unit in units:
            pf = files.setdefault(unit.path, pq.ParquetFile(unit.path))
            for batch in pf.iter_batches(row_groups=[unit.index], columns=self.columns):
                for i in range(batch.num_rows):
                    yield from self._sample(batch, i, rng)

    def _sample(self, batch: pa.RecordBatch, i: int, rng: np.random.Generator | None) -> list[dict[str, Any]]:
        """Row ``i`` of ``batch`` as samples: one, or in evaluation ``eval_frames`` evenly spaced
        frames of the clip (face_sr mode); none when a clip is too short for the mode."""
        col = batch.column
        frames = col("frames")[i].values  # zero-copy view: only the chosen JPEGs are copied out
        audio, sr = decode_flac(col("audio")[i].as_py()) if self.audio else (None, 0)
        out: dict[str, Any] = {"key": col("key")[i].as_py(), "speaker_id": col("speaker_id")[i].as_py()}
        for name in self.attributes:
            out[name] = attribute_value(col(name)[i].as_py(), name in self.text_attributes)
        fps = int(col("fps")[i].as_py())
        if self.mode == "face_sr":
            n, k = len(frames), self.eval_frames
            # training: a random frame; evaluation: the middle one, or k evenly spaced
            picks = [int(rng.integers(n))] if rng is not None else sorted({n * (2 * j + 1) // (2 * k) for j in range(k)})
            return [out | self._face_sr(frames, audio, sr, fps, f) for f in picks]
        if self.mode == "clip":
            return [out | self._clip(frames, audio, sr, fps)]
        media = self._video(frames, audio, sr, fps, rng)
        if media is None:
            log.warning("%s: %d frames, shorter than the %d-frame window: skipped", out["key"], len(frames),
                        self.window)
            return []
        return [out | media]

    def _face_sr(self, frames: pa.BinaryArray, audio: np.ndarray | None, sr: int, fps: int, f: int) -> dict[str, Any]:
        """Frame ``f`` and the 4 s of audio centred on it (no ``spec`` when audio is not read)."""
        hr = resize(from_hwc(decode_jpeg(frames[f].as_py())), self.hr_size)
        if audio is None:  # faces only
            return {"frame": f, "hr": hr, "lr": degrade(hr, self.lr_size, self.stretch)}
        n_spec = int(round(self.spec_seconds * sr))
        start = min(max(0, int(round(f / fps * sr)) - n_spec // 2), max(0, len(audio) - n_spec))
        spec = face_sr_spectrogram(audio[start:start + n_spec], sr, self.spec_seconds)
        return {"frame": f, "hr": hr, "lr": degrade(hr, self.lr_size, self.stretch), "spec": spec[None]}

    def _video(self, frames: pa.BinaryArray, audio: np.ndarray, sr: int, fps: int,
               rng: np.random.Generator | None) -> dict[str, Any] | None:
        """``window`` consecutive frames (random start, or centred in eval), their mel windows
        and audio, and an identity frame from outside the window."""
        n, t = len(frames), self.window
        if n < t:
            return None
        f = int(rng.integers(n - t + 1)) if rng is not None else (n - t) // 2
        others = [j for j in range(n) if not f <= j < f + t] or list(range(n))
        ref = int(rng.choice(others)) if rng is not None else others[0]
        images = torch.stack([from_hwc(decode_jpeg(frames[j].as_py())) for j in (*range(f, f + t), ref)])
        images = resize(images, self.hr_size)
        a0, n_audio = int(round(f / fps * sr)), int(round(t / fps * sr))
        window_audio = np.pad(audio[a0:a0 + n_audio], (0, max(0, a0 + n_audio - len(audio))))
        mel = mel_windows(audio, sr, fps, n_frames=n)[f:f + t]
        return {"frame": f, "hr": images[:t], "lr": degrade(images[:t], self.lr_size, self.stretch),
                "ref": images[t], "mel": torch.from_numpy(mel), "audio": torch.from_numpy(window_audio)}


    def _clip(self, frames: pa.BinaryArray, audio: np.ndarray, sr: int, fps: int) -> dict[str, Any]:
        """Every frame of the clip: uint8 pixels at hr_size, lr inputs, mel windows and the full-size picks."""
        n = len(frames)
        # libjpeg decodes at 1/2, 1/4, 1/8 scale for a fraction of the cost: the smallest scale
        # that is still >= hr_size (a 256 px crop for 48 px frames: 64 px, ~4x less work a frame)
        images = torch.stack([from_hwc(decode_jpeg(frames[j].as_py(), self.hr_size)) for j in range(n)])
        out = {"pixels": to_pixels(resize(images, self.hr_size)), "lr": degrade(images, self.lr_size, self.stretch),
               "mel": torch.from_numpy(mel_windows(audio, sr, fps, n_frames=n)), "audio": torch.from_numpy(audio),
               "sample_rate": sr}
        if self.full_frames:
            picks = evenly_spaced(n, self.full_frames, self.window)
            full = np.stack([decode_jpeg(frames[j].as_py()) for j in picks])
            out |= {"full": torch.from_numpy(full).permute(0, 3, 1, 2).contiguous(), "full_index": torch.tensor(picks)}
        return out


def evenly_spaced(n: int, k: int, margin: int) -> list[int]:
    """``k`` frame positions spread over ``[margin, n - 1 - margin]`` (repeats when the clip is short)."""
    lo, hi = margin, max(margin, n - 1 - margin)
    return [lo + (hi - lo) * (2 * j + 1) // (2 * k) for j in range(k)]


def shuffled(samples: Iterator[dict[str, Any]], size: int, rng: np.random.Generator) -> Iterator[dict[str, Any]]:
    """A shuffle buffer: keep ``size`` samples, emit a random one as each new one arrives."""
    buf: list[dict[str, Any]] = []
    for sample in samples:
        if len(buf) < size:
            buf.append(sample)
            continue
        j = int(rng.integers(size))
        yield buf[j]
        buf[j] = sample
    rng.shuffle(buf)
    yield from buf


def decode_jpeg(data: bytes, at_least: int | None = None) -> np.ndarray:
    """An HxWx3 uint8 RGB frame; with ``at_least``, decoded at the smallest of libjpeg's
    scales (1, 1/2, 1/4, 1/8) whose sides are still >= ``at_least`` (for frames that are
    resized down anyway)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        if at_least is not None:
            img.draft("RGB", (at_least, at_least))
        return np.array(img.convert("RGB"))


def decode_flac(data: bytes) -> tuple[np.ndarray, int]:
    import soundfile as sf

    audio, sr = sf.read(io.BytesIO(data), dtype="float32")
    return audio, sr


def attribute_value(value: Any, text: bool) -> Any:
    """A collatable attribute: numbers and booleans as float32 tensors (NaN when unknown), text as str."""
    if text:
        return "" if value is None else value
    return torch.tensor(np.nan if value is None else float(value), dtype=torch.float32)
