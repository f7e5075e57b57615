"""The face-SR training stages on tiny networks and tiny shards (a few steps each).

Networks are the real ones at 32x32 with 32-dim codes and a 1 s spectrogram, so every
stage, the resume logic and the DDP path run in seconds on two cores.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

from components.config import Params, parse_params
from components.data.dataset import ShardDataset
from components.data.shards import shard_files, write_shards
from components.errors import ConfigError
from components.models import checkpoint as ckpt_io
from components.models.face_sr import FAMILY, build_models, config_dict, get_preset
from components.training import loop
from components.training.ema import ema_beta
from components.training.face_sr import plan, recipes, stages
from components.training.face_sr.data import TENSOR_KEYS, cache_face_sr, training_data
from components.training.feeds import StreamingFeed
from components.training.metrics_table import MetricsTable
from components.training.runtime import Runtime, rng_state, set_rng_state, setup_runtime, teardown_runtime
from tests._fixtures import make_upstream
from tests.conftest import tiny_params

TINY = {"resolution": 32, "latent_dim": 32, "mapping_layers": 2, "g_channel_base": 256, "g_channel_max": 32,
        "d_channel_base": 256, "d_channel_max": 32, "eh_base": 8, "eh_cap": 32, "el_base": 8, "el_cap": 16,
        "ea_base": 4, "ea_cap": 16, "ea_fc": 64, "fusion_hidden": 64}
CADENCE = {"steps": 4, "batch_size": 4, "log_every": 2, "sample_every": 2, "checkpoint_every": 2}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny shards: 3 speakers x 2 videos, 6 clips of 30-32 frames, all in the train split."""
    up = make_upstream(tmp_path_factory.mktemp("up"), n_speakers=3, videos_per_speaker=2, clips_per_video=1,
                       unknown_videos=0, crop_size=48)
    params = parse_params({"common": {"data_dir": str(up.data_dir), "workers": 1},
                           "shards": {"rows_per_shard": 4, "row_group_size": 1, "unseen_speaker_fraction": 0.0,
                                      "seen_test_fraction": 0.0}})
    write_shards(params, up.raw, up.faces, up.audio, up.data_dir / "shards", progress=False)
    return up.data_dir


def make_params(root: Path, data_dir: Path, **overrides: object) -> Params:
    base: dict[str, object] = {"common.data_dir": str(data_dir), "face_sr.overrides": TINY, "face_sr.audio_seconds": 1.0,
                               "face_sr.cache_frames_per_clip": 2, "face_sr.num_workers": 0,
                               "face_sr.threads": 1, "face_sr.out_dir": str(root / "models")}
    for stage in plan.STAGES:
        base |= {f"{stage}.{k}": v for k, v in CADENCE.items()}
    params = tiny_params(root, **(base | overrides))
    assert params.tracking.uri and str(root) in params.tracking.uri  # never the project's mlflow.db
    return params


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> tuple[Params, dict[str, dict]]:
    """All five stages in order, as `dvc repro` runs them, with MLflow tracking on."""
    root = tmp_path_factory.mktemp("train")
    # every optional loss on somewhere: latent cycle, Ea's image loss, LPIPS
    params = make_params(root, data_dir, **{"train_eh.w_latent": 0.5, "train_ea.w_rec": 1.0,
                                            "train_fusion.w_perc": 1.0})
    return params, {name: stages.train_stage(name, params, progress=False) for name in plan.STAGES}


def state_of(path: Path) -> dict[str, torch.Tensor]:
    """Every network and optimiser tensor of a checkpoint, flattened."""
    ckpt = ckpt_io.load_checkpoint(path)
    out = {f"net.{n}.{k}": v for n, sd in ckpt["networks"].items() for k, v in sd.items()}
    for name, opt in ckpt["optimizers"].items():
        for idx, st in opt["state"].items():
            out |= {f"opt.{name}.{idx}.{k}": v for k, v in st.items() if isinstance(v, torch.Tensor)}
    return out


def test_every_stage_writes_its_outputs_and_an_mlflow_run(trained: tuple[Params, dict[str, dict]]):
    import mlflow

    params, summaries = trained
    client = mlflow.MlflowClient(params.tracking.uri)
    experiment = client.get_experiment_by_name(params.tracking.experiment)
    for name in plan.STAGES:
        out = plan.stage_dir(params, name)
        assert summaries[name]["steps"] == 4 and summaries[name]["samples_per_s"] > 0
        assert {"checkpoint.pt", "model.pt", "metrics.tsv", "summary.json"} <= {p.name for p in out.iterdir()}
        assert {p.name for p in (out / "samples").iterdir()} == {"step-000002.png", "step-000004.png", "final.png"}
        rows = (out / "metrics.tsv").read_text().splitlines()
        assert rows[0].startswith("step\t") and [r.split("\t")[0] for r in rows[1:]] == ["2", "4"]
        (run,) = client.search_runs([experiment.experiment_id], f"tags.stage = '{name}'")
        assert run.data.params[f"{name}.face_sr.preset"] == "small"
        assert run.data.params[f"{name}.model.resolution"] == "32"
        history = client.get_metric_history(run.info.run_id, "loss" if name != "train_g" else "g")
        assert [m.step for m in history] == [2, 4]
        assert {"samples_per_s", "wall_s"} <= set(run.data.metrics)
    header = (plan.stage_dir(params, "train_fusion") / "metrics.tsv").read_text().splitlines()[:2]
    assert header[0] == "step\tloss\trec\tperc\tlatent" and "nan" not in header[1]
    # model.pt rebuilds the networks alone; fusion's file holds everything inference needs
    cfg = plan.model_config(params.face_sr)
    nets = ckpt_io.load_model(plan.stage_dir(params, "train_fusion") / "model.pt", ("G", "El", "Ea", "F"),
                              expect_family=FAMILY, expect_stage="train_fusion",
                              expect_config=config_dict(cfg)).networks
    xl, spec = torch.rand(2, 3, 8, 8) * 2 - 1, torch.rand(2, 1, *cfg.spectrogram_shape) * 2 - 1
    assert nets["G"](nets["F"](nets["El"](xl), nets["Ea"](spec))).shape == (2, 3, 32, 32)


def test_rerun_is_a_noop_raising_steps_continues_and_new_settings_restart(
        trained: tuple[Params, dict[str, dict]], tmp_path: Path):
    params, summaries = trained
    ckpt = plan.stage_dir(params, "train_el") / "checkpoint.pt"
    before = ckpt.stat().st_mtime_ns
    assert stages.train_stage("train_el", params, progress=False) == summaries["train_el"]
    assert ckpt.stat().st_mtime_ns == before

    # own copy of the stage folders, so the shared fixture stays as it was
    shutil.copytree(plan.stage_dir(params, "train_eh"), tmp_path / "models" / "train_eh")
    shutil.copytree(plan.stage_dir(params, "train_el"), tmp_path / "models" / "train_el")
    copy = make_params(tmp_path, Path(params.common.data_dir), **{"train_el.steps": 6})
    assert stages.train_stage("train_el", copy, progress=False)["resumed_from"] == 4
    changed = make_params(tmp_path, Path(params.common.data_dir), **{"train_el.steps": 6, "train_el.w_latent": 2.0})
    assert stages.train_stage("train_el", changed, progress=False)["resumed_from"] == 0


def test_ablation_knobs_retrain_only_the_stages_they_shape(trained: tuple[Params, dict[str, dict]], tmp_path: Path):
    """A 16x16 El trains on the G and Eh made for 8x8; Ea's audio length leaves G/Eh/El
    alone; fusion off trains no F (fused = image only); audio off makes F deaf."""
    params, _ = trained
    for up in ("train_g", "train_eh", "train_el", "train_ea"):
        shutil.copytree(plan.stage_dir(params, up), tmp_path / "models" / up)
    data = Path(params.common.data_dir)
    base = make_params(tmp_path, data)
    fp = {name: plan.run_fingerprint(base, name, plan.model_config(base.face_sr)) for name in plan.STAGES}

    def changed(**knobs: object) -> set[str]:
        p = make_params(tmp_path, data, **{f"face_sr.{k}": v for k, v in knobs.items()})
        cfg = plan.model_config(p.face_sr)
        return {n for n in plan.STAGES if plan.run_fingerprint(p, n, cfg) != fp[n]}

    # (train_fusion follows through the hash of the retrained El's / Ea's model.pt)
    assert changed(lr_size=16) == {"train_el"}
    assert changed(audio_seconds=2.0) == {"train_ea"}
    assert changed(audio=False) == changed(fusion=False) == {"train_fusion"}

    off = make_params(tmp_path, data, **{"face_sr.fusion": False})
    assert stages.train_stage("train_fusion", off, progress=False)["steps"] == 0
    cfg = plan.model_config(off.face_sr)
    nets = ckpt_io.load_model(plan.stage_dir(off, "train_fusion") / "model.pt", ("El", "F"),
                              expect_family=FAMILY, expect_config=config_dict(cfg)).networks
    wl, wa = torch.randn(2, cfg.n_latents, 32), torch.randn(2, cfg.n_latents, 32)
    assert torch.equal(nets["F"](wl, wa), wl)

    deaf = build_models(plan.model_config(make_params(tmp_path, data, **{"face_sr.audio": False}).face_sr),
                        names=("F",))["F"]
    assert torch.equal(deaf(wl, wa), deaf(wl, torch.zeros_like(wa))) and not torch.equal(deaf(wl, wa), wl)

    wide = make_params(tmp_path, data, **{"face_sr.lr_size": 16})
    assert stages.train_stage("train_el", wide, progress=False)["steps"] == 4  # on the 8x8 run's G and Eh
    el = ckpt_io.load_model(plan.stage_dir(wide, "train_el") / "model.pt", ("El",), expect_family=FAMILY)
    el = el.networks["El"]
    assert el(torch.zeros(1, 3, 16, 16)).shape[1:] == (plan.model_config(wide.face_sr).n_latents, 32)

    with pytest.raises(ConfigError, match="face_sr.lr_size"):
        plan.model_config(make_params(tmp_path, data, **{"face_sr.overrides": {**TINY, "lr_size": 16}}).face_sr)


class Killed(Exception):
    pass


def test_killed_and_resumed_run_equals_an_uninterrupted_one(data_dir: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch):
    """train_g (two optimisers, lazy R1, EMA, path length on): killed after step 5 of 8,
    with the last checkpoint at step 4, then resumed: bit-identical to an unbroken run."""
    settings = {"tracking.enabled": False, "train_g.steps": 8, "train_g.checkpoint_every": 4,
                "train_g.log_every": 1, "train_g.r1_every": 3, "train_g.pl_weight": 2.0, "train_g.pl_every": 2}
    whole = make_params(tmp_path / "whole", data_dir, **settings)
    stages.train_stage("train_g", whole, progress=False)

    broken = make_params(tmp_path / "broken", data_dir, **settings)
    build = recipes.BUILDERS["train_g"]

    def dying_build(*args, **kwargs):  # type: ignore[no-untyped-def]
        stage = build(*args, **kwargs)
        inner = stage.step

        def step(ctx: loop.StepContext, batch: dict) -> dict:
            if ctx.step == 5:  # 0-based: steps 1..5 done, checkpoint at 4
                raise Killed
            return inner(ctx, batch)

        stage.step = step
        return stage

    monkeypatch.setitem(recipes.BUILDERS, "train_g", dying_build)
    with pytest.raises(Killed):
        stages.train_stage("train_g", broken, progress=False)
    assert ckpt_io.load_checkpoint(plan.stage_dir(broken, "train_g") / "checkpoint.pt")["step"] == 4
    monkeypatch.setitem(recipes.BUILDERS, "train_g", build)
    assert stages.train_stage("train_g", broken, progress=False)["resumed_from"] == 4

    a = state_of(plan.stage_dir(whole, "train_g") / "checkpoint.pt")
    b = state_of(plan.stage_dir(broken, "train_g") / "checkpoint.pt")
    assert a.keys() == b.keys() and any(k.startswith("net.G_ema.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    tables = [(plan.stage_dir(p, "train_g") / "metrics.tsv").read_text() for p in (whole, broken)]
    assert tables[0] == tables[1] and len(tables[0].splitlines()) == 9


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, root: str, data_dir: str, upstream: str) -> None:
    """One rank: train_g and train_el (from the fixture's Eh/G) for 3 steps each, then
    save this rank's copy of the trained parameters and the clips it read: the clips each
    stage cached, and a full evaluation pass through a DataLoader worker process
    (which must learn the rank from the process group too)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    params = make_params(Path(root), Path(data_dir), **{"tracking.enabled": False, "train_el.w_perc": 0.0})
    runtime = setup_runtime("cpu", threads=1)
    cfg = plan.model_config(params.face_sr)
    if rank == 0:
        shutil.copytree(upstream, plan.stage_dir(params, "train_eh"))
    torch.distributed.barrier()
    weights, read = {}, {}
    for name in ("train_g", "train_el"):
        data = training_data(params, name, cfg, batch_size=4, runtime=runtime)
        stage = recipes.build_stage(name, params, cfg, runtime, data)
        read[name] = data.sources  # the clip of every cached sample
        config = loop.LoopConfig(steps=3, log_every=1, sample_every=100, checkpoint_every=100, seed=0,
                                 fingerprint="ddp-test")
        loop.train(stage, data, config, Path(root) / name, runtime, progress=False)
        # parameters: DDP keeps them in step; buffers (G's w_avg) it re-broadcasts from rank 0
        # at every forward, so they may differ by the last local update
        weights |= {f"{name}.{net}.{k}": v.detach().clone() for net in stage.trained
                    for k, v in stage.networks[net].named_parameters()}
    torch.save(weights, Path(root) / f"rank{rank}.pt")
    evaluation = ShardDataset(params.data_path("shards"), "train", train=False, hr_size=cfg.resolution)
    read["eval"] = [k for batch in DataLoader(evaluation, batch_size=2, num_workers=1) for k in batch["key"]]
    (Path(root) / f"rank{rank}.json").write_text(json.dumps(read))
    teardown_runtime(runtime)


def test_ddp_two_gloo_processes_keep_identical_weights(trained: tuple[Params, dict[str, dict]], data_dir: Path,
                                                       tmp_path: Path):
    params, _ = trained
    upstream = plan.stage_dir(params, "train_eh")
    torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path), str(data_dir), str(upstream)),
                                nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0.keys() == r1.keys() and any(k.startswith("train_g.D.") for k in r0)
    assert all(torch.equal(r0[k], r1[k]) for k in r0), [k for k in r0 if not torch.equal(r0[k], r1[k])][:5]
    init = build_models(plan.model_config(params.face_sr), 0, ("El",))["El"].state_dict()
    assert not torch.equal(r0["train_el.El.head.2.weight"], init["head.2.weight"])  # it did train
    # ... on different data: in step because gradients are averaged, not because both ranks saw the same.
    # The cache holds cache_frames_per_clip passes; in each pass every clip goes to one rank only, so
    # the two caches hold equal shares that together have every clip exactly that many times.
    read = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    clips = sorted(k for f in shard_files(data_dir / "shards", "train") for k in pq.read_table(f)["key"].to_pylist())
    passes = params.face_sr.cache_frames_per_clip
    for name in ("train_g", "train_el"):
        assert len(read[0][name]) == len(read[1][name]) == len(clips) * passes // 2, name
        assert Counter(read[0][name] + read[1][name]) == {clip: passes for clip in clips}, name
    assert read[0]["eval"] and read[1]["eval"] and not set(read[0]["eval"]) & set(read[1]["eval"])
    assert sorted(read[0]["eval"] + read[1]["eval"]) == clips  # evaluation: every clip once, on one rank


def test_wrong_checkpoints_fail_clearly_naming_the_file(trained: tuple[Params, dict[str, dict]], tmp_path: Path):
    params, _ = trained
    g_model = plan.stage_dir(params, "train_g") / "model.pt"
    cfg = plan.model_config(params.face_sr)
    with pytest.raises(ckpt_io.CheckpointError, match=rf"{g_model}: written by stage 'train_g', expected 'train_el'"):
        ckpt_io.load_checkpoint(g_model, expect_stage="train_el")
    with pytest.raises(ckpt_io.CheckpointError, match=r"made for another model.*latent_dim: 32 in the file, 128"):
        ckpt_io.load_checkpoint(g_model, expect_config=config_dict(get_preset("small")))
    old = tmp_path / "old.pt"
    torch.save({**torch.load(g_model, weights_only=True), "version": 0}, old)
    with pytest.raises(ckpt_io.CheckpointError, match=rf"{old}: checkpoint format 'earshot' version 0"):
        ckpt_io.load_checkpoint(old)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ckpt_io.CheckpointError, match=rf"{foreign}: not an earshot checkpoint"):
        ckpt_io.load_checkpoint(foreign)
    code = tmp_path / "code.pt"
    torch.save({"format": ckpt_io.FORMAT, "payload": Killed()}, code)  # unpickling would run code
    with pytest.raises(ckpt_io.CheckpointError, match=rf"{code}: not a readable checkpoint"):
        ckpt_io.load_checkpoint(code)
    with pytest.raises(ckpt_io.CheckpointError, match="no such checkpoint"):
        ckpt_io.load_checkpoint(tmp_path / "missing.pt")
    # a stage refuses an upstream model of another size, naming it
    bigger = make_params(tmp_path, Path(params.common.data_dir),
                         **{"face_sr.overrides": {**TINY, "latent_dim": 16}, "tracking.enabled": False})
    shutil.copytree(plan.stage_dir(params, "train_eh"), plan.stage_dir(bigger, "train_eh"))
    with pytest.raises(ckpt_io.CheckpointError, match=r"train_eh/model.pt: made for another model"):
        stages.train_stage("train_el", bigger, progress=False)
    assert cfg.latent_dim == 32


def test_el_overfits_a_fixed_batch(trained: tuple[Params, dict[str, dict]]):
    params, _ = trained
    torch.manual_seed(0)
    cfg = plan.model_config(params.face_sr)
    runtime = Runtime(torch.device("cpu"))
    data = training_data(params, "train_el", cfg, 4, runtime)
    stage = recipes.build_stage("train_el", params.model_copy(update={
        "train_el": params.train_el.model_copy(update={"lr": 3e-3})}), cfg, runtime, data)
    batch = next(data.epoch(0))
    scalers = {n: torch.amp.GradScaler("cpu", enabled=False) for n in stage.optimizers}
    ctx = loop.StepContext(stage.networks, stage.optimizers, scalers, runtime, 4)
    stage.networks["El"].train()
    losses = []
    for i in range(30):
        ctx.step = i
        losses.append(stage.step(ctx, batch))
    first, last = losses[0], losses[-1]
    assert last["loss"] < 0.6 * first["loss"], (first, last)
    assert last["rec"] < first["rec"] and last["latent"] < first["latent"]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_mixed_precision_steps_of_every_stage(trained: tuple[Params, dict[str, dict]], dtype: torch.dtype):
    """The GPU code path (autocast; fp16 with loss scaling) on CPU: R1, path length and
    LPIPS included, every stage takes finite steps."""
    params, _ = trained
    params = params.model_copy(update={"train_g": params.train_g.model_copy(
        update={"r1_every": 1, "pl_weight": 2.0, "pl_every": 1})})
    cfg = plan.model_config(params.face_sr)
    runtime = Runtime(torch.device("cpu"), amp_dtype=dtype, channels_last=True)
    for name in plan.STAGES:
        data = training_data(params, name, cfg, 4, runtime)
        stage = recipes.build_stage(name, params, cfg, runtime, data)
        batch = loop.to_device(next(data.epoch(0)), runtime)
        scalers = {n: torch.amp.GradScaler("cpu", enabled=dtype == torch.float16) for n in stage.optimizers}
        ctx = loop.StepContext({n: stage.views.get(n, m) for n, m in stage.networks.items()}, stage.optimizers,
                               scalers, runtime, 4)
        for net_name, net in stage.networks.items():
            net.train(net_name in stage.trained)
        losses = stage.step(ctx, batch)
        assert set(stage.metrics) <= set(losses) and all(torch.isfinite(v) for v in losses.values()), (name, losses)


def test_cached_and_streamed_epochs_are_functions_of_seed_and_epoch(data_dir: Path):
    def dataset(seed: int = 0) -> ShardDataset:
        return ShardDataset(data_dir / "shards", "train", "face_sr", train=True, hr_size=32, spec_seconds=1.0,
                            seed=seed)

    cache = cache_face_sr(dataset(), 2, batch_size=4, with_spec=True)
    assert len(cache) == 12 and len(set(cache.sources)) == 6 and cache.tensors["spec"].dtype == torch.float16
    assert cache.tensors["hr"].dtype == torch.uint8 and cache.tensors["hr"].shape[1:] == (3, 32, 32)
    assert torch.equal(cache.order(1), cache.order(1)) and not torch.equal(cache.order(1), cache.order(2))
    full, resumed = list(cache.epoch(1)), list(cache.epoch(1, skip=1))
    assert len(full) == 3 and all(torch.equal(a["hr"], b["hr"]) for a, b in zip(full[1:], resumed, strict=True))
    assert full[0]["hr"].dtype == torch.float32 and full[0]["spec"].dtype == torch.float32  # decoded per batch
    again = cache_face_sr(dataset(), 2, batch_size=4, with_spec=False)
    assert torch.equal(again.tensors["hr"], cache.tensors["hr"]) and "spec" not in again.tensors

    stream = StreamingFeed(dataset(), batch_size=4, keys=TENSOR_KEYS)
    full, resumed = list(stream.epoch(3)), list(stream.epoch(3, skip=1))
    assert len(full) == 1 and resumed == []
    again_streamed = StreamingFeed(dataset(), batch_size=4, keys=TENSOR_KEYS)
    assert torch.equal(full[0]["spec"], next(again_streamed.epoch(3))["spec"])
    with pytest.raises(ValueError, match="cannot fill a batch of 64: .*face_sr.cache_frames_per_clip"):
        cache_face_sr(dataset(), 1, batch_size=64, with_spec=False)


def test_streaming_feed_trains_a_stage(trained: tuple[Params, dict[str, dict]], tmp_path: Path):
    params, _ = trained
    shutil.copytree(plan.stage_dir(params, "train_eh"), tmp_path / "models" / "train_eh")
    streamed = make_params(tmp_path, Path(params.common.data_dir),
                           **{"tracking.enabled": False, "face_sr.cache_frames_per_clip": 0, "train_el.steps": 3})
    summary = stages.train_stage("train_el", streamed, progress=False)
    assert summary["steps"] == 3 and (tmp_path / "models" / "train_el" / "model.pt").is_file()


def test_small_pieces(tmp_path: Path):
    # EMA: after exactly one half-life of images the old weights count for half
    assert ema_beta(10_000, 1000, kimg=1.0, rampup=None) == pytest.approx(0.5)
    assert ema_beta(1000, 100, kimg=10.0, rampup=0.1) == pytest.approx(0.5)  # ramp: 100 images
    # metrics.tsv: a resumed run drops rows after its checkpoint and a torn last line
    table = MetricsTable(tmp_path / "m.tsv", ["a", "b"])
    table.reset()
    for step in (1, 2, 3):
        table.append(step, {"a": step / 2})
    with (tmp_path / "m.tsv").open("a") as f:
        f.write("4\t0.")
    table.reset(keep_until=2)
    assert (tmp_path / "m.tsv").read_text() == "step\ta\tb\n1\t0.5\tnan\n2\t1\tnan\n"
    # RNG states survive a weights_only round trip
    import random

    import numpy as np

    torch.save({"rng": rng_state()}, tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    assert torch.equal(torch.rand(3), expected[0]) and np.array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]
    with pytest.raises(ConfigError, match="face_sr.overrides"):
        plan.model_config(parse_params({"face_sr": {"overrides": {"resolution": 48}}}).face_sr)


class _MeanColour(torch.nn.Module):
    """A stand-in Eh: the image's mean colour as a (2 latents x 3) code."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)).unsqueeze(1).expand(-1, 2, -1)


def test_ea_speaker_targets_are_the_mean_code_of_each_speakers_frames():
    from components.figures.images import from_pixels, to_pixels
    from components.models.layers import pixel_norm
    from components.training.feeds import CachedFeed

    gen = torch.Generator().manual_seed(0)
    images = torch.rand(6, 3, 8, 8, generator=gen) * 2 - 1
    speaker = torch.tensor([1, 0, 1, 2, 0, 1])
    feed = CachedFeed({"hr": to_pixels(images), "speaker": speaker}, batch_size=2, seed=0,
                      decode={"hr": from_pixels})
    codes = recipes.speaker_codes(_MeanColour(), feed, torch.device("cpu"), batch_size=4)  # batches cross speakers
    frames = pixel_norm(_MeanColour()(from_pixels(to_pixels(images))))
    assert codes.shape == (3, 2, 3)
    assert set(feed.take(torch.arange(2), ("hr",))) == {"hr"}  # what speaker_codes decodes: the faces only
    for s in range(3):
        torch.testing.assert_close(codes[s], frames[speaker == s].mean(dim=0))


def test_ea_speaker_targets_need_the_cached_faces():
    with pytest.raises(ConfigError, match="cache_frames_per_clip"):
        recipes.speaker_codes(_MeanColour(), iter([]), torch.device("cpu"))  # type: ignore[arg-type]


def test_fusion_audio_noise_is_relative_to_the_code_and_off_at_zero():
    code = torch.randn(64, 4, 128) * 5
    assert recipes.noisy_code(code, 0.0) is code
    torch.manual_seed(0)
    noise = recipes.noisy_code(code, 0.5) - code
    ratio = noise.pow(2).mean(-1).sqrt() / code.pow(2).mean(-1).sqrt()
    assert abs(float(ratio.mean()) - 0.5) < 0.05


def test_no_gan_steps_hand_train_eh_the_initial_generator(data_dir: Path, tmp_path: Path):
    """train_g.steps: 0 (the small preset's autoencoder from step 0): the stage exports G as
    built from its seed, and train_eh learns it as Eh's decoder."""
    params = make_params(tmp_path, data_dir, **{"tracking.enabled": False, "train_g.steps": 0, "train_eh.steps": 2})
    stages.train_stage("train_g", params, progress=False)
    cfg = plan.model_config(params.face_sr)
    exported = ckpt_io.load_model(plan.stage_dir(params, "train_g") / "model.pt", ("G",),
                                expect_family=FAMILY).networks["G"]
    initial = build_models(cfg, params.face_sr.seed, ("G",))["G"]
    for (name, value), expected in zip(exported.state_dict().items(), initial.state_dict().values()):
        torch.testing.assert_close(value, expected, msg=name)
    stages.train_stage("train_eh", params, progress=False)
    tuned = ckpt_io.load_model(plan.stage_dir(params, "train_eh") / "model.pt", ("G",),
                             expect_family=FAMILY).networks["G"]
    assert any(not torch.equal(a, b) for a, b in zip(tuned.state_dict().values(), initial.state_dict().values()))
