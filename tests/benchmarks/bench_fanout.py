"""Fan-out of a data stage: ``pytest -m benchmark -s tests/benchmarks/bench_fanout.py``.

The ``faces`` stage (decode, detect, track, crop, encode: CPU-bound, one clip per item)
on a synthetic corpus the benchmark renders with :mod:`components.data.synth`, run
through every executor :func:`components.orchestration.executors.fanout` can choose:

* 1 worker (items in the stage process: the baseline) against 2 worker processes
  (goal: close to 2x on 2 cores),
* the thread pool and a Dask LocalCluster of 2 processes,
* each item a Prefect task run (``orchestration.prefect_tasks``) through Prefect's
  ``ProcessPoolTaskRunner``, ``ThreadPoolTaskRunner`` and prefect-dask's
  ``DaskTaskRunner``, against the plain pool of the same kind (the overhead, seconds per
  stage and per item). Against ``$PREFECT_API_URL`` when set, else a temporary Prefect
  server; how long that server takes to start is printed too: it is what every stage (and,
  with processes, every worker) would pay with Prefect task runs and no server.

Each configuration runs ``REPEATS`` times, interleaved with the others, on fresh output
folders; the best time counts, so that other work on a shared machine disturbs the
ratios less. Each row also shows the CPU seconds spent (this process and its finished
children) and "cores busy", CPU over wall time: on a shared machine, the stage's share
of it. The load average is printed before and after.
"""

from __future__ import annotations

import os
import resource
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.config import Params
from components.data import download, faces
from components.orchestration.runner import Outcome, write_outcome
from tests.conftest import tiny_params

pytestmark = pytest.mark.benchmark

REPEATS = 2
SPEAKERS, CLIPS_PER_SPEAKER, CLIP_SECONDS = 12, 2, 3.0  # 24 items

# name -> (common.workers, orchestration overrides)
CONFIGS: dict[str, tuple[int, dict[str, object]]] = {
    "1 worker (inline)": (1, {}),
    "2 processes": (2, {"task_runner": "process"}),
    "2 threads": (2, {"task_runner": "thread"}),
    "dask LocalCluster x2": (2, {"task_runner": "dask"}),
    "prefect processes x2": (2, {"task_runner": "process", "prefect_tasks": True}),
    "prefect threads x2": (2, {"task_runner": "thread", "prefect_tasks": True}),
    "prefect dask x2": (2, {"task_runner": "dask", "prefect_tasks": True}),
}
PREFECT_BASELINE = {"prefect processes x2": "2 processes", "prefect threads x2": "2 threads",
                    "prefect dask x2": "dask LocalCluster x2"}


def _params(tmp: Path, workers: int, orchestration: dict[str, object]) -> Params:
    return tiny_params(tmp, **{
        "common.workers": workers,
        "download.synth.n_speakers": SPEAKERS,
        "download.synth.clips_per_video": CLIPS_PER_SPEAKER,
        "download.synth.clip_seconds": CLIP_SECONDS,
        **{f"orchestration.{k}": v for k, v in orchestration.items()},
    })


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """data/raw of a small synthetic corpus (rendered once, with 2 processes)."""
    tmp = tmp_path_factory.mktemp("fanout")
    params = _params(tmp, 2, {})
    raw = params.data_path("raw")
    write_outcome(download.run_stage(params, raw, progress=False), raw)
    return raw


@pytest.fixture(scope="module")
def prefect_api() -> Iterator[float]:
    """A Prefect API for the task-run configurations; yields the start time of a temporary server."""
    from prefect.testing.utilities import prefect_test_harness

    start = time.perf_counter()
    with prefect_test_harness():
        harness_s = time.perf_counter() - start
        if os.environ.get("PREFECT_API_URL"):  # measured anyway, but the runs go to the configured server
            from prefect.settings import PREFECT_API_URL, temporary_settings

            with temporary_settings(updates={PREFECT_API_URL: os.environ["PREFECT_API_URL"]}):
                yield harness_s
        else:
            yield harness_s


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (pool workers, encoders, nannies)."""
    return sum(r.ru_utime + r.ru_stime for r in map(resource.getrusage, (resource.RUSAGE_SELF,
                                                                          resource.RUSAGE_CHILDREN)))


def _run_faces(corpus: Path, tmp: Path, workers: int,
               orchestration: dict[str, object]) -> tuple[float, float, Outcome]:
    """(wall seconds, CPU seconds, outcome) of the faces stage; pools are shut down on return."""
    params = _params(tmp, workers, orchestration)
    cpu, start = _cpu_seconds(), time.perf_counter()
    outcome = faces.run_stage(params, corpus, tmp / "faces", progress=False)
    return time.perf_counter() - start, _cpu_seconds() - cpu, outcome


def test_fanout_speedup_and_prefect_overhead(corpus: Path, prefect_api: float, tmp_path: Path) -> None:
    load_before = os.getloadavg()
    best: dict[str, float] = {name: float("inf") for name in CONFIGS}
    cpu: dict[str, float] = {}
    kept: dict[str, list[str]] = {}
    for repeat in range(REPEATS):
        for name, (workers, orchestration) in CONFIGS.items():
            tmp = tmp_path / f"{repeat}-{name.replace(' ', '_')}"
            seconds, cpu_seconds, outcome = _run_faces(corpus, tmp, workers, orchestration)
            if seconds < best[name]:
                best[name], cpu[name] = seconds, cpu_seconds
            kept[name] = sorted(r["key"] for r in outcome.records)
            shutil.rmtree(tmp)
    load_after = os.getloadavg()

    n = len(kept["1 worker (inline)"])
    base = best["1 worker (inline)"]
    print(f"\nfaces stage on {n} synthetic clips ({CLIP_SECONDS:.0f} s, 256x256) - {os.cpu_count()} cores, "
          f"load average {load_before[0]:.1f} before / {load_after[0]:.1f} after; best of {REPEATS}")
    print(f"{'executor':<24}{'seconds':>9}{'s/clip':>9}{'speed-up':>10}{'CPU s':>8}{'cores busy':>12}")
    for name, seconds in best.items():
        print(f"{name:<24}{seconds:>9.2f}{seconds / n:>9.3f}{base / seconds:>9.2f}x{cpu[name]:>8.1f}"
              f"{cpu[name] / seconds:>12.2f}")
    print("Prefect task runs against the plain pool of the same kind:")
    for name, plain in PREFECT_BASELINE.items():
        extra = best[name] - best[plain]
        print(f"  {name:<22} +{extra:6.2f} s per stage, {extra / n * 1000:+7.0f} ms per item, "
              f"{best[name] / best[plain]:.2f}x")
    print(f"temporary Prefect server start (paid per stage, per worker process with processes, without a "
          f"server): {prefect_api:.1f} s")
    assert all(keys == kept["1 worker (inline)"] for keys in kept.values())  # same clips kept everywhere
    assert n > 0
