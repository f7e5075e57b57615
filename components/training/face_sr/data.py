"""The face-SR training split as the loop's feed: ``hr`` faces, ``lr`` inputs, ``spec`` speech.

Two ways (``face_sr.cache_frames_per_clip``), both rank-aware because
:class:`~components.data.dataset.ShardDataset` deals row groups to DDP ranks:

* cached (``> 0``, the CPU default): decoding a JPEG frame and the clip's FLAC audio and
  computing the spectrogram costs 6-11 ms per sample, about what training the small
  networks on it costs (8-20 ms per sample, tests/benchmarks/bench_training.py), on the
  same two cores. So the split is read once, through the ShardDataset itself (k passes
  over its training stream: k random frames per clip, each with the spectrogram of the
  4 s of audio around it, computed exactly as the streaming path would), into uint8
  images and float16 spectrograms in memory (:class:`~components.training.feeds.CachedFeed`).
  The default corpus (129 training clips x 8 frames) takes 13 MB of images at 64 px,
  plus 130 MB of spectrograms in the stages that use audio, and ~5-15 s to build;
* streamed (``0``): a DataLoader over the ShardDataset
  (:class:`~components.training.feeds.StreamingFeed`), for corpora that do not fit in
  memory (a GPU run decodes in its DataLoader workers while the GPU computes).
"""

from __future__ import annotations

import logging
import time

import torch

from components.config import Params
from components.data.dataset import ShardDataset
from components.data.sources.ids import UNKNOWN_SPEAKER
from components.figures.images import from_pixels, to_pixels
from components.models.face_sr import ModelConfig
from components.training.face_sr.plan import USES_AUDIO
from components.training.feeds import Batches, CachedFeed, StreamingFeed, dataset_passes
from components.training.runtime import Runtime

log = logging.getLogger(__name__)

TENSOR_KEYS = ("hr", "lr", "spec")


def cache_face_sr(dataset: ShardDataset, frames_per_clip: int, *, batch_size: int, with_spec: bool,
                  num_workers: int = 0) -> CachedFeed:
    """Materialise ``frames_per_clip`` passes of ``dataset``'s training stream.

    Pass e is the dataset's epoch e (``set_epoch``): one random frame per clip,
    reproducible from the dataset's seed. ``hr`` is kept as uint8 pixels, ``spec`` as
    float16 (dropped with ``with_spec=False``: stages that do not use audio keep only the
    images); each sample's source is its clip's key.
    """
    if not dataset.train or dataset.mode != "face_sr":
        raise ValueError("the cache is built from a face_sr ShardDataset in training mode")
    started = time.perf_counter()
    hr, lr, spec, clips, speakers = [], [], [], [], []
    for batch in dataset_passes(dataset, frames_per_clip, num_workers=num_workers):
        hr.append(to_pixels(batch["hr"]))
        lr.append(batch["lr"])
        if with_spec:
            spec.append(batch["spec"].half())
        clips.extend(batch["key"])
        speakers.extend(s if s != UNKNOWN_SPEAKER else f"{UNKNOWN_SPEAKER}/{key}"
                        for s, key in zip(batch["speaker_id"], batch["key"]))
    if not hr:
        raise ValueError(f"no training samples in {dataset.files[:1] or 'the shards'} (split {dataset.split!r})")
    tensors = {"hr": torch.cat(hr), "lr": torch.cat(lr), "speaker": speaker_index(speakers)}
    tensors |= {"spec": torch.cat(spec)} if with_spec else {}
    cache = CachedFeed(tensors, batch_size=batch_size, seed=dataset.seed, sources=clips,
                       decode={"hr": from_pixels, "spec": torch.Tensor.float},
                       hint="lower batch_size or raise face_sr.cache_frames_per_clip")
    log.info("cached %d samples of %d clips (%.0f MB) in %.1f s", len(cache), len(set(clips)), cache.nbytes / 2**20,
             time.perf_counter() - started)
    return cache


def speaker_index(speaker_ids: list[str]) -> torch.Tensor:
    """Each sample's speaker as an index into the sorted speakers of the split (a batch key
    for the stages whose targets are per speaker: train_ea's ``target: speaker``). The
    cache names a clip of an unknown speaker by the clip: its own frames are its group."""
    index = {s: i for i, s in enumerate(sorted(set(speaker_ids)))}
    return torch.tensor([index[s] for s in speaker_ids], dtype=torch.int64)


def training_data(params: Params, name: str, cfg: ModelConfig, batch_size: int, runtime: Runtime) -> Batches:
    """The train split of stage ``name``: cached in memory (``cache_frames_per_clip > 0``) or streamed."""
    fs = params.face_sr
    dataset = ShardDataset(params.data_path("shards"), "train", "face_sr", train=True, hr_size=cfg.resolution,
                           lr_size=cfg.lr_size, spec_seconds=cfg.audio_seconds, shuffle_buffer=fs.shuffle_buffer,
                           seed=fs.seed)
    if fs.cache_frames_per_clip > 0:
        return cache_face_sr(dataset, fs.cache_frames_per_clip, batch_size=batch_size, with_spec=name in USES_AUDIO,
                             num_workers=fs.num_workers)
    return StreamingFeed(dataset, batch_size=batch_size, keys=TENSOR_KEYS, num_workers=fs.num_workers,
                         pin_memory=runtime.device.type == "cuda")
