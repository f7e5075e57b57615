"""Prefect flows over the DVC pipeline, and running the data stages outside DVC.

``dvc.yaml`` is the only pipeline graph: the flows read their stage list from it
(:mod:`components.orchestration.graph`) and let DVC decide what reruns.

* :func:`pipeline` (``earshot flow run [TARGET]``): the stages ``dvc repro [TARGET]``
  would consider, in its order, each a Prefect task running ``dvc repro --single-item
  STAGE`` with its output streamed line by line to the Prefect log. No Prefect caching:
  DVC skips a stage whose deps, params and outs did not change, and the task reports
  ``ran`` or ``skipped`` from what DVC printed. A failure whose output says its cause is
  transient (a held lock, a busy SQLite database, an unreachable server:
  :data:`components.orchestration.repro.TRANSIENT_PATTERNS`) is retried
  ``orchestration.stage_retries`` times after ``retry_delay_seconds``; any other failure
  is deterministic and stops the flow at once. Either way the flow run ends with a
  markdown artifact (key ``pipeline-summary``): each stage's status and duration and
  links to the MLflow runs started during the flow.
* :func:`ablation` (``earshot flow ablation SWEEP``): the variants of a sweep of
  params.yaml, one after another, each as ``dvc exp run -n <sweep>-<variant>-<id> -S ... <evaluation>``
  (:mod:`components.orchestration.experiments`; only the sweep's evaluation stage and what it
  depends on are reproduced) under one MLflow parent run (the stages'
  runs become its children through ``EARSHOT_PARENT_RUN_ID``,
  :mod:`components.tracking.runs`), one ``kind=variant`` child run
  per variant with the metrics of its evaluate stage, then the comparison
  (:mod:`components.evaluation.compare`) logged to the parent and published as an
  artifact (key ``ablation-<sweep>``).

Both run with or without a Prefect server (without one, Prefect starts a temporary
local API for the run). :func:`run_data_stages` runs the data stages in-process, without
DVC or Prefect (``earshot data prepare``).
"""

from __future__ import annotations

import collections
import copy
import datetime as dt
import importlib
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import task_run as current_task_run

from components.config import Params, load_params, set_dotted
from components.errors import ConfigError, EarshotError
from components.io import project_root, write_bytes_atomic
from components.orchestration.experiments import exp_name, exp_run_argv, flat_numbers, params_drift, variant_order
from components.orchestration.graph import dvc_stage_order, stages_for_target
from components.orchestration.repro import repro_outcome, transient_cause
from components.orchestration.summaries import RunLink, StageResult, attach_runs, pipeline_markdown, sweep_markdown
from components.tracking import (
    StartedRuns,
    log_variant_run,
    open_client,
    resolve_tracking_uri,
    run_url,
    server_backend_uri,
    sweep_env,
    sweep_parent_run,
    ui_base,
    use_experiment,
)

__all__ = ["DATA_STAGES", "StageFailed", "ablation", "dvc_stage_order", "pipeline", "run_data_stages"]


DATA_STAGES = ("download", "faces", "audio", "shards", "report")
HEAD_LINES = 50  # DVC's decision about a stage comes first in its output
# where a variant run keeps its metrics file, as the evaluation stage it compares on does
METRICS_ARTIFACT_PATH = {"evaluate": "face_sr_eval", "evaluate_video": "video_sr_eval"}


class StageFailed(EarshotError):
    """A stage (or sweep variant) command exited non-zero. ``cause`` is why the failure
    looks transient (a retry may succeed), None for a deterministic failure."""

    def __init__(self, name: str, returncode: int, cause: str | None, tail: str, attempts: int = 1):
        self.name, self.returncode, self.cause, self.tail, self.attempts = name, returncode, cause, tail, attempts
        kind = f"transient: {cause}" if cause else "deterministic"
        last = "\n".join(tail.splitlines()[-15:])
        super().__init__(f"{name}: exited with {returncode} ({kind}); last lines:\n{last}")

    def __reduce__(self):  # type: ignore[no-untyped-def]  # picklable across task runners
        return (StageFailed, (self.name, self.returncode, self.cause, self.tail, self.attempts))

    @property
    def detail(self) -> str:
        return f"exit {self.returncode}" + (f", transient: {self.cause}" if self.cause else "")


# ----------------------------------------------------------------------------- subprocesses


def dvc_command() -> list[str]:
    """DVC of this interpreter's environment (not whichever ``dvc`` is first on PATH)."""
    return [sys.executable, "-m", "dvc"]


def command_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a stage command: this interpreter's ``bin`` first on PATH (so the
    ``python`` of dvc.yaml's commands is the project's, even when the venv is not
    activated), unbuffered Python output (lines arrive as they are printed), plus ``extra``."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def stream_command(name: str, argv: Sequence[str], cwd: Path, env: Mapping[str, str],
                   logger: logging.Logger | logging.LoggerAdapter) -> tuple[str, str]:
    """Run ``argv``, logging each output line (stdout and stderr, in order) as it comes.
    Returns the first and the last lines of the output; raises :class:`StageFailed` on a
    non-zero exit, telling a transient failure from a deterministic one."""
    logger.info("$ %s", " ".join(argv))
    head: list[str] = []
    tail: collections.deque[str] = collections.deque(maxlen=200)
    proc = subprocess.Popen(list(argv), cwd=cwd, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace", bufsize=1)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            logger.info("%s", line)
            if len(head) < HEAD_LINES:
                head.append(line)
            tail.append(line)
        returncode = proc.wait()
    finally:  # the flow was cancelled or interrupted: do not leave the stage running
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    if returncode != 0:
        output = "\n".join(tail)
        raise StageFailed(name, returncode, transient_cause(output), output, attempts=current_task_run.run_count or 1)
    return "\n".join(head), "\n".join(tail)


def _retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's retry condition: only a :class:`StageFailed` with a transient cause."""
    exc = state.data
    retry = isinstance(exc, StageFailed) and exc.cause is not None
    if isinstance(exc, StageFailed):
        get_run_logger().warning("%s failed (%s): %s", exc.name, exc.detail,
                                 "retrying if retries are left" if retry else "not retried")
    return retry


@task(name="dvc-repro", task_run_name="{stage}", cache_policy=NO_CACHE, retry_condition_fn=_retry_if_transient)
def repro_stage(stage: str, project: str, force: bool = False) -> StageResult:
    """``dvc repro --single-item STAGE``: DVC runs the stage or finds it up to date."""
    argv = [*dvc_command(), "repro", "--single-item", *(["--force"] if force else []), stage]
    head, _ = stream_command(stage, argv, Path(project), command_env(), get_run_logger())
    status, detail = repro_outcome(stage, head)
    return StageResult(stage, status, detail=detail, attempts=current_task_run.run_count or 1)


@task(name="dvc-exp-run", task_run_name="{variant}", cache_policy=NO_CACHE, retry_condition_fn=_retry_if_transient)
def run_variant(variant: str, argv: list[str], project: str, env: dict[str, str]) -> StageResult:
    """``dvc exp run`` of one sweep variant, in the workspace (a retry resumes it: DVC
    skips the stages that already ran)."""
    stream_command(variant, argv, Path(project), command_env(env), get_run_logger())
    return StageResult(variant, "ran", attempts=current_task_run.run_count or 1)


# ----------------------------------------------------------------------------- MLflow


def mlflow_server_url(params: Params, root: Path, tracking_uri: str) -> str | None:
    """The project's MLflow server (``earshot server up``) when it runs and serves the
    store the stages write to: run links then open in its UI."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri
    from components.orchestration.servers import ServerError, inspect, server_specs

    try:
        spec = next(s for s in server_specs(params, root) if s.name == "mlflow")
    except ServerError:
        return None
    if server_backend_uri(params.tracking.uri, root) != tracking_uri:
        return None
    return spec.url if inspect(spec).state == "running" else None


def watch_runs(params: Params, root: Path) -> StartedRuns | None:
    """Start listening for the MLflow runs of a flow run (None: tracking is off)."""
    return StartedRuns(resolve_tracking_uri(params.tracking.uri, root)) if params.tracking.enabled else None


def run_links(watched: StartedRuns | None, params: Params, root: Path) -> list[RunLink]:
    """The runs started since :func:`watch_runs`, oldest first, linked to the MLflow UI.
    The links only decorate the summary: a store that cannot be read (a tracking server
    gone down) is a warning, never the failure of a flow whose stages succeeded."""
    if watched is None:
        return []
    try:
        runs = watched.fetch()
    except Exception as exc:  # noqa: BLE001 - whatever MLflow or its server raised
        get_run_logger().warning("MLflow runs not linked: %s could not be read (%s)", watched.uri, exc)
        return []
    base = ui_base(watched.uri, mlflow_server_url(params, root, watched.uri))
    return [RunLink(name=r.name, stage=r.stage, url=run_url(base, r.experiment_id, r.run_id), variant=r.variant,
                    status=r.status) for r in runs]


# ----------------------------------------------------------------------------- flows


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")


def _project(project: str | None) -> Path:
    root = Path(project).resolve() if project else project_root()
    if not (root / "dvc.yaml").exists():
        raise ConfigError(f"{root}: no dvc.yaml (run from the project, or pass its folder)")
    return root


@flow(name="pipeline")
def pipeline(target: str | None = None, force: bool = False, project: str | None = None) -> list[StageResult]:
    """Reproduce the DVC pipeline (or TARGET and what it depends on), one task per stage.

    Args:
        target: a stage of dvc.yaml; empty: every stage (``dvc repro``).
        force: rerun every stage even when DVC finds it up to date (``dvc repro --force``).
        project: the project folder (with dvc.yaml and params.yaml); default: the current one.
    """
    started = time.time()
    logger = get_run_logger()
    root = _project(project)
    params = load_params(root / "params.yaml")
    stages = stages_for_target(target or None, root / "dvc.yaml")
    watched = watch_runs(params, root)
    cfg = params.orchestration
    stage_task = repro_stage.with_options(retries=cfg.stage_retries, retry_delay_seconds=cfg.retry_delay_seconds)
    logger.info("dvc repro %s: %s", target or "(all stages)", ", ".join(stages))
    results: list[StageResult] = []
    failure: StageFailed | None = None
    for stage in stages:
        if failure:
            results.append(StageResult(stage, "not reached"))
            continue
        t0 = time.perf_counter()
        try:
            result = stage_task(stage, str(root), force)
        except StageFailed as exc:
            failure, result = exc, StageResult(stage, "failed", detail=exc.detail, attempts=exc.attempts)
        result.seconds = time.perf_counter() - t0
        results.append(result)
    other = attach_runs(results, run_links(watched, params, root))
    command = "dvc repro" + (" --force" if force else "") + (f" {target}" if target else "")
    markdown = pipeline_markdown(command, results, other, time.time() - started)
    create_markdown_artifact(key=artifact_key("pipeline-summary"), markdown=markdown, description=f"{command} in {root}")
    if failure:
        raise failure
    return results


def check_written_params(params_file: Path, tree: Mapping[str, Any], overrides: Mapping[str, Any], variant: str,
                         exp: str) -> None:
    """Fail the variant when the params.yaml DVC wrote for it does not read back as the
    user's params plus the variant's overrides (the stages read it with PyYAML)."""
    expected = copy.deepcopy(dict(tree))
    for key, value in overrides.items():
        set_dotted(expected, key, value)
    drift = params_drift(expected, yaml.safe_load(params_file.read_text()) or {})
    if drift:
        raise EarshotError(f"variant {variant}: `dvc exp run` rewrote {params_file} and {', '.join(drift)} now read(s) "
                           f"differently from the sweep's values, so experiment {exp} ran with other params "
                           "(DVC writes params.yaml as YAML 1.2 and drops quotes: a string such as on, off, yes "
                           "or no comes back a boolean; rename such values)")


def read_variant_metrics(path: Path, variant: str) -> dict[str, float]:
    if not path.exists():
        raise EarshotError(f"variant {variant}: `dvc exp run` succeeded but left no {path} "
                           "(is it an output of dvc.yaml's evaluation stage the sweep names, at its out_dir?)")
    return flat_numbers(json.loads(path.read_text()))


def build_comparison(uri: str, sweep: str, parent_id: str, root: Path, experiment: str) -> tuple[str, str]:
    """The comparison of the sweep's variants (``earshot compare``: written to
    results/compare/<sweep>/ and logged to the parent run): its markdown report, and
    where its figure is."""
    from components.evaluation.compare import compare

    result = compare(uri, sweep, parent_id=parent_id, out_dir=root / "results" / "compare" / sweep,
                     experiment=experiment)
    where = f"{result.plot}" + (f" (and {', '.join(result.logged)} on the parent run)" if result.logged else "")
    return result.report.read_text(), where


@flow(name="ablation")
def ablation(sweep: str, project: str | None = None) -> list[StageResult]:
    """Run every variant of a sweep of params.yaml as a DVC experiment and compare them.

    Each variant starts from the params.yaml the flow found (a ``dvc exp run -S`` writes
    its overrides into the workspace's params.yaml and leaves them there; the flow puts
    the original back before every variant and at the end). The baseline runs last, so
    the workspace ends on its outputs. A failing variant stops the sweep.

    Args:
        sweep: a sweep name of params.yaml (``sweeps``), e.g. audio, audio_length, fusion, input_size.
        project: the project folder (with dvc.yaml and params.yaml); default: the current one.
    """
    logger = get_run_logger()
    root = _project(project)
    params_file = root / "params.yaml"
    original = params_file.read_bytes()
    params = load_params(params_file)
    if sweep not in params.sweeps:
        raise ConfigError(f"{params_file}: no sweep {sweep!r}; sweeps: {', '.join(params.sweeps) or 'none'}")
    if not params.tracking.enabled:
        raise ConfigError(f"{params_file}: tracking.enabled is false: an ablation is compared from its MLflow runs")
    definition = params.sweeps[sweep]
    tree = yaml.safe_load(original) or {}
    watched = watch_runs(params, root)
    uri = resolve_tracking_uri(params.tracking.uri, root)
    experiment_id = use_experiment(params.tracking.experiment, uri)
    client = open_client(uri)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    with sweep_parent_run(client, experiment_id, f"sweep {sweep} {stamp}", sweep=sweep, baseline=definition.baseline,
                          definition=definition.model_dump(mode="json"), root=root) as parent_id:
        logger.info("sweep %s: parent MLflow run %s; variants %s", sweep, parent_id,
                    ", ".join(variant_order(definition)))
        variant_task = run_variant.with_options(retries=params.orchestration.stage_retries,
                                                retry_delay_seconds=params.orchestration.retry_delay_seconds)
        results: list[StageResult] = []
        exps: dict[str, str] = {}
        failure: EarshotError | None = None
        try:
            for variant in variant_order(definition):
                if failure:
                    results.append(StageResult(variant, "not reached"))
                    continue
                write_bytes_atomic(params_file, original)  # this variant's overrides on the user's params only
                overrides = definition.variants[variant]
                exps[variant] = exp = exp_name(sweep, variant, parent_id[:7])
                evaluation = getattr(load_params(params_file, overrides), definition.evaluation)
                metrics_file = root / evaluation.out_dir / "metrics.json"
                t0 = time.perf_counter()
                try:
                    argv = exp_run_argv(exp, overrides, tree, dvc_command(), definition.evaluation)
                    result = variant_task(variant, argv, str(root), sweep_env(parent_id, sweep, variant))
                    check_written_params(params_file, tree, overrides, variant, exp)
                    log_variant_run(client, experiment_id, parent_id, sweep=sweep, variant=variant,
                                    baseline=definition.baseline, exp=exp, overrides=overrides,
                                    metrics=read_variant_metrics(metrics_file, variant), metrics_file=metrics_file,
                                    metrics_artifact_path=METRICS_ARTIFACT_PATH[definition.evaluation])
                except StageFailed as exc:
                    failure, result = exc, StageResult(variant, "failed", detail=exc.detail, attempts=exc.attempts)
                except EarshotError as exc:
                    failure, result = exc, StageResult(variant, "failed", detail=str(exc))
                result.seconds = time.perf_counter() - t0
                results.append(result)
        finally:
            write_bytes_atomic(params_file, original)
        comparison, figure = (None, None) if failure else build_comparison(uri, sweep, parent_id, root,
                                                                          params.tracking.experiment)
        runs = run_links(watched, params, root)
        parent_link = next((r for r in runs if r.url.endswith(parent_id)), None)
        attach_runs(results, [r for r in runs if r is not parent_link], key="variant")
        markdown = sweep_markdown(sweep, definition, results, parent_link, exps, comparison, figure)
        create_markdown_artifact(key=artifact_key("ablation", sweep), markdown=markdown,
                                 description=f"ablation {sweep} in {root}")
        if failure:
            raise failure
        return results


# ----------------------------------------------------------------------------- no DVC, no Prefect


def run_data_stages(params: Params, *, progress: bool = True) -> list[dict[str, Any]]:
    """Run the data stages of dvc.yaml, in its order, on ``params.common.data_dir``."""
    summaries = []
    for name in dvc_stage_order():
        if name in DATA_STAGES:
            module = importlib.import_module(f"pipelines.{name}")
            summaries.append(module.run(params, progress=progress))
    return summaries
