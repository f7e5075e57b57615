"""Pure helpers of the Prefect flows (``pipelines/flows.py``): no Prefect, no subprocesses.

* the graph: which stages ``dvc repro [TARGET]`` considers, in the order it runs them,
  read from ``dvc.yaml`` (the only pipeline graph: nothing here keeps a stage list);
* DVC's words: did ``dvc repro --single-item STAGE`` run the stage or skip it, and does
  a failure look transient (worth a retry) or deterministic;
* ablations: the ``dvc exp run -S ...`` argv of a sweep variant, with each value written
  in the override grammar (Hydra's) that DVC parses ``-S`` with;
* the markdown summaries the flows publish as Prefect artifacts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from components.config import SweepParams
from components.errors import ConfigError
from components.io import project_root

# ----------------------------------------------------------------------------- the graph


def read_dvc_stages(dvc_yaml: Path | None = None) -> dict[str, dict[str, Any]]:
    """The ``stages`` mapping of a dvc.yaml (the project's by default), in file order."""
    path = dvc_yaml or project_root(Path(__file__).parent) / "dvc.yaml"
    return dict((yaml.safe_load(path.read_text()) or {}).get("stages", {}) or {})


def _paths(entries: list[Any] | None) -> list[str]:
    """Paths of a deps/outs/metrics/plots list (an entry is a path or ``{path: options}``)."""
    return [str(next(iter(e))) if isinstance(e, dict) else str(e) for e in entries or []]


def _overlap(a: str, b: str) -> bool:
    """DVC links a dep to an out when one path is the other or lies inside it."""
    a, b = a.rstrip("/"), b.rstrip("/")
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def upstream_graph(stages: Mapping[str, Mapping[str, Any]]) -> dict[str, list[str]]:
    """For every stage, the stages producing its deps (outs, metrics and plots are outputs)."""
    produced = [(path, name) for name, st in stages.items()
                for key in ("outs", "metrics", "plots") for path in _paths(st.get(key))]
    return {name: sorted({prod for dep in _paths(st.get("deps")) for path, prod in produced
                          if prod != name and _overlap(dep, path)}, key=list(stages).index)
            for name, st in stages.items()}


def dvc_stage_order(dvc_yaml: Path | None = None) -> list[str]:
    """Stage names of dvc.yaml in dependency order: a depth-first topological sort of
    deps on outs, visiting stages (and each stage's upstream) in file order."""
    return stages_for_target(None, dvc_yaml)


def stages_for_target(target: str | None, dvc_yaml: Path | None = None) -> list[str]:
    """The stages ``dvc repro [TARGET]`` considers, in the order it runs them: the target
    and everything upstream of it (all stages without a target)."""
    stages = read_dvc_stages(dvc_yaml)
    upstream = upstream_graph(stages)
    order: list[str] = []

    def visit(name: str, stack: tuple[str, ...] = ()) -> None:
        if name in order:
            return
        if name in stack:
            raise ConfigError(f"dvc.yaml: cycle through {' -> '.join((*stack, name))}")
        for dep in upstream[name]:
            visit(dep, (*stack, name))
        order.append(name)

    if target is None:
        for name in stages:
            visit(name)
        return order
    name = target.rpartition(":")[2] if target.startswith("dvc.yaml:") else target
    if name not in stages:
        raise ConfigError(f"no stage {target!r} in dvc.yaml; stages: {', '.join(stages)}")
    visit(name)
    return order


# ----------------------------------------------------------------------------- DVC's output

StageStatus = Literal["ran", "skipped", "failed", "not reached"]

# What `dvc repro --single-item STAGE` prints (DVC 3) when it decides about the stage.
_RAN = "Running stage '{}'"
_SKIPS = {"Stage '{}' didn't change, skipping": "up to date",
          "Stage '{}' is cached - skipping run, checking out outputs": "restored from the run cache"}


def repro_outcome(stage: str, output: str) -> tuple[StageStatus, str]:
    """``("ran" | "skipped", detail)`` from the output of a successful ``dvc repro
    --single-item STAGE``. DVC, not the flow, decides what reruns; this only reads its
    decision. Output that names neither (a DVC whose wording changed) counts as ran:
    claiming work was skipped when it was not would hide a rerun."""
    for pattern, detail in _SKIPS.items():
        if pattern.format(stage) in output:
            return "skipped", detail
    if _RAN.format(stage) in output:
        return "ran", ""
    return "ran", "DVC did not say whether it ran the stage"


# A failure is retried only when its output says the cause lies outside the stage and may
# go away by itself: another process holds a lock, a server was briefly unreachable. Any
# other failure (a bug, bad data, out of memory, a killed process) repeats with the same
# inputs, so a retry would only waste the stage's run time: it fails the flow at once.
TRANSIENT_PATTERNS: dict[str, str] = {
    r"Unable to acquire lock": "DVC's repository lock is held by another dvc process",
    r"database is locked": "a SQLite database (MLflow's or Prefect's) is busy",
    r"Connection (refused|reset|aborted)|ConnectionError|Max retries exceeded with url"
    r"|Remote end closed connection|Temporary failure in name resolution":
        "a server (MLflow, a DVC remote) did not answer",
    r"\b(502 Bad Gateway|503 Service Unavailable|504 Gateway Time-?out)\b": "a server answered busy",
    r"Read timed out|ConnectTimeout|ReadTimeout": "a server timed out",
}
TRANSIENT_TAIL_LINES = 100  # the error is at the end; an old recovered warning is not the cause


def transient_cause(output: str) -> str | None:
    """Why a failed command's output looks transient (None: a deterministic failure)."""
    tail = "\n".join(output.splitlines()[-TRANSIENT_TAIL_LINES:])
    for pattern, cause in TRANSIENT_PATTERNS.items():
        if re.search(pattern, tail, flags=re.IGNORECASE):
            return cause
    return None


# ----------------------------------------------------------------------------- sweeps

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


def override_value(value: Any) -> str:
    """A value in the override grammar DVC parses ``-S key=value`` with (Hydra's), such
    that DVC writes back exactly ``value``: strings are always quoted (``'true'``, ``'8'``
    stay strings), ``${`` is escaped (no interpolation), floats keep their type (``1.0``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else
                                                          ("inf" if value > 0 else "-inf"))
    if isinstance(value, str):
        # Inside quotes a backslash is literal except before a quote or `${` (and before
        # the closing quote): those backslashes are doubled, the quote and `${` escaped.
        text = re.sub(r"(\\*)(')", lambda m: m[1] * 2 + "\\'", value)
        text = re.sub(r"(\\*)(\$\{)", lambda m: m[1] * 2 + "\\${", text)
        text = re.sub(r"(\\+)$", lambda m: m[1] * 2, text)
        return f"'{text}'"
    if isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str) or not _KEY.match(key):
                raise ValueError(f"override key {key!r}: DVC's -S accepts only identifier keys in a mapping")
        return "{" + ", ".join(f"{k}: {override_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(override_value(v) for v in value) + "]"
    raise TypeError(f"override value {value!r}: {type(value).__name__} is not a YAML value")


def _lookup(tree: Mapping[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def set_param_args(overrides: Mapping[str, Any], params_tree: Mapping[str, Any]) -> list[str]:
    """``-S`` arguments making params.yaml (read as ``params_tree``) hold ``overrides``,
    with the semantics of :func:`components.config.set_dotted` (a value replaces, sections
    are created). DVC's plain ``key=value`` refuses a key params.yaml lacks (``++`` adds
    it) and MERGES a mapping into an existing one, so a mapping over an existing key is
    deleted first (``~key``) and added back (``+key``)."""
    args: list[str] = []
    for key, value in overrides.items():
        exists, _ = _lookup(params_tree, key)
        if isinstance(value, Mapping) and exists:
            args += ["-S", f"~{key}", "-S", f"+{key}={override_value(value)}"]
        else:
            args += ["-S", f"++{key}={override_value(value)}"]
    return args


def exp_name(sweep: str, variant: str, short_id: str) -> str:
    """``<sweep>-<variant>-<short id>``: unique per sweep run, and a valid git ref name
    (DVC stores each experiment as one)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{sweep}-{variant}-{short_id}").strip("-.")


def exp_run_argv(name: str, overrides: Mapping[str, Any], params_tree: Mapping[str, Any],
                 dvc: Sequence[str] = ("dvc",)) -> list[str]:
    """``dvc exp run -n NAME -S ...`` of one variant (run in the workspace, not queued)."""
    return [*dvc, "exp", "run", "-n", name, *set_param_args(overrides, params_tree)]


def params_drift(expected: Any, written: Any, prefix: str = "") -> list[str]:
    """The dotted keys whose value in ``written`` (params.yaml as DVC rewrote it, read as
    the stages read it) differs from ``expected``. DVC writes YAML 1.2 without the quotes
    the user had, so a string such as ``'on'`` or ``'no'`` comes back a boolean to
    PyYAML (YAML 1.1); a float it writes as ``1e-05`` comes back a string, which params
    validation converts back (no drift)."""
    if isinstance(expected, Mapping) and isinstance(written, Mapping):
        return [key for k in dict.fromkeys([*expected, *written])
                for key in params_drift(expected.get(k), written.get(k), f"{prefix}{k}.")]
    if isinstance(expected, float) and isinstance(written, str):
        try:
            return [] if float(written) == expected else [prefix.rstrip(".")]
        except ValueError:
            pass
    same = expected == written and type(expected) is type(written) or (
        isinstance(expected, (int, float)) and isinstance(written, (int, float))
        and not isinstance(expected, bool) and not isinstance(written, bool) and expected == written)
    return [] if same else [prefix.rstrip(".")]


def variant_order(sweep: SweepParams) -> list[str]:
    """The variants in their declared order, the baseline last: the workspace ends on the
    baseline's outputs, which match the user's params.yaml when the baseline overrides
    nothing (every sweep of params.yaml), so ``dvc status`` is clean after a sweep."""
    return [v for v in sweep.variants if v != sweep.baseline] + [sweep.baseline]


def flat_numbers(tree: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric leaves of a (possibly nested) metrics file, with dotted keys."""
    out: dict[str, float] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out |= flat_numbers(value, f"{prefix}{key}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = float(value)
    return out


# ----------------------------------------------------------------------------- summaries


@dataclass(frozen=True)
class RunLink:
    """One MLflow run, as a summary links it."""

    name: str
    url: str
    stage: str = ""
    variant: str = ""
    status: str = ""


@dataclass
class StageResult:
    """What happened to one stage (or one sweep variant) in a flow run."""

    name: str
    status: StageStatus
    seconds: float = 0.0
    detail: str = ""
    attempts: int = 1
    runs: list[RunLink] = field(default_factory=list)


def mlflow_ui_base(tracking_uri: str, server_url: str | None = None) -> str:
    """Where MLflow run pages live: the tracking server's URL when there is one (an
    ``http(s)`` tracking URI, or a server serving the same store), else the URI itself
    (a SQLite store has no UI of its own; the link still names the store and the run)."""
    return (server_url or tracking_uri).rstrip("/")


def mlflow_run_url(base: str, experiment_id: str, run_id: str) -> str:
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def _seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _links(runs: Iterable[RunLink]) -> str:
    return ", ".join(f"[{_cell(r.name)}]({r.url})" for r in runs)


def stage_table(results: Sequence[StageResult], header: str = "stage") -> str:
    """The markdown table of stages (or variants): status, duration, MLflow runs."""
    lines = [f"| {header} | status | duration | MLflow |", "|---|---|---|---|"]
    for r in results:
        duration = _seconds(r.seconds) if r.status != "not reached" else ""
        lines.append(f"| {_cell(r.name)} | {_cell(_status(r))} | {duration} | {_links(r.runs)} |")
    return "\n".join(lines)


def attach_runs(results: Sequence[StageResult], runs: Sequence[RunLink], key: str = "stage") -> list[RunLink]:
    """Give each result the runs whose ``stage`` (or ``variant``) tag is its name; returns
    the runs no result claimed (nested or foreign runs, listed separately)."""
    by_name = {r.name: r for r in results}
    unclaimed = []
    for run in runs:
        owner = by_name.get(getattr(run, key))
        if owner is not None:
            owner.runs.append(run)
        else:
            unclaimed.append(run)
    return unclaimed


def pipeline_markdown(command: str, results: Sequence[StageResult], other_runs: Sequence[RunLink],
                      total_seconds: float) -> str:
    """The Prefect artifact of a pipeline flow run: what DVC ran, skipped or failed."""
    counts = {s: sum(r.status == s for r in results) for s in ("ran", "skipped", "failed")}
    failed = next((r for r in results if r.status == "failed"), None)
    verdict = f"**failed at stage `{failed.name}`**" if failed else "**completed**"
    lines = [f"# `{command}`", "",
             f"{verdict} in {_seconds(total_seconds)}: {counts['ran']} ran, {counts['skipped']} skipped "
             f"(DVC found them up to date), {counts['failed']} failed.", "", stage_table(results)]
    if other_runs:
        lines += ["", "Other MLflow runs started during this flow run:", ""]
        lines += [f"- [{_cell(r.name)}]({r.url})" + (f" ({r.status})" if r.status else "") for r in other_runs]
    return "\n".join(lines) + "\n"


def _status(r: StageResult) -> str:
    status = r.status + (f" ({r.detail})" if r.detail else "")
    return status + (f", {r.attempts} attempts" if r.attempts > 1 else "")


def sweep_markdown(sweep_name: str, sweep: SweepParams, results: Sequence[StageResult], parent: RunLink | None,
                   exp_names: Mapping[str, str], comparison: str | None = None, figure: str | None = None) -> str:
    """The Prefect artifact of an ablation flow run: each variant's overrides, DVC
    experiment, status and MLflow runs, then the comparison report (when it was built;
    its own title and image links dropped: an artifact cannot show a local PNG, so
    ``figure`` says where the plot is)."""
    lines = [f"# Ablation `{sweep_name}`", ""]
    if sweep.description:
        lines += [sweep.description, ""]
    lines += [f"Baseline: `{sweep.baseline}`." + (f" Parent MLflow run: [{parent.name}]({parent.url})." if parent else ""),
              "", "| variant | overrides | DVC experiment | status | duration | MLflow |", "|---|---|---|---|---|---|"]
    for r in results:
        overrides = ", ".join(f"`{k}={v}`" for k, v in sweep.variants[r.name].items()) or "(none)"
        duration = _seconds(r.seconds) if r.status != "not reached" else ""
        lines.append(f"| {_cell(r.name)} | {_cell(overrides)} | {_cell(exp_names.get(r.name, ''))} | "
                     f"{_cell(_status(r))} | {duration} | {_links(r.runs)} |")
    if comparison:
        body = [line for line in comparison.splitlines() if not line.startswith(("# ", "!["))]
        lines += ["", "## Comparison", *body]
        if figure:
            lines += ["", f"Figure: {figure}"]
    return "\n".join(lines) + "\n"
