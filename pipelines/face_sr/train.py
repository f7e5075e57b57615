"""DVC training stages of "Face super-resolution with an ear": ``python -m pipelines.face_sr.train STAGE``.

``STAGE`` is one of ``train_g`` (G + D, StyleGAN losses; its EMA feeds the next stages),
``train_eh`` (Eh inverts G, G fine-tuned), ``train_el`` (8x8 face -> code), ``train_ea``
(4 s of speech -> code) and ``train_fusion`` (F of El's and Ea's codes), each configured
by the params section of its name (the judge of the evaluation trains on the same loop:
``python -m pipelines.face_sr.judge``). Outputs in ``<face_sr.out_dir>/<STAGE>/`` (see
components/training/face_sr/). Several GPUs:
``torchrun --nproc-per-node N -m pipelines.face_sr.train train_g``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

# Set before torch loads OpenMP; why: components.training.runtime.setup_runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from components.config import Params  # noqa: E402
from components.training.face_sr.plan import STAGES
from components.training.face_sr.stages import train_stage  # noqa: E402
from pipelines._common import exit_on_user_error, stage_family_main  # noqa: E402


def run(stage: str, params: Params, *, progress: bool = True) -> dict[str, Any]:
    return train_stage(stage, params, progress=progress)


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    stage_family_main(argv, STAGES, run, "pipelines.face_sr.train")


if __name__ == "__main__":
    main()
