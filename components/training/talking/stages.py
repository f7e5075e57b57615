"""Running one training stage of the video paper: ``train_stage(name, params)``.

A stage (:data:`~.plan.STAGES`) becomes a :class:`~components.training.stage.StagePlan`
that :func:`~components.training.stage.run_stage` runs, resumes or skips, on a
:class:`~components.training.feeds.DrawnFeed` of windows of the training split held in
memory (:mod:`.data`). The expert's stage reports its accuracy on unseen speakers (in
sync vs shifted by at least ``train_sync.eval_shift`` frames) in ``eval.json``.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from components.config import Params
from components.io import write_json_atomic
from components.models.talking import FAMILY, ModelConfig, config_dict
from components.tracking import StageRun
from components.training import loop
from components.training.feeds import DrawnFeed
from components.training.runtime import Runtime
from components.training.stage import StagePlan, run_stage
from components.training.talking.data import WindowDraws, load_clips
from components.training.talking.plan import HR_FRAMES, STAGES, model_config, run_fingerprint, stage_dir, upstream_files
from components.training.talking.recipes import build_stage, sync_loss

log = logging.getLogger(__name__)

SYNC_EVAL_SPLIT = "test_unseen"
SYNC_EVAL_SAMPLES = 2048


def draws(params: Params, name: str, cfg: ModelConfig, store: Any) -> WindowDraws:
    """The windows stage ``name`` trains on."""
    p = getattr(params, name)
    return WindowDraws(store, cfg, p.batch_size, span=name == "train_coarse", sync=name == "train_sync",
                       hr=HR_FRAMES[name], min_shift=getattr(p, "min_shift", 5), photo=params.talking.photo)


def sync_accuracy(expert: torch.nn.Module, params: Params, cfg: ModelConfig, device: torch.device) -> dict[str, float]:
    """The expert on unseen speakers: accuracy and BCE on balanced in-sync / shifted windows (fixed draws);
    only ``unseen.n_clips: 0`` when the split has no clip."""
    p = params.train_sync
    store = load_clips(params, cfg, hr_frames=0, split=SYNC_EVAL_SPLIT, required=False)
    if store is None:
        return {"unseen.n_clips": 0}
    windows = WindowDraws(store, cfg, SYNC_EVAL_SAMPLES, sync=True, min_shift=p.eval_shift)
    batch = windows.make(windows.draw(torch.Generator().manual_seed(p.eval_shift)))
    expert.eval()
    hits, losses, n = 0.0, 0.0, 0
    with torch.no_grad():
        for i in range(0, SYNC_EVAL_SAMPLES, 256):
            part = {k: v[i:i + 256].to(device) for k, v in batch.items()}
            loss, prob = sync_loss(expert, part["faces"], part["sync_mel"], part["label"])
            hits += float(((prob > 0.5).float() == part["label"]).sum())
            losses += float(loss) * len(prob)
            n += len(prob)
    return {"unseen.sync_acc": round(hits / n, 4), "unseen.sync_bce": round(losses / n, 4),
            "unseen.n_clips": store.n_clips, "unseen.positive_fraction": round(float(batch["label"].mean()), 4)}


def stage_plan(name: str, params: Params) -> StagePlan:
    """The run of training stage ``name`` (one of :data:`STAGES`) as the run policy needs it."""
    p, tk = getattr(params, name), params.talking
    cfg = model_config(tk)
    config = loop.LoopConfig(p.steps, p.log_every, p.sample_every, p.checkpoint_every, tk.seed,
                             run_fingerprint(params, name, cfg))

    def build(runtime: Runtime) -> tuple[loop.Stage, DrawnFeed]:
        store = load_clips(params, cfg, hr_frames=tk.hr_frames_per_clip if HR_FRAMES[name] else 0)
        windows = draws(params, name, cfg, store)
        feed = DrawnFeed(windows.draw, windows.make, batch_size=p.batch_size, seed=tk.seed * 7919 + runtime.rank)
        return build_stage(name, params, cfg, runtime), feed

    report, outputs = None, ()
    if name == "train_sync":
        def report(stage: loop.Stage, runtime: Runtime, tracker: StageRun) -> None:
            found = sync_accuracy(stage.networks["expert"], params, cfg, runtime.device)
            if found["unseen.n_clips"]:
                log.info("train_sync: the expert on %d unseen clips: accuracy %.3f (in sync vs >= %d frames off)",
                         found["unseen.n_clips"], found["unseen.sync_acc"], params.train_sync.eval_shift)
            else:
                log.warning("train_sync: no unseen test clip: the expert's accuracy is not measured")
            write_json_atomic(stage_dir(params, name) / "eval.json", found)
            tracker.log_metrics(found)
        outputs = ("eval.json",)

    section = {**p.model_dump(mode="json"), "talking": tk.model_dump(mode="json"), "model": config_dict(cfg)}
    needs = upstream_files(params, name)
    return StagePlan(name, FAMILY, params, stage_dir(params, name), config, build, section, needs=needs,
                     inputs=[params.data_path("shards"), *needs], device=tk.device, amp=tk.amp,
                     channels_last=tk.channels_last, threads=tk.threads, report=report, outputs=outputs)


def train_stage(name: str, params: Params, *, progress: bool = True) -> dict[str, Any]:
    """Run (or resume, or skip as up to date) training stage ``name`` of the video paper."""
    if name not in STAGES:
        raise ValueError(f"unknown training stage {name!r}: expected one of {STAGES}")
    return run_stage(stage_plan(name, params), progress=progress)
