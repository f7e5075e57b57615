"""DVC stage ``evaluators``: train the judge of face-SR outputs on the high-res training faces.

Writes ``<face_sr.out_dir>/evaluators/evaluator.pt`` (the network, read by the
``evaluate`` stage) and ``metrics.json`` beside it: the judge's accuracy on held-out
TRUE faces (attributes on test_seen and test_unseen, closed-set identity on test_seen,
identity verification by embedding), i.e. how far its verdicts on super-resolved faces
can be trusted. The faces are judged at the face-SR model's resolution.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from components.config import Params
from components.evaluation.judge import build_evaluator
from components.io import write_json_atomic
from components.tracking import stage_run
from components.training.face_sr import model_config
from pipelines._common import exit_on_user_error, parse_stage_args


def evaluator_dir(params: Params) -> Path:
    return Path(params.face_sr.out_dir) / "evaluators"


def run(params: Params, *, progress: bool = True) -> dict[str, Any]:
    started = time.time()
    out = evaluator_dir(params)
    shards = params.data_path("shards")
    torch.set_num_threads(params.face_sr.threads)
    resolution = model_config(params.face_sr).resolution
    with stage_run("evaluators", params, inputs=[shards]) as tracked:
        metrics = build_evaluator(shards, out / "evaluator.pt", params.evaluators, resolution,
                                  on_log=lambda step, losses: tracked.log_metrics(losses, step=step),
                                  progress=progress)
        metrics["seconds"] = round(time.time() - started, 2)
        write_json_atomic(out / "metrics.json", metrics)
        tracked.log_metrics(metrics)
        tracked.log_artifact(out / "metrics.json")
    return {"stage": "evaluators", **metrics}


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    args, params = parse_stage_args("evaluators", argv)
    run(params, progress=not args.no_progress)


if __name__ == "__main__":
    main()
