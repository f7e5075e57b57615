"""Model files cannot run code: each loader refuses a crafted pickle, naming the file.

Every crafted file is a ``torch.save`` of an object whose ``__reduce__`` would create a
marker file when unpickled by a full unpickler; each test asserts the marker is never
created and that the one-line error names the input.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

from components.errors import ConfigError, EarshotError


class _Payload:
    """Unpickling this runs ``touch marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _crafted(path: Path, wrap=lambda payload: {"state_dict": payload}) -> tuple[Path, Path]:
    marker = path.parent / f"{path.name}.ran"
    torch.save(wrap(_Payload(marker)), path)
    return path, marker


def _assert_refused(exc: pytest.ExceptionInfo, path: Path, marker: Path) -> None:
    message = str(exc.value)
    assert str(path) in message and "\n" not in message
    assert not marker.exists()


def test_pyannote_checkpoint_is_refused_before_it_runs(tmp_path):
    pytest.importorskip("pyannote.audio")
    from components.audio.vad import check_vad_config

    path, marker = _crafted(tmp_path / "evil.ckpt",
                            lambda p: {"state_dict": {}, "pyannote.audio": {"specifications": p}})
    with pytest.raises(ConfigError) as exc:
        check_vad_config("pyannote", str(path), 0.5)
    _assert_refused(exc, path, marker)
    assert "audio.pyannote_checkpoint" in str(exc.value) and "weights-only" in str(exc.value)


def test_pyannote_checkpoint_naming_a_foreign_class_is_refused(tmp_path):
    pytest.importorskip("pyannote.audio")
    from components.audio.vad import check_vad_config

    path = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"args": ["touch x"]},
                "pyannote.audio": {"architecture": {"module": "subprocess", "class": "Popen"}}}, path)
    with pytest.raises(ConfigError, match=r"foreign.ckpt .*subprocess\.Popen is not one of pyannote"):
        check_vad_config("pyannote", str(path), 0.5)


def test_lpips_alexnet_weights_are_refused(tmp_path):
    from components.evaluation.metrics import load_lpips

    path, marker = _crafted(tmp_path / "alexnet-owt-7be5be79.pth")
    with pytest.raises(EarshotError) as exc:
        load_lpips(path)
    _assert_refused(exc, path, marker)
    assert "evaluate.lpips_alexnet_path" in str(exc.value)


def test_voice_encoder_weights_are_refused(tmp_path):
    from components.audio.speaker import load_voice_encoder

    path, marker = _crafted(tmp_path / "pretrained.pt", lambda p: {"model_state": p})
    with pytest.raises(EarshotError) as exc:
        load_voice_encoder(path)
    _assert_refused(exc, path, marker)


def test_face_recognition_model_that_is_a_pickle_is_refused(tmp_path):
    """ONNX is a protobuf (data only): a pickle handed in its place is not loadable."""
    from components.evaluation.judge import OnnxFaceEmbedder

    path, marker = _crafted(tmp_path / "arcface.onnx")
    with pytest.raises(EarshotError) as exc:
        OnnxFaceEmbedder(path)
    _assert_refused(exc, path, marker)
    assert "not a loadable ONNX model" in str(exc.value)


def test_shipped_weights_load_weights_only():
    """The weights inside the wheels (ST-LPIPS, LPIPS calibration, resemblyzer) pass the
    weights-only loader, so refusing anything else costs nothing."""
    for package, relative in [("stlpips_pytorch", "weights/vST0.0/alex_shift_tolerant.pth"),
                              ("lpips", "weights/v0.1/alex.pth"), ("resemblyzer", "pretrained.pt")]:
        spec = importlib.util.find_spec(package)
        if spec is None:
            continue
        weights = Path(spec.submodule_search_locations[0]) / relative
        assert isinstance(torch.load(weights, map_location="cpu", weights_only=True), dict), weights
