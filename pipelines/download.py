"""DVC stage ``download``: fill ``data/raw`` from the configured source and index it.

``python -m pipelines.download [-S download.source=local -S download.input=/videos]``
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from components.config import Params
from components.data.download import run_stage
from components.tracking import stage_run
from pipelines._common import exit_on_user_error, finish_stage, parse_stage_args


def run(params: Params, *, progress: bool = True) -> dict[str, Any]:
    started = time.time()
    out = params.data_path("raw")
    # A manifest is small: hash it for the run's lineage. A local folder can be hundreds
    # of GB; its files' sha256 are in data/raw/index.parquet instead.
    inputs = [params.download.input] if params.download.source == "manifest" else []
    with stage_run("download", params, inputs=inputs) as tracked:
        outcome = run_stage(params, out, progress=progress)
        return finish_stage(tracked, outcome, out, started,
                            max_unexpected_errors=params.common.max_unexpected_errors)


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    args, params = parse_stage_args("download", argv)
    run(params, progress=not args.no_progress)


if __name__ == "__main__":
    main()
