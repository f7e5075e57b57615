from pathlib import Path

import pytest
import yaml

from pipelines.flows import dvc_stage_order


def test_real_graph_order():
    order = dvc_stage_order()
    assert order.index("download") < order.index("faces") < order.index("audio") < order.index("shards")


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
    with pytest.raises(ValueError, match="cycle"):
        dvc_stage_order(tmp_path / "dvc.yaml")
