"""Loader throughput: ShardDataset (face_sr) vs reading the same Parquet files raw.

``pytest -m benchmark -s tests/benchmarks/bench_loader.py``

Builds a fake upstream of 4 s clips with 256 px crops (as the faces stage writes them),
shards it, then measures in the same run:

* raw Parquet: ``pq.read_table`` of every shard file, and ``iter_batches`` over the row
  groups (all columns): rows/s and MB/s, the ceiling for any loader of these files;
* ``ShardDataset`` in ``face_sr`` mode (one JPEG decoded, 256 -> 128 -> 8 resizes, a
  257 x 257 spectrogram per sample) through a DataLoader with 2 workers and with none:
  samples/s in steady state (persistent workers, after a warm-up epoch), and the ratio
  to the raw read rate. The in-process run uses one torch
  thread, as DataLoader workers do (intra-op threads only add contention on ops this
  small).

Nothing is asserted about speed: the figures are printed.
"""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

from components.config import parse_params
from components.data.dataset import ShardDataset
from components.data.shards import shard_files, write_shards
from tests._fixtures import make_upstream

pytestmark = pytest.mark.benchmark

N_SPEAKERS, N_FRAMES, CROP = 12, 100, 256  # 48 clips of 4 s at 25 fps
EPOCHS = 5


def best_of(fn, repeats: int = 3) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


@pytest.fixture(scope="module")
def shards_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    up = make_upstream(tmp_path_factory.mktemp("bench"), n_speakers=N_SPEAKERS, unknown_videos=0,
                       n_frames=N_FRAMES, crop_size=CROP)
    params = parse_params({"common": {"data_dir": str(up.data_dir), "workers": 2},
                           "shards": {"unseen_speaker_fraction": 0.0, "seen_test_fraction": 0.0}})
    out = up.data_dir / "shards"
    write_shards(params, up.raw, up.faces, up.audio, out, progress=False)
    return out


def test_loader_throughput(shards_dir: Path):
    files = shard_files(shards_dir, "train")
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    mb = sum(f.stat().st_size for f in files) / 1e6

    def read_tables() -> None:
        for f in files:
            pq.read_table(f)

    def iter_batches() -> None:
        for f in files:
            for _ in pq.ParquetFile(f).iter_batches():
                pass

    t_table = best_of(read_tables)
    t_batches = best_of(iter_batches)

    def epochs(num_workers: int) -> float:
        """Samples/s over EPOCHS epochs, after one untimed epoch that starts the workers."""
        ds = ShardDataset(shards_dir, "train", "face_sr", hr_size=128, lr_size=8, shuffle_buffer=16)
        loader = DataLoader(ds, batch_size=16, num_workers=num_workers, persistent_workers=num_workers > 0)
        sum(len(batch["key"]) for batch in loader)
        start, n = time.perf_counter(), 0
        for epoch in range(1, EPOCHS + 1):
            ds.set_epoch(epoch)
            n += sum(len(batch["key"]) for batch in loader)
        assert n == EPOCHS * rows
        return n / (time.perf_counter() - start)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker: per-sample ops are too small to split
    try:
        single = epochs(0)
    finally:
        torch.set_num_threads(threads)
    workers = epochs(2)
    raw_rate = rows / t_table
    print(f"\n{rows} rows of {N_FRAMES} frames at {CROP} px in {len(files)} shard(s), {mb:.1f} MB "
          f"({mb * 1e3 / rows / N_FRAMES:.1f} KB per JPEG frame incl. audio)")
    print(f"raw pq.read_table          : {raw_rate:9.1f} rows/s  {mb / t_table:8.1f} MB/s")
    print(f"raw iter_batches           : {rows / t_batches:9.1f} rows/s  {mb / t_batches:8.1f} MB/s")
    print(f"ShardDataset face_sr, 0 wkr: {single:9.1f} samples/s  ({single * mb / rows:.1f} MB/s of rows)")
    print(f"ShardDataset face_sr, 2 wkr: {workers:9.1f} samples/s  ({workers * mb / rows:.1f} MB/s of rows)")
    print(f"ratio loader(2 workers) / raw read_table: {workers / raw_rate:.3f}; "
          f"2 workers / 0 workers: {workers / single:.2f}")
