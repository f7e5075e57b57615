"""DVC stage ``report``: the data report of the run (counts, rejections, pictures)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from components.config import Params
from components.data.report import build_report
from components.tracking import stage_run
from pipelines._common import parse_stage_args


def run(params: Params, *, progress: bool = True) -> dict[str, Any]:
    data = params.data_path()
    out = params.data_path("report")
    inputs = [params.data_path(d) for d in ("raw", "faces", "audio", "shards")]
    with stage_run("report", params, inputs=inputs) as tracked:
        metrics = build_report(data, out, contact_sheet_clips=params.report.contact_sheet_clips,
                               fps=params.common.fps)
        tracked.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        for name in ("report.md", "metrics.json", "contact_sheet.png", "sync.png"):
            tracked.log_artifact(out / name, "data_report")
    return {"stage": "report", **metrics}


def main(argv: Sequence[str] | None = None) -> None:
    args, params = parse_stage_args("report", argv)
    run(params, progress=not args.no_progress)


if __name__ == "__main__":
    main()
