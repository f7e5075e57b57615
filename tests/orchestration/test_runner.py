"""The per-item runner: quarantine, resume after a kill, pruning, process pool."""

import functools
import json
import os
import signal
import time
from pathlib import Path

import pandas as pd
import pytest

from components.errors import ConfigError, Rejected
from components.orchestration.executors import _check_shared_storage, _sees, fanout
from components.orchestration.runner import Item, Outcome, run_items, write_outcome
from tests.conftest import tiny_params

ROOT = Path(__file__).resolve().parents[2]


def work(item: Item, out_dir: Path, calls: Path | None = None) -> dict:
    """Writes <key>.txt; 'bad*' items are rejected, 'boom*' items crash."""
    if calls is not None:
        with open(calls, "a") as f:
            f.write(item.key + "\n")
    if item.key.startswith("bad"):
        raise Rejected("corrupt", f"{item.key} is broken", item=item.key)
    if item.key.startswith("boom"):
        raise ZeroDivisionError("unexpected")
    path = out_dir / f"{item.key}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(item.payload["text"])
    return {"chars": len(item.payload["text"]), "outputs": [f"{item.key}.txt"]}


def items(*keys: str) -> list[Item]:
    return [Item(k, {"text": k * 2}, identity={"k": k}, source=f"src/{k}") for k in keys]


def calls_of(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_bad_items_are_quarantined_and_the_rest_goes_on(tmp_path: Path):
    out = run_items("t", items("a/x/1", "bad1", "boom1", "b/y/2"), functools.partial(work, out_dir=tmp_path),
                    tmp_path, progress=False)
    assert sorted(r["key"] for r in out.records) == ["a/x/1", "b/y/2"]
    q = out.quarantine_frame().set_index("key")
    assert q.loc["bad1", "reason"] == "corrupt" and "bad1 is broken" in q.loc["bad1", "detail"]
    assert q.loc["boom1", "reason"] == "error" and "ZeroDivisionError" in q.loc["boom1", "detail"]
    assert q.loc["bad1", "source"] == "src/bad1" and q.loc["bad1", "stage"] == "t"
    assert out.counts["rejected.corrupt"] == 1
    index, quarantine = write_outcome(out, tmp_path)
    assert len(pd.read_parquet(index)) == 2 and len(pd.read_parquet(quarantine)) == 2


def test_resume_skips_done_and_rejected_but_retries_errors(tmp_path: Path):
    calls = tmp_path / "calls.log"
    fn = functools.partial(work, out_dir=tmp_path, calls=calls)
    run_items("t", items("a", "bad1", "boom1"), fn, tmp_path, progress=False)
    calls.unlink()
    out = run_items("t", items("a", "bad1", "boom1", "c"), fn, tmp_path, progress=False)
    assert calls_of(calls) == ["boom1", "c"]  # done and rejected items reused, the crash retried
    assert out.skipped == 2 and {r["key"] for r in out.records} == {"a", "c"}
    assert {q["key"] for q in out.quarantine} == {"bad1", "boom1"}


def test_changed_config_reprocesses(tmp_path: Path):
    calls = tmp_path / "calls.log"
    fn = functools.partial(work, out_dir=tmp_path, calls=calls)
    run_items("t", items("a"), fn, tmp_path, config={"x": 1}, progress=False)
    run_items("t", items("a"), fn, tmp_path, config={"x": 2}, progress=False)
    assert calls_of(calls) == ["a", "a"]


def test_kill_midway_leaves_no_done_marker(tmp_path: Path):
    """An item killed before finishing has no sidecar, so the rerun processes it."""
    calls = tmp_path / "calls.log"
    fn = functools.partial(work, out_dir=tmp_path, calls=calls)
    run_items("t", items("a", "b"), fn, tmp_path, progress=False)
    (tmp_path / ".items" / "b.json").unlink()  # as if killed after writing b.txt, before its sidecar
    (tmp_path / ".tmp-b-partial.txt").write_text("partial")
    calls.unlink()
    run_items("t", items("a", "b"), fn, tmp_path, progress=False)
    assert calls_of(calls) == ["b"]
    assert not list(tmp_path.glob(".tmp-*"))


def test_items_removed_from_inputs_are_pruned(tmp_path: Path):
    fn = functools.partial(work, out_dir=tmp_path)
    run_items("t", items("a/x/1", "b/y/2"), fn, tmp_path, progress=False)
    assert (tmp_path / "b/y/2.txt").exists()
    run_items("t", items("a/x/1"), fn, tmp_path, progress=False)
    assert not (tmp_path / "b/y/2.txt").exists() and not (tmp_path / ".items/b/y/2.json").exists()
    assert (tmp_path / "a/x/1.txt").exists()


def test_process_pool_gives_the_same_outcome(tmp_path: Path):
    keys = [f"k{i}" for i in range(6)] + ["bad1", "boom1"]
    a = run_items("t", items(*keys), functools.partial(work, out_dir=tmp_path / "a"), tmp_path / "a",
                  progress=False)
    b = run_items("t", items(*keys), functools.partial(work, out_dir=tmp_path / "b"), tmp_path / "b",
                  workers=2, progress=False)
    strip = lambda o: (o.records_frame().to_dict("records"),  # noqa: E731
                       o.quarantine_frame().drop(columns="time").to_dict("records"))
    assert strip(a) == strip(b)


def test_duplicate_keys_and_unknown_reason():
    with pytest.raises(ValueError, match="duplicate item keys"):
        run_items("t", items("a", "a"), lambda it: {}, "/tmp/unused", progress=False)
    with pytest.raises(ValueError, match="unknown rejection reason"):
        Rejected("not-a-reason")


def test_outcome_reject_for_pre_item_checks():
    out = Outcome("download")
    out.reject("row 3", "bad_manifest_row", "speaker_id '../x' escapes the data folder")
    assert json.loads(out.quarantine_frame().to_json(orient="records"))[0]["reason"] == "bad_manifest_row"


def test_atomic_files_get_the_usual_mode(tmp_path: Path):
    import os
    import stat

    from components.io import write_bytes_atomic

    write_bytes_atomic(tmp_path / "f.bin", b"x")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "f.bin").stat().st_mode) == 0o666 & ~mask


# ----------------------------------------------------------------------------- fan-out
# The same items through every executor `fanout` can choose must give the same outcome:
# records, quarantine (reason and detail) and output files.

FANOUT_KEYS = [f"s{i % 3}/v/{i}" for i in range(8)] + ["bad1", "boom1"]


def threads_and_pid(item: Item, out_dir: Path) -> dict:
    """Also reports how many BLAS threads the worker may use (must be 1 in worker processes)."""
    record = work(item, out_dir)
    return {**record, "omp": os.environ.get("OMP_NUM_THREADS"), "pid": os.getpid()}


def fanout_outcome(params, out_dir: Path, fn=work, also=None) -> tuple[Outcome, dict[str, str]]:
    """Run FANOUT_KEYS through ``fanout(params)``; ``also(pool)`` then uses the same executor."""
    with fanout(params) as pool:
        out = run_items("t", items(*FANOUT_KEYS), functools.partial(fn, out_dir=out_dir), out_dir, executor=pool,
                        progress=False)
        if also is not None:
            also(pool)
    files = {str(p.relative_to(out_dir)): p.read_text() for p in sorted(out_dir.rglob("*.txt"))}
    return out, files


def comparable(out: Outcome) -> tuple[list[dict], list[dict]]:
    return (out.records_frame().drop(columns=["omp", "pid"], errors="ignore").to_dict("records"),
            out.quarantine_frame().drop(columns="time").to_dict("records"))


@pytest.fixture(scope="module")
def dask_address():
    """One LocalCluster of 2 worker processes for the module (starting one costs seconds)."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        yield cluster.scheduler_address


@pytest.fixture
def inline(tmp_path: Path):
    """The reference: every item in this process, one after the other."""
    return fanout_outcome(tiny_params(tmp_path, **{"common.workers": 1}), tmp_path / "inline")


@pytest.mark.parametrize("runner", ["process", "thread", "dask"])
def test_every_task_runner_gives_the_inline_outcome(tmp_path: Path, inline, runner: str, request):
    overrides = {"common.workers": 2, "orchestration.task_runner": runner}
    if runner == "dask":
        overrides["orchestration.dask_address"] = request.getfixturevalue("dask_address")
    out, files = fanout_outcome(tiny_params(tmp_path, **overrides), tmp_path / runner, threads_and_pid)
    assert comparable(out) == comparable(inline[0]) and files == inline[1]
    assert comparable(out)[1][0] == {"stage": "t", "key": "bad1", "source": "src/bad1", "reason": "corrupt",
                                     "detail": "bad1 is broken"}  # a Rejected item quarantined there too
    assert len(files) == 8
    if runner != "thread":  # the items ran in worker processes, with one BLAS thread each
        assert {r["omp"] for r in out.records} == {"1"} and os.getpid() not in {r["pid"] for r in out.records}


_WARMED: list[int] = []  # pids whose warm-up ran (in that process's copy of this module)


def warm(log: Path) -> None:
    """A stage's warm-up (load a model): records which process ran it."""
    _WARMED.append(os.getpid())
    with open(log, "a") as f:
        f.write(f"{os.getpid()}\n")


def warmed_and_pid(item: Item, out_dir: Path) -> dict:
    """Whether the warm-up ran in this process before its items, and its torch threads."""
    import torch

    return {**work(item, out_dir), "warmed": os.getpid() in _WARMED, "pid": os.getpid(),
            "torch_threads": torch.get_num_threads()}


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_process_workers_warm_up_once_each_and_give_the_inline_outcome(tmp_path: Path, inline, start_method: str):
    import torch  # loaded here, sized for every core: forked workers must still use one thread

    params = tiny_params(tmp_path, **{"common.workers": 2, "orchestration.start_method": start_method})
    log = tmp_path / "warmups.txt"
    with fanout(params, warmup=functools.partial(warm, log)) as pool:
        out = run_items("t", items(*FANOUT_KEYS), functools.partial(warmed_and_pid, out_dir=tmp_path / "o"),
                        tmp_path / "o", executor=pool, progress=False)
    assert comparable(out)[1] == comparable(inline[0])[1]
    assert [{k: v for k, v in r.items() if k not in ("warmed", "torch_threads")} for r in comparable(out)[0]] == \
        comparable(inline[0])[0]
    assert {r["torch_threads"] for r in out.records} == {1} and torch.get_num_threads() >= 1
    warmed = log.read_text().split()
    assert len(warmed) == len(set(warmed)) == 2  # once per worker, both started with the pool
    assert all(r["warmed"] for r in out.records) and {str(r["pid"]) for r in out.records} <= set(warmed)
    assert os.getpid() not in _WARMED  # never in the stage process


def inherited(module: str) -> bool:
    """In a worker: whether ``module`` was already imported (a forked copy of its parent has it)."""
    import sys

    return module in sys.modules


_FORK_CHECK = """
import functools, sys, threading, time
import xml.dom.minidom  # imported here only: a forked worker has it, a spawned one does not
from components.orchestration.executors import default_executor
from tests.orchestration.test_runner import inherited
if sys.argv[1] == "threads":
    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
pool = default_executor(2, start_method="fork")
print(all(pool.submit(inherited, "xml.dom.minidom").result() for _ in range(4)))
pool.shutdown()
"""


def test_workers_are_forked_only_from_a_single_threaded_process():
    """Forking copies one thread and every lock the others hold: a stage process that has
    threads (a Prefect worker, a test session) spawns its workers instead."""
    import subprocess
    import sys

    def forked(mode: str) -> str:
        return subprocess.run([sys.executable, "-c", _FORK_CHECK, mode], cwd=ROOT, capture_output=True, text=True,
                              check=True, timeout=120).stdout.strip()

    assert forked("single") == "True" and forked("threads") == "False"


def opencv_threads_after_a_resize() -> int:
    """In a worker: OpenCV's thread count once it has run a parallel resize."""
    import cv2
    import numpy as np

    cv2.resize(np.zeros((1500, 1500, 3), np.uint8), (701, 701))
    return cv2.getNumThreads()


_OPENCV_FORK_CHECK = """
import cv2, numpy as np
from components.orchestration.executors import default_executor
from tests.orchestration.test_runner import opencv_threads_after_a_resize
cv2.setNumThreads(2)
for _ in range(5):  # the stage process has used OpenCV's thread pool (detection in process, say)
    cv2.GaussianBlur(np.zeros((1500, 1500, 3), np.uint8), (9, 9), 0)
pool = default_executor(2, start_method="fork")
print(sorted(pool.submit(opencv_threads_after_a_resize).result() for _ in range(4)), cv2.getNumThreads())
pool.shutdown()
"""


def test_forked_workers_of_a_process_that_used_opencv_threads_do_not_hang():
    """A forked worker that resized the OpenCV pool it inherited waited forever on the pool's
    missing threads: the workers start serial and the stage process keeps its own pool size."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _OPENCV_FORK_CHECK], cwd=ROOT, capture_output=True, text=True,
                         check=True, timeout=60).stdout.strip()
    assert out == "[1, 1, 1, 1] 2"


def test_an_unknown_start_method_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="orchestration.start_method"):
        tiny_params(tmp_path, **{"orchestration.start_method": "teleport"})


def test_dask_without_an_address_starts_its_own_local_cluster(tmp_path: Path, inline):
    params = tiny_params(tmp_path, **{"common.workers": 2, "orchestration.task_runner": "dask"})
    out, files = fanout_outcome(params, tmp_path / "own", threads_and_pid)
    assert comparable(out) == comparable(inline[0]) and files == inline[1]
    assert len({r["pid"] for r in out.records}) == 2  # the LocalCluster has common.workers processes


def test_dask_resume_skips_what_another_executor_did(tmp_path: Path, dask_address: str):
    """Sidecars are written by the stage process, so any executor resumes any other's run."""
    calls = tmp_path / "calls.log"
    fn = functools.partial(work, out_dir=tmp_path, calls=calls)
    run_items("t", items("a", "bad1", "boom1"), fn, tmp_path, progress=False)
    calls.unlink()
    params = tiny_params(tmp_path, **{"orchestration.task_runner": "dask", "orchestration.dask_address": dask_address})
    with fanout(params) as pool:
        out = run_items("t", items("a", "bad1", "boom1", "c"), fn, tmp_path, executor=pool, progress=False)
    assert sorted(calls_of(calls)) == ["boom1", "c"] and out.skipped == 2


def die_or_work(item: Item, out_dir: Path) -> dict:
    """'die*' items kill their worker process outright, as a segfault or the OOM killer would."""
    if item.key.startswith("die"):
        os.kill(os.getpid(), signal.SIGKILL)
    return work(item, out_dir)


# The Dask case hung in 2 of about 8 full-suite runs on the 2-core machine (a killed
# worker's tasks rescheduled while its nanny restarts it; cause not found yet): it runs
# with `pytest -m slow`, under a time limit, not in the default suite.
@pytest.mark.parametrize("runner", ["process", pytest.param("dask", marks=[pytest.mark.slow, pytest.mark.timeout(240)])])
def test_a_dead_worker_costs_only_its_own_item(tmp_path: Path, runner: str, request):
    keys = [f"k{i}" for i in range(4)] + ["die1"] + [f"m{i}" for i in range(4)] + ["die2", "bad1"]
    overrides = {"common.workers": 2, "orchestration.task_runner": runner}
    if runner == "dask":
        overrides["orchestration.dask_address"] = request.getfixturevalue("dask_address")
    with fanout(tiny_params(tmp_path, **overrides)) as pool:
        out = run_items("t", items(*keys), functools.partial(die_or_work, out_dir=tmp_path), tmp_path, executor=pool,
                        progress=False)
    assert sorted(r["key"] for r in out.records) == sorted(k for k in keys if k[0] in "km")
    q = out.quarantine_frame().set_index("key")
    assert sorted(q.index) == ["bad1", "die1", "die2"] and q.loc["bad1", "reason"] == "corrupt"
    assert q.loc["die1", "reason"] == "error" and "worker failed" in q.loc["die1", "detail"]
    assert not (tmp_path / ".items" / "die1.json").exists()  # no sidecar: the next run tries it again


class _Cluster:
    """A Dask client whose second worker is on a machine without the shared data folder."""

    def run(self, fn, *args):
        return {"tcp://10.0.0.1:40000": fn(*args), "tcp://10.0.0.2:40000": False}


def test_dask_workers_must_see_the_data_folder(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"tcp://10.0.0.2:40000.*shared storage"):
        _check_shared_storage(_Cluster(), tmp_path / "data")
    assert not list((tmp_path / "data").iterdir())  # the probe is gone
    assert _sees(str(tmp_path), os.getcwd()) and not _sees(str(tmp_path / "absent"), os.getcwd())


def test_an_unreachable_dask_scheduler_names_the_param(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import distributed

    def refuse(address, timeout):
        raise OSError(f"Timed out trying to connect to {address} after {timeout} s")

    monkeypatch.setattr(distributed, "Client", refuse)
    params = tiny_params(tmp_path, **{"orchestration.task_runner": "dask",
                                      "orchestration.dask_address": "tcp://10.0.0.9:8786"})
    with pytest.raises(ConfigError, match=r"orchestration.dask_address 'tcp://10.0.0.9:8786': no Dask scheduler"):
        with fanout(params):
            pass


def test_prefect_task_runs_need_a_prefect_server(tmp_path: Path):
    """Without a server Prefect would start a temporary one in every worker process."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    params = tiny_params(tmp_path, **{"orchestration.prefect_tasks": True, "orchestration.task_runner": "thread"})
    with temporary_settings(updates={PREFECT_API_URL: None}), pytest.raises(ConfigError, match="Prefect server"):
        with fanout(params):
            pass


@pytest.mark.slow
@pytest.mark.parametrize("runner", ["thread", "process", "dask"])
def test_prefect_task_runners_give_the_inline_outcome(tmp_path: Path, inline, runner: str, request, prefect_server):
    """Every item a Prefect task run (against a temporary Prefect server): the same outcome."""
    overrides = {"common.workers": 2, "orchestration.task_runner": runner, "orchestration.prefect_tasks": True}
    if runner == "dask":
        overrides["orchestration.dask_address"] = request.getfixturevalue("dask_address")

    def direct_calls(pool):  # as the shards stage uses it: any picklable callable, its exceptions come back
        fn = functools.partial(work, out_dir=tmp_path / "direct")
        assert pool.submit(fn, items("d")[0]).result() == {"chars": 2, "outputs": ["d.txt"]}
        assert isinstance(pool.submit(fn, items("boom2")[0]).exception(), ZeroDivisionError)

    before = prefect_server()
    out, files = fanout_outcome(tiny_params(tmp_path, **overrides), tmp_path / runner, threads_and_pid, direct_calls)
    assert comparable(out) == comparable(inline[0]) and files == inline[1]
    expected = sorted(FANOUT_KEYS + ["boom2", "d"])  # each call one task run, named after its item's key
    deadline = time.monotonic() + 30  # the server records task runs from their events, a moment later
    while True:
        names = sorted(name for run_id, name in prefect_server().items() if run_id not in before)
        if names == expected or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert names == expected


@pytest.fixture(scope="module")
def prefect_server():
    """A temporary Prefect server (its own database) for the module; returns {task run id: name}."""
    from prefect.client.orchestration import get_client
    from prefect.testing.utilities import prefect_test_harness

    def task_runs() -> dict[str, str]:
        with get_client(sync_client=True) as client:
            return {str(run.id): run.name for run in client.read_task_runs(limit=200)}

    with prefect_test_harness():
        yield task_runs
