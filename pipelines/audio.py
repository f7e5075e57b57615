"""DVC stage ``audio``: aligned 16 kHz speech for every face clip in ``data/audio``.

``python -m pipelines.audio [-S audio.vad_threshold=0.6]``
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from components.config import Params
from components.data.audio import evaluate_vad, run_stage
from components.io import write_json_atomic
from components.tracking import stage_run
from pipelines._common import exit_on_user_error, finish_stage, parse_stage_args


def run(params: Params, *, progress: bool = True) -> dict[str, Any]:
    started = time.time()
    raw, faces, out = params.data_path("raw"), params.data_path("faces"), params.data_path("audio")
    with stage_run("audio", params, inputs=[raw, faces]) as tracked:
        outcome = run_stage(params, raw, faces, out, progress=progress)
        vad_eval = evaluate_vad(outcome.records, raw / "speech.rttm", params.audio)
        write_json_atomic(out / "vad_eval.json", vad_eval)
        tracked.log_artifact(out / "vad_eval.json")
        metrics = {f"vad.{k}": v for k, v in vad_eval.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("threshold", "collar")}
        return finish_stage(tracked, outcome, out, started, extra=metrics,
                            max_unexpected_errors=params.common.max_unexpected_errors)


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    args, params = parse_stage_args("audio", argv)
    run(params, progress=not args.no_progress)


if __name__ == "__main__":
    main()
