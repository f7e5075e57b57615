"""Shared fixtures. Tests build the real config from params.yaml and shrink it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from components.config import Params, load_params

ROOT = Path(__file__).resolve().parents[1]

# No test may reach a hub; tests run offline exactly as CI does.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")  # scratch DVC repos would spawn an analytics daemon each


def tiny_params(tmp_path: Path, **overrides: object) -> Params:
    """The project's real params.yaml, shrunk to run in seconds in ``tmp_path``."""
    base = {
        "common.data_dir": str(tmp_path / "data"),
        "common.workers": 1,
        "common.max_unexpected_errors": 0,  # a bug in a test run fails its stage
        "tracking.uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "download.synth.n_speakers": 4,
        "download.synth.videos_per_speaker": 1,
        "download.synth.clips_per_video": 2,
        "download.synth.clip_seconds": 2.0,
        "download.synth.clip_seconds_jitter": 0.0,
    }
    return load_params(ROOT / "params.yaml", {**base, **overrides})


@pytest.fixture
def params(tmp_path: Path) -> Params:
    return tiny_params(tmp_path)


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The shared real clips (``EARSHOT_REAL_DATA``); tests using it skip when unset."""
    folder = os.environ.get("EARSHOT_REAL_DATA")
    if not folder:
        pytest.skip("EARSHOT_REAL_DATA is not set")
    path = Path(folder).resolve()  # absolute: tests link to the clips from temporary folders
    if not (path / "clips").is_dir():
        pytest.fail(f"EARSHOT_REAL_DATA={folder} has no clips/ folder")
    return path
