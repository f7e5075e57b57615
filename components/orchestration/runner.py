"""Per-item work inside a stage: resume, quarantine, pruning, progress.

Every data stage is "the same function applied to many independent items" (a video, a
clip). :func:`run_items` runs a picklable ``work(item) -> record`` over the items
(:class:`~components.orchestration.items.Item`) and guarantees, for every stage alike:

* **Bad input loses nothing else.** ``work`` raises :class:`~components.errors.Rejected`
  for a bad item; any other exception is caught too (reason ``error``). Either way the
  item lands in the stage's quarantine table with its reason and the run goes on. A
  worker process that dies outright (a segfault, the OOM killer) costs its own item only
  (:class:`~components.orchestration.executors.RespawningPool`; Dask reschedules on its
  own), quarantined as ``error``.
* **A bug is not bad input.** An unexpected error's traceback goes to the log, and
  :func:`fail_on_unexpected` (called once the tables are written) fails the stage when
  more items than ``common.max_unexpected_errors`` failed that way, or all of them did.
* **Resume.** After an item finishes, a small sidecar ``<out>/.items/<key>.json`` records
  its outcome and a fingerprint of (input identity, stage config). A rerun skips items
  whose fingerprint matches, so a stage killed midway picks up where it stopped; items
  that failed unexpectedly are retried. Sidecars are written atomically, after the
  item's own outputs, so a kill never leaves an item marked done with partial output.
* **Outputs follow inputs.** Items no longer in the input set are pruned (their sidecar
  and the outputs their record listed under ``outputs``), as DVC expects.

Where the items run (this process, a pool, Dask, Prefect) is the executor's business:
:mod:`components.orchestration.executors`, chosen by params with ``fanout(params)``.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from components.errors import StageFailed
from components.io import atomic_path, fingerprint, write_json_atomic
from components.orchestration.executors import default_executor
from components.orchestration.items import Item, call_item

log = logging.getLogger(__name__)

SIDECARS = ".items"
QUARANTINE_COLUMNS = ["stage", "key", "source", "reason", "detail", "time"]


@dataclass
class Outcome:
    stage: str
    records: list[dict[str, Any]] = field(default_factory=list)
    quarantine: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0  # items reused from a previous run
    unexpected: list[dict[str, Any]] = field(default_factory=list)  # {key, detail, where}: not input faults

    @property
    def counts(self) -> dict[str, int]:
        reasons = Counter(q["reason"] for q in self.quarantine)
        return {"kept": len(self.records), "rejected": len(self.quarantine), "resumed": self.skipped,
                **{f"rejected.{r}": n for r, n in sorted(reasons.items())}}

    def reject(self, key: str, reason: str, detail: str, source: str = "") -> None:
        self.quarantine.append(_quarantine_row(self.stage, key, source, reason, detail))

    def records_frame(self) -> pd.DataFrame:
        """The kept items, by key; with nothing kept, a table of zero rows that still has ``key``."""
        if not self.records:
            return pd.DataFrame({"key": pd.Series(dtype=str)})
        return pd.DataFrame(sorted(self.records, key=lambda r: r["key"]))

    def quarantine_frame(self) -> pd.DataFrame:
        rows = sorted(self.quarantine, key=lambda r: r["key"])
        return pd.DataFrame(rows, columns=QUARANTINE_COLUMNS)


def _quarantine_row(stage: str, key: str, source: str, reason: str, detail: str) -> dict[str, Any]:
    return {"stage": stage, "key": key, "source": source, "reason": reason, "detail": detail,
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def run_items(
    stage: str,
    items: Sequence[Item],
    work: Callable[[Item], dict[str, Any]],
    out_dir: str | Path,
    *,
    config: Any = None,
    workers: int = 1,
    executor: cf.Executor | None = None,
    progress: bool = True,
    outcome: Outcome | None = None,
) -> Outcome:
    """Apply ``work`` to every item, resuming and quarantining as described above.

    ``config`` (a params section or anything JSON-able) is part of each item's
    fingerprint: changing it reprocesses every item. ``outcome`` may carry rejections
    found before the per-item work (e.g. invalid manifest rows).
    """
    out_dir = Path(out_dir)
    side_dir = out_dir / SIDECARS
    outcome = outcome or Outcome(stage)
    cfg = config.model_dump(mode="json") if hasattr(config, "model_dump") else config
    keys = [it.key for it in items]
    if len(set(keys)) != len(keys):
        dup = [k for k, n in Counter(keys).items() if n > 1][:5]
        raise ValueError(f"{stage}: duplicate item keys {dup}")

    _prune(side_dir, out_dir, keep=set(keys))

    todo: list[tuple[Item, str]] = []
    for it in items:
        fp = fingerprint(it.identity, cfg)
        prev = _read_sidecar(side_dir, it.key)
        if prev is not None and prev.get("fingerprint") == fp and prev["status"] in ("ok", "rejected"):
            _collect(outcome, it, prev["status"], prev["record"])
            outcome.skipped += 1
        else:
            todo.append((it, fp))

    def finish(it: Item, fp: str, status: str, record: dict[str, Any]) -> None:
        if status in ("ok", "rejected"):  # unexpected errors are retried next run
            write_json_atomic(_sidecar(side_dir, it.key),
                              {"status": status, "fingerprint": fp, "record": record, "source": it.source})
        else:
            log.error("%s: item %s failed with an unexpected error: %s\n%s", stage, it.key, record["detail"],
                      record.get("traceback", "(no traceback: the worker process died)"))
            outcome.unexpected.append({"key": it.key, "detail": record["detail"], "where": record.get("where", "")})
        _collect(outcome, it, status, record)

    own = executor is None and workers > 1
    pool = default_executor(workers) if own else executor
    try:
        with _progress_bar(progress, f"{stage}", total=len(todo)) as advance:
            if pool is None:
                for it, fp in todo:
                    finish(it, fp, *call_item(work, it))
                    advance()
            else:
                futures = {pool.submit(call_item, work, it): (it, fp) for it, fp in todo}
                for fut in cf.as_completed(futures):
                    it, fp = futures[fut]
                    try:
                        status, record = fut.result()
                    except Exception as exc:  # noqa: BLE001 - a worker died (e.g. OOM-killed)
                        status, record = "error", {"reason": "error", "detail": f"worker failed: {exc!r}"}
                    finish(it, fp, status, record)
                    advance()
    finally:
        if own and pool is not None:
            pool.shutdown(cancel_futures=True)
    log.info("%s: %s", stage, outcome.counts)
    return outcome


def fail_on_unexpected(outcome: Outcome, limit: int) -> None:
    """Raise :class:`StageFailed` (one line) when the unexpected errors look like a bug.

    That is: more than ``limit`` items failed unexpectedly, or every item of a non-empty
    stage did. Known input faults (:class:`~components.errors.Rejected`) never count.
    """
    failed, total = len(outcome.unexpected), len(outcome.records) + len(outcome.quarantine)
    if failed == 0 or (failed <= limit and failed < total):
        return
    first = min(outcome.unexpected, key=lambda e: e["key"])
    where = f" in {first['where']}" if first["where"] else ""
    raise StageFailed(f"{outcome.stage}: {failed} of {total} items failed with unexpected errors "
                      f"(first: {first['key']}: {first['detail']}{where}; the limit is "
                      f"common.max_unexpected_errors={limit}); see the log for tracebacks")


def _collect(outcome: Outcome, it: Item, status: str, record: dict[str, Any]) -> None:
    if status == "ok":
        outcome.records.append({"key": it.key, **record})
    else:
        outcome.reject(it.key, record["reason"], record["detail"], it.source)


def _sidecar(side_dir: Path, key: str) -> Path:
    return side_dir / f"{key}.json"


def _read_sidecar(side_dir: Path, key: str) -> dict[str, Any] | None:
    path = _sidecar(side_dir, key)
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def _prune(side_dir: Path, out_dir: Path, keep: set[str]) -> None:
    """Remove sidecars and listed outputs of items that are no longer inputs."""
    if not side_dir.exists():
        return
    for path in side_dir.rglob("*.json"):
        key = str(path.relative_to(side_dir).with_suffix(""))
        if key in keep:
            continue
        try:
            outputs = json.loads(path.read_text()).get("record", {}).get("outputs", [])
        except ValueError:
            outputs = []
        for rel in outputs:
            (out_dir / rel).unlink(missing_ok=True)
        path.unlink()
    for tmp in out_dir.rglob(".tmp-*"):  # leftovers of a killed run
        tmp.unlink(missing_ok=True)


class _progress_bar:
    """A rich progress bar (or nothing), used as ``with _progress_bar(...) as advance``."""

    def __init__(self, enabled: bool, desc: str, total: int):
        self.enabled, self.desc, self.total = enabled and total > 0, desc, total
        self._progress = None

    def __enter__(self) -> Callable[[], None]:
        if not self.enabled:
            return lambda: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeRemainingColumn())
        self._progress.start()
        task = self._progress.add_task(self.desc, total=self.total)
        return lambda: self._progress.advance(task)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


def write_outcome(outcome: Outcome, out_dir: str | Path, index_name: str = "index.parquet") -> tuple[Path, Path]:
    """Write ``<out>/index.parquet`` (kept items) and ``<out>/quarantine.parquet``, atomically."""
    out_dir = Path(out_dir)
    paths = out_dir / index_name, out_dir / "quarantine.parquet"
    for frame, path in zip((outcome.records_frame(), outcome.quarantine_frame()), paths):
        with atomic_path(path) as tmp:
            frame.to_parquet(tmp, index=False)
    return paths
