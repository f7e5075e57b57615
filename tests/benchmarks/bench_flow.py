"""Overhead of the pipeline flow over a bare ``dvc repro``:
``pytest -m benchmark -s tests/benchmarks/bench_flow.py``.

On scratch DVC projects whose stages are trivial Python commands (a chain of N stages,
each writing one small file), so that the time measured is orchestration, not work:

* bare: ``dvc repro --force`` (one DVC process runs the N stages);
* flow: :func:`pipelines.flows.pipeline` with ``force=True`` in this process, against an
  already running Prefect API (as with ``earshot server up``): one Prefect task and one
  ``dvc repro --single-item`` process per stage, output streamed to the Prefect log,
  the MLflow query and the markdown artifact at the end;

for N = 2 and N = 8. The overhead (flow - bare) splits exactly into a part per run (the
flow's wall time outside its stage tasks: flow run start and end, the MLflow query, the
artifact) and a part per stage ((stage tasks - bare) / N: a DVC process and a Prefect
task per stage against one DVC run for all), in wall and CPU seconds.

Then the command a user types, ``earshot flow run --force`` (a fresh process: imports),
with a Prefect server running and with none (Prefect starts and stops a temporary local
API), against ``dvc repro --force``, for N = 8.
Goals: < 10 s per run, < 1 s per stage. Each timing is the best of ``REPEATS``
runs, interleaved, so a busy machine disturbs the ratios less.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.benchmark

DVC = [sys.executable, "-m", "dvc"]
EARSHOT = [str(Path(sys.executable).parent / "earshot")]
SIZES = (2, 8)
REPEATS = 2


def make_project(root: Path, n: int) -> Path:
    """git + DVC project with a chain of ``n`` trivial stages, committed."""
    root.mkdir(parents=True)
    stages = {}
    for i in range(n):
        cmd = f"python -c \"open('s{i}.txt', 'w').write('{i}')\""
        stages[f"s{i}"] = {"cmd": cmd, "outs": [f"s{i}.txt"], **({"deps": [f"s{i - 1}.txt"]} if i else {})}
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    (root / "params.yaml").write_text(yaml.safe_dump({"tracking": {"uri": f"sqlite:///{root / 'mlflow.db'}"}}))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    for argv in ([*git, "init", "-q"], [*DVC, "init", "-q"], [*git, "add", "-A"], [*git, "commit", "-qm", "init"]):
        subprocess.run(argv, cwd=root, check=True, capture_output=True)
    subprocess.run([*DVC, "repro"], cwd=root, check=True, capture_output=True)
    return root


def seconds(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall and CPU seconds of ``fn`` (this process and the children it waited for: the
    DVC and stage processes, not the Prefect API server). CPU time hardly depends on
    what else loads the machine; wall time does."""
    def cpu() -> float:
        return sum(r.ru_utime + r.ru_stime for r in map(resource.getrusage, (resource.RUSAGE_SELF,
                                                                             resource.RUSAGE_CHILDREN)))

    start, start_cpu = time.perf_counter(), cpu()
    fn()
    return time.perf_counter() - start, cpu() - start_cpu


def command_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # no server: Prefect's temporary API
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    return env


@pytest.fixture(scope="module")
def prefect_api() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    with prefect_test_harness(server_startup_timeout=180):
        yield


def test_flow_overhead_over_bare_dvc_repro(prefect_api, tmp_path: Path) -> None:
    from pipelines.flows import pipeline

    env = command_env()
    rows = []
    for n in SIZES:
        root = make_project(tmp_path / f"n{n}", n)
        best: dict[str, tuple[float, ...]] = {}
        for _ in range(REPEATS):
            bare = seconds(lambda: subprocess.run([*DVC, "repro", "--force"], cwd=root, env=env, check=True,
                                                  capture_output=True))
            results = []
            flow = seconds(lambda: results.extend(pipeline(force=True, project=str(root))))
            assert [r.status for r in results] == ["ran"] * n
            tasks = sum(r.seconds for r in results)  # wall of the stage tasks, retries and all
            if flow[0] < best.get("flow", (float("inf"),))[0]:
                best["flow"] = (*flow, tasks)
            if bare[0] < best.get("bare", (float("inf"),))[0]:
                best["bare"] = bare
        (flow_s, flow_cpu, tasks), (bare_s, bare_cpu) = best["flow"], best["bare"]
        # overhead = the flow's own part (run start/end, MLflow query, artifact: wall outside the
        # stage tasks) + per stage (one dvc process and one Prefect task each, against one dvc run)
        rows.append((n, bare_s, flow_s, flow_s - tasks, (tasks - bare_s) / n, bare_cpu, flow_cpu))

    from prefect.settings import PREFECT_API_URL

    n = SIZES[-1]
    root = tmp_path / f"n{n}"
    cli = [*EARSHOT, "flow", "run", "--force", "--project", str(root)]
    envs = {"server": {**env, "PREFECT_API_URL": PREFECT_API_URL.value()}, "none": env}
    cold = {k: float("inf") for k in ("server", "none", "bare")}
    for i in range(REPEATS + 1):  # the first CLI run may create Prefect's database: not counted
        for key in ("server", "none", "bare"):
            argv = [*DVC, "repro", "--force"] if key == "bare" else cli
            wall, _ = seconds(lambda: subprocess.run(argv, cwd=root, env=envs.get(key, env), check=True,
                                                     capture_output=True))
            if i:
                cold[key] = min(cold[key], wall)

    print(f"\npipeline flow vs bare `dvc repro --force` on trivial stages (best of {REPEATS}; {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f})")
    print("with a running Prefect API (as with `earshot server up`), flow in this process:")
    print(f"{'stages':>6} {'bare s':>7} {'flow s':>7} {'ratio':>6} {'overhead s':>10} {'per run s':>9} "
          f"{'per stage s':>11} {'bare CPU s':>10} {'flow CPU s':>10} {'CPU per stage s':>15}")
    for n_, bare_s, flow_s, per_run, per_stage, bare_cpu, flow_cpu in rows:
        print(f"{n_:>6} {bare_s:>7.2f} {flow_s:>7.2f} {flow_s / bare_s:>6.2f} {flow_s - bare_s:>10.2f} {per_run:>9.2f} "
              f"{per_stage:>11.2f} {bare_cpu:>10.2f} {flow_cpu:>10.2f} {(flow_cpu - bare_cpu) / n_:>15.2f}")
    per_stage = rows[-1][4]
    print(f"`earshot flow run --force` in a fresh process, {n} stages, against `dvc repro --force` "
          f"({cold['bare']:.2f} s):")
    for key, label in (("server", "Prefect server running"), ("none", "no server (temporary API)")):
        over = cold[key] - cold["bare"]
        print(f"  {label}: {cold[key]:.2f} s (ratio {cold[key] / cold['bare']:.2f}), overhead {over:.2f} s "
              f"= {over - per_stage * n:.2f} s per run + {per_stage:.2f} s x {n} stages")
    print("goals: < 10 s per run, < 1 s per stage")
