"""Faults of the per-item runner itself: a bug is not bad input, and a killed stage leaves
no process behind (issue 10, items 7 and 8)."""

from __future__ import annotations

import functools
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from components.errors import Rejected, StageFailed
from components.orchestration.runner import Item, run_items
from components.tracking import StageRun
from pipelines._common import exit_on_user_error, finish_stage

ROOT = Path(__file__).resolve().parents[2]


def buggy_work(item: Item, out_dir: str) -> dict:
    """'good*' items write a file, 'bad*' items are bad input, 'bug*' items hit a code bug."""
    if item.key.startswith("bad"):
        raise Rejected("corrupt", f"{item.key} cannot be decoded", item=item.key)
    if item.key.startswith("bug"):
        return {"ratio": 1 / 0}
    (Path(out_dir) / f"{item.key}.txt").write_text(item.key)
    return {"outputs": [f"{item.key}.txt"]}


def sleepy_work(item: Item) -> dict:
    time.sleep(item.payload["sleep"])
    return {}


def _items(*keys: str, **payload: object) -> list[Item]:
    return [Item(k, dict(payload), identity={"k": k}, source=f"src/{k}") for k in keys]


def _stage(tmp_path: Path, keys: list[str], limit: int, workers: int = 1) -> dict:
    outcome = run_items("faces", _items(*keys), functools.partial(buggy_work, out_dir=str(tmp_path)), tmp_path,
                        workers=workers, progress=False)
    return finish_stage(StageRun(None), outcome, tmp_path, time.time(), max_unexpected_errors=limit)


def test_a_bug_in_every_item_fails_the_stage_after_writing_its_tables(tmp_path: Path, caplog):
    caplog.set_level(logging.ERROR)
    with pytest.raises(StageFailed) as failed:
        _stage(tmp_path, ["bug1", "bug2", "bug3"], limit=5, workers=2)
    message = str(failed.value)
    assert "\n" not in message
    assert message.startswith("faces: 3 of 3 items failed with unexpected errors (first: bug1: "
                              "ZeroDivisionError: division by zero in tests/faults/test_runner_faults.py:")
    assert message.endswith("see the log for tracebacks")
    quarantine = pd.read_parquet(tmp_path / "quarantine.parquet")  # written before failing: nothing lost
    assert list(quarantine["reason"]) == ["error"] * 3
    assert list(quarantine["detail"]) == ["ZeroDivisionError: division by zero"] * 3
    assert (tmp_path / "index.parquet").exists() and (tmp_path / "summary.json").exists()
    logged = caplog.text  # the tracebacks came back from the worker processes
    assert logged.count("Traceback (most recent call last)") == 3 and 'return {"ratio": 1 / 0}' in logged


def test_unexpected_errors_past_the_limit_fail_the_stage(tmp_path: Path):
    with pytest.raises(StageFailed, match=r"faces: 2 of 4 items .*common\.max_unexpected_errors=1\)"):
        _stage(tmp_path, ["bug1", "bug2", "good1", "good2"], limit=1)
    assert sorted(p.name for p in tmp_path.glob("good*.txt")) == ["good1.txt", "good2.txt"]


def test_unexpected_errors_within_the_limit_stay_quarantine_rows(tmp_path: Path):
    summary = _stage(tmp_path, ["bug1", "good1", "good2"], limit=1)
    assert summary["kept"] == 2 and summary["rejected.error"] == 1


def test_bad_input_never_counts_as_a_bug(tmp_path: Path):
    summary = _stage(tmp_path, ["bad1", "bad2"], limit=0)
    assert summary["rejected.corrupt"] == 2 and summary["kept"] == 0


def test_a_failed_stage_exits_non_zero_with_one_line(tmp_path: Path, capsys):
    stage = exit_on_user_error(functools.partial(_stage, tmp_path, ["bug1", "good1"], limit=0))
    with pytest.raises(SystemExit) as exited:
        stage()
    assert exited.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: faces: 1 of 2 items failed with unexpected errors")


_KILLED_STAGE = """
import sys
from components.orchestration.runner import run_items
from tests.faults.test_runner_faults import _items, sleepy_work
out = run_items("faces", _items("a", "b", "c", sleep=float(sys.argv[1])), sleepy_work, sys.argv[2],
                workers=2, progress=False)
print("kept", len(out.records), flush=True)
"""


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_a_killed_stage_leaves_no_process_behind_and_a_rerun_completes(tmp_path: Path):
    command = [sys.executable, "-c", _KILLED_STAGE]
    stage = subprocess.Popen([*command, "60", str(tmp_path)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    children: list[psutil.Process] = []
    try:
        deadline = time.time() + 60
        # 2 workers (forked; spawned ones come with multiprocessing's resource tracker)
        while len(children := _descendants(stage.pid)) < 2 and time.time() < deadline:
            time.sleep(0.2)
        assert len(children) >= 2, f"the stage did not start its workers: {children}"
        stage.send_signal(signal.SIGKILL)  # the workers may still be starting up: they must go too
        stage.wait(10)
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"left behind after SIGKILL: {[(p.pid, p.cmdline()) for p in alive]}"
    finally:
        if stage.poll() is None:
            stage.kill()
        for child in children:  # whatever survived a failed assertion
            if child.is_running():
                child.kill()
    rerun = subprocess.run([*command, "0", str(tmp_path)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                           capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.split() == ["kept", "3"]


def _prepare(params) -> str:  # type: ignore[no-untyped-def]
    """Every data stage in order, as ``earshot data prepare`` runs them; returns the report."""
    import pipelines.audio
    import pipelines.download
    import pipelines.faces
    import pipelines.report
    import pipelines.shards

    for stage in (pipelines.download, pipelines.faces, pipelines.audio, pipelines.shards):
        stage.run(params, progress=False)
    pipelines.report.run(params)
    return (params.data_path("report") / "report.md").read_text()


def test_a_header_only_manifest_runs_every_stage_on_zero_items(tmp_path: Path):
    from tests.conftest import tiny_params

    manifest = tmp_path / "manifest.csv"
    manifest.write_text("speaker_id,video_id,url\n")
    params = tiny_params(tmp_path, **{"download.source": "manifest", "download.input": str(manifest),
                                      "tracking.enabled": False, "common.max_unexpected_errors": 0})
    report = _prepare(params)
    assert "No clip was kept: the input had no items." in report
    for stage in ("raw", "faces", "audio", "shards"):
        index = pd.read_parquet(params.data_path(stage) / "index.parquet")
        assert len(index) == 0 and "key" in index.columns


def test_a_folder_of_bad_inputs_only_is_quarantined_and_reported(tmp_path: Path):
    from tests.conftest import tiny_params

    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "empty.mp4").write_bytes(b"")
    (videos / "garbage.mp4").write_bytes(b"not a video at all" * 100)
    params = tiny_params(tmp_path, **{"download.source": "local", "download.input": str(videos),
                                      "download.layout": "flat", "tracking.enabled": False,
                                      "common.max_unexpected_errors": 0})
    report = _prepare(params)
    assert "No clip was kept: all 2 input items were rejected" in report
    quarantine = pd.read_parquet(params.data_path("raw") / "quarantine.parquet")
    assert sorted(quarantine["key"].str.split("/").str[1]) == ["empty", "garbage"]
    assert "error" not in set(quarantine["reason"])  # known input faults, not bugs
