"""DVC training stages of the video paper: ``python -m pipelines.talking.train STAGE``.

``STAGE`` is one of ``train_sync`` (the lip-sync expert), ``train_coarse`` (stage 1: 8x8
window + audio -> coarse frame) and ``train_animate`` (stage 2: the identity photo animated
by stage 1), each configured by the params section of its name and the shared ``talking``
section. Outputs in ``<talking.out_dir>/<STAGE>/`` (see components/training/talking/).
Several GPUs: ``torchrun --nproc-per-node N -m pipelines.talking.train train_animate``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

# Set before torch loads OpenMP; why: components.training.runtime.setup_runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from components.config import Params  # noqa: E402
from components.training.talking.plan import STAGES  # noqa: E402
from components.training.talking.stages import train_stage  # noqa: E402
from pipelines._common import exit_on_user_error, stage_family_main  # noqa: E402


def run(stage: str, params: Params, *, progress: bool = True) -> dict[str, Any]:
    return train_stage(stage, params, progress=progress)


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    stage_family_main(argv, STAGES, run, "pipelines.talking.train")


if __name__ == "__main__":
    main()
