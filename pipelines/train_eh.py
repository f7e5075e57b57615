"""DVC stage ``train_eh`` of "Face super-resolution with an ear", step 2: the high-res
encoder Eh learns to invert G (G fine-tuned at a lower learning rate).

Outputs in ``models/face_sr/train_eh/`` (see components/training/face_sr/). Several GPUs:
``torchrun --nproc-per-node N -m pipelines.train_eh``.
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
    return train_stage("train_eh", params, progress=progress)


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    args, params = parse_stage_args("train_eh", argv)
    run(params, progress=not args.no_progress)


if __name__ == "__main__":
    main()
