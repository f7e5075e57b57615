"""Running the stages of ``dvc.yaml`` outside DVC (``earshot data prepare``).

``dvc.yaml`` is the only pipeline graph: the stage order comes from it, never from a
list kept here. Each stage module in ``pipelines/`` exposes ``run(params, progress)``,
which its own ``main()`` calls after parsing arguments.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import yaml

from components.config import Params
from components.io import project_root

DATA_STAGES = ("download", "faces", "audio", "shards", "report")


def dvc_stage_order(dvc_yaml: Path | None = None) -> list[str]:
    """Stage names of dvc.yaml in dependency order (a topological sort of deps on outs)."""
    path = dvc_yaml or project_root(Path(__file__).parent) / "dvc.yaml"
    stages: dict[str, Any] = (yaml.safe_load(path.read_text()) or {}).get("stages", {})

    def paths(entries: list[Any]) -> list[str]:
        return [next(iter(e)) if isinstance(e, dict) else str(e) for e in entries or []]

    producer = {out: name for name, st in stages.items() for out in paths(st.get("outs", []))}
    order: list[str] = []

    def visit(name: str, stack: tuple[str, ...] = ()) -> None:
        if name in order:
            return
        if name in stack:
            raise ValueError(f"dvc.yaml: cycle through {' -> '.join((*stack, name))}")
        for dep in paths(stages[name].get("deps", [])):
            for out, prod in producer.items():
                if prod != name and (dep == out or dep.startswith(out.rstrip("/") + "/")):
                    visit(prod, (*stack, name))
        order.append(name)

    for name in stages:
        visit(name)
    return order



def run_data_stages(params: Params, *, progress: bool = True) -> list[dict[str, Any]]:
    """Run the data stages of dvc.yaml, in its order, on ``params.common.data_dir``."""
    summaries = []
    for name in dvc_stage_order():
        if name in DATA_STAGES:
            module = importlib.import_module(f"pipelines.{name}")
            summaries.append(module.run(params, progress=progress))
    return summaries
