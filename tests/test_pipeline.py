"""End to end: the data stages of dvc.yaml on a tiny corpus, with broken inputs and a kill.

These build the project's real params.yaml and shrink it (tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from components.config import Params
from pipelines.flows import run_data_stages
from tests.conftest import ROOT, tiny_params


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory) -> tuple[Params, list[dict]]:
    tmp = tmp_path_factory.mktemp("e2e")
    params = tiny_params(tmp)
    return params, run_data_stages(params, progress=False)


def test_every_stage_produces_its_outputs(synthetic_run):
    params, summaries = synthetic_run
    assert [s["stage"] for s in summaries] == ["download", "faces", "audio", "shards", "report"]
    data = params.data_path()
    raw = pd.read_parquet(data / "raw/index.parquet")
    assert len(raw) == 4 * 1 * 2
    index = json.loads((data / "shards/index.json").read_text())
    kept = sum(s["clips"] for s in index["splits"].values())
    assert kept >= 0.75 * len(raw), f"only {kept} of {len(raw)} synthetic clips reached the shards"
    assert index["splits"]["train"]["clips"] > 0
    report = data / "report"
    assert (report / "contact_sheet.png").stat().st_size > 1000
    assert (report / "sync.png").exists()
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["download.kept"] == len(raw) and "duration.shards_s" in metrics
    assert "| faces |" in (report / "report.md").read_text()


def test_every_stage_is_an_mlflow_run(synthetic_run):
    params, _ = synthetic_run
    mlflow.set_tracking_uri(params.tracking.uri)
    runs = mlflow.search_runs(experiment_names=[params.tracking.experiment])
    assert set(runs["tags.stage"]) == {"download", "faces", "audio", "shards", "report"}
    faces = runs[runs["tags.stage"] == "faces"].iloc[0]
    assert faces["params.faces.detect_every"] == str(params.faces.detect_every)
    assert faces["metrics.kept"] > 0
    assert any(c.startswith("tags.input.") and isinstance(faces[c], str) for c in runs.columns)


def _broken_inputs(folder: Path, good: list[Path]) -> dict[str, str]:
    """Good clips plus one of each kind of broken input; returns {file stem: expected stage}."""
    folder.mkdir(parents=True)
    for i, src in enumerate(good):
        shutil.copy(src, folder / f"good{i}.mp4")
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "garbage.mp4").write_bytes(os.urandom(20_000))
    data = good[0].read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 3])
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(good[0]), "-an", "-c", "copy",
                    str(folder / "noaudio.mp4")], check=True)
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(good[0]), "-af", "volume=0",
                    "-c:v", "copy", "-c:a", "aac", str(folder / "silent.mp4")], check=True)
    return {"empty": "download", "garbage": "download", "truncated": "download", "noaudio": "audio",
            "silent": "audio"}


def test_broken_inputs_are_quarantined_and_the_rest_goes_on(synthetic_run, tmp_path: Path):
    params, _ = synthetic_run
    good = sorted((params.data_path("raw")).rglob("*.mp4"))[:2]
    expected = _broken_inputs(tmp_path / "videos", good)
    mine = tiny_params(tmp_path, **{"download.source": "local", "download.input": str(tmp_path / "videos"),
                                    "download.layout": "flat"})
    run_data_stages(mine, progress=False)
    data = mine.data_path()
    quarantined = pd.concat([pd.read_parquet(data / d / "quarantine.parquet") for d in ("raw", "faces", "audio")])
    by_stem = {Path(k).name.split(".")[0] if "/" not in k else k.split("/")[1]: (s, r)
               for k, s, r in zip(quarantined["key"], quarantined["stage"], quarantined["reason"])}
    for stem, stage in expected.items():
        hit = [v for k, v in by_stem.items() if stem in k]
        assert hit, f"{stem} was not quarantined: {by_stem}"
        assert hit[0][0] == stage, f"{stem} quarantined by {hit[0][0]}, expected {stage}"
    shards = json.loads((data / "shards/index.json").read_text())
    assert sum(s["clips"] for s in shards["splits"].values()) == 2  # both good clips kept
    report = (data / "report/report.md").read_text()
    assert "empty" in report and "no_audio_stream" in report


def test_a_stage_killed_midway_resumes(tmp_path: Path):
    params = tiny_params(tmp_path)
    from pipelines import download

    download.run(params, progress=False)
    params_file = tmp_path / "params.yaml"
    params_file.write_text((ROOT / "params.yaml").read_text())
    sets = ["-S", f"common.data_dir={params.common.data_dir}", "-S", "common.workers=1",
            "-S", f"tracking.uri={params.tracking.uri}", "--no-progress"]
    cmd = [sys.executable, "-m", "pipelines.faces", "--params", str(params_file), *sets]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sidecars = params.data_path("faces", ".items")
    deadline = time.time() + 120
    while time.time() < deadline and not (sidecars.exists() and any(sidecars.rglob("*.json"))):
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(sidecars.rglob("*.json")))
    assert 0 < done_before < 8, "the kill should land midway"
    assert not (params.data_path("faces") / "index.parquet").exists()
    rerun = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    summary = json.loads(params.data_path("faces", "summary.json").read_text())
    assert summary["resumed"] == done_before
    assert summary["kept"] + summary["rejected"] == 8
    assert not list(params.data_path("faces").rglob(".tmp-*"))


def test_data_tour_notebook_runs_headless(synthetic_run, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    params, _ = synthetic_run
    monkeypatch.setenv("EARSHOT_DATA", str(params.data_path()))
    nb = nbformat.read(ROOT / "notebooks" / "data_tour.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the sample figure was not drawn"


def test_report_of_a_run_that_kept_nothing(tmp_path: Path):
    from components.data.report import build_report

    metrics = build_report(tmp_path / "data", tmp_path / "report")
    assert metrics == {}
    for name in ("report.md", "metrics.json", "contact_sheet.png", "sync.png"):
        assert (tmp_path / "report" / name).exists(), name
