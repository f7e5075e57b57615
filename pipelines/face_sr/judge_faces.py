"""DVC stage ``judge_faces``: the judge's own rendered speakers, ``python -m pipelines.face_sr.judge_faces``.

Renders ``judge_faces.n_speakers`` speakers who appear nowhere else, finds and crops their
faces as the ``faces`` stage does, and writes ``data/judge_faces/faces.parquet`` and
``summary.json`` (components/data/synth/judge_faces.py); the ``evaluators`` stage trains
the judge on them (``evaluators.train_on: rendered``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from components.config import Params
from components.data.synth.judge_faces import STAGE, render_judge_faces
from components.tracking import stage_run
from pipelines._common import exit_on_user_error, parse_stage_args


def run(params: Params, *, progress: bool = True) -> dict[str, Any]:
    out = params.data_path(STAGE)
    with stage_run(STAGE, params) as tracked:
        summary = render_judge_faces(params, out, progress=progress)
        tracked.log_metrics({k: v for k, v in summary.items() if isinstance(v, (int, float))})
        tracked.log_artifact(out / "summary.json")
    return summary


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    args, params = parse_stage_args(STAGE, argv, prog="python -m pipelines.face_sr.judge_faces")
    run(params, progress=not args.no_progress)


if __name__ == "__main__":
    main()
