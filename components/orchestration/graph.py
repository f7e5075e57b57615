"""The pipeline graph, read from ``dvc.yaml``: which stages ``dvc repro [TARGET]``
considers, in the order it runs them.

``dvc.yaml`` is the only pipeline graph: nothing here keeps a stage list. A stage
depends on another when one of its deps is (or lies inside, or contains) one of the
other's outs, metrics or plots, as DVC links them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from components.errors import ConfigError
from components.io import project_root


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
