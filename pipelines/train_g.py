"""DVC stage ``train_g`` of "Face super-resolution with an ear", step 1: a StyleGAN-style
generator G (+ discriminator D) on the high-res training faces; its moving average
G_ema is what the next stages build on.

Outputs in ``models/face_sr/train_g/`` (see components/training/face_sr/). Several GPUs:
``torchrun --nproc-per-node N -m pipelines.train_g``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

# Set before torch loads OpenMP; why: components.training.loop.setup_runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from components.config import Params  # noqa: E402
from components.training.face_sr import train_stage  # noqa: E402
from pipelines._common import exit_on_user_error, parse_stage_args  # noqa: E402


def run(params: Params, *, progress: bool = True) -> dict[str, Any]:
    return train_stage("train_g", params, progress=progress)


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    args, params = parse_stage_args("train_g", argv)
    run(params, progress=not args.no_progress)


if __name__ == "__main__":
    main()
