"""params.yaml and its classes: validation, errors naming file and key, partial files completed from params.yaml."""

from collections.abc import Iterator
from pathlib import Path
from typing import get_args, get_origin

import pytest
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from components.config import Params, default_params, load_params, parse_params
from components.config import base as config_base
from components.config.base import merge_trees, section_type
from components.errors import ConfigError
from tests.conftest import ROOT


def test_real_params_file_is_valid():
    params = load_params(ROOT / "params.yaml")
    assert isinstance(params, Params)
    # every stage of dvc.yaml has its params section (stage name = params section)
    import ast

    from components.orchestration.code_deps import command_module
    from components.orchestration.graph import read_dvc_stages

    for stage, spec in read_dvc_stages(ROOT / "dvc.yaml").items():
        assert hasattr(params, stage), f"dvc.yaml stage {stage!r} has no params section"
        module = command_module(spec["cmd"])
        path = ROOT / Path(*module.split(".")).with_suffix(".py")
        assert path.exists(), f"dvc.yaml stage {stage!r} runs {module}, which does not exist"
        # the cmd line says which script and which stage: the stage is its argument, or
        # the script runs that one stage and says so on its first line
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert stage in spec["cmd"].split()[3:] or f"``{stage}``" in doc.splitlines()[0], (stage, spec["cmd"])


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


def _class_fields(model: type[BaseModel], node: object, prefix: str = "") -> Iterator[tuple[str, FieldInfo, object]]:
    """Every leaf field of ``model`` with its value in ``node`` (a params.yaml subtree), recursively."""
    assert isinstance(node, dict), f"params.yaml: {prefix.rstrip('.') or '<root>'} is not a section"
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        assert name in node, f"params.yaml has no {key}: the classes hold no values, params.yaml must"
        value, annotation = node[name], field.annotation
        if section := section_type(annotation):
            yield from _class_fields(section, value, f"{key}.")
        elif get_origin(annotation) is dict and (entry := section_type(get_args(annotation)[1])):
            for entry_name, entry_value in value.items():
                yield from _class_fields(entry, entry_value, f"{key}.{entry_name}.")
        else:
            yield key, field, value


def test_params_yaml_holds_every_value_and_the_classes_none():
    tree = yaml.safe_load((ROOT / "params.yaml").read_text())
    fields = list(_class_fields(Params, tree))
    assert len(fields) > 100
    for key, field, _ in fields:
        # the one default a class may have is None on an optional field: "not given"
        # (no input folder, no tracking URI, ...), never a value params.yaml could contradict
        if not field.is_required():
            assert field.default is None and type(None) in get_args(field.annotation), \
                f"{key}: the class has the default {field.default!r}; its value belongs in params.yaml"
    assert default_params() == load_params(ROOT / "params.yaml")


def test_a_partial_file_gets_the_rest_from_params_yaml(tmp_path: Path):
    project = default_params()
    (tmp_path / "p.yaml").write_text(
        "faces: {detect_every: 3}\n"
        "download: {synth: {n_speakers: 5}}\n"
        "sweeps:\n  audio: {baseline: voice, variants: {voice: {}, mute: {face_sr.audio: false}}}\n")
    params = load_params(tmp_path / "p.yaml", {"train_g.steps": 7})
    assert params.faces.detect_every == 3 and params.download.synth.n_speakers == 5 and params.train_g.steps == 7
    assert params.faces.model_dump(exclude={"detect_every"}) == project.faces.model_dump(exclude={"detect_every"})
    assert params.download.synth.seed == project.download.synth.seed  # nested sections merge key by key
    assert params.download.source == project.download.source and params.common == project.common
    audio = params.sweeps["audio"]  # named sweeps merge; a sweep's variants are replaced as a whole
    assert set(audio.variants) == {"voice", "mute"} and audio.description == project.sweeps["audio"].description
    assert set(params.sweeps) == set(project.sweeps)
    assert parse_params({"faces": {"detect_every": 3}}).model_dump(exclude={"faces"}) == \
        project.model_dump(exclude={"faces"})


def test_free_form_mappings_are_replaced_whole():
    tree = {"face_sr": {"overrides": {"resolution": 32}}}
    defaults = {"face_sr": {"overrides": {"latent_dim": 64}, "seed": 0}, "common": {"seed": 1}}
    assert merge_trees(tree, defaults, Params) == {"face_sr": {"overrides": {"resolution": 32}, "seed": 0},
                                                   "common": {"seed": 1}}


def test_errors_in_a_partial_file_name_its_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "p.yaml").write_text("sweeps:\n  x: {description: d, evaluation: evaluate, baseline: a, variants: {a: {face_sr.lr_sise: 4}}}\n")
    with pytest.raises(ConfigError, match=r"p.yaml: .*sweep x: variant a: face_sr.lr_sise: unknown key"):
        load_params(tmp_path / "p.yaml")
    (tmp_path / "q.yaml").write_text("faces: {detect_every: 3}\n")
    monkeypatch.setattr(config_base, "PROJECT_PARAMS", tmp_path / "elsewhere" / "params.yaml")
    with pytest.raises(ConfigError, match=r"elsewhere/params.yaml: the project's params file is missing"):
        load_params(tmp_path / "q.yaml")


def test_each_sweep_is_compared_on_the_evaluation_of_the_paper_its_variants_change():
    video = ("talking.", "train_sync.", "train_coarse.", "train_animate.", "evaluate_video.")
    for name, sweep in default_params().sweeps.items():
        keys = [k for overrides in sweep.variants.values() for k in overrides]
        expected = "evaluate_video" if keys and all(k.startswith(video) for k in keys) else "evaluate"
        assert sweep.evaluation == expected, name
