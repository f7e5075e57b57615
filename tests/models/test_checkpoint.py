"""The one checkpoint format: header, family registry, weights-only loading, clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from components.models import checkpoint as ckpt_io
from components.models.face_sr import FAMILY, build_models, config_dict, get_preset
from components.models.face_sr.judge import FaceEvaluator
from components.models.face_sr.judge import FAMILY as JUDGE_FAMILY
from components.models.face_sr.judge import NETWORK, STAGE, judge_config
from tests.conftest import ROOT

TINY = get_preset("small", resolution=32, latent_dim=32)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A face-SR model.pt (G, El) and a judge model.pt."""
    root = tmp_path_factory.mktemp("ckpt")
    nets = build_models(TINY, 0, ("G", "El"))
    ckpt_io.save_model(root / "face_sr.pt", family=FAMILY, stage="train_el", config=config_dict(TINY), networks=nets,
                       step=3)
    judge = FaceEvaluator(32, 2, width=8, embedding_dim=16, age_mean=30, age_std=5)
    ckpt_io.save_model(root / "judge.pt", family=JUDGE_FAMILY, stage=STAGE, config=judge_config(judge, ["a", "b"]),
                       networks={NETWORK: judge}, step=7)
    return {"face_sr": root / "face_sr.pt", "judge": root / "judge.pt"}


def test_files_carry_the_header_and_rebuild_from_the_registered_family(files: dict[str, Path]):
    raw = torch.load(files["judge"], weights_only=True)
    assert {k: raw[k] for k in ("format", "version", "family", "kind", "stage")} == {
        "format": ckpt_io.FORMAT, "version": ckpt_io.VERSION, "family": "face_judge", "kind": "model",
        "stage": "evaluators"}
    model = ckpt_io.load_model(files["judge"], (NETWORK,), expect_family=JUDGE_FAMILY, expect_stage=STAGE)
    assert model.config["speakers"] == ["a", "b"] and model.step == 7 and model.stage == STAGE
    assert float(model.networks[NETWORK].age_mean) == 30.0  # buffers come from the file
    nets = ckpt_io.load_model(files["face_sr"], ("G", "El"), expect_family=FAMILY,
                              expect_config=config_dict(TINY)).networks
    want = build_models(TINY, 0, ("G",))["G"].state_dict()
    assert all(torch.equal(v, want[k]) for k, v in nets["G"].state_dict().items())


def test_another_family_stage_kind_or_config_is_refused_naming_the_file(files: dict[str, Path]):
    judge, face_sr = files["judge"], files["face_sr"]
    with pytest.raises(ckpt_io.CheckpointError, match=rf"{judge}: a 'face_judge' checkpoint, expected 'face_sr'"):
        ckpt_io.load_model(judge, ("G",), expect_family=FAMILY)
    with pytest.raises(ckpt_io.CheckpointError, match=rf"{face_sr}: written by stage 'train_el', expected 'train_g'"):
        ckpt_io.load_checkpoint(face_sr, expect_stage="train_g")
    with pytest.raises(ckpt_io.CheckpointError, match=rf"{face_sr}: a 'model' file, expected a 'checkpoint' file"):
        ckpt_io.load_checkpoint(face_sr, expect_kind="checkpoint")
    # only the fields that shape the networks the file holds count: Ea's do not
    assert ckpt_io.load_checkpoint(face_sr, expect_config=config_dict(TINY.model_copy(update={"ea_fc": 7})))
    with pytest.raises(ckpt_io.CheckpointError, match=r"made for another model \(params face_sr: .*\): "
                                                      r"latent_dim: 32 in the file, 16 in params"):
        ckpt_io.load_checkpoint(face_sr, expect_config=config_dict(get_preset("small", resolution=32, latent_dim=16)))
    with pytest.raises(ckpt_io.CheckpointError, match=r"has networks \['El', 'G'\], not \['Ea'\]"):
        ckpt_io.load_model(face_sr, ("Ea",), expect_family=FAMILY)


def test_other_versions_foreign_files_and_missing_ones_are_refused(files: dict[str, Path], tmp_path: Path):
    raw = torch.load(files["face_sr"], weights_only=True)
    torch.save({**raw, "version": 1}, tmp_path / "v1.pt")
    with pytest.raises(ckpt_io.CheckpointError, match=r"v1.pt: checkpoint format 'earshot' version 1, this code reads "
                                                      r"'earshot' version 2: retrain"):
        ckpt_io.load_checkpoint(tmp_path / "v1.pt")
    torch.save({"format": "earshot.face_evaluator", "version": 1, "state_dict": {}}, tmp_path / "old_judge.pt")
    with pytest.raises(ckpt_io.CheckpointError, match=r"old_judge.pt: checkpoint format 'earshot.face_evaluator'"):
        ckpt_io.load_checkpoint(tmp_path / "old_judge.pt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(ckpt_io.CheckpointError, match=r"foreign.pt: not an earshot checkpoint \(format None"):
        ckpt_io.load_checkpoint(tmp_path / "foreign.pt")
    torch.save({**raw, "family": "nobody"}, tmp_path / "unknown.pt")
    with pytest.raises(ckpt_io.CheckpointError, match=r"no network family 'nobody' is registered"):
        ckpt_io.load_model(tmp_path / "unknown.pt", ("G",), expect_family="nobody")
    with pytest.raises(ckpt_io.CheckpointError, match=r"missing.pt: no such checkpoint \(train it with `dvc repro "
                                                      r"evaluators`\)"):
        ckpt_io.load_checkpoint(tmp_path / "missing.pt", expect_stage="evaluators")


class Payload:
    """Unpickling this runs code (it creates a file): what weights_only must refuse."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.marker,))


def test_weights_only_refuses_a_crafted_pickle(files: dict[str, Path], tmp_path: Path):
    marker = tmp_path / "code-ran"
    raw = torch.load(files["face_sr"], weights_only=True)
    torch.save({**raw, "models": {"G": Payload(marker)}}, tmp_path / "crafted.pt")
    with pytest.raises(ckpt_io.CheckpointError, match=r"crafted.pt: not a readable checkpoint \(UnpicklingError"):
        ckpt_io.load_model(tmp_path / "crafted.pt", ("G",), expect_family=FAMILY)
    assert not marker.exists()


def test_inference_and_evaluation_load_models_without_training_code():
    code = ("import sys, components.inference.face_sr, components.evaluation.judge, components.evaluation.face_sr, "
            "components.inference.video_sr, components.evaluation.video_sr; "
            "from components.models.checkpoint import FAMILIES; "
            "assert {'face_sr', 'face_judge', 'talking'} <= set(FAMILIES), FAMILIES; "
            "print(sorted(m for m in sys.modules if m.startswith('components.training')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_same_networks_give_the_same_bytes(tmp_path: Path):
    """Downstream stages fingerprint their inputs by file hash: re-exporting unchanged
    networks (a resumed run that had no step left) must not change model.pt, or every
    later stage would retrain for nothing (torch names the zip archive after the file it
    writes, and the atomic write's temporary name is random)."""
    nets = build_models(TINY, 0, ("El",))
    for name in ("a.pt", "b.pt"):
        ckpt_io.save_model(tmp_path / name, family=FAMILY, stage="train_el", config=config_dict(TINY), networks=nets,
                           step=3)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
