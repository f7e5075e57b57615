"""DVC stage ``faces``: a face-crop video and a face track for every clip in ``data/raw``.

``python -m pipelines.faces [-S faces.detect_every=3]``
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from components.config import Params
from components.data.faces import run_stage
from components.tracking import stage_run
from pipelines._common import exit_on_user_error, finish_stage, parse_stage_args


def run(params: Params, *, progress: bool = True) -> dict[str, Any]:
    started = time.time()
    raw, out = params.data_path("raw"), params.data_path("faces")
    with stage_run("faces", params, inputs=[raw]) as tracked:
        outcome = run_stage(params, raw, out, progress=progress)
        recropped = sum(bool(r.get("recropped")) for r in outcome.records)
        return finish_stage(tracked, outcome, out, started, extra={"recropped": recropped},
                            max_unexpected_errors=params.common.max_unexpected_errors)


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    args, params = parse_stage_args("faces", argv)
    run(params, progress=not args.no_progress)


if __name__ == "__main__":
    main()
