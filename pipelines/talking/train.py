"""DVC training stages of the video paper: ``python -m pipelines.talking.train STAGE``.

``STAGE`` is one of ``train_sync`` (the lip-sync expert), ``train_coarse`` (stage 1: 8x8
window + audio -> coarse frame) and ``train_animate`` (stage 2: the identity photo animated
by stage 1), each configured by the params section of its name and the shared ``talking``
section. Outputs in ``<talking.out_dir>/<STAGE>/`` (see components/training/talking/).
Several GPUs: ``torchrun --nproc-per-node N -m pipelines.talking.train train_animate``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

# Set before torch loads OpenMP; why: components.training.runtime.setup_runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from components.config import Params  # noqa: E402
from components.training.talking.plan import STAGES  # noqa: E402
from components.training.talking.stages import train_stage  # noqa: E402
from pipelines._common import exit_on_user_error, parse_stage_args  # noqa: E402


def run(stage: str, params: Params, *, progress: bool = True) -> dict[str, Any]:
    return train_stage(stage, params, progress=progress)


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in STAGES:
        print(f"usage: python -m pipelines.talking.train STAGE [--params FILE] [-S KEY=VALUE ...]\n"
              f"STAGE: one of {', '.join(STAGES)}", file=sys.stderr)
        raise SystemExit(2)
    stage = argv[0]
    args, params = parse_stage_args(stage, argv[1:], prog=f"python -m pipelines.talking.train {stage}")
    run(stage, params, progress=not args.no_progress)


if __name__ == "__main__":
    main()
