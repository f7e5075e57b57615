"""The flows of pipelines/flows.py and their pure helpers (components/orchestration/:
graph, repro, experiments, summaries).

The helpers are tested directly; the flows run for real on scratch projects (git + DVC in
a temp folder, stages that are one-line Python commands) against a temporary Prefect API
and a temporary SQLite MLflow store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.config import SweepParams, set_dotted
from components.errors import ConfigError
from components.orchestration.experiments import (
    exp_name,
    exp_run_argv,
    override_value,
    params_drift,
    set_param_args,
    variant_order,
)
from components.orchestration.graph import dvc_stage_order, stages_for_target
from components.orchestration.repro import repro_outcome, transient_cause
from components.orchestration.summaries import RunLink, StageResult, attach_runs, pipeline_markdown, sweep_markdown
from components.tracking import run_url, ui_base

DVC = [sys.executable, "-m", "dvc"]

# ----------------------------------------------------------------------------- the graph


def test_real_graph_order():
    order = dvc_stage_order()
    assert order.index("download") < order.index("faces") < order.index("audio") < order.index("shards")
    assert order.index("train_fusion") < order.index("evaluate")


def test_flows_module_keeps_the_graph_helpers():
    import pipelines.flows

    assert pipelines.flows.dvc_stage_order is dvc_stage_order
    assert callable(pipelines.flows.run_data_stages)


def test_order_follows_deps_not_file_order(tmp_path: Path):
    graph = {"stages": {
        "b": {"cmd": "x", "deps": ["data/a"], "outs": ["data/b"]},
        "a": {"cmd": "x", "outs": [{"data/a": {"persist": True}}]},
        "c": {"cmd": "x", "deps": ["data/b/sub", "data/a"], "outs": ["data/c"]},
    }}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(graph, sort_keys=False))
    assert dvc_stage_order(tmp_path / "dvc.yaml") == ["a", "b", "c"]


def test_cycle_is_reported(tmp_path: Path):
    graph = {"stages": {"a": {"cmd": "x", "deps": ["data/b"], "outs": ["data/a"]},
                        "b": {"cmd": "x", "deps": ["data/a"], "outs": ["data/b"]}}}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(graph))
    with pytest.raises(ConfigError, match="cycle"):
        dvc_stage_order(tmp_path / "dvc.yaml")


def test_target_takes_its_upstream_only(tmp_path: Path):
    graph = {"stages": {
        "data": {"cmd": "x", "outs": ["data"]},
        "other": {"cmd": "x", "outs": ["other.txt"]},
        # a dep on a folder holding another stage's output (out inside dep) links them too
        "train": {"cmd": "x", "deps": ["data"], "outs": ["models/g/model.pt"], "metrics": ["models/g/m.json"]},
        "report": {"cmd": "x", "deps": ["models", "other.txt"], "outs": ["report.md"]},
        "eval": {"cmd": "x", "deps": ["models/g/model.pt"], "metrics": ["eval.json"]},
    }}
    path = tmp_path / "dvc.yaml"
    path.write_text(yaml.safe_dump(graph, sort_keys=False))
    assert stages_for_target("eval", path) == ["data", "train", "eval"]
    assert stages_for_target("dvc.yaml:report", path) == ["other", "data", "train", "report"]
    assert stages_for_target(None, path) == ["data", "other", "train", "report", "eval"]
    with pytest.raises(ConfigError, match="no stage 'nope' in dvc.yaml; stages: data, other"):
        stages_for_target("nope", path)


# ----------------------------------------------------------------------------- DVC's output


def test_ran_or_skipped_is_read_from_dvc():
    assert repro_outcome("faces", "Running stage 'faces':\n> python -m pipelines.faces\n") == ("ran", "")
    assert repro_outcome("faces", "Stage 'faces' didn't change, skipping\nData and pipelines are up to date.") == \
        ("skipped", "up to date")
    assert repro_outcome("faces", "Stage 'faces' is cached - skipping run, checking out outputs") == \
        ("skipped", "restored from the run cache")
    # another stage's words do not count, and silence is not taken for a skip
    assert repro_outcome("faces", "Stage 'audio' didn't change, skipping")[0] == "ran"


def test_transient_failures_are_told_from_deterministic_ones():
    assert transient_cause("ERROR: Unable to acquire lock. Most likely another DVC process is running") \
        == "DVC's repository lock is held by another dvc process"
    assert "SQLite" in transient_cause("sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) database is locked")
    assert "did not answer" in transient_cause(
        "requests.exceptions.ConnectionError: HTTPConnectionPool(host='127.0.0.1', port=5000): Max retries exceeded "
        "with url: /api/2.0/mlflow/runs/create (Caused by NewConnectionError: [Errno 111] Connection refused)")
    assert transient_cause("Traceback (most recent call last):\nValueError: bad shape\nexited with 1") is None
    assert transient_cause("torch.OutOfMemoryError: CUDA out of memory") is None
    # a connection warning long before the real error is not its cause
    old = "WARNING: Connection refused, retrying\n" + "step\n" * 150 + "KeyError: 'x'"
    assert transient_cause(old) is None


# ----------------------------------------------------------------------------- sweeps


def test_override_values_keep_their_yaml_type():
    assert [override_value(v) for v in (True, False, None, 16, 1.0, 2.5e-5)] == \
        ["true", "false", "null", "16", "1.0", "2.5e-05"]
    assert override_value("true") == "'true'" and override_value("8") == "'8'"
    assert override_value("it's ${x}") == "'it\\'s \\${x}'"
    assert override_value("tail\\") == "'tail\\\\'"
    assert override_value({"resolution": 32, "name": "a b"}) == "{resolution: 32, name: 'a b'}"
    assert override_value([1, "a", [2.0]]) == "[1, 'a', [2.0]]"
    with pytest.raises(ValueError, match="identifier keys"):
        override_value({"a b": 1})


def test_set_param_args_replace_like_params_overrides():
    tree = {"face_sr": {"audio": True, "overrides": {"latent_dim": 64}}}
    args = set_param_args({"face_sr.audio": False, "face_sr.overrides": {"resolution": 32},
                           "face_sr.new": 1, "extra.section.key": "x"}, tree)
    assert args == ["-S", "++face_sr.audio=false",
                    "-S", "~face_sr.overrides", "-S", "+face_sr.overrides={resolution: 32}",
                    "-S", "++face_sr.new=1", "-S", "++extra.section.key='x'"]
    assert exp_run_argv("audio-off-abc", {"face_sr.audio": False}, tree)[:5] == ["dvc", "exp", "run", "-n", "audio-off-abc"]
    assert exp_run_argv("a", {"face_sr.audio": False}, tree, target="evaluate")[-1] == "evaluate"


def test_exp_names_are_valid_refs_and_the_baseline_runs_last():
    assert exp_name("input_size", "16x16", "3f2a9c1") == "input_size-16x16-3f2a9c1"
    assert exp_name("my sweep", "a/b:c", "1") == "my-sweep-a-b-c-1"
    sweep = SweepParams(description="seconds of speech", evaluation="evaluate", baseline="4s",
                        variants={"4s": {}, "1s": {"face_sr.audio_seconds": 1.0}, "2s": {"face_sr.audio_seconds": 2.0}})
    assert variant_order(sweep) == ["1s", "2s", "4s"]


def test_params_drift_finds_values_dvc_changed():
    expected = {"a": {"name": "on", "x": 1e-05, "n": 2, "f": 1.0, "flag": True}, "b": None}
    assert params_drift(expected, {"a": {"name": "on", "x": "1e-05", "n": 2, "f": 1.0, "flag": True}, "b": None}) == []
    assert params_drift(expected, {"a": {"name": True, "x": 1e-05, "n": 2.0, "f": 1, "flag": 1}}) == ["a.name", "a.flag"]
    assert params_drift({"a": {}}, {"a": {"new": 1}}) == ["a.new"]


@pytest.fixture
def git_project(tmp_path: Path) -> Iterator[Any]:
    """A function making a git + DVC project in ``tmp_path`` from dvc.yaml stages, params
    and extra files, committed (``dvc exp run`` needs a commit)."""

    def make(stages: dict[str, Any], params: dict[str, Any], files: dict[str, str] | None = None) -> Path:
        root = tmp_path / "project"
        root.mkdir()
        git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
        subprocess.run([*git, "init", "-q"], cwd=root, check=True)
        subprocess.run([*DVC, "init", "-q"], cwd=root, check=True)
        (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
        (root / "params.yaml").write_text("# the user's comment\n" + yaml.safe_dump(params, sort_keys=False))
        for name, text in (files or {}).items():
            (root / name).write_text(text)
        subprocess.run([*git, "add", "-A"], cwd=root, check=True)
        subprocess.run([*git, "commit", "-qm", "init"], cwd=root, check=True)
        return root

    yield make


def test_dvc_exp_run_writes_the_values_set_param_args_mean(git_project):
    """The -S arguments parsed by a real `dvc exp run` give what components.config's
    override semantics give: types kept, mappings replaced, sections created."""
    params = {"face_sr": {"audio": True, "audio_seconds": 4.0, "overrides": {"latent_dim": 64}, "name": "x"}}
    show = "import json, yaml; print('PARAMS=' + json.dumps(yaml.safe_load(open('params.yaml'))))"
    root = git_project({"show": {"cmd": f'python -c "{show}"', "params": ["face_sr"]}}, params)
    overrides = {"face_sr.audio": False, "face_sr.audio_seconds": 1.0, "face_sr.overrides": {"resolution": 32},
                 "face_sr.name": "it's ${x} \\ 'q'", "face_sr.tags": ["a", 1, None], "new.key": "true"}
    argv = exp_run_argv("check", overrides, params, DVC)
    out = subprocess.run(argv, cwd=root, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1",
                         "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"})
    assert out.returncode == 0, out.stdout + out.stderr
    written = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("PARAMS="))[7:])
    expected = json.loads(json.dumps(params))
    for key, value in overrides.items():
        set_dotted(expected, key, value)
    assert written == expected
    assert isinstance(written["face_sr"]["audio_seconds"], float)


# ----------------------------------------------------------------------------- summaries


def test_summary_markdown_names_stages_statuses_and_runs():
    results = [StageResult("download", "skipped", 1.2, "up to date"), StageResult("faces", "ran", 125.0, attempts=2),
               StageResult("audio", "failed", 3.0, "exit 255"), StageResult("shards", "not reached")]
    url = run_url(ui_base("http://127.0.0.1:5000/"), "1", "abc")
    assert url == "http://127.0.0.1:5000/#/experiments/1/runs/abc"
    runs = [RunLink("faces", url, stage="faces"), RunLink("nested", url + "2", stage="")]
    other = attach_runs(results, runs)
    assert [r.name for r in other] == ["nested"] and results[1].runs == [runs[0]]
    md = pipeline_markdown("dvc repro", results, other, 130.0)
    assert "**failed at stage `audio`** in 2.2 min: 1 ran, 1 skipped" in md
    assert "| download | skipped (up to date) | 1.2 s |  |" in md
    assert f"| faces | ran, 2 attempts | 2.1 min | [faces]({url}) |" in md
    assert "| audio | failed (exit 255) | 3.0 s |  |" in md
    assert "| shards | not reached |  |  |" in md
    assert f"- [nested]({url}2)" in md


def test_sweep_markdown_lists_variants_and_the_comparison():
    sweep = SweepParams(description="voice or not", evaluation="evaluate", baseline="on", variants={"on": {}, "off": {"face_sr.audio": False}})
    results = [StageResult("off", "ran", 10.0, runs=[RunLink("off", "u/1")]), StageResult("on", "failed", 2.0, "exit 1")]
    report = "# Ablation `audio`\n\n## seen\n\n| metric | on |\n\n![audio](comparison.png)\n"
    md = sweep_markdown("audio", sweep, results, RunLink("sweep audio", "u"), {"off": "audio-off-1", "on": "audio-on-1"},
                        report, "results/compare/audio/comparison.png")
    assert "voice or not" in md and "Baseline: `on`. Parent MLflow run: [sweep audio](u)." in md
    assert "| off | `face_sr.audio=False` | audio-off-1 | ran | 10.0 s | [off](u/1) |" in md
    assert "| on | (none) | audio-on-1 | failed (exit 1) | 2.0 s |  |" in md
    assert md.count("# Ablation") == 1 and "![" not in md
    assert "## Comparison\n\n## seen\n\n| metric | on |" in md
    assert md.rstrip().endswith("Figure: results/compare/audio/comparison.png")


# ----------------------------------------------------------------------------- the flows


@pytest.fixture(scope="module")
def prefect_api() -> Iterator[None]:
    """A temporary Prefect API with its own database for the flows of this module."""
    from prefect.testing.utilities import prefect_test_harness

    before = os.environ.get("PREFECT_SERVER_ANALYTICS_ENABLED")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    try:
        with prefect_test_harness(server_startup_timeout=180):
            yield
    finally:
        if before is None:
            os.environ.pop("PREFECT_SERVER_ANALYTICS_ENABLED", None)
        else:
            os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = before


def artifact_markdown(state: Any, key: str = "pipeline-summary") -> str:
    """The markdown artifact ``key`` a flow run published."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
            key=ArtifactFilterKey(any_=[key])))
    assert len(found) == 1, found
    return found[0].data


# A stage that records an MLflow run as the real stages do (components.tracking.stage_run).
TRACKED_STAGE = """\
import sys
from pathlib import Path
from components.config import load_params
from components.tracking import stage_run

name = sys.argv[1]
with stage_run(name, load_params("params.yaml"), root=Path.cwd()) as run:
    Path(f"{name}.txt").write_text(name)
    run.log_metrics({"value": 1.0})
"""


def _params(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {"tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
            "orchestration": {"stage_retries": 1, "retry_delay_seconds": 0}, **extra}


def test_pipeline_flow_runs_then_skips_and_publishes_a_summary(prefect_api, git_project, tmp_path: Path):
    from pipelines.flows import pipeline

    stages = {
        "one": {"cmd": "python stage.py one", "deps": ["stage.py"], "outs": ["one.txt"]},
        "two": {"cmd": "python -c \"open('two.txt', 'w').write(open('one.txt').read() * 2); print('made two')\"",
                "deps": ["one.txt"], "outs": ["two.txt"]},
        "elsewhere": {"cmd": "python -c \"open('x.txt', 'w').write('x')\"", "outs": ["x.txt"]},
    }
    root = git_project(stages, _params(tmp_path), {"stage.py": TRACKED_STAGE})
    state = pipeline(target="two", project=str(root), return_state=True)
    first = state.result()
    assert [(r.name, r.status) for r in first] == [("one", "ran"), ("two", "ran")]
    assert (root / "two.txt").read_text() == "oneone" and not (root / "x.txt").exists()
    [link] = first[0].runs
    assert link.url.startswith(f"sqlite:///{tmp_path / 'mlflow.db'}/#/experiments/") and link.stage == "one"
    md = artifact_markdown(state)
    assert "# `dvc repro two`" in md and "**completed**" in md and "2 ran, 0 skipped" in md
    assert "| one | ran | " in md and f"[one]({link.url})" in md

    again = pipeline(target="two", project=str(root))
    assert [(r.name, r.status, r.detail) for r in again] == [("one", "skipped", "up to date"),
                                                              ("two", "skipped", "up to date")]
    forced = pipeline(target="one", force=True, project=str(root))
    assert [(r.name, r.status) for r in forced] == [("one", "ran")]

    from typer.testing import CliRunner

    from pipelines.cli import app

    cli = CliRunner().invoke(app, ["flow", "run", "two", "--project", str(root)])
    assert cli.exit_code == 0, cli.output
    assert "one" in cli.output and "skipped (up to date)" in cli.output and "elsewhere" not in cli.output


def test_pipeline_flow_retries_transient_failures_and_stops_at_a_deterministic_one(prefect_api, git_project,
                                                                                    tmp_path: Path):
    from pipelines.flows import StageFailed, pipeline

    flaky = ("import os, sys\n"
             "first = not os.path.exists('tried')\n"
             "open('tried', 'w').close()\n"
             "if first:\n"
             "    print('sqlite3.OperationalError: database is locked')\n"
             "    sys.exit(1)\n"
             "open('flaky.txt', 'w').write('ok')\n")
    stages = {
        "flaky": {"cmd": "python flaky.py", "outs": ["flaky.txt"]},
        "bad": {"cmd": "python -c \"import sys; print('ValueError: broken input'); sys.exit(3)\"",
                "deps": ["flaky.txt"], "outs": ["bad.txt"]},
        "after": {"cmd": "python -c \"print('never')\"", "deps": ["bad.txt"]},
    }
    root = git_project(stages, _params(tmp_path), {"flaky.py": flaky})
    state = pipeline(project=str(root), return_state=True)
    assert state.is_failed()
    with pytest.raises(StageFailed) as failed:
        state.result()
    assert failed.value.name == "bad" and failed.value.cause is None and failed.value.attempts == 1
    assert "ValueError: broken input" in str(failed.value)
    md = artifact_markdown(state)
    assert "**failed at stage `bad`**" in md
    assert "| flaky | ran, 2 attempts |" in md
    assert "| bad | failed (exit 255), 1 attempts |" not in md and "| bad | failed (exit 255) |" in md
    assert "| after | not reached |" in md

    from typer.testing import CliRunner

    from pipelines.cli import app

    cli = CliRunner().invoke(app, ["flow", "run", "--project", str(root)])
    assert cli.exit_code == 1 and "error: stage bad: exited with 255 (deterministic)" in cli.output


# ----------------------------------------------------------------------------- ablation

FAKE_EVALUATE = """\
import json
from pathlib import Path
from components.config import load_params
from components.tracking import stage_run

params = load_params("params.yaml")
audio = params.face_sr.audio
metrics = {"seen.fused.psnr": 20.0 + 2.0 * audio, "unseen.fused.id_cos": 0.5 + 0.1 * audio}
out = Path(params.evaluate.out_dir)
out.mkdir(parents=True, exist_ok=True)
with stage_run("evaluate", params, root=Path.cwd()) as run:
    (out / "metrics.json").write_text(json.dumps(metrics))
    run.log_metrics(metrics)
"""


@pytest.mark.slow
def test_ablation_flow_groups_variant_runs_under_a_parent(prefect_api, git_project, tmp_path: Path):
    import mlflow

    from pipelines.flows import ablation

    params = _params(tmp_path, face_sr={"audio": True}, evaluate={"out_dir": "results/face_sr"},
                     sweeps={"toy": {"description": "voice or not", "evaluation": "evaluate", "baseline": "voice",
                                     "variants": {"voice": {}, "mute": {"face_sr.audio": False}}}})
    stages = {"evaluate": {"cmd": "python evaluate.py", "deps": ["evaluate.py"], "params": ["face_sr.audio"],
                           "metrics": [{"results/face_sr/metrics.json": {"cache": False}}]},
              # another stage the override reaches, which the sweep does not compare on: not run
              "elsewhere": {"cmd": "python -c \"open('elsewhere.txt', 'w').write('ran')\"", "params": ["face_sr.audio"],
                            "outs": [{"elsewhere.txt": {"cache": False}}]}}
    root = git_project(stages, params, {"evaluate.py": FAKE_EVALUATE})
    before = (root / "params.yaml").read_bytes()
    state = ablation(sweep="toy", project=str(root), return_state=True)
    results = state.result()
    assert [(r.name, r.status) for r in results] == [("mute", "ran"), ("voice", "ran")]
    assert (root / "params.yaml").read_bytes() == before  # dvc exp run left its -S values there; restored
    assert not (root / "elsewhere.txt").exists()  # only the evaluation stage (and its upstream) was reproduced

    client = mlflow.MlflowClient(tracking_uri=params["tracking"]["uri"])
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    [parent] = [r for r in runs if r.data.tags.get("kind") == "sweep"]
    assert parent.info.status == "FINISHED" and parent.info.run_name.startswith("sweep toy ")
    assert {k: parent.data.tags[k] for k in ("sweep", "baseline")} == {"sweep": "toy", "baseline": "voice"}
    assert parent.data.tags["git_sha"] and parent.data.params["variants.mute.face_sr.audio"] == "False"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    variants = {r.data.tags["variant"]: r for r in children if r.data.tags.get("kind") == "variant"}
    stage_runs = {r.data.tags["variant"]: r for r in children if r.data.tags.get("stage") == "evaluate"}
    assert set(variants) == set(stage_runs) == {"voice", "mute"}
    assert len(children) == 4
    exp = f"toy-mute-{parent.info.run_id[:7]}"
    assert variants["mute"].data.tags["dvc_exp_name"] == stage_runs["mute"].data.tags["dvc_exp_name"] == exp
    assert variants["mute"].data.metrics == {"seen.fused.psnr": 20.0, "unseen.fused.id_cos": 0.5}
    assert variants["voice"].data.metrics["seen.fused.psnr"] == 22.0
    assert variants["mute"].data.params == {"face_sr.audio": "False"} and variants["mute"].data.tags["sweep"] == "toy"
    assert stage_runs["mute"].data.tags["sweep"] == "toy"
    names = subprocess.run([*DVC, "exp", "list", "--name-only"], cwd=root, capture_output=True, text=True).stdout
    assert set(names.split()) == {exp, f"toy-voice-{parent.info.run_id[:7]}"}
    # the workspace ends on the baseline's outputs, and the comparison went to the parent run
    assert json.loads((root / "results/face_sr/metrics.json").read_text())["seen.fused.psnr"] == 22.0
    assert (root / "results/compare/toy/comparison.md").exists()
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "comparison")} == \
        {"comparison/comparison.md", "comparison/comparison.png"}
    md = artifact_markdown(state, "ablation-toy")
    assert "# Ablation `toy`" in md and f"| mute | `face_sr.audio=False` | {exp} | ran |" in md
    assert "## Comparison" in md and "fused.psnr" in md


# ----------------------------------------------------------------------------- deployments


@pytest.mark.timeout(120)  # were a server found after all, serve would run forever
def test_serve_without_a_server_says_what_to_do(git_project, tmp_path: Path, monkeypatch):
    from typer.testing import CliRunner

    from pipelines.cli import app

    from prefect.settings import PREFECT_API_URL, temporary_settings

    root = git_project({"one": {"cmd": "python -c \"print(1)\""}},
                       {"orchestration": {"prefect_port": 4391, "state_dir": str(tmp_path / "state")}})
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):  # not even the API of another test
        result = CliRunner().invoke(app, ["serve", "--project", str(root)])
    assert result.exit_code == 2
    assert "needs a running Prefect server" in result.output and "earshot server up" in result.output
    assert "PREFECT_API_URL=http://127.0.0.1:4391/api" in result.output


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_served_pipeline_runs_from_its_deployment(prefect_api, git_project, tmp_path: Path):
    """`earshot serve` registers both deployments on the server; a run of the pipeline's,
    created as the UI creates it (with a parameter), completes."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    root = git_project({"one": {"cmd": "python -c \"open('one.txt', 'w').write('1')\"", "outs": ["one.txt"]},
                        "two": {"cmd": "python -c \"open('two.txt', 'w').write('2')\"", "outs": ["two.txt"]}},
                       _params(tmp_path))
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen([str(Path(sys.executable).parent / "earshot"), "serve", "--project", str(root)],
                              cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        with get_client(sync_client=True) as client:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                names = {d.name for d in client.read_deployments()}
                if {"earshot-pipeline", "earshot-ablation"} <= names:
                    break
                assert server.poll() is None, (tmp_path / "serve.log").read_text()
                time.sleep(1)
            assert {"earshot-pipeline", "earshot-ablation"} <= names, (tmp_path / "serve.log").read_text()
            deployment = client.read_deployment_by_name("pipeline/earshot-pipeline")
            assert deployment.parameters == {"project": str(root)}
            assert "sweep" in client.read_deployment_by_name("ablation/earshot-ablation").parameter_openapi_schema[
                "required"]
            run = client.create_flow_run_from_deployment(deployment.id, parameters={"target": "two"})
            while time.monotonic() < deadline + 120:
                state = client.read_flow_run(run.id).state
                if state is not None and state.is_final():
                    break
                time.sleep(1)
        assert state.is_completed(), (tmp_path / "serve.log").read_text()
        assert (root / "two.txt").exists() and not (root / "one.txt").exists()
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()


def test_the_cli_turns_prefect_usage_reports_off_unless_the_user_chose():
    """Every Prefect server a command starts (a flow's temporary one included) inherits it."""
    check = ("import os; os.environ.pop('PREFECT_SERVER_ANALYTICS_ENABLED', None); import pipelines.cli; "
             "print(os.environ['PREFECT_SERVER_ANALYTICS_ENABLED'])")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_SERVER_ANALYTICS_ENABLED"}
    assert subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True,
                          check=True).stdout.strip() == "false"
    mine = subprocess.run([sys.executable, "-c", "import os, pipelines.cli; "
                           "print(os.environ['PREFECT_SERVER_ANALYTICS_ENABLED'])"],
                          env=env | {"PREFECT_SERVER_ANALYTICS_ENABLED": "true"}, capture_output=True, text=True,
                          check=True).stdout.strip()
    assert mine == "true"
