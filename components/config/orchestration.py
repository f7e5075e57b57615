"""The params that run the pipeline rather than shape its results: ``tracking`` (MLflow),
``orchestration`` (servers, flows, fan-out) and ``sweeps`` (named ablations).

The values are in ``params.yaml``; these classes say what each key is and which values
it accepts. Fields without a default are required; a ``None`` default is a documented
"not given" (e.g. no tracking URI: the environment's, else the project's SQLite store).
"""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

from pydantic import Field, model_validator

from components.config.base import Section


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only: ``localhost``, 127.0.0.0/8, ::1."""
    if host.strip().lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost may resolve to anything
        return False


class TrackingParams(Section):
    uri: str | None = Field(
        None,
        description="MLflow tracking URI; null means $MLFLOW_TRACKING_URI or sqlite:///<project>/mlflow.db",
    )
    experiment: str
    enabled: bool


class OrchestrationParams(Section):
    """Prefect and MLflow servers, the pipeline and ablation flows, fan-out of per-video work.
    Not a stage. Ports may also come from $EARSHOT_PREFECT_PORT / $EARSHOT_MLFLOW_PORT."""

    host: str = Field(description="the servers bind here: a loopback address (127.0.0.0/8, ::1, localhost) "
                                  "unless allow_remote")
    allow_remote: bool = Field(description="let host be a non-loopback address (the UIs have no login: anyone "
                                           "who reaches the port can read and start runs); a warning is printed")
    prefect_port: int = Field(ge=1, le=65535)
    mlflow_port: int = Field(ge=1, le=65535)
    state_dir: str = Field(description="servers' SQLite databases, PID files and logs")
    task_runner: Literal["process", "thread", "dask"] = Field(
        description="per-video work inside the data stages (common.workers of them)")
    start_method: Literal["fork", "forkserver", "spawn"] = Field(
        description="how task_runner process starts its workers: fork (Linux; copies of the stage process, "
                    "no imports to pay), forkserver or spawn (macOS, Windows)")
    dask_address: str | None = Field(None, description="scheduler of a running Dask cluster (tcp://host:8786); "
                                                       "null with task_runner dask: a LocalCluster")
    prefect_tasks: bool = Field(description="each item also a Prefect task run through Prefect's task runner "
                                            "of that kind (needs a Prefect server; off: the plain pool)")
    stage_retries: int = Field(ge=0, description="retries of a pipeline-flow stage after a transient failure")
    retry_delay_seconds: float = Field(ge=0)

    @model_validator(mode="after")
    def _local_unless_allowed(self) -> "OrchestrationParams":
        if not self.allow_remote and not is_loopback(self.host):
            raise ValueError(f"host {self.host!r} is not a loopback address (127.0.0.1, ::1, localhost): the servers "
                             "would be reachable from other machines; set orchestration.allow_remote: true "
                             "(or `earshot server up --allow-remote`) to allow it")
        return self


class SweepParams(Section):
    """A named ablation: each variant is a set of dotted param overrides (`dvc exp run -S`)."""

    description: str = Field(description="what the sweep compares (heads its reports)")
    evaluation: Literal["evaluate", "evaluate_video"] = Field(
        description="the stage whose metrics.json the variants are compared on (face SR / video upsampling)")
    baseline: str = Field(description="the variant the others are compared with")
    variants: dict[str, dict[str, Any]] = Field(min_length=1)

    @model_validator(mode="after")
    def _baseline_is_a_variant(self) -> "SweepParams":
        if self.baseline not in self.variants:
            raise ValueError(f"baseline {self.baseline!r} is not one of the variants {sorted(self.variants)}")
        return self


class OrchestrationSections(Section):
    """The sections of ``Params`` that run the pipeline: tracking, orchestration, sweeps."""

    tracking: TrackingParams
    orchestration: OrchestrationParams
    sweeps: dict[str, SweepParams]
