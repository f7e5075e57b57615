"""DVC stage ``evaluate`` of "Face super-resolution with an ear": ``python -m pipelines.face_sr.evaluate``.

Compares face-SR methods on the test splits: bicubic, the reconstruction G(Eh(x_h)) (the
ceiling, Eh from ``train_eh``), image only, audio only, fused and mismatched-voice
super-resolution of the same test clips, scored for fidelity (PSNR,
SSIM, LPIPS, shift-tolerant LPIPS) and, by the judge network of the ``evaluators``
stage (``<face_sr.out_dir>/evaluators/model.pt``), for the speaker's attributes and
identity (components/evaluation/face_sr.py). Outputs in ``evaluate.out_dir``
(``results/face_sr/``): ``metrics.json`` (the DVC metric), ``results.md``,
``grid_<split>.png``, ``mixing_<split>.png`` and ``ablation.png``; the same numbers go
to MLflow.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from components.config import Params
from components.data.dataset import ShardDataset
from components.evaluation.face_id import FaceIdentity
from components.evaluation.judge import OnnxFaceEmbedder, load_faces, load_judge
from components.evaluation.face_sr import SPLITS, Scorers, evaluate
from components.evaluation.metrics import load_lpips
from components.inference.face_sr import load_face_sr
from components.inference.inputs import resolve_device
from components.models.face_sr.judge import STAGE as JUDGE_STAGE
from components.models.perceptual import PerceptualLoss
from components.tracking import stage_run
from components.training.face_sr.plan import model_config, stage_dir
from pipelines._common import exit_on_user_error, parse_stage_args

FIGURES = ("grid_seen.png", "grid_unseen.png", "mixing_seen.png", "mixing_unseen.png", "ablation.png")


def run(params: Params, *, progress: bool = True) -> dict[str, Any]:
    started = time.time()
    torch.set_num_threads(params.face_sr.threads)
    cfg, shards, out = params.evaluate, params.data_path("shards"), Path(params.evaluate.out_dir)
    judge_path = stage_dir(params, JUDGE_STAGE) / "model.pt"
    model = load_face_sr(params.face_sr.out_dir, resolve_device(params.face_sr.device),
                         expect_config=model_config(params.face_sr), reconstruction=True)
    recognition = params.evaluators.face_recognition_path
    judge = load_judge(judge_path, OnnxFaceEmbedder(recognition) if recognition else None)
    scorers = Scorers(judge, PerceptualLoss(), load_lpips(cfg.lpips_alexnet_path), FaceIdentity())
    mc = model.config
    splits = {name: functools.partial(ShardDataset, shards, split, "face_sr", train=False, hr_size=mc.resolution,
                                      lr_size=mc.lr_size, spec_seconds=mc.audio_seconds,
                                      eval_frames=cfg.frames_per_clip)
              for name, split in SPLITS.items()}
    notes = [f"model: {params.face_sr.out_dir}/train_fusion/model.pt ({params.face_sr.preset} preset, "
             f"{mc.lr_size}x{mc.lr_size} -> {mc.resolution}x{mc.resolution}); judge: {judge_path}"
             + (f", identity embedding from {recognition}" if recognition else "")]
    inputs = [shards, Path(params.face_sr.out_dir) / "train_fusion", Path(params.face_sr.out_dir) / "train_eh",
              judge_path]
    with stage_run("evaluate", params, inputs=inputs) as tracked:
        metrics = evaluate(model, scorers, splits, out, cfg, notes, progress=progress,
                           gallery=functools.partial(load_faces, shards, "train", mc.resolution))
        tracked.log_metrics(metrics)
        tracked.log_metrics({"seconds": round(time.time() - started, 2)})
        for name in ("metrics.json", "results.md", *FIGURES):
            tracked.log_artifact(out / name, "face_sr_eval")
    return {"stage": "evaluate", **metrics}


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    args, params = parse_stage_args("evaluate", argv, prog="python -m pipelines.face_sr.evaluate")
    run(params, progress=not args.no_progress)


if __name__ == "__main__":
    main()
