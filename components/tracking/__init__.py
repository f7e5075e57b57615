"""MLflow tracking shared by every stage, training run and evaluation.

Every stage run is one MLflow run with:

* params: the stage's params section (flattened, ``faces.detect_every``) plus ``common``;
* tags: ``stage``, ``git_sha`` (+ ``git_dirty``), ``dvc_exp_name`` when run by
  ``dvc exp run``, ``earshot_version`` and ``input.<path>`` = the content hash of each
  input (taken from ``dvc.lock`` when DVC already hashed it, computed otherwise);
* metrics and small artifacts (reports, images). DVC owns data and checkpoints.

Ablation sweeps (``earshot flow ablation``, ``pipelines/flows.py``) group their runs under
one parent run: a process started with ``EARSHOT_PARENT_RUN_ID`` in its environment opens
its stage run as a child of that run (tag ``mlflow.parentRunId``, the parent's experiment)
tagged ``sweep=$EARSHOT_SWEEP`` and ``variant=$EARSHOT_VARIANT``. Environment variables,
because the stage runs three processes away from the flow (flow -> ``dvc exp run`` ->
stage command), and DVC passes the environment through.

The tracking URI comes from params (``tracking.uri``), else ``$MLFLOW_TRACKING_URI``,
else a project-local SQLite database ``sqlite:///<project>/mlflow.db`` (recent MLflow
refuses a bare ``mlruns/`` file store). MLflow is imported lazily: importing this
module is cheap.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import yaml

from components import __version__
from components.config import Params, TrackingParams
from components.errors import ConfigError
from components.io import hash_tree, project_root

log = logging.getLogger(__name__)


def local_tracking_uri(root: Path | None = None) -> str:
    """The project's own SQLite store, used when nothing else is configured."""
    return f"sqlite:///{(root or project_root()) / 'mlflow.db'}"


def resolve_tracking_uri(cfg: TrackingParams, root: Path | None = None) -> str:
    if cfg.uri:
        return cfg.uri
    if env := os.environ.get("MLFLOW_TRACKING_URI"):
        return env
    return local_tracking_uri(root)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI (relative ones to the cwd);
    None for any other store."""
    return Path(unquote(uri.removeprefix("sqlite:///"))) if uri.startswith("sqlite:///") else None


def artifact_location(uri: str) -> str | None:
    """Artifacts of a SQLite store live beside its database (``<db folder>/mlartifacts``);
    a tracking server decides for itself (None)."""
    db = sqlite_path(uri)
    return (db.parent / "mlartifacts").resolve().as_uri() if db is not None else None


def git_info(root: Path) -> dict[str, str]:
    def git(*args: str) -> str:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
        except OSError:  # no git, or no such folder: no git tags
            return ""
        return out.stdout.strip() if out.returncode == 0 else ""

    sha = git("rev-parse", "HEAD")
    if not sha:
        return {}
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    return {"git_sha": sha, "git_dirty": str(dirty).lower()}


def dvc_lock_hashes(root: Path) -> dict[str, str]:
    """Map every output path recorded in ``dvc.lock`` to its hash."""
    lock = root / "dvc.lock"
    if not lock.exists():
        return {}
    try:
        stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    except yaml.YAMLError:
        return {}
    out: dict[str, str] = {}
    for stage in stages.values():
        for entry in stage.get("outs", []) or []:
            digest = entry.get("md5") or entry.get("hash") or ""
            if entry.get("path") and digest:
                out[str(entry["path"]).rstrip("/")] = digest
    return out


def _tag_path(path: Path, root: Path) -> str:
    """The path as written in dvc.yaml (relative to the project) or, outside it, absolute."""
    path = path if path.is_absolute() else root / path
    path = Path(os.path.normpath(path))
    try:
        return str(path.relative_to(root.resolve() if path.is_absolute() else root))
    except ValueError:
        return str(path).lstrip("/")


def input_hashes(inputs: list[str | Path], root: Path) -> dict[str, str]:
    """Content hash of each input: DVC's hash when dvc.lock has it, else computed here."""
    known = dvc_lock_hashes(root)
    hashes = {}
    for p in inputs:
        rel = _tag_path(Path(p), root)
        if rel in known:
            hashes[rel] = f"md5:{known[rel]}"
        elif (path := Path(p) if Path(p).is_absolute() else root / p).exists():
            hashes[rel] = f"sha256:{hash_tree(path)[:32]}"
    return hashes


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


class StageRun:
    """What a stage sees of its MLflow run; a no-op recorder when tracking is off."""

    def __init__(self, run_id: str | None):
        self.run_id = run_id
        self.metrics: dict[str, float] = {}

    @property
    def active(self) -> bool:
        return self.run_id is not None

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        clean = {k: float(v) for k, v in metrics.items() if v is not None}
        self.metrics.update(clean)
        if self.active:
            import mlflow

            mlflow.log_metrics(clean, step=step)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.active and Path(path).exists():
            import mlflow

            mlflow.log_artifact(str(path), artifact_path)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if self.active:
            import mlflow

            mlflow.set_tags({k: str(v) for k, v in tags.items()})


PARENT_RUN_ENV = "EARSHOT_PARENT_RUN_ID"
SWEEP_ENV = "EARSHOT_SWEEP"
VARIANT_ENV = "EARSHOT_VARIANT"


def sweep_env(parent_run_id: str, sweep: str, variant: str) -> dict[str, str]:
    """The environment that makes the stage runs of a process children of a sweep's run."""
    return {PARENT_RUN_ENV: parent_run_id, SWEEP_ENV: sweep, VARIANT_ENV: variant}


def use_experiment(cfg: TrackingParams, root: Path) -> str:
    """Point MLflow at the tracking store and experiment of ``cfg`` (created with its
    artifacts beside a SQLite store); returns the experiment id."""
    import mlflow

    # Quiet the per-process MLflow banner and the hub lookups of optional integrations.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = resolve_tracking_uri(cfg, root)
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(cfg.experiment) is None:
        mlflow.create_experiment(cfg.experiment, artifact_location=artifact_location(uri))
    return mlflow.set_experiment(cfg.experiment).experiment_id


def run_tags(stage: str, inputs: list[str | Path], root: Path) -> dict[str, str]:
    tags = {"stage": stage, "earshot_version": __version__, **git_info(root)}
    if exp := os.environ.get("DVC_EXP_NAME"):
        tags["dvc_exp_name"] = exp
    for path, digest in input_hashes(inputs, root).items():
        tags[f"input.{path}"] = digest
    return tags


@contextlib.contextmanager
def stage_run(
    stage: str,
    params: Params,
    *,
    section: Any = None,
    inputs: list[str | Path] = (),  # type: ignore[assignment]
    root: Path | None = None,
    run_name: str | None = None,
    extra_tags: Mapping[str, str] | None = None,
) -> Iterator[StageRun]:
    """Open an MLflow run for one stage execution: nested if a run is active in this
    process, else a child of ``$EARSHOT_PARENT_RUN_ID`` when a sweep set it."""
    root = root or project_root()
    if not params.tracking.enabled:
        yield StageRun(None)
        return
    import mlflow

    experiment_id = use_experiment(params.tracking, root)
    section = getattr(params, stage, None) if section is None else section
    logged: dict[str, Any] = {"common": params.common.model_dump(mode="json")}
    if section is not None:
        logged[stage] = section.model_dump(mode="json") if hasattr(section, "model_dump") else section
    nested = mlflow.active_run() is not None
    parent = None if nested else os.environ.get(PARENT_RUN_ENV) or None
    sweep_tags: dict[str, str] = {}
    if parent:
        try:  # the child lives in its parent's experiment, whatever this process's params say
            experiment_id = mlflow.get_run(parent).info.experiment_id
        except mlflow.MlflowException as exc:
            raise ConfigError(f"{PARENT_RUN_ENV}={parent}: no such run in the tracking store "
                              f"{resolve_tracking_uri(params.tracking, root)} ({exc.message})") from None
        sweep_tags = {k: os.environ.get(env, "") for k, env in (("sweep", SWEEP_ENV), ("variant", VARIANT_ENV))}
    with mlflow.start_run(run_name=run_name or stage, nested=nested, parent_run_id=parent,
                          experiment_id=experiment_id) as run:
        mlflow.log_params({k: str(v)[:6000] for k, v in flatten(logged).items()})
        tags = run_tags(stage, list(inputs), root)
        mlflow.set_tags({**tags, **sweep_tags, **(extra_tags or {})})
        yield StageRun(run.info.run_id)
