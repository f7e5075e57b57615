"""The video paper's training stages on tiny networks and tiny shards (a few steps each).

The networks are the real ones at toy sizes (coarse 16 px, output 32 px), so the three
stages, their reports and the windows they draw run in seconds on two cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from components.config import Params, parse_params
from components.data.shards import write_shards
from components.errors import ConfigError
from components.models.talking import load_video_sr
from components.training.talking import plan, stages
from components.data.dataset import evenly_spaced
from components.training.talking.data import WindowDraws, load_clips
from tests._fixtures import make_upstream
from tests.conftest import tiny_params

TINY = {"coarse_size": 16, "out_size": 32, "kp_size": 16, "gen_down_blocks": 1, "kp_blocks": 2, "motion_blocks": 2,
        "expert_face_stages": 2, "expert_mel_stages": 2, "expert_dim": 16, "expert_base": 4, "expert_cap": 16,
        "coarse_width": 16, "coarse_audio_dim": 8, "coarse_enc_blocks": 1, "coarse_up_blocks": 1,
        "coarse_mel_base": 4, "coarse_mel_cap": 8, "coarse_mel_stages": 2, "kp_expansion": 4, "kp_cap": 16,
        "motion_expansion": 4, "motion_cap": 16, "gen_expansion": 4, "gen_cap": 8, "gen_bottleneck_blocks": 1}
CADENCE = {"steps": 3, "log_every": 1, "sample_every": 3, "checkpoint_every": 2}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 speakers x 2 videos (30-32 frames each): one speaker unseen (2 clips), 6 training clips."""
    up = make_upstream(tmp_path_factory.mktemp("up"), n_speakers=4, videos_per_speaker=2, clips_per_video=1,
                       unknown_videos=0, crop_size=48)
    params = parse_params({"common": {"data_dir": str(up.data_dir), "workers": 1},
                           "shards": {"rows_per_shard": 4, "row_group_size": 1, "unseen_speaker_fraction": 0.25,
                                      "seen_test_fraction": 0.0}})
    write_shards(params, up.raw, up.faces, up.audio, up.data_dir / "shards", progress=False)
    return up.data_dir


def make_params(root: Path, data_dir: Path, **overrides: object) -> Params:
    base: dict[str, object] = {"common.data_dir": str(data_dir), "talking.overrides": TINY, "talking.num_workers": 0,
                               "talking.threads": 1, "talking.hr_frames_per_clip": 2,
                               "talking.out_dir": str(root / "models")}
    for stage in plan.STAGES:
        base |= {f"{stage}.{k}": v for k, v in CADENCE.items()}
    base |= {"train_sync.batch_size": 8, "train_coarse.batch_size": 2, "train_animate.batch_size": 2}
    return tiny_params(root, **(base | overrides))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> tuple[Params, dict[str, dict]]:
    root = tmp_path_factory.mktemp("train")
    params = make_params(root, data_dir)
    return params, {name: stages.train_stage(name, params, progress=False) for name in plan.STAGES}


def test_every_stage_writes_its_outputs_and_the_last_file_is_the_whole_model(trained: tuple[Params, dict]):
    params, summaries = trained
    for name in plan.STAGES:
        folder = plan.stage_dir(params, name)
        assert {"model.pt", "checkpoint.pt", "metrics.tsv", "summary.json"} <= {p.name for p in folder.iterdir()}
        assert summaries[name]["steps"] == CADENCE["steps"]
        assert (folder / "samples" / "final.png").is_file()
    found = json.loads((plan.stage_dir(params, "train_sync") / "eval.json").read_text())
    assert found["unseen.n_clips"] == 2 and 0.0 <= found["unseen.sync_acc"] <= 1.0
    assert 0.3 < found["unseen.positive_fraction"] < 0.7  # balanced in-sync / shifted windows
    model = load_video_sr(plan.stage_dir(params, "train_animate") / "model.pt")
    cfg = model.cfg
    lr = torch.rand(2, cfg.window, 3, cfg.lr_size, cfg.lr_size) * 2 - 1
    coarse = model.coarse(lr, torch.randn(2, 1, cfg.n_mels, cfg.mel_steps))
    state = model.prepare_identity(torch.rand(2, 3, cfg.out_size, cfg.out_size) * 2 - 1)
    assert model.animate(state, coarse).shape == (2, 3, cfg.out_size, cfg.out_size)


def test_rerun_is_a_noop_and_the_ablation_knobs_retrain_only_their_stages(trained: tuple[Params, dict]):
    params, summaries = trained
    again = stages.train_stage("train_sync", params, progress=False)
    assert again == summaries["train_sync"]
    cfg = plan.model_config(params.talking)

    def changed(**knobs: object) -> set[str]:
        other = make_params(Path(params.talking.out_dir).parent, Path(params.common.data_dir),
                            **{f"talking.{k}": v for k, v in knobs.items()})
        ocfg = plan.model_config(other.talking)
        return {s for s in plan.STAGES if plan.run_fingerprint(other, s, ocfg) != plan.run_fingerprint(params, s, cfg)}

    # the upstream model.pt hashes carry a retrained coarse stage into train_animate's inputs
    assert changed(identity=False) == {"train_animate"}
    assert changed(audio=False) == {"train_coarse"}
    assert changed(lr_size=16) == {"train_coarse"}
    with pytest.raises(ConfigError, match="talking.identity"):
        plan.model_config(make_params(Path(params.talking.out_dir).parent, Path(params.common.data_dir),
                                      **{"talking.overrides": {**TINY, "identity": False}}).talking)


@pytest.fixture(scope="module")
def store(trained: tuple[Params, dict]):
    params, _ = trained
    return load_clips(params, plan.model_config(params.talking), hr_frames=3)


def test_sync_negatives_come_from_the_same_clip_at_least_min_shift_away(trained: tuple[Params, dict], store):
    params, _ = trained
    cfg = plan.model_config(params.talking)
    draws = WindowDraws(store, cfg, 256, sync=True, min_shift=5)
    drawn = draws.draw(torch.Generator().manual_seed(0))
    batch = draws.make(drawn)
    rows = store.start[drawn["clip"]] + drawn["centre"]
    own = store.mel[rows].float()[:, None]
    same = (batch["sync_mel"] == own).flatten(1).all(1)
    assert torch.equal(same, batch["label"].bool())  # label 1 exactly when the audio is the window's own
    assert 0.3 < batch["label"].mean() < 0.7
    # each negative is the mel window of a frame of the same clip >= 5 frames away
    for i in torch.nonzero(batch["label"] == 0).flatten().tolist():
        c, f = int(drawn["clip"][i]), int(drawn["centre"][i])
        clip_mel = store.mel[store.start[c]:store.start[c] + store.length[c]].float()
        matches = [g for g in range(len(clip_mel)) if torch.equal(clip_mel[g], batch["sync_mel"][i, 0])]
        assert matches and all(abs(g - f) >= 5 for g in matches)
    faces = batch["faces"]
    assert faces.shape == (256, cfg.window, 3, cfg.coarse_size, cfg.coarse_size)


def test_span_windows_are_consecutive_and_photos_come_from_another_clip_of_the_speaker(trained, store):
    params, _ = trained
    cfg = plan.model_config(params.talking)
    span = WindowDraws(store, cfg, 64, span=True)
    drawn = span.draw(torch.Generator().manual_seed(1))
    batch = span.make(drawn)
    rows = store.start[drawn["clip"]] + drawn["centre"]
    half = cfg.window // 2
    for s in range(cfg.window):  # sample s of the span is centred on frame centre - 2 + s
        assert torch.equal(batch["lr_span"][:, s, half], store.lr[rows - half + s].float())
    assert torch.equal(batch["lr_span"][:, half], batch["lr"])
    hr = WindowDraws(store, cfg, 64, hr=True, photo="other_clip")
    drawn = hr.draw(torch.Generator().manual_seed(2))
    batch = hr.make(drawn)
    speakers = store.speaker[drawn["clip"]]
    for i in range(64):
        photo = batch["photo"][i]
        owners = [c for c in range(store.n_clips) for k in range(store.hr.shape[1])
                  if torch.allclose(photo, store.hr[c, k].float() / 127.5 - 1)]
        assert owners and all(store.speaker[c] == speakers[i] and c != int(drawn["clip"][i]) for c in owners)
    same = WindowDraws(store, cfg, 16, hr=True, photo="same_clip")
    drawn = same.draw(torch.Generator().manual_seed(3))
    batch = same.make(drawn)
    for i in range(16):
        c = int(drawn["clip"][i])
        far = int((store.hr_frame[c] - drawn["centre"][i]).abs().argmax())
        assert torch.allclose(batch["photo"][i], store.hr[c, far].float() / 127.5 - 1)


def test_evenly_spaced_positions_keep_a_window_margin():
    assert evenly_spaced(30, 3, 5) == [8, 14, 20]
    assert all(5 <= f <= 24 for f in evenly_spaced(30, 7, 5))
    assert evenly_spaced(8, 2, 5) == [5, 5]  # a clip shorter than two margins repeats its only position
