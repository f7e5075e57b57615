"""DVC stage ``shards``: data/raw + data/faces + data/audio -> data/shards.

Writes ``data/shards/<split>/shard-*.parquet`` and ``index.json`` (see
:mod:`components.data.shards`), plus the tables every stage writes: a per-clip
``index.parquet`` (split and shard of each clip), ``quarantine.parquet`` (clips whose
media failed to decode) and ``summary.json``.

``python -m pipelines.shards [-S shards.rows_per_shard=32]``; inspect the result with
``earshot data inspect data/shards``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from components.config import Params
from components.data.shards import summarize, write_shards
from components.tracking import stage_run
from pipelines._common import exit_on_user_error, finish_stage, parse_stage_args


def run(params: Params, *, progress: bool = True) -> dict[str, Any]:
    started = time.time()
    raw, faces, audio = params.data_path("raw"), params.data_path("faces"), params.data_path("audio")
    out = params.data_path("shards")
    with stage_run("shards", params, inputs=[raw, faces, audio]) as tracked:
        outcome = write_shards(params, raw, faces, audio, out, progress=progress)
        splits = summarize(out, verify=False)["splits"]
        extra = {f"{split}.{k}": s[k] for split, s in splits.items() for k in ("clips", "speakers", "hours")}
        summary = finish_stage(tracked, outcome, out, started, extra,
                               max_unexpected_errors=params.common.max_unexpected_errors)
        tracked.log_artifact(out / "index.json")
    return summary


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    args, params = parse_stage_args("shards", argv)
    run(params, progress=not args.no_progress)


if __name__ == "__main__":
    main()
