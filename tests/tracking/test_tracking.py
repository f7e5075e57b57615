from pathlib import Path

import mlflow
import pytest
import yaml

from components.tracking import input_hashes, resolve_tracking_uri, stage_run
from tests.conftest import tiny_params


def test_default_uri_is_project_local_sqlite(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None, tmp_path) == f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert resolve_tracking_uri(None, tmp_path) == "http://127.0.0.1:5000"
    assert resolve_tracking_uri("sqlite:///x.db", tmp_path) == "sqlite:///x.db"


def test_input_hash_prefers_dvc_lock(tmp_path: Path):
    (tmp_path / "data/raw").mkdir(parents=True)
    (tmp_path / "data/raw/a.txt").write_text("a")
    (tmp_path / "data/other").mkdir()
    (tmp_path / "data/other/b.txt").write_text("b")
    lock = {"schema": "2.0", "stages": {"download": {"outs": [{"path": "data/raw", "md5": "abc.dir"}]}}}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    hashes = input_hashes(["data/raw", "data/other"], tmp_path)
    assert hashes["data/raw"] == "md5:abc.dir"
    assert hashes["data/other"].startswith("sha256:")


def test_stage_run_logs_params_tags_metrics(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "exp-test")
    params = tiny_params(tmp_path)
    (tmp_path / "in").mkdir()
    (tmp_path / "in/x").write_text("x")
    with stage_run("faces", params, inputs=[tmp_path / "in"], root=tmp_path) as run:
        run.log_metrics({"kept": 3, "rejected": 1})
        report = tmp_path / "r.json"
        report.write_text("{}")
        run.log_artifact(report)
    mlflow.set_tracking_uri(params.tracking.uri)
    got = mlflow.get_run(run.run_id)
    assert got.data.params["faces.detect_every"] == str(params.faces.detect_every)
    assert got.data.params["common.fps"] == "25"
    assert got.data.tags["stage"] == "faces" and got.data.tags["dvc_exp_name"] == "exp-test"
    assert any(k.startswith("input.") for k in got.data.tags)
    assert got.data.metrics == {"kept": 3.0, "rejected": 1.0}
    artifacts = [a.path for a in mlflow.MlflowClient().list_artifacts(run.run_id)]
    assert artifacts == ["r.json"]


def test_tracking_disabled_records_locally(tmp_path: Path):
    params = tiny_params(tmp_path, **{"tracking.enabled": False})
    with stage_run("faces", params) as run:
        run.log_metrics({"kept": 2})
    assert run.run_id is None and run.metrics == {"kept": 2.0}
    assert not (tmp_path / "mlflow.db").exists()


def test_inputs_outside_the_project_are_tagged(tmp_path: Path):
    root = tmp_path / "project"
    root.mkdir()
    outside = tmp_path / "elsewhere" / "raw"
    outside.mkdir(parents=True)
    (outside / "a").write_text("a")
    (root / "data").mkdir()
    (root / "data" / "b").write_text("b")
    hashes = input_hashes([outside, "data", root / "data"], root)
    assert set(hashes) == {str(outside).lstrip("/"), "data"}
    params = tiny_params(tmp_path)
    with stage_run("faces", params, inputs=[outside], root=root) as run:
        pass
    mlflow.set_tracking_uri(params.tracking.uri)
    assert f"input.{str(outside).lstrip('/')}" in mlflow.get_run(run.run_id).data.tags


def test_artifacts_live_beside_the_sqlite_database(tmp_path: Path):
    from components.tracking import artifact_location

    assert artifact_location(f"sqlite:///{tmp_path}/db/mlflow.db") == (tmp_path / "db" / "mlartifacts").as_uri()
    assert artifact_location("http://127.0.0.1:5000") is None
    params = tiny_params(tmp_path)
    with stage_run("report", params, root=tmp_path / "elsewhere") as run:
        (tmp_path / "a.txt").write_text("a")
        run.log_artifact(tmp_path / "a.txt")
    assert list((tmp_path / "mlartifacts").rglob("a.txt"))
    assert not (tmp_path / "elsewhere").exists()


def test_stage_run_is_a_child_of_the_sweep_parent(tmp_path: Path, monkeypatch):
    from components.tracking import sweep_env, use_experiment

    params = tiny_params(tmp_path)
    experiment_id = use_experiment(params.tracking.experiment, params.tracking.uri)
    parent = mlflow.MlflowClient().create_run(experiment_id, run_name="sweep audio", tags={"kind": "sweep"})
    for key, value in sweep_env(parent.info.run_id, "audio", "audio_off").items():
        monkeypatch.setenv(key, value)
    # The child goes to its parent's experiment even when this process's params name another.
    other = tiny_params(tmp_path, **{"tracking.experiment": "elsewhere"})
    with stage_run("faces", other, root=tmp_path) as run:
        pass
    got = mlflow.get_run(run.run_id)
    assert got.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert got.info.experiment_id == experiment_id
    assert (got.data.tags["sweep"], got.data.tags["variant"], got.data.tags["stage"]) == ("audio", "audio_off", "faces")


def test_stage_run_without_the_sweep_env_is_a_top_level_run(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("EARSHOT_PARENT_RUN_ID", raising=False)
    params = tiny_params(tmp_path)
    with stage_run("faces", params, root=tmp_path) as run:
        pass
    tags = mlflow.get_run(run.run_id).data.tags
    assert "mlflow.parentRunId" not in tags and "sweep" not in tags


def test_unknown_parent_run_is_a_clear_error(tmp_path: Path, monkeypatch):
    from components.errors import ConfigError

    monkeypatch.setenv("EARSHOT_PARENT_RUN_ID", "0" * 32)
    with pytest.raises(ConfigError, match="EARSHOT_PARENT_RUN_ID=0+: no such run"):
        with stage_run("faces", tiny_params(tmp_path), root=tmp_path):
            pass
