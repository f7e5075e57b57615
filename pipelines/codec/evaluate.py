"""DVC stage ``evaluate_codec``: ``python -m pipelines.codec.evaluate``.

The codec's rate-distortion comparison on the test splits
(components/evaluation/codec_rd.py, codec_report.py): earshot's operating points (the
``codec`` section with ``evaluate_codec.operating_points``' overrides) and the decoder's
ceiling against libx264, libx265 and SVT-AV1 at several rates and sides, by bits per
pixel, ST-LPIPS, PSNR, SSIM, LSE-C (the project's expert), FID and KID. Outputs in
``evaluate_codec.out_dir`` (``results/codec/``): ``metrics.json`` (the DVC metric),
``curves.csv`` (the DVC plot), ``results.md``, ``rd_<split>_<metric>.png``,
``grid_<split>.png``; the same numbers go to MLflow.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from components.codec.call import model_id  # noqa: E402
from components.config import Params  # noqa: E402
from components.evaluation.codec_rd import Scoring, baseline_points, earshot_points  # noqa: E402
from components.evaluation.codec_report import evaluate  # noqa: E402
from components.evaluation.fid import load_inception  # noqa: E402
from components.inference.inputs import resolve_device  # noqa: E402
from components.models.perceptual import PerceptualLoss  # noqa: E402
from components.models.talking import load_video_sr  # noqa: E402
from components.tracking import stage_run  # noqa: E402
from components.training.talking.plan import stage_dir  # noqa: E402
from pipelines._common import exit_on_user_error, parse_stage_args  # noqa: E402

ARTIFACTS = ("metrics.json", "curves.csv", "results.md", "rd_seen_stlpips.png", "rd_unseen_stlpips.png",
             "rd_seen_psnr.png", "rd_unseen_psnr.png", "grid_seen.png", "grid_unseen.png")


def run(params: Params, *, progress: bool = True) -> dict[str, Any]:
    started = time.time()
    torch.set_num_threads(params.talking.threads)
    cfg, shards, out = params.evaluate_codec, params.data_path("shards"), Path(params.evaluate_codec.out_dir)
    model_path = stage_dir(params, "train_animate") / "model.pt"
    device = resolve_device(params.talking.device)
    model = load_video_sr(model_path, device)
    points, baselines = earshot_points(cfg, params.codec), baseline_points(cfg.baselines)
    mc = model.cfg
    notes = [
        f"decoder: {model_path} ({params.talking.preset} preset, {mc.lr_size}x{mc.lr_size} -> {mc.out_size}x"
        f"{mc.out_size}), model id {model_id(model_path).hex()}",
        f"earshot's points: the codec section ({params.codec.video_codec} crf {params.codec.crf} "
        f"{params.codec.pix_fmt}, {params.codec.mosaic}x{params.codec.mosaic} frames a picture; photo "
        f"{params.codec.photo_format} q{params.codec.photo_quality}; Opus {params.codec.audio_kbps} kb/s) with "
        + "; ".join(f"{name}: {overrides or 'as is'}" for name, overrides in cfg.operating_points.items()),
        "the photo is the clip's first frame (the sender has the video); its bits count in every clip's bpp "
        "(a call of a few seconds: in a long call the photo's share falls towards 0)",
        "baselines: " + "; ".join(f"{name}: {b.codec} preset {b.preset}, crf {b.crfs}, sides {b.sizes}"
                                  for name, b in cfg.baselines.items())
        + " (libx264, libx265 and SVT-AV1 from PyAV's FFmpeg; a side below 256 is enlarged back bicubically); "
          "informational SEI left out of every stream; stream bytes, no container",
        "ceiling: the decoder on the clip's uncompressed 8x8 frames, true photo and audio (no bits): the best "
        "earshot's quality can be at any rate",
        f"scored: the middle {cfg.frames_per_clip} frames of each clip (PSNR, LSE-C); {cfg.detail_frames_per_clip} "
        f"for ST-LPIPS (at {cfg.stlpips_size} px) and SSIM; {cfg.fid_frames_per_clip} per clip for FID / KID (a few "
        "dozen frames per point: FID is biased up at this count, compare points with each other)",
        "LSE-C: the project's lip-sync expert (train_sync) against the clip's true audio, not joonson's SyncNet",
    ]
    with stage_run("evaluate_codec", params, section=cfg.model_dump(mode="json") | {"codec": params.codec.model_dump()},
                   inputs=[shards, model_path]) as tracked:
        scoring = Scoring(model, PerceptualLoss().to(device), cfg)
        metrics = evaluate(scoring, load_inception(device), shards, out, points, baselines, fps=params.common.fps,
                           model_id=model_id(model_path), num_workers=params.talking.num_workers, notes=notes,
                           progress=progress)
        tracked.log_metrics(metrics)
        tracked.log_metrics({"seconds": round(time.time() - started, 2)})
        for name in ARTIFACTS:
            if (out / name).is_file():
                tracked.log_artifact(out / name, "codec_eval")
    return {"stage": "evaluate_codec", **metrics}


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    args, params = parse_stage_args("evaluate_codec", argv, prog="python -m pipelines.codec.evaluate")
    run(params, progress=not args.no_progress)


if __name__ == "__main__":
    main()
