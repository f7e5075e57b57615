"""ShardDataset: worker/rank sharding, shuffling, determinism, sample contents."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from components.config import parse_params
from components.data import dataset as dataset_module
from components.data.dataset import ShardDataset, deal, even_quota, row_groups
from components.data.features import mel_windows
from components.data.shards import shard_files, write_shards
from tests._fixtures import Upstream, make_upstream, stamp_frame

CROP = 64


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Upstream:
    return make_upstream(tmp_path_factory.mktemp("up"), n_speakers=6, crop_size=CROP)


@pytest.fixture(scope="module")
def shards_dir(upstream: Upstream) -> Path:
    params = parse_params({"common": {"data_dir": str(upstream.data_dir), "workers": 1},
                           "shards": {"rows_per_shard": 4, "row_group_size": 2, "unseen_speaker_fraction": 0.3,
                                      "seen_test_fraction": 0.3}})
    out = upstream.data_dir / "shards"
    write_shards(params, upstream.raw, upstream.faces, upstream.audio, out, progress=False)
    return out


def split_keys(shards_dir: Path, split: str) -> list[str]:
    return sorted(k for f in shard_files(shards_dir, split) for k in pq.read_table(f, columns=["key"])["key"].to_pylist())


def keys_of(ds: ShardDataset, num_workers: int = 0) -> list[str]:
    loader = DataLoader(ds, batch_size=3, num_workers=num_workers)
    return [k for batch in loader for k in batch["key"]]


def image_u8(img: torch.Tensor) -> np.ndarray:
    """3xHxW in [-1, 1] -> HxWx3 uint8 (to read the frame stamp back)."""
    return img.add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


@pytest.fixture(scope="module")
def stored(shards_dir: Path) -> dict[str, dict]:
    """Every stored row by key, as written."""
    files = [f for split in ("train", "test_seen", "test_unseen") for f in shard_files(shards_dir, split)]
    return {row["key"]: row for f in files for row in pq.read_table(f).to_pylist()}


# ------------------------------------------------------------------ samples


def test_face_sr_sample_shapes_ranges_and_middle_frame(shards_dir: Path, stored: dict):
    ds = ShardDataset(shards_dir, "train", "face_sr", train=False, hr_size=CROP, lr_size=8)
    samples = list(ds)
    assert len(samples) == ds.num_rows > 0
    for s in samples:
        assert s["hr"].shape == (3, CROP, CROP) and s["lr"].shape == (3, 8, 8) and s["spec"].shape == (1, 257, 257)
        for name in ("hr", "lr", "spec"):
            assert s[name].dtype == torch.float32 and -1 <= s[name].min() and s[name].max() <= 1
        assert s["spec"].min().item() == pytest.approx(-1) and s["spec"].max().item() == pytest.approx(1)
        n = len(stored[s["key"]]["frames"])
        assert s["frame"] == n // 2 == stamp_frame(image_u8(s["hr"]))
    resized = next(iter(ShardDataset(shards_dir, "train", "face_sr", train=False, hr_size=32, lr_size=4)))
    assert resized["hr"].shape == (3, 32, 32) and resized["lr"].shape == (3, 4, 4)


def test_evaluation_can_score_evenly_spaced_frames_of_every_clip(shards_dir: Path, stored: dict):
    ds = ShardDataset(shards_dir, "train", "face_sr", train=False, hr_size=CROP, lr_size=8, eval_frames=3)
    frames: dict[str, list[int]] = {}
    for s in ds:
        assert s["frame"] == stamp_frame(image_u8(s["hr"]))
        frames.setdefault(s["key"], []).append(s["frame"])
    assert len(frames) == ds.num_rows
    for key, picked in frames.items():
        n = len(stored[key]["frames"])
        assert picked == [n // 6, n // 2, 5 * n // 6]
    with pytest.raises(ValueError, match="eval_frames"):
        ShardDataset(shards_dir, "train", "face_sr", eval_frames=0)


def test_faces_only_samples_are_the_same_faces_without_reading_audio(shards_dir: Path, monkeypatch: pytest.MonkeyPatch):
    from components.data import dataset as dataset_module

    full = list(ShardDataset(shards_dir, "train", "face_sr", train=False, hr_size=CROP, eval_frames=2))

    def no_audio(*args: object) -> None:
        raise AssertionError("a faces-only dataset decoded audio")

    monkeypatch.setattr(dataset_module, "decode_flac", no_audio)
    ds = ShardDataset(shards_dir, "train", "face_sr", train=False, hr_size=CROP, eval_frames=2, audio=False)
    faces = list(ds)
    assert "audio" not in ds.columns and len(faces) == len(full)
    for a, b in zip(faces, full):
        assert "spec" not in a and a["key"] == b["key"] and a["frame"] == b["frame"]
        assert torch.equal(a["hr"], b["hr"]) and torch.equal(a["lr"], b["lr"])
    with pytest.raises(ValueError, match="audio=False"):
        ShardDataset(shards_dir, "train", "video", audio=False)


def test_video_sample_is_a_consecutive_window_with_aligned_audio(shards_dir: Path, stored: dict):
    t = 5
    ds = ShardDataset(shards_dir, "test_seen", "video", train=False, hr_size=CROP, window=t)
    for s in ds:
        row = stored[s["key"]]
        f = s["frame"]
        assert f == (len(row["frames"]) - t) // 2
        assert s["hr"].shape == (t, 3, CROP, CROP) and s["lr"].shape == (t, 3, 8, 8)
        assert [stamp_frame(image_u8(img)) for img in s["hr"]] == list(range(f, f + t))
        assert stamp_frame(image_u8(s["ref"])) not in range(f, f + t)
        audio, sr = sf.read(io.BytesIO(row["audio"]), dtype="float32")
        per_frame = sr // row["fps"]
        np.testing.assert_array_equal(s["audio"].numpy(), audio[f * per_frame:(f + t) * per_frame])
        expected = mel_windows(audio, sr, row["fps"], n_frames=len(row["frames"]))[f:f + t]
        assert s["mel"].shape == (t, 80, 16)
        np.testing.assert_allclose(s["mel"].numpy(), expected, atol=1e-5)


def test_video_mode_skips_clips_shorter_than_the_window(shards_dir: Path, stored: dict,
                                                        caplog: pytest.LogCaptureFixture):
    ds = ShardDataset(shards_dir, "train", "video", train=False, hr_size=16, window=31)
    with caplog.at_level(logging.WARNING):
        samples = list(ds)
    lengths = [len(stored[k]["frames"]) for k in split_keys(shards_dir, "train")]
    assert len(samples) == sum(n >= 31 for n in lengths) < len(lengths)
    assert "shorter than the 31-frame window" in caplog.text


def test_attributes_match_speakers_parquet(upstream: Upstream, shards_dir: Path):
    speakers = upstream.speakers.set_index("speaker_id")
    seen = 0
    for split in ("train", "test_seen", "test_unseen"):
        for s in ShardDataset(shards_dir, split, train=False, hr_size=16):
            assert "attr_skin_rgb" not in s  # list-valued attributes stay in the shards
            if s["speaker_id"] == "unknown":
                assert torch.isnan(s["attr_sex"]) and torch.isnan(s["attr_age"]) and s["attr_hair_color"] == ""
                continue
            spk = speakers.loc[s["speaker_id"]]
            assert s["attr_sex"].item() == {"F": 0, "M": 1}[spk["sex"]]
            assert s["attr_age"].item() == spk["age"] and s["attr_glasses"].item() == float(spk["glasses"])
            assert s["attr_hair_color"] == spk["hair_color"]
            seen += 1
    assert seen >= 20


# ------------------------------------------------------------------ sharding across workers and ranks


def test_eval_reads_every_row_exactly_once_with_two_workers(shards_dir: Path):
    ds = ShardDataset(shards_dir, "train", train=False, hr_size=16)
    keys = keys_of(ds, num_workers=2)
    assert sorted(keys) == split_keys(shards_dir, "train")


@pytest.mark.parametrize("num_workers", [0, 2])
def test_eval_two_ranks_partition_the_rows(shards_dir: Path, num_workers: int):
    parts = [keys_of(ShardDataset(shards_dir, "train", train=False, hr_size=16, rank=r, world_size=2), num_workers)
             for r in (0, 1)]
    assert parts[0] and parts[1] and not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == split_keys(shards_dir, "train")


def test_training_gives_every_rank_the_same_number_of_samples(shards_dir: Path):
    parts = [keys_of(ShardDataset(shards_dir, "train", hr_size=16, shuffle_buffer=4, rank=r, world_size=2), 2)
             for r in (0, 1)]
    assert len(parts[0]) == len(parts[1]) > 0
    everything = parts[0] + parts[1]
    assert len(set(everything)) == len(everything)  # nothing read twice
    assert set(everything) <= set(split_keys(shards_dir, "train"))


def test_even_quota_hands_the_rank_budget_to_workers():
    units = [dataset_module.RowGroup("f", i, rows) for i, rows in enumerate([2, 2, 2, 1, 2])]
    # consumers (rank, worker): (0,0) gets units 0,4 -> 4 rows; (0,1) unit 1 -> 2; (1,0) unit 2 -> 2; (1,1) unit 3 -> 1
    assert [u.index for u in deal(units, 0, 2, 0, 2)] == [0, 4]
    quotas = {(r, w): even_quota(units, 2, w, 2, r) for r in (0, 1) for w in (0, 1)}
    assert quotas[(0, 0)] + quotas[(0, 1)] == quotas[(1, 0)] + quotas[(1, 1)] == 3
    with pytest.raises(ValueError, match="row groups cannot feed 8 ranks"):
        even_quota(units, 8, 0, 1, 0)


def test_rank_comes_from_torch_distributed(shards_dir: Path, monkeypatch: pytest.MonkeyPatch):
    explicit = keys_of(ShardDataset(shards_dir, "train", train=False, hr_size=16, rank=1, world_size=2))
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 1)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    assert keys_of(ShardDataset(shards_dir, "train", train=False, hr_size=16)) == explicit


# ------------------------------------------------------------------ shuffling and determinism


def stream(ds: ShardDataset, epoch: int) -> list[tuple[str, int]]:
    ds.set_epoch(epoch)
    return [(k, int(f)) for b in DataLoader(ds, batch_size=4, num_workers=2) for k, f in zip(b["key"], b["frame"])]


def test_training_shuffle_changes_per_epoch_and_is_reproducible(shards_dir: Path):
    ds = ShardDataset(shards_dir, "train", hr_size=16, shuffle_buffer=4, seed=7)
    first, again, second = stream(ds, 0), stream(ds, 0), stream(ds, 1)
    assert first == again
    assert first != second and sorted(k for k, _ in first) == sorted(k for k, _ in second)
    assert sorted(k for k, _ in first) == split_keys(shards_dir, "train")  # one rank: every row
    other_seed = ShardDataset(shards_dir, "train", hr_size=16, shuffle_buffer=4, seed=8)
    assert stream(other_seed, 0) != first


def test_set_epoch_reaches_persistent_workers(shards_dir: Path):
    ds = ShardDataset(shards_dir, "train", hr_size=16, shuffle_buffer=4, seed=7)
    loader = DataLoader(ds, batch_size=4, num_workers=2, persistent_workers=True)

    def epoch(n: int) -> list[tuple[str, int]]:
        ds.set_epoch(n)
        return [(k, int(f)) for b in loader for k, f in zip(b["key"], b["frame"])]

    first, second, first_again = epoch(0), epoch(1), epoch(0)
    assert first != second and first == first_again
    assert first == stream(ShardDataset(shards_dir, "train", hr_size=16, shuffle_buffer=4, seed=7), 0)


def test_eval_is_deterministic(shards_dir: Path):
    def run() -> list[tuple[str, float, float]]:
        ds = ShardDataset(shards_dir, "test_seen", train=False, hr_size=32)
        return [(k, float(hr.sum()), float(spec.sum())) for b in DataLoader(ds, batch_size=2, num_workers=2)
                for k, hr, spec in zip(b["key"], b["hr"], b["spec"])]

    first = run()
    assert first and first == run()


def test_row_groups_and_errors(shards_dir: Path):
    files = shard_files(shards_dir, "train")
    units = row_groups(files)
    assert sum(u.rows for u in units) == len(split_keys(shards_dir, "train"))
    assert all(u.rows <= 2 for u in units)
    with pytest.raises(ValueError, match="mode"):
        ShardDataset(shards_dir, "train", "audio")
    with pytest.raises(ValueError, match="rank and world_size"):
        ShardDataset(shards_dir, "train", rank=0)
    assert pd.Series([u.path for u in units]).is_monotonic_increasing
