"""Stage ``shards``: splits, row contents, storage layout, resume, quarantine, inspection."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import yaml

from components.config import Params, parse_params, set_dotted
from components.data import shards
from components.data.shards import assign_splits, encode, split_group, summarize, write_shards
from components.errors import EarshotError, Rejected
from components.io import sha256_file
from components.orchestration.runner import Outcome
from tests._fixtures import Upstream, decode_jpeg, make_upstream, stamp_frame, upstream_from_videos

CORRUPT = "spk1/vid0/00001"


def shard_params(data_dir: Path, **overrides: object) -> Params:
    base = {"common.data_dir": str(data_dir), "common.workers": 1, "tracking.enabled": False,
            "shards.rows_per_shard": 4, "shards.row_group_size": 2,
            "shards.unseen_speaker_fraction": 0.3, "shards.seen_test_fraction": 0.3}
    tree: dict = {}
    for key, value in {**base, **overrides}.items():
        set_dotted(tree, key, value)
    return parse_params(tree)  # the project's params.yaml with these changes


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Upstream:
    return make_upstream(tmp_path_factory.mktemp("up"), n_speakers=6, corrupt=(CORRUPT,))


@pytest.fixture(scope="module")
def built(upstream: Upstream) -> tuple[Path, Outcome]:
    """The shards of the fixture, written once with two encoding processes."""
    out = upstream.data_dir / "shards"
    outcome = write_shards(shard_params(upstream.data_dir, **{"common.workers": 2}), upstream.raw,
                           upstream.faces, upstream.audio, out, progress=False)
    return out, outcome


def read_split(out: Path, split: str, columns: list[str] | None = None) -> pd.DataFrame:
    files = sorted((out / split).glob("shard-*.parquet"))
    return pd.concat([pq.read_table(f, columns=columns).to_pandas() for f in files], ignore_index=True)


def all_rows(out: Path, columns: list[str] | None = None) -> pd.DataFrame:
    return pd.concat([read_split(out, s, columns) for s in shards.SPLITS], ignore_index=True)


# ------------------------------------------------------------------ splits (pure)


def corpus(n_speakers: int, videos: int = 2, clips: int = 2, prefix: str = "id") -> pd.DataFrame:
    rows = [{"key": f"{prefix}{s:04d}/v{v}/{c:05d}", "speaker_id": f"{prefix}{s:04d}", "video_id": f"v{v}"}
            for s in range(n_speakers) for v in range(videos) for c in range(clips)]
    return pd.DataFrame(rows)


def split_of(clips: pd.DataFrame, seed: int = 0, unseen: float = 0.2, seen: float = 0.15) -> pd.Series:
    return assign_splits(clips, unseen_fraction=unseen, seen_test_fraction=seen, seed=seed)


def test_splits_are_open_set_by_speaker_and_by_video():
    clips = corpus(400)
    clips["split"] = split_of(clips)
    per_speaker = clips.groupby("speaker_id")["split"]
    unseen = per_speaker.apply(lambda s: (s == "test_unseen").any())
    assert 0.15 < unseen.mean() < 0.25
    assert (per_speaker.apply(lambda s: s.eq("test_unseen").all())[unseen]).all()  # all clips of them
    seen = clips[~clips["speaker_id"].map(unseen)]
    assert (seen.groupby("speaker_id")["split"].apply(lambda s: (s == "train").any())).all()
    # test_seen holds whole videos out: no video has clips in both train and test_seen
    assert (seen.groupby(["speaker_id", "video_id"])["split"].nunique() == 1).all()
    held = (seen["split"] == "test_seen").mean()
    assert 0.08 < held < 0.2  # the largest-hash video always stays in train: a bit under 0.15


def test_splits_are_deterministic_and_stable_when_speakers_are_added():
    small = corpus(50)
    before = split_of(small)
    assert before.equals(split_of(small.sample(frac=1, random_state=3)).sort_index())
    grown = pd.concat([small, corpus(80, prefix="new")], ignore_index=True)
    assert split_of(grown)[: len(small)].equals(before)
    assert not split_of(small, seed=1).equals(before)


def test_single_video_speakers_hold_out_clips_and_keep_one_for_training():
    clips = corpus(100, videos=1, clips=3)
    clips["split"] = split_of(clips, unseen=0.0, seen=0.5)
    assert set(clips["split"]) == {"train", "test_seen"}
    assert clips.groupby("speaker_id")["split"].apply(lambda s: (s == "train").any()).all()


def test_unknown_speakers_split_by_video():
    clips = pd.DataFrame({"key": [f"unknown/flat{i}/00000" for i in range(200)], "speaker_id": "unknown",
                          "video_id": [f"flat{i}" for i in range(200)]})
    split = split_of(clips, unseen=0.3, seen=0.5)
    assert set(split) == {"train", "test_unseen"}  # one clip per pseudo-speaker: it must train
    assert 0.2 < (split == "test_unseen").mean() < 0.4
    assert split_group("unknown", "flat3") == "unknown/flat3" and split_group("id1", "v") == "id1"


def test_sex_codes_and_attribute_types(tmp_path: Path):
    raw = tmp_path / "raw"
    raw.mkdir()
    pd.DataFrame({"speaker_id": ["a", "b", "c"], "sex": ["female", "M", None], "age": [30, 41, 52],
                  "beard": [False, True, None], "tone": [0.1, 0.2, 0.3]}).to_parquet(raw / "speakers.parquet")
    table, fields = shards.load_speakers(raw)
    assert table["attr_sex"].tolist()[:2] == [0.0, 1.0] and np.isnan(table.loc["c", "attr_sex"])
    types = {f.name: f.type for f in fields}
    assert types == {"attr_sex": pa.int8(), "attr_age": pa.float32(), "attr_beard": pa.bool_(),
                     "attr_tone": pa.float32()}
    pd.DataFrame({"speaker_id": ["a"], "sex": ["x"]}).to_parquet(raw / "speakers.parquet")
    with pytest.raises(EarshotError, match="sex: unknown value 'x'"):
        shards.load_speakers(raw)


def test_missing_or_incomplete_upstream_is_a_clear_error(upstream: Upstream, tmp_path: Path):
    with pytest.raises(EarshotError, match="run the audio stage first"):
        shards.load_clips(upstream.raw, upstream.faces, tmp_path)
    pd.DataFrame({"key": ["a"]}).to_parquet(tmp_path / "index.parquet")
    with pytest.raises(EarshotError, match=r"missing columns \['wav_path'"):
        shards.load_clips(upstream.raw, upstream.faces, tmp_path)


# ------------------------------------------------------------------ written shards


def test_layout_index_and_counts(upstream: Upstream, built: tuple[Path, Outcome]):
    out, outcome = built
    index = json.loads((out / "index.json").read_text())
    assert index["schema_version"] == shards.SCHEMA_VERSION
    assert set(index["splits"]) == set(shards.SPLITS)
    rows = all_rows(out, ["key", "split", "speaker_id", "video_id", "n_frames", "fps"])
    assert sorted(rows["key"]) == sorted(k for k in upstream.keys if k != CORRUPT)
    assert {r["key"] for r in outcome.records} == set(rows["key"])
    for split, info in index["splits"].items():
        part = rows[rows["split"] == split]
        assert info["clips"] == len(part) > 0, split
        assert info["frames"] == part["n_frames"].sum()
        assert info["seconds"] == pytest.approx((part["n_frames"] / part["fps"]).sum())
        groups = {split_group(s, v) for s, v in zip(part["speaker_id"], part["video_id"])}
        assert info["speakers"] == len(groups)
        for entry in info["shards"]:
            path = out / entry["path"]
            assert path.parent.name == split and path.name.startswith("shard-")
            assert entry["bytes"] == path.stat().st_size
            assert entry["sha256"] == sha256_file(path)
            assert entry["rows"] == pq.ParquetFile(path).metadata.num_rows <= 4
    # no speaker of test_unseen appears in another split (open set)
    unseen = set(rows.loc[rows["split"] == "test_unseen", "speaker_id"]) - {"unknown"}
    assert unseen and not unseen & set(rows.loc[rows["split"] != "test_unseen", "speaker_id"])
    assert not list(out.rglob(".tmp-*"))


def test_schema_and_storage(built: tuple[Path, Outcome]):
    out, _ = built
    path = out / json.loads((out / "index.json").read_text())["splits"]["train"]["shards"][0]["path"]
    pf = pq.ParquetFile(path)
    schema = pf.schema_arrow
    expected = {"key": pa.string(), "speaker_id": pa.string(), "video_id": pa.string(), "clip_id": pa.string(),
                "split": pa.string(), "fps": pa.int16(), "n_frames": pa.int32(), "height": pa.int16(),
                "width": pa.int16(), "frames": pa.list_(pa.binary()), "sample_rate": pa.int32(),
                "n_samples": pa.int32(), "audio": pa.binary(), "landmarks": pa.list_(pa.float32()),
                "offset_frames": pa.int16(), "speech_ratio": pa.float32(), "attr_sex": pa.int8(),
                "attr_age": pa.float32(), "attr_glasses": pa.bool_(), "attr_hair_color": pa.string(),
                "attr_skin_rgb": pa.list_(pa.int64())}
    assert {f.name: f.type for f in schema} == expected
    meta = pf.metadata
    assert all(meta.row_group(i).num_rows <= 2 for i in range(meta.num_row_groups))
    for i in range(meta.num_row_groups):
        for c in range(meta.num_columns):
            col = meta.row_group(i).column(c)
            if col.path_in_schema in ("frames.list.element", "audio"):
                assert col.compression == "UNCOMPRESSED" and "RLE_DICTIONARY" not in col.encodings
                assert not col.is_stats_set
            else:
                assert col.compression == "ZSTD", col.path_in_schema


def test_rows_hold_the_upstream_media(upstream: Upstream, built: tuple[Path, Outcome]):
    out, _ = built
    rows = all_rows(out)
    faces = pd.read_parquet(upstream.faces / "index.parquet").set_index("key")
    audio_index = pd.read_parquet(upstream.audio / "index.parquet").set_index("key")
    speakers = upstream.speakers.set_index("speaker_id")
    for row in rows.itertuples():
        assert row.n_frames == faces.loc[row.key, "n_frames"] == len(row.frames)
        assert (row.height, row.width, row.fps) == (64, 64, 25)
        first, last = decode_jpeg(row.frames[0]), decode_jpeg(row.frames[-1])
        assert first.shape == (64, 64, 3)
        assert (stamp_frame(first), stamp_frame(last)) == (0, row.n_frames - 1)
        with np.load(upstream.faces / f"{row.key}.npz") as track:
            np.testing.assert_array_equal(row.landmarks, track["landmarks"].reshape(-1))
        wav, sr = sf.read(upstream.audio / f"{row.key}.wav", dtype="float32")
        flac, flac_sr = sf.read(io.BytesIO(row.audio), dtype="float32")
        assert sr == flac_sr == row.sample_rate == 16000 and row.n_samples == len(flac) == row.n_frames * 640
        np.testing.assert_allclose(flac, wav, atol=1 / 32768)
        assert row.offset_frames == audio_index.loc[row.key, "offset_frames"]
        if row.speaker_id == "unknown":
            assert all(pd.isna(v) for v in (row.attr_sex, row.attr_age, row.attr_glasses, row.attr_hair_color))
        else:
            spk = speakers.loc[row.speaker_id]
            assert row.attr_sex == {"F": 0, "M": 1}[spk["sex"]] and row.attr_age == spk["age"]
            assert row.attr_glasses == spk["glasses"] and row.attr_hair_color == spk["hair_color"]
            assert list(row.attr_skin_rgb) == list(spk["skin_rgb"])


def test_undecodable_crop_is_quarantined(built: tuple[Path, Outcome]):
    out, outcome = built
    assert [(q["key"], q["reason"]) for q in outcome.quarantine] == [(CORRUPT, "corrupt")]
    assert "Invalid data" in outcome.quarantine[0]["detail"]
    assert outcome.counts["kept"] == len(all_rows(out, ["key"]))


def test_encode_clip_rejects_inputs_that_do_not_match_the_index(upstream: Upstream, tmp_path: Path):
    import shutil

    key = "spk0/vid0/00000"
    n = int(pd.read_parquet(upstream.faces / "index.parquet").set_index("key").loc[key, "n_frames"])
    faces, audio = tmp_path / "faces", tmp_path / "audio"
    for src, dst in ((upstream.faces, faces), (upstream.audio, audio)):
        shutil.copytree(src / "spk0", dst / "spk0")
    clip = {"crop_path": f"{key}.mkv", "track_path": f"{key}.npz", "wav_path": f"{key}.wav", "n_frames": n, "fps": 25}

    def reason(**changes: object) -> tuple[str, str]:
        with pytest.raises(Rejected) as exc:
            shards.encode_clip({**clip, **changes}, faces_dir=str(faces), audio_dir=str(audio), jpeg_quality=90,
                               sample_rate=16000)
        return exc.value.reason, exc.value.detail

    media = shards.encode_clip(clip, faces_dir=str(faces), audio_dir=str(audio), jpeg_quality=90, sample_rate=16000)
    assert len(media["frames"]) == n and media["n_samples"] == n * 640
    assert reason(n_frames=n + 3)[0] == "corrupt"  # the crop has fewer frames than the index says
    assert reason(track_path="spk0/none.npz") == ("unreadable", f"missing {faces / 'spk0/none.npz'}")
    wav = audio / clip["wav_path"]
    sf.write(wav, np.zeros(8000, np.float32), 16000)
    assert "0.500 s of audio" in reason()[1]
    sf.write(wav, np.zeros(n * 2 * 441, np.float32), 22050)
    assert "22050 Hz" in reason()[1]
    np.savez(faces / clip["track_path"], landmarks=np.zeros((n - 1, 5, 2)))
    assert "landmarks" in reason()[1]


def test_rerun_reuses_shards_and_rebuild_is_byte_identical(upstream: Upstream, built: tuple[Path, Outcome],
                                                          tmp_path: Path):
    out, first = built
    index = json.loads((out / "index.json").read_text())
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("*/shard-*.parquet")}
    again = write_shards(shard_params(upstream.data_dir), upstream.raw, upstream.faces, upstream.audio, out,
                         progress=False)
    assert again.skipped == len(first.records) + len(first.quarantine)
    assert [q["key"] for q in again.quarantine] == [CORRUPT]
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/shard-*.parquet")} == mtimes
    assert json.loads((out / "index.json").read_text()) == index
    fresh = tmp_path / "shards"  # one process instead of two: same bytes
    write_shards(shard_params(upstream.data_dir), upstream.raw, upstream.faces, upstream.audio, fresh,
                 progress=False)
    assert json.loads((fresh / "index.json").read_text())["splits"] == index["splits"]


def test_new_params_rebuild_and_stale_shards_go(upstream: Upstream, tmp_path: Path):
    out = tmp_path / "shards"
    write_shards(shard_params(upstream.data_dir), upstream.raw, upstream.faces, upstream.audio, out, progress=False)
    assert (out / "train" / "shard-00002.parquet").exists()
    bigger = shard_params(upstream.data_dir, **{"shards.rows_per_shard": 100, "faces.jpeg_quality": 80})
    outcome = write_shards(bigger, upstream.raw, upstream.faces, upstream.audio, out, progress=False)
    assert outcome.skipped == 0
    assert sorted(str(p.relative_to(out)) for p in out.glob("*/shard-*.parquet")) == [
        f"{s}/shard-00000.parquet" for s in sorted(shards.SPLITS)]
    assert sorted(p.name for p in (out / shards.SIDECARS).rglob("*.json")) == ["shard-00000.parquet.json"] * 3
    assert summarize(out)["ok"]


def test_killed_run_leaves_no_partial_shard_and_resumes(upstream: Upstream, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch):
    out = tmp_path / "shards"
    params = shard_params(upstream.data_dir)
    real, calls = shards.encode_clip, []

    def dies_on_sixth(*args, **kwargs):  # noqa: ANN002, ANN003
        calls.append(1)
        if len(calls) == 6:
            raise KeyboardInterrupt  # what SIGINT does mid-shard
        return real(*args, **kwargs)

    monkeypatch.setattr(encode, "encode_clip", dies_on_sixth)
    with pytest.raises(KeyboardInterrupt):
        write_shards(params, upstream.raw, upstream.faces, upstream.audio, out, progress=False)
    written = sorted(out.glob("*/shard-*.parquet"))
    assert len(written) == 1 and not list(out.rglob(".tmp-*")) and not (out / "index.json").exists()
    entry = json.loads((out / shards.SIDECARS / f"{written[0].relative_to(out)}.json").read_text())
    assert entry["rows"] == pq.ParquetFile(written[0]).metadata.num_rows  # the one complete shard
    assert entry["rows"] + len(entry["rejected"]) == 4

    monkeypatch.setattr(encode, "encode_clip", real)
    outcome = write_shards(params, upstream.raw, upstream.faces, upstream.audio, out, progress=False)
    assert outcome.skipped == 4
    reference = tmp_path / "reference"
    write_shards(params, upstream.raw, upstream.faces, upstream.audio, reference, progress=False)
    assert (json.loads((out / "index.json").read_text())["splits"]
            == json.loads((reference / "index.json").read_text())["splits"])


# ------------------------------------------------------------------ inspection and stage


def test_summarize_counts_coverage_and_verifies(upstream: Upstream, built: tuple[Path, Outcome],
                                               tmp_path: Path):
    out, _ = built
    summary = summarize(out)
    assert summary["ok"] and summary["problems"] == []
    index = json.loads((out / "index.json").read_text())
    for split, s in summary["splits"].items():
        assert s["clips"] == index["splits"][split]["clips"]
        assert s["hours"] == pytest.approx(index["splits"][split]["seconds"] / 3600)
    rows = all_rows(out, ["split", "speaker_id"])
    for split, cov in summary["attributes"]["attr_age"].items():
        part = rows[rows["split"] == split]
        assert cov == pytest.approx((part["speaker_id"] != "unknown").mean())

    from rich.console import Console

    console = Console(record=True, width=120)
    shards.print_summary(summary, console)
    text = console.export_text()
    assert "test_unseen" in text and "attr_sex" in text and "matches its sha256" in text

    tampered = tmp_path / "tampered"
    import shutil

    shutil.copytree(out, tampered)
    victim = tampered / index["splits"]["train"]["shards"][0]["path"]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    (tampered / index["splits"]["test_seen"]["shards"][0]["path"]).unlink()
    bad = summarize(tampered)
    assert not bad["ok"] and len(bad["problems"]) == 2
    assert any("sha256 differs" in p for p in bad["problems"]) and any("missing" in p for p in bad["problems"])


def test_stage_entry_point(upstream: Upstream, tmp_path: Path):
    import shutil

    from pipelines import shards as stage

    data = tmp_path / "data"
    for name in ("raw", "faces", "audio"):
        shutil.copytree(upstream.data_dir / name, data / name)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"common": {"data_dir": str(data), "workers": 1},
                                      "tracking": {"enabled": False}}))
    stage.main(["--params", str(params), "--no-progress", "-S", "shards.rows_per_shard=5"])
    out = data / "shards"
    clips = pd.read_parquet(out / "index.parquet")
    assert set(clips["key"]) == set(upstream.keys) - {CORRUPT}
    assert set(clips.columns) >= {"key", "split", "shard", "speaker_id"}
    assert pd.read_parquet(out / "quarantine.parquet")["key"].tolist() == [CORRUPT]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kept"] == len(clips) and summary["rejected"] == 1
    assert sum(summary[f"{s}.clips"] for s in shards.SPLITS) == len(clips)


@pytest.mark.realdata
def test_real_clips_round_trip(real_data: Path, tmp_path: Path):
    """Real talking faces (H.264 and MPEG-1 sources) through shards and back out of the loader."""
    from components.data.dataset import ShardDataset

    videos = sorted(p for p in (real_data / "clips").iterdir() if p.suffix in (".mp4", ".mpg"))
    up = upstream_from_videos(tmp_path, videos)
    out = tmp_path / "shards"
    params = shard_params(up.data_dir, **{"shards.unseen_speaker_fraction": 0.0, "shards.seen_test_fraction": 0.0})
    outcome = write_shards(params, up.raw, up.faces, up.audio, out, progress=False)
    assert outcome.counts["kept"] == len(videos) and not outcome.quarantine
    rows = read_split(out, "train", ["key", "n_frames", "frames", "n_samples", "height"])
    assert (rows["height"] == 256).all() and (rows["n_samples"] == rows["n_frames"] * 640).all()
    assert all(len(f) == n for f, n in zip(rows["frames"], rows["n_frames"]))
    for sample in ShardDataset(out, "train", train=False):
        assert sample["hr"].shape == (3, 128, 128) and sample["hr"].std() > 0.1
        assert sample["spec"].shape == (1, 257, 257) and sample["spec"].std() > 0.1  # speech, not silence
    for sample in ShardDataset(out, "train", "video", train=False, window=5):
        assert sample["mel"].shape == (5, 80, 16) and sample["mel"].std() > 0.1
