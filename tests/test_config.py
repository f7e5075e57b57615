from pathlib import Path

import pytest

from components.config import Params, load_params
from components.errors import ConfigError
from tests.conftest import ROOT


def test_real_params_file_is_valid():
    params = load_params(ROOT / "params.yaml")
    assert isinstance(params, Params)
    # every stage of dvc.yaml has its params section (stage name = params section)
    from pipelines.flows import dvc_stage_order

    for stage in dvc_stage_order():
        assert hasattr(params, stage), f"dvc.yaml stage {stage!r} has no params section"
        assert (ROOT / "pipelines" / f"{stage}.py").exists(), f"dvc.yaml stage {stage!r} has no module"


def test_unknown_key_is_named(tmp_path: Path):
    (tmp_path / "p.yaml").write_text("faces:\n  detect_evry: 3\n")
    with pytest.raises(ConfigError, match=r"p.yaml: faces.detect_evry: unknown key"):
        load_params(tmp_path / "p.yaml")


def test_bad_value_is_named(tmp_path: Path):
    (tmp_path / "p.yaml").write_text("faces:\n  detect_every: 0\ncommon:\n  fps: many\n")
    with pytest.raises(ConfigError) as err:
        load_params(tmp_path / "p.yaml")
    assert "faces.detect_every" in str(err.value) and "common.fps" in str(err.value)


def test_unknown_section_and_bad_yaml(tmp_path: Path):
    (tmp_path / "p.yaml").write_text("trainng: {}\n")
    with pytest.raises(ConfigError, match="trainng: unknown key"):
        load_params(tmp_path / "p.yaml")
    (tmp_path / "q.yaml").write_text("faces: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(tmp_path / "q.yaml")


def test_overrides_and_cross_field_check(tmp_path: Path):
    params = load_params(ROOT / "params.yaml", {"faces.detect_every": 3, "download.synth.n_speakers": 5})
    assert params.faces.detect_every == 3 and params.download.synth.n_speakers == 5
    with pytest.raises(ConfigError, match="download.input is required"):
        load_params(ROOT / "params.yaml", {"download.source": "local"})
    with pytest.raises(ConfigError, match="download.source"):
        load_params(ROOT / "params.yaml", {"download.source": "ftp"})
