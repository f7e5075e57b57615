"""DVC stage ``evaluate_video`` of the video paper: ``python -m pipelines.talking.evaluate``.

Compares the video methods on the test splits (components/evaluation/video_sr.py):
bicubic, stage 1 alone, stage 2 on the bicubic video (no audio), the full model and the
full model with another clip's audio, for fidelity (PSNR, SSIM, ST-LPIPS), realism (FID,
KID), lip sync (LSE-C / LSE-D with the project's expert), identity (dlib) and landmarks.
Outputs in ``evaluate_video.out_dir`` (``results/video_sr/``): ``metrics.json`` (the DVC
metric), ``results.md``, ``grid_<split>.png`` and ``videos/`` (side-by-side clips);
the same numbers go to MLflow.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from components.config import Params  # noqa: E402
from components.evaluation.video_sr import evaluate, load_scorers, load_worker, use_scoring  # noqa: E402
from components.inference.inputs import resolve_device  # noqa: E402
from components.models.talking import load_video_sr  # noqa: E402
from components.orchestration.executors import default_executor  # noqa: E402
from components.tracking import stage_run  # noqa: E402
from components.training.talking.plan import stage_dir  # noqa: E402
from pipelines._common import exit_on_user_error, parse_stage_args  # noqa: E402

FIGURES = ("grid_seen.png", "grid_unseen.png")


def run(params: Params, *, progress: bool = True) -> dict[str, Any]:
    started = time.time()
    torch.set_num_threads(params.talking.threads)
    cfg, shards, out = params.evaluate_video, params.data_path("shards"), Path(params.evaluate_video.out_dir)
    model_path = stage_dir(params, "train_animate") / "model.pt"
    device = resolve_device(params.talking.device)
    model = load_video_sr(model_path, device)
    scorers = load_scorers(device)
    use_scoring(model, scorers, model_path)  # before the fork: forked clip workers inherit them (spawned ones load their own)
    mc = model.cfg
    notes = [f"model: {model_path} ({params.talking.preset} preset: {mc.lr_size}x{mc.lr_size} -> coarse "
             f"{mc.coarse_size} -> {mc.out_size}x{mc.out_size}; audio {mc.audio}, identity photo {mc.identity})"]
    # the clip workers start first, before any thread (MLflow's, the progress bar's): forked, they are copies
    phases: dict[str, float] = {}
    pool = default_executor(cfg.workers, warmup=functools.partial(load_worker, str(model_path), str(device)),
                            start_method=params.orchestration.start_method)
    with stage_run("evaluate_video", params, inputs=[shards, model_path]) as tracked, pool or contextlib.nullcontext():
        metrics = evaluate(model, scorers, shards, out, cfg, photo_rule=params.talking.photo, fps=params.common.fps,
                           num_workers=params.talking.num_workers, pool=pool, notes=notes, progress=progress,
                           seconds=phases)
        tracked.log_metrics(metrics)
        tracked.log_metrics({"seconds": round(time.time() - started, 2)} |
                            {f"seconds.{phase}": round(value, 2) for phase, value in phases.items()})
        for name in ("metrics.json", "results.md", *FIGURES):
            if (out / name).is_file():
                tracked.log_artifact(out / name, "video_sr_eval")
    return {"stage": "evaluate_video", **metrics}


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    args, params = parse_stage_args("evaluate_video", argv, prog="python -m pipelines.talking.evaluate")
    run(params, progress=not args.no_progress)


if __name__ == "__main__":
    main()
