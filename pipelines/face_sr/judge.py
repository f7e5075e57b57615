"""DVC stage ``evaluators``: the judge of face-SR outputs, ``python -m pipelines.face_sr.judge``.

Trains the face judge (sex-like attribute, age, identity; components/models/face_sr/judge.py)
on high-res true faces (``evaluators.train_on``: the ``judge_faces`` stage's rendered
speakers, or the corpus's training split), on the shared training loop (resume, AMP, DDP),
and reports how well it reads the corpus's held-out TRUE faces: the ceiling of its
verdicts on super-resolved ones. Outputs in ``<face_sr.out_dir>/evaluators/``
(``model.pt``, ``metrics.json``, the loop's ``checkpoint.pt``, ``metrics.tsv``,
``summary.json``, ``samples/``). Several processes: ``torchrun --nproc-per-node N -m
pipelines.face_sr.judge``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

# Set before torch loads OpenMP; why: components.training.runtime.setup_runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from components.config import Params  # noqa: E402
from components.models.face_sr.judge import STAGE  # noqa: E402
from components.training.face_sr.judge import judge_plan  # noqa: E402
from components.training.stage import run_stage  # noqa: E402
from pipelines._common import exit_on_user_error, parse_stage_args  # noqa: E402


def run(params: Params, *, progress: bool = True) -> dict[str, Any]:
    return run_stage(judge_plan(params), progress=progress)


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    args, params = parse_stage_args(STAGE, argv, prog="python -m pipelines.face_sr.judge")
    run(params, progress=not args.no_progress)


if __name__ == "__main__":
    main()
