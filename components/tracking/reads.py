"""Every MLflow query the project makes: a sweep's runs, their artifacts, recent runs.

* A sweep (:func:`load_sweep`): the parent run the ablation flow opened (tags
  ``kind=sweep``, ``sweep``, ``baseline``, ``git_sha``; params = the sweep definition,
  flattened) and its ``kind=variant`` child runs (``sweep``, ``variant``,
  ``dvc_exp_name``; the variant's evaluate metrics and overrides), as
  :mod:`.runs` writes them; read by :mod:`components.evaluation.compare`.
* A variant's sample images (:func:`variant_images`), downloaded from its runs.
* The runs started since some moment (:class:`StartedRuns`), for the flows' summaries.

Queries go through ``mlflow.search_runs`` and ``MlflowClient``, imported inside the
functions; a store that does not exist is an error (:func:`~.store.check_store`), never
created by a read.
"""

from __future__ import annotations

import concurrent.futures as cf
import fnmatch
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from components.tracking.store import TrackingError, check_store, open_client, open_existing_store, run_url, ui_base


def row_value(row: Mapping[str, Any], key: str) -> Any:
    """A value of a search_runs row, None when the column is absent or empty (NaN)."""
    value = row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def quote(value: str) -> str:
    """``value`` as a string literal of MLflow's search grammar."""
    return "'" + value.replace("'", "\\'") + "'"


def search_runs(filter_string: str, experiment: str | None, **kwargs: Any) -> pd.DataFrame:
    """``mlflow.search_runs`` as a DataFrame, in one experiment (by name) or in all."""
    import mlflow

    where: dict[str, Any] = {"search_all_experiments": True} if experiment is None else {"experiment_names": [experiment]}
    return mlflow.search_runs(filter_string=filter_string, output_format="pandas", **where, **kwargs)


# ----------------------------------------------------------------------------- variant order

_NUMBER = re.compile(r"^(\d+(?:\.\d+)?)\s*([a-z%]*)$", re.IGNORECASE)
_SQUARE = re.compile(r"^(\d+)x(\d+)$", re.IGNORECASE)


def numeric_values(variants: Sequence[str]) -> dict[str, float] | None:
    """The number each variant name stands for (``2s`` -> 2, ``16x16`` -> 16) when every
    name is a number with the same unit; None otherwise (``audio_on``/``audio_off``)."""
    values, units = {}, set()
    for name in variants:
        if m := _SQUARE.match(name):
            values[name], unit = float(m[1]), "px"
        elif m := _NUMBER.match(name):
            values[name], unit = float(m[1]), m[2].lower()
        else:
            return None
        units.add(unit)
    return values if len(units) == 1 and len(values) > 1 else None


# ----------------------------------------------------------------------------- sweeps


@dataclass(frozen=True)
class Sweep:
    """One sweep's parent run and its variants' runs, as read from MLflow.

    ``runs`` has one row per variant (index: the variant name, baseline first), with
    the columns of ``mlflow.search_runs`` (``run_id``, ``status``, ``metrics.*``,
    ``params.*``, ``tags.*``).
    """

    name: str
    tracking_uri: str
    parent: Mapping[str, Any]
    runs: pd.DataFrame
    baseline: str
    overrides: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    @property
    def parent_id(self) -> str:
        return str(self.parent["run_id"])

    @property
    def description(self) -> str:
        return str(row_value(self.parent, "params.description") or row_value(self.parent, "tags.description") or "")

    @property
    def git_sha(self) -> str:
        return str(row_value(self.parent, "tags.git_sha") or "")

    @property
    def experiment_id(self) -> str:
        return str(self.parent["experiment_id"])

    def run_url(self, run_id: str) -> str | None:
        """A link to the run in the MLflow UI when the store is a tracking server."""
        if not self.tracking_uri.startswith(("http://", "https://")):
            return None
        return run_url(ui_base(self.tracking_uri), self.experiment_id, run_id)


def find_parent(sweep: str | None = None, parent_id: str | None = None, experiment: str | None = None
                ) -> Mapping[str, Any]:
    """The parent run: ``parent_id`` if given, else the latest ``kind=sweep`` run of
    ``sweep``, else the latest sweep of any name. MLflow's tracking URI must be set."""
    import mlflow

    if experiment is not None and mlflow.get_experiment_by_name(experiment) is None:
        raise TrackingError(f"no MLflow experiment {experiment!r} in {mlflow.get_tracking_uri()}")
    if parent_id:
        found = search_runs(f"attributes.run_id = {quote(parent_id)}", experiment)
        if found.empty:
            raise TrackingError(f"no run {parent_id} in {mlflow.get_tracking_uri()}")
        row = found.iloc[0]
        if row_value(row, "tags.kind") != "sweep":
            raise TrackingError(f"run {parent_id} is not a sweep's parent run "
                                f"(tag kind={row_value(row, 'tags.kind')!r}, expected 'sweep')")
        if sweep and row_value(row, "tags.sweep") != sweep:
            raise TrackingError(f"run {parent_id} is the parent of sweep {row_value(row, 'tags.sweep')!r}, "
                                f"not {sweep!r}")
        return row
    query = "tags.kind = 'sweep'" + (f" and tags.sweep = {quote(sweep)}" if sweep else "")
    found = search_runs(query, experiment, order_by=["attributes.start_time DESC"], max_results=1)
    if found.empty:
        known = sorted(set(search_runs("tags.kind = 'sweep'", experiment).get("tags.sweep", pd.Series()).dropna()))
        what = f"sweep {sweep!r}" if sweep else "sweep"
        listing = f"; sweeps recorded: {', '.join(known)}" if known else "; run one with `earshot flow ablation NAME`"
        raise TrackingError(f"no parent run of a {what} in {mlflow.get_tracking_uri()}{listing}")
    return found.iloc[0]


def load_sweep(uri: str, sweep: str | None = None, *, parent_id: str | None = None,
               experiment: str | None = None) -> Sweep:
    """Read a sweep's parent run and its ``kind=variant`` child runs from ``uri``.

    Points MLflow at ``uri`` (``mlflow.set_tracking_uri``, as a stage run does). When a
    variant was logged twice under the same parent (a rerun), the latest run counts.
    """
    import mlflow

    check_store(uri)
    mlflow.set_tracking_uri(uri)
    parent = find_parent(sweep, parent_id, experiment)
    name, parent_run = str(row_value(parent, "tags.sweep") or ""), str(parent["run_id"])
    runs = search_runs(f"tags.kind = 'variant' and tags.sweep = {quote(name)} and "
                       f"tags.mlflow.parentRunId = {quote(parent_run)}", experiment)
    if runs.empty:
        raise TrackingError(f"sweep {name!r}: its parent run {parent_run} in {uri} has no variant runs "
                            "(child runs tagged kind=variant) yet")
    baseline = str(row_value(parent, "tags.baseline") or row_value(parent, "params.baseline") or "")
    runs = latest_per_variant(runs, baseline)
    if baseline not in runs.index:
        raise TrackingError(f"sweep {name!r} (parent run {parent_run}): no run of its baseline variant {baseline!r} "
                            f"to compare with; variants found: {', '.join(runs.index)}")
    return Sweep(name, uri, parent, runs, baseline, variant_overrides(parent, runs))


def latest_per_variant(runs: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """One row per ``tags.variant`` (its latest run), indexed by variant, baseline first,
    then in numeric order when the names are numbers, else in the order they ran."""
    runs = runs.dropna(subset=["tags.variant"]).sort_values("start_time")
    runs = runs.drop_duplicates("tags.variant", keep="last").set_index("tags.variant", drop=False)
    runs.index.name = "variant"
    others = [v for v in runs.index if v != baseline]
    values = numeric_values(list(runs.index))
    if values is not None:
        others.sort(key=values.__getitem__)
    return runs.loc[[v for v in [baseline] if v in runs.index] + others]


def variant_overrides(parent: Mapping[str, Any], runs: pd.DataFrame) -> dict[str, dict[str, str]]:
    """Each variant's param overrides: from the parent's flattened sweep definition
    (``variants.<variant>.<key>``), else the variant run's own params."""
    out: dict[str, dict[str, str]] = {}
    for variant, row in runs.iterrows():
        prefix = f"params.variants.{variant}."
        defined = {k.removeprefix(prefix): str(v) for k, v in parent.items()
                   if k.startswith(prefix) and row_value(parent, k) is not None}
        logged = {k.removeprefix("params."): str(v) for k, v in row.items()
                  if k.startswith("params.") and row_value(row, k) is not None}
        out[str(variant)] = defined or logged
    return out


def variant_images(sweep: Sweep, dst: str | Path, pattern: str = "grid_*.png") -> dict[str, list[Path]]:
    """Download each variant's images named like ``pattern`` (the evaluate stage's sample
    grids): from its ``kind=variant`` run, else from its ``evaluate`` stage run under the
    same parent. Variants without such images are absent from the result."""
    import mlflow

    client = open_client(sweep.tracking_uri)
    mlflow.set_tracking_uri(sweep.tracking_uri)
    stage_runs = mlflow.search_runs(
        [sweep.experiment_id], f"tags.mlflow.parentRunId = {quote(sweep.parent_id)} and tags.stage = 'evaluate'",
        order_by=["attributes.start_time DESC"], output_format="pandas")
    found: dict[str, list[Path]] = {}
    for variant, row in sweep.runs.iterrows():
        candidates = [str(row["run_id"])]
        if not stage_runs.empty and "tags.variant" in stage_runs:
            candidates += list(stage_runs.loc[stage_runs["tags.variant"] == variant, "run_id"])
        for run_id in candidates:
            paths = [p for p in artifact_files(client, run_id) if fnmatch.fnmatchcase(Path(p).name, pattern)]
            if paths:
                found[str(variant)] = [Path(mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path=p, dst_path=str(Path(dst) / str(variant)),
                    tracking_uri=sweep.tracking_uri)) for p in sorted(paths)]
                break
    return found


def artifact_files(client: Any, run_id: str, path: str | None = None, depth: int = 3) -> list[str]:
    """The artifact file paths of a run, ``depth`` folder levels down."""
    files: list[str] = []
    for info in client.list_artifacts(run_id, path):
        if info.is_dir:
            if depth > 1:
                files += artifact_files(client, run_id, info.path, depth - 1)
        else:
            files.append(info.path)
    return files


# ----------------------------------------------------------------------------- recent runs


@dataclass(frozen=True)
class RunRecord:
    """One run as a summary lists it."""

    run_id: str
    name: str
    experiment_id: str
    status: str
    stage: str = ""
    variant: str = ""


class StartedRuns:
    """The MLflow runs started in the store ``uri`` since this object was made.

    Importing MLflow and opening its store costs seconds (4 s on 2 busy cores), so the
    store opens in a thread at once and overlaps the work whose runs are to be listed
    (a flow's stages, which wait on their subprocesses).
    """

    def __init__(self, uri: str):
        self.uri = uri
        self.since = time.time()
        self._pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow-store")
        self._client = self._pool.submit(open_existing_store, uri)

    def fetch(self) -> list[RunRecord]:
        """The runs (any experiment) started since then, oldest first; raises what MLflow
        or its server raised when the store cannot be read."""
        try:
            client = self._client.result() or open_existing_store(self.uri)  # the work may have created the database
            if client is None:
                return []
            experiments = [e.experiment_id for e in client.search_experiments()]
            runs = client.search_runs(experiments, f"attributes.start_time >= {int(self.since * 1000)}",
                                      order_by=["attributes.start_time ASC"], max_results=5000) if experiments else []
        finally:
            self._pool.shutdown()
        return [RunRecord(run_id=r.info.run_id, name=r.info.run_name or r.info.run_id,
                          experiment_id=r.info.experiment_id, status=r.info.status,
                          stage=r.data.tags.get("stage", ""), variant=r.data.tags.get("variant", "")) for r in runs]
