"""What every stage entry point shares: argument parsing, logging, finishing a stage.

A stage module looks like DVC's example-get-started: ``main()`` parses arguments, loads
``params.yaml`` and does the I/O; the work is a pure function in ``components``.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from components.config import Params, load_params
from components.errors import EarshotError, StageFailed
from components.io import write_json_atomic
from components.orchestration.runner import Outcome, fail_on_unexpected, write_outcome
from components.tracking import StageRun


def parse_stage_args(stage: str, argv: Sequence[str] | None = None, *,
                     prog: str | None = None) -> tuple[argparse.Namespace, Params]:
    parser = argparse.ArgumentParser(prog=prog or f"python -m pipelines.{stage}", description=f"DVC stage '{stage}'")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--set", "-S", action="append", default=[], metavar="KEY=VALUE",
                        help="override a param, e.g. -S faces.detect_every=3 (YAML value)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        params = load_params(args.params, parse_overrides(args.set))
    except EarshotError as exc:
        parser.exit(2, f"error: {exc}\n")
    return args, params


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: override {pair!r} is not KEY=VALUE")
        out[key.strip()] = yaml.safe_load(value)
    return out


def setup_logging(level: int = logging.INFO) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(level=level, format="%(message)s", datefmt="[%X]",
                        handlers=[RichHandler(show_path=False, rich_tracebacks=True)], force=True)
    for noisy in ("alembic", "mlflow", "urllib3", "httpx", "numba", "matplotlib", "PIL", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def finish_stage(run: StageRun, outcome: Outcome, out_dir: Path, started: float,
                 extra: dict[str, float] | None = None, *, max_unexpected_errors: int) -> dict[str, Any]:
    """Write the stage's index/quarantine tables and summary, log counts to MLflow; then fail
    the stage (:class:`StageFailed`) if its unexpected errors pass ``max_unexpected_errors``."""
    index, quarantine = write_outcome(outcome, out_dir)
    summary = {"stage": outcome.stage, **outcome.counts, **(extra or {}),
               "seconds": round(time.time() - started, 2)}
    write_json_atomic(out_dir / "summary.json", summary)
    run.log_metrics({k: v for k, v in summary.items() if isinstance(v, (int, float))})
    run.log_artifact(out_dir / "summary.json")
    if len(outcome.quarantine):
        run.log_artifact(quarantine)
    logging.getLogger(outcome.stage).info("%s", json.dumps(summary))
    fail_on_unexpected(outcome, max_unexpected_errors)
    return summary


def exit_on_user_error(fn):  # type: ignore[no-untyped-def]
    """Turn an :class:`EarshotError` into a one-line message and exit code 2 (1 for a
    :class:`StageFailed`: the stage's own code failed, not its input)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return fn(*args, **kwargs)
        except EarshotError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(1 if isinstance(exc, StageFailed) else 2) from None

    return wrapper


def stage_family_main(argv: Sequence[str] | None, stages: Sequence[str], run: Callable[..., Any], module: str) -> None:
    """``python -m MODULE STAGE [--params FILE] [-S KEY=VALUE ...]`` for a family of training
    stages: the usage line when STAGE is missing or unknown, else ``run(stage, params, progress=...)``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in stages:
        print(f"usage: python -m {module} STAGE [--params FILE] [-S KEY=VALUE ...]\n"
              f"STAGE: one of {', '.join(stages)}", file=sys.stderr)
        raise SystemExit(2)
    stage = argv[0]
    args, params = parse_stage_args(stage, argv[1:], prog=f"python -m {module} {stage}")
    run(stage, params, progress=not args.no_progress)
