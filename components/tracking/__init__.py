"""MLflow tracking shared by every stage, training run, flow and evaluation.

Every MLflow read and write of the project goes through this package:

* :mod:`.store`: tracking URIs (params, ``$MLFLOW_TRACKING_URI``, the project's SQLite
  file), where artifacts live, opening a store, links into the UI;
* :mod:`.runs`: what is written: one run per stage execution (:func:`stage_run`, with
  lineage tags) and the parent and variant runs of an ablation sweep;
* :mod:`.reads`: what is queried: a sweep's runs (:func:`load_sweep`), their images,
  the runs started during a flow.

MLflow is imported inside the functions that need it: importing this package is cheap.
"""

from components.tracking.reads import (
    RunRecord,
    StartedRuns,
    Sweep,
    artifact_files,
    find_parent,
    latest_per_variant,
    load_sweep,
    numeric_values,
    quote,
    row_value,
    search_runs,
    variant_images,
    variant_overrides,
)
from components.tracking.runs import (
    PARENT_RUN_ENV,
    SWEEP_ENV,
    VARIANT_ENV,
    StageRun,
    dvc_lock_hashes,
    flatten,
    git_info,
    input_hashes,
    log_artifacts,
    log_variant_run,
    run_tags,
    stage_run,
    sweep_env,
    sweep_parent_run,
)
from components.tracking.store import (
    TrackingError,
    artifact_location,
    check_store,
    local_tracking_uri,
    open_client,
    open_existing_store,
    resolve_tracking_uri,
    run_url,
    server_backend_uri,
    sqlite_missing,
    sqlite_path,
    ui_base,
    use_experiment,
)

__all__ = [
    "PARENT_RUN_ENV",
    "SWEEP_ENV",
    "VARIANT_ENV",
    "RunRecord",
    "StageRun",
    "StartedRuns",
    "Sweep",
    "TrackingError",
    "artifact_files",
    "artifact_location",
    "check_store",
    "dvc_lock_hashes",
    "find_parent",
    "flatten",
    "git_info",
    "input_hashes",
    "latest_per_variant",
    "load_sweep",
    "local_tracking_uri",
    "log_artifacts",
    "log_variant_run",
    "numeric_values",
    "open_client",
    "open_existing_store",
    "quote",
    "resolve_tracking_uri",
    "row_value",
    "run_tags",
    "run_url",
    "search_runs",
    "server_backend_uri",
    "sqlite_missing",
    "sqlite_path",
    "stage_run",
    "sweep_env",
    "sweep_parent_run",
    "ui_base",
    "use_experiment",
    "variant_images",
    "variant_overrides",
]
