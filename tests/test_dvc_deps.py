"""dvc.yaml's deps are the code each stage runs: nothing missing, nothing extra.

The import closure of each stage's command (components/orchestration/code_deps.py)
must be covered by the stage's code deps, and the deps must cover nothing else, so
`dvc repro` reruns exactly the stages whose code changed. When this fails after a code
change, `python -m components.orchestration.code_deps --write` rewrites the deps.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components.orchestration import code_deps as C
from tests.conftest import ROOT

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", list(STAGES))
def test_stage_deps_are_exactly_the_code_it_runs(stage):
    assert C.check_stage(ROOT, stage, STAGES[stage]) == []


def test_every_stage_runs_project_code():
    for name, stage in STAGES.items():
        module = C.command_module(stage["cmd"])
        assert module is not None and module.startswith("pipelines."), f"{name}: {stage['cmd']}"
        assert C.stage_closure(ROOT, stage["cmd"]), name


def test_closure_follows_imports_inside_functions_and_skips_type_checking(tmp_path):
    pkg = tmp_path / "components"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text('"""doc"""\n')
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from components import c\n"
                              "def f():\n    from components.sub import b\n")
    (pkg / "sub" / "b.py").write_text("from . import d\n")
    (pkg / "sub" / "d.py").write_text("X = 1\n")
    (pkg / "c.py").write_text("Y = 2\n")
    rels = {p.relative_to(tmp_path).as_posix() for p in C.module_closure(tmp_path, "components.a")}
    assert rels == {"components/__init__.py", "components/a.py", "components/sub/__init__.py",
                    "components/sub/b.py", "components/sub/d.py"}
    # a folder is listed where the closure holds all its code, single files elsewhere
    closure = {"components/a.py", "components/sub/b.py", "components/sub/d.py"}
    assert C.code_deps(tmp_path, closure) == ["components/a.py", "components/sub"]


def test_a_paper_stage_never_depends_on_the_other_papers_code():
    # a paper's sub-packages and modules (the codec is the video paper's model used as a decoder)
    papers = {"face_sr": ("face_sr",), "talking": ("talking", "video_sr", "codec")}
    for name, stage in STAGES.items():
        closure = C.stage_closure(ROOT, stage["cmd"])
        own = next((paper for paper, parts in papers.items() if any(f"pipelines.{part}." in stage["cmd"]
                                                                    for part in parts)), None)
        for paper, parts in papers.items():
            if paper == own:
                continue
            runs = [f for f in closure for part in parts if f"/{part}/" in f or f.endswith(f"/{part}.py")]
            assert not runs, f"stage {name} ({own or 'data'}) runs code of {paper}: {runs[:3]}"


def test_exemptions_exist_and_say_why():
    for path, why in C.EXEMPT.items():
        assert (ROOT / path).exists(), path
        assert len(why) > 20


def _status(project: Path) -> dict[str, list]:
    out = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=project, capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out or "{}")


def test_changing_features_makes_dvc_status_list_exactly_its_readers(tmp_path):
    """Edit components/data/features.py in a copy of the project (code, dvc.yaml, dvc.lock,
    params.yaml; no data): the stages `dvc status` reports with changed code deps that
    cover features.py are exactly the stages that import it."""
    for folder in C.CODE_ROOTS:
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for rel in ("dvc.yaml", "dvc.lock", "params.yaml", ".dvc/config", ".dvcignore"):
        if (ROOT / rel).exists():
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, tmp_path / rel)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)  # DVC wants the SCM root it lives in
    target = "components/data/features.py"
    readers = {name for name, st in STAGES.items() if target in C.stage_closure(ROOT, st["cmd"])}
    assert readers and "download" not in readers

    def listing(status: dict[str, list]) -> set[str]:
        hit = set()
        for stage, changes in status.items():
            for change in changes:
                deps = change.get("changed deps", {}) if isinstance(change, dict) else {}
                if any(target == d or target.startswith(d.rstrip("/") + "/") for d in deps):
                    hit.add(stage.split(":")[-1])
        return hit

    before = listing(_status(tmp_path))
    with (tmp_path / target).open("a") as f:
        f.write("\n# changed\n")
    after = listing(_status(tmp_path))
    assert after == readers, f"dvc status lists {sorted(after)}, the stages reading {target} are {sorted(readers)}"
    assert before <= readers
