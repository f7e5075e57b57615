"""The MLflow runs the project writes: one per stage execution, and those of a sweep.

Every stage run (:func:`stage_run`) is one MLflow run with:

* params: the stage's params section (flattened, ``faces.detect_every``) plus ``common``;
* tags: ``stage``, ``git_sha`` (+ ``git_dirty``), ``dvc_exp_name`` when run by
  ``dvc exp run``, ``earshot_version`` and ``input.<path>`` = the content hash of each
  input (taken from ``dvc.lock`` when DVC already hashed it, computed otherwise);
* metrics and small artifacts (reports, images). DVC owns data and checkpoints.

Ablation sweeps (``earshot flow ablation``, ``pipelines/flows.py``) group their runs under
one parent run (:func:`sweep_parent_run`, tag ``kind=sweep``) with one ``kind=variant``
child per variant (:func:`log_variant_run`). A process started with
``EARSHOT_PARENT_RUN_ID`` in its environment opens its stage run as a child of that run
(tag ``mlflow.parentRunId``, the parent's experiment) tagged ``sweep=$EARSHOT_SWEEP``
and ``variant=$EARSHOT_VARIANT``. Environment variables, because the stage runs three
processes away from the flow (flow -> ``dvc exp run`` -> stage command), and DVC passes
the environment through. MLflow is imported lazily: importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from components import __version__
from components.errors import ConfigError
from components.io import hash_tree, project_root
from components.tracking.store import open_client, resolve_tracking_uri, use_experiment

if TYPE_CHECKING:
    from components.config import Params

PARENT_RUN_ENV = "EARSHOT_PARENT_RUN_ID"
SWEEP_ENV = "EARSHOT_SWEEP"
VARIANT_ENV = "EARSHOT_VARIANT"
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value


# ----------------------------------------------------------------------------- tags


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


def run_tags(stage: str, inputs: list[str | Path], root: Path) -> dict[str, str]:
    tags = {"stage": stage, "earshot_version": __version__, **git_info(root)}
    if exp := os.environ.get("DVC_EXP_NAME"):
        tags["dvc_exp_name"] = exp
    for path, digest in input_hashes(inputs, root).items():
        tags[f"input.{path}"] = digest
    return tags


# ----------------------------------------------------------------------------- stage runs


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


def sweep_env(parent_run_id: str, sweep: str, variant: str) -> dict[str, str]:
    """The environment that makes the stage runs of a process children of a sweep's run."""
    return {PARENT_RUN_ENV: parent_run_id, SWEEP_ENV: sweep, VARIANT_ENV: variant}


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

    uri = resolve_tracking_uri(params.tracking.uri, root)
    experiment_id = use_experiment(params.tracking.experiment, uri)
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
                              f"{uri} ({exc.message})") from None
        sweep_tags = {k: os.environ.get(env, "") for k, env in (("sweep", SWEEP_ENV), ("variant", VARIANT_ENV))}
    with mlflow.start_run(run_name=run_name or stage, nested=nested, parent_run_id=parent,
                          experiment_id=experiment_id) as run:
        mlflow.log_params({k: str(v)[:MAX_PARAM_CHARS] for k, v in flatten(logged).items()})
        tags = run_tags(stage, list(inputs), root)
        mlflow.set_tags({**tags, **sweep_tags, **(extra_tags or {})})
        yield StageRun(run.info.run_id)


# ----------------------------------------------------------------------------- sweep runs


def _params(tree: Mapping[str, Any]) -> list[Any]:
    from mlflow.entities import Param

    return [Param(k, str(v)[:MAX_PARAM_CHARS]) for k, v in flatten(tree).items()]


@contextlib.contextmanager
def sweep_parent_run(client: Any, experiment_id: str, name: str, *, sweep: str, baseline: str,
                     definition: Mapping[str, Any], root: Path) -> Iterator[str]:
    """The parent run of one sweep (tags ``kind=sweep``, ``sweep``, ``baseline``, git;
    params: the sweep's definition, flattened), open for the block, which gets its id.
    It ends ``FINISHED`` when the block completes, ``FAILED`` when the block raises."""
    run = client.create_run(experiment_id, run_name=name, tags={
        "kind": "sweep", "sweep": sweep, "baseline": baseline, **git_info(root)})
    client.log_batch(run.info.run_id, params=_params(definition))
    status = "FAILED"
    try:
        yield run.info.run_id
        status = "FINISHED"
    finally:
        client.set_terminated(run.info.run_id, status)


def log_variant_run(client: Any, experiment_id: str, parent_id: str, *, sweep: str, variant: str, baseline: str,
                    exp: str, overrides: Mapping[str, Any], metrics: Mapping[str, float],
                    metrics_file: Path, metrics_artifact_path: str) -> str:
    """The finished ``kind=variant`` child run that :func:`components.tracking.reads.load_sweep`
    reads: the variant's final evaluate metrics and overrides, and the metrics file (as
    an artifact under ``metrics_artifact_path``)."""
    from mlflow.entities import Metric

    run = client.create_run(experiment_id, run_name=variant, tags={
        "mlflow.parentRunId": parent_id, "kind": "variant", "sweep": sweep, "variant": variant,
        "baseline": str(variant == baseline).lower(), "dvc_exp_name": exp})
    now = int(time.time() * 1000)
    client.log_batch(run.info.run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
                     params=_params(overrides))
    client.log_artifact(run.info.run_id, str(metrics_file), metrics_artifact_path)
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def log_artifacts(uri: str, run_id: str, paths: Sequence[Path], artifact_path: str) -> tuple[str, ...]:
    """Log files to a run of the store ``uri`` under ``artifact_path`` (replacing files of
    the same names); their artifact paths."""
    client = open_client(uri)
    for path in paths:
        client.log_artifact(run_id, str(path), artifact_path)
    return tuple(f"{artifact_path}/{path.name}" for path in paths)
