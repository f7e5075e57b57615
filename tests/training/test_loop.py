"""The shared training loop and run policy on a toy stage (no face SR): resume, DDP, video grids.

The toy network regresses the mean of an image (and its video frames) through dropout,
with a momentum optimiser, an LR schedule and a step counter kept as extra state, so
every piece of state a real stage checkpoints (weights, optimiser, scheduler, extra
tensors, global RNG for dropout and noise, data position) must survive a kill.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from components.figures.grids import LABEL_HEIGHT
from components.models.checkpoint import CheckpointError, load_checkpoint, load_model, register_family
from components.training import loop
from components.training.feeds import Batch, Batches, CachedFeed, DrawnFeed
from components.training.runtime import Runtime, setup_runtime, teardown_runtime
from components.training.stage import StagePlan, run_stage
from tests.conftest import tiny_params

N, SIDE, FRAMES = 24, 4, 2


class Toy(nn.Module):
    def __init__(self, frames: int = FRAMES) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * frames * SIDE * SIDE, 16), nn.ReLU(), nn.Dropout(0.3),
                                  nn.Linear(16, 1))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.body(video).squeeze(1)


def build_toy(config: dict, names: tuple[str, ...]) -> dict[str, nn.Module]:
    return {name: Toy(config["frames"]) for name in names}


register_family("toy", build=build_toy)


def toy_data(rank: int = 0, world: int = 1) -> dict[str, torch.Tensor]:
    """This rank's share of N clips of FRAMES frames; ``id`` says which clip a row is."""
    gen = torch.Generator().manual_seed(0)
    video = torch.rand(N, FRAMES, 3, SIDE, SIDE, generator=gen) * 2 - 1
    tensors = {"video": video, "target": video.mean((1, 2, 3, 4)), "id": torch.arange(N)}
    return {k: v[rank::world] for k, v in tensors.items()}


def toy_feed(kind: str, rank: int = 0, world: int = 1) -> Batches:
    data = toy_data(rank, world)
    if kind == "cached":
        return CachedFeed(data, batch_size=4, seed=1)

    def draw(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randint(len(data["id"]), (4,), generator=gen), torch.rand(4, generator=gen)

    def make(drawn: tuple[torch.Tensor, torch.Tensor]) -> Batch:
        idx, jitter = drawn
        return {"video": data["video"][idx], "target": data["target"][idx] + 0.01 * jitter, "id": data["id"][idx]}

    return DrawnFeed(draw, make, batch_size=4, seed=1)


def toy_stage(seen: list[int] | None = None, die_at: int | None = None) -> loop.Stage:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = Toy()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    schedule = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.7)
    count = torch.zeros(())

    def step(ctx: loop.StepContext, batch: Batch) -> dict[str, torch.Tensor]:
        if ctx.step == die_at:
            raise Killed
        if seen is not None:
            seen.extend(batch["id"].tolist())
        with ctx.autocast():
            pred = ctx.nets["net"](batch["video"])
            loss = F.mse_loss(pred + 0.01 * torch.randn_like(pred), batch["target"])  # global RNG, like dropout
        ctx.optimize("net", loss)
        count.add_(1)
        return {"loss": loss}

    def sample(nets: dict[str, nn.Module], batch: Batch) -> list[tuple[str, torch.Tensor]]:
        return [("clip", batch["video"]), ("first", batch["video"][:, 0])]

    return loop.Stage("toy_stage", "toy", {"frames": FRAMES}, {"net": net}, ("net",), {"net": opt}, step, sample,
                      export={"net": "net"}, metrics=("loss",), schedulers={"net": schedule}, state={"count": count},
                      n_preview=3)


class Killed(Exception):
    pass


def toy_plan(root: Path, kind: str, die_at: int | None = None, fingerprint: str = "toy") -> StagePlan:
    params = tiny_params(root, **{"tracking.enabled": False})

    def build(runtime: Runtime) -> tuple[loop.Stage, Batches]:
        return toy_stage(die_at=die_at), toy_feed(kind)

    config = loop.LoopConfig(steps=9, log_every=1, sample_every=4, checkpoint_every=3, seed=0, fingerprint=fingerprint)
    return StagePlan("toy_stage", "toy", params, root / "toy_stage", config, build, section={}, device="cpu",
                     channels_last=False, threads=1)


def state_of(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor a checkpoint holds: networks, optimiser, scheduler, extra state, RNG."""
    ckpt = load_checkpoint(path, expect_family="toy", expect_kind="checkpoint")
    out = {f"net.{k}": v for k, v in ckpt["networks"]["net"].items()}
    out |= {f"opt.{i}.{k}": v for i, st in ckpt["optimizers"]["net"]["state"].items() for k, v in st.items()}
    out |= {f"state.{k}": v for k, v in ckpt["state"].items()}
    out |= {f"rng.{k}": v for k, v in ckpt["rng"][0].items() if isinstance(v, torch.Tensor)}
    out["schedule.last_epoch"] = torch.tensor(ckpt["schedulers"]["net"]["last_epoch"])
    return out


@pytest.mark.parametrize("kind", ["cached", "drawn"])
def test_a_killed_and_resumed_stage_equals_an_unbroken_one(tmp_path: Path, kind: str):
    whole = toy_plan(tmp_path / "whole", kind)
    assert run_stage(whole, progress=False)["resumed_from"] == 0

    with pytest.raises(Killed):  # steps 1..7 done, last checkpoint at 6
        run_stage(toy_plan(tmp_path / "broken", kind, die_at=7), progress=False)
    broken = toy_plan(tmp_path / "broken", kind)
    assert load_checkpoint(broken.out_dir / "checkpoint.pt")["step"] == 6
    assert run_stage(broken, progress=False)["resumed_from"] == 6

    a, b = state_of(whole.out_dir / "checkpoint.pt"), state_of(broken.out_dir / "checkpoint.pt")
    assert a.keys() == b.keys() and {"state.count", "schedule.last_epoch", "rng.torch"} <= a.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    assert int(a["state.count"]) == 9 and int(a["schedule.last_epoch"]) == 9
    tables = [(p.out_dir / "metrics.tsv").read_text() for p in (whole, broken)]
    assert tables[0] == tables[1] and len(tables[0].splitlines()) == 10
    # model.pt rebuilds the network from the family's registered builder alone
    net = load_model(whole.out_dir / "model.pt", ("net",), expect_family="toy", expect_stage="toy_stage").networks
    net = net["net"]
    assert all(torch.equal(v, a[f"net.{k}"]) for k, v in net.state_dict().items())
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    # the grids: the video column is a strip of its 2 frames beside the image column, 3 preview rows
    cell = SIDE + 2
    for name in ("step-000004.png", "step-000008.png", "final.png"):
        with Image.open(whole.out_dir / "samples" / name) as grid:
            assert grid.size == (3 * cell + 2, LABEL_HEIGHT + 3 * cell + 2)


def test_the_run_policy_skips_a_finished_stage_and_restarts_on_new_settings(tmp_path: Path):
    plan = toy_plan(tmp_path, "cached")
    summary = run_stage(plan, progress=False)
    ckpt = plan.out_dir / "checkpoint.pt"
    before = ckpt.stat().st_mtime_ns
    assert run_stage(plan, progress=False) == summary and ckpt.stat().st_mtime_ns == before  # up to date
    (plan.out_dir / "summary.json").unlink()  # an output missing: the final checkpoint reruns no step
    assert run_stage(plan, progress=False)["resumed_from"] == 9
    other = toy_plan(tmp_path, "cached", fingerprint="other settings")
    assert run_stage(other, progress=False)["resumed_from"] == 0
    with pytest.raises(CheckpointError, match=r"nowhere/model.pt: no such model: run the earlier stages first"):
        run_stage(dataclasses.replace(plan, needs=[tmp_path / "nowhere" / "model.pt"]), progress=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, root: str) -> None:
    """One rank: 4 steps of the toy stage on this rank's share of the clips; saves its
    trained weights and the clips it read."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    runtime = setup_runtime("cpu", channels_last=False, threads=1)
    seen: list[int] = []
    stage = toy_stage(seen)
    config = loop.LoopConfig(steps=4, log_every=2, sample_every=100, checkpoint_every=2, seed=0, fingerprint="ddp")
    loop.train(stage, toy_feed("cached", rank, world), config, Path(root) / "out", runtime, progress=False)
    torch.save({k: v.detach().clone() for k, v in stage.networks["net"].state_dict().items()},
               Path(root) / f"rank{rank}.pt")
    (Path(root) / f"rank{rank}.json").write_text(json.dumps(seen))
    teardown_runtime(runtime)


def test_ddp_two_gloo_processes_keep_identical_weights_on_disjoint_data(tmp_path: Path):
    torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0.keys() == r1.keys() and all(torch.equal(r0[k], r1[k]) for k in r0)
    init = toy_stage().networks["net"].state_dict()
    assert not torch.equal(r0["body.1.weight"], init["body.1.weight"])  # it did train
    seen = [set(json.loads((tmp_path / f"rank{r}.json").read_text())) for r in (0, 1)]
    assert seen[0] and seen[1] and not seen[0] & seen[1]
    assert seen[0] == {i for i in range(N) if i % 2 == 0} and seen[1] == {i for i in range(N) if i % 2 == 1}
    assert (tmp_path / "out" / "model.pt").is_file()  # rank 0 wrote the stage folder
