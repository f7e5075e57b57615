"""DVC stage ``download``: fill ``data/raw`` from the configured source and index it.

``python -m pipelines.download [-S download.source=local -S download.input=/videos]``
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from components.data.download import run_stage
from components.tracking import stage_run
from pipelines._common import exit_on_user_error, finish_stage, parse_stage_args


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    args, params = parse_stage_args("download", argv)
    started = time.time()
    out = params.data_path("raw")
    # A manifest is small: hash it for the run's lineage. A local folder can be hundreds
    # of GB; its files' sha256 are in data/raw/index.parquet instead.
    inputs = [params.download.input] if params.download.source == "manifest" else []
    with stage_run("download", params, inputs=inputs) as run:
        outcome = run_stage(params, out, progress=not args.no_progress)
        finish_stage(run, outcome, out, started)


if __name__ == "__main__":
    main()
