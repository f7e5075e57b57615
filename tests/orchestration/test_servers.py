"""`earshot server up|down|status` (components/orchestration/servers.py).

The process handling (PID files, stale files, busy ports, idempotency, process groups,
SIGTERM then SIGKILL) is tested on a tiny stand-in HTTP server that starts in a fraction
of a second; the real Prefect and MLflow servers (about 30 s to answer on 2 cores) are
started and stopped in the slow test.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from components.orchestration.servers import (
    ServerError,
    ServerSpec,
    answers,
    down,
    env_lines,
    inspect,
    port_is_free,
    read_pid,
    server_ports,
    server_specs,
    stop,
    up,
    write_pid,
)
from tests.conftest import ROOT, tiny_params

# A stand-in server: answers GET /health, optionally ignores SIGTERM, optionally
# leaves a grandchild in its process group (as uvicorn workers are).
FAKE_SERVER = """
import http.server, signal, subprocess, sys
port, mode = int(sys.argv[1]), sys.argv[2]
if mode == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if mode == "crash":
    sys.exit("fake server: cannot open its database")
if mode == "child":
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
        self.wfile.write(b"OK")
    def log_message(self, *args):
        pass
if mode != "silent":
    http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
else:
    import time; time.sleep(120)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fake_spec(tmp_path: Path, mode: str = "serve", port: int | None = None) -> ServerSpec:
    port = port or free_port()
    return ServerSpec(name="mlflow", argv=(sys.executable, "-c", FAKE_SERVER, str(port), mode, "mlflow", "server"),
                      host="127.0.0.1", port=port, health_path="/health", state_dir=tmp_path / "state",
                      cwd=tmp_path, store="fake", client_var="MLFLOW_TRACKING_URI")


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.fixture
def cleanup():
    """Stops every spec a test registers, whatever happened in the test."""
    specs: list[ServerSpec] = []
    yield specs.append
    down(specs, timeout=2)


# --- configuration (pure) ------------------------------------------------------------------

def test_ports_come_from_params_and_the_environment_wins(params):
    cfg = params.orchestration
    assert server_ports(cfg, {}) == {"prefect": cfg.prefect_port, "mlflow": cfg.mlflow_port}
    assert server_ports(cfg, {"EARSHOT_PREFECT_PORT": "14200", "EARSHOT_MLFLOW_PORT": " 15000 "}) == {
        "prefect": 14200, "mlflow": 15000}
    with pytest.raises(ServerError, match="EARSHOT_MLFLOW_PORT"):
        server_ports(cfg, {"EARSHOT_MLFLOW_PORT": "http"})
    with pytest.raises(ServerError, match="cannot share port"):
        server_ports(cfg, {"EARSHOT_MLFLOW_PORT": str(cfg.prefect_port)})


def test_specs_serve_the_stages_database_and_keep_state_in_the_state_dir(tmp_path):
    params = tiny_params(tmp_path, **{"orchestration.state_dir": "state"})
    prefect, mlflow = server_specs(params, tmp_path, environ={"EARSHOT_MLFLOW_PORT": "15123"})
    assert prefect.argv[1:4] == ("-m", "prefect", "server") and "127.0.0.1" in prefect.argv
    assert prefect.env["PREFECT_HOME"] == str(tmp_path / "state" / "prefect")
    assert prefect.env["PREFECT_API_DATABASE_CONNECTION_URL"].endswith(f"{tmp_path}/state/prefect/prefect.db")
    assert prefect.pid_file == tmp_path / "state" / "prefect.pid" and prefect.log_file.parent == tmp_path / "state"
    # The UI's JavaScript calls this URL: it must follow the port, not $PREFECT_API_URL or 4200.
    assert prefect.env["PREFECT_UI_API_URL"] == prefect.env["PREFECT_API_URL"] == prefect.client_value
    # MLflow serves the file the stages write without a server, artifacts beside it.
    args = dict(zip(mlflow.argv, mlflow.argv[1:]))
    assert args["--backend-store-uri"] == params.tracking.uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert args["--artifacts-destination"] == args["--default-artifact-root"] == (tmp_path / "mlartifacts").as_uri()
    assert mlflow.port == 15123 and args["--port"] == "15123"
    assert env_lines([prefect, mlflow]) == [f"export PREFECT_API_URL=http://127.0.0.1:{prefect.port}/api",
                                            "export MLFLOW_TRACKING_URI=http://127.0.0.1:15123"]


def test_specs_default_to_the_project_database_and_honour_a_postgres_prefect(tmp_path):
    params = tiny_params(tmp_path, **{"tracking.uri": None})
    pg = "postgresql+asyncpg://prefect:s3cret@db.internal:5432/prefect"
    prefect, mlflow = server_specs(params, tmp_path, environ={"PREFECT_API_DATABASE_CONNECTION_URL": pg,
                                                              "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"})
    assert f"sqlite:///{tmp_path / 'mlflow.db'}" in mlflow.argv  # never the server's own URL
    assert prefect.env["PREFECT_API_DATABASE_CONNECTION_URL"] == pg
    assert prefect.store == "postgresql+asyncpg://prefect:***@db.internal:5432/prefect"


# --- PID files and states ------------------------------------------------------------------

def test_read_pid_ignores_missing_and_garbled_files(tmp_path):
    path = tmp_path / "x.pid"
    assert read_pid(path) is None
    path.write_text("not a pid\n")
    assert read_pid(path) is None
    write_pid(path, 4321)
    assert read_pid(path) == 4321 and path.read_text() == "4321\n"


def test_states_stopped_stale_and_foreign(tmp_path):
    spec = fake_spec(tmp_path)
    assert inspect(spec).state == "stopped"
    write_pid(spec.pid_file, dead_pid())
    assert inspect(spec).state == "stale"
    # A live process that is not the server (a reused PID) is stale too, and never signalled.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_pid(spec.pid_file, other.pid)
        assert inspect(spec).state == "stale"
        assert stop(spec, timeout=1).state == "stale"
        assert other.poll() is None and not spec.pid_file.exists()
    finally:
        other.kill()
        other.wait()


def test_up_is_idempotent_and_down_stops_the_group(tmp_path, cleanup):
    spec = fake_spec(tmp_path, mode="child")
    cleanup(spec)
    [first] = up([spec], timeout=30)
    assert first.state == "running" and read_pid(spec.pid_file) == first.pid
    assert answers(spec.health_url)
    [again] = up([spec], timeout=30)
    assert again.pid == first.pid  # not started twice
    assert spec.log_file.read_text().count("=== ") == 1
    members = _group_members(first.pid)
    assert len(members) == 2  # the server and the child it spawned
    [was] = down([spec], timeout=5)
    assert was.state == "running"
    assert not spec.pid_file.exists() and port_is_free(spec.host, spec.port)
    assert not any(_alive(pid) for pid in members)
    assert down([spec])[0].state == "stopped"


def test_up_cleans_a_stale_pid_file(tmp_path, cleanup):
    spec = fake_spec(tmp_path)
    cleanup(spec)
    write_pid(spec.pid_file, dead_pid())
    [state] = up([spec], timeout=30)
    assert state.state == "running" and read_pid(spec.pid_file) == state.pid


def test_a_port_taken_by_another_process_is_a_clear_error(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        spec = fake_spec(tmp_path, port=busy.getsockname()[1])
        assert not port_is_free(spec.host, spec.port)
        with pytest.raises(ServerError, match=f"port {spec.port} on 127.0.0.1 is already in use.*EARSHOT_MLFLOW_PORT"):
            up([spec], timeout=5)
    assert not spec.pid_file.exists()


def test_a_server_that_exits_at_start_points_at_its_log(tmp_path):
    spec = fake_spec(tmp_path, mode="crash")
    with pytest.raises(ServerError, match="(?s)exited while starting.*mlflow.log.*cannot open its database"):
        up([spec], timeout=30)
    assert not spec.pid_file.exists()


def test_a_server_that_never_answers_times_out_and_is_stopped(tmp_path):
    spec = fake_spec(tmp_path, mode="silent")
    with pytest.raises(ServerError, match="(?s)no answer within 2 s.*mlflow.log"):
        up([spec], timeout=2)
    assert inspect(spec).state == "stopped"


def test_down_kills_a_server_that_ignores_sigterm(tmp_path, cleanup):
    spec = fake_spec(tmp_path, mode="ignore-term")
    cleanup(spec)
    [state] = up([spec], timeout=30)
    started = time.monotonic()
    down([spec], timeout=1)
    assert not _alive(state.pid) and time.monotonic() - started < 10


def test_cli_status_and_port_error(tmp_path, monkeypatch):
    from pipelines.cli import app

    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    monkeypatch.chdir(tmp_path)
    state = f"orchestration.state_dir={tmp_path / 'state'}"
    result = CliRunner().invoke(app, ["server", "status", "--params", str(params), "-S", state])
    assert result.exit_code == 0, result.output
    assert "prefect" in result.output and "stopped" in result.output
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        monkeypatch.setenv("EARSHOT_PREFECT_PORT", str(busy.getsockname()[1]))
        result = CliRunner().invoke(app, ["server", "up", "--params", str(params), "-S", state])
    assert result.exit_code == 2
    assert "already in use" in result.output or "already in use" in str(result.stderr_bytes or b"")


# --- the real servers ---------------------------------------------------------------------

@pytest.mark.slow
def test_real_servers_start_serve_the_stage_database_and_stop(tmp_path, monkeypatch):
    """Both servers on free ports; a run logged without a server (with an artifact) is
    served by MLflow, a run logged through the server lands in the same SQLite file."""
    import mlflow

    params = tiny_params(tmp_path, **{"orchestration.state_dir": str(tmp_path / "state")})
    monkeypatch.setenv("EARSHOT_PREFECT_PORT", str(free_port()))
    monkeypatch.setenv("EARSHOT_MLFLOW_PORT", str(free_port()))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    specs = server_specs(params, tmp_path)
    offline_run = _log_run(params.tracking.uri, tmp_path, "offline")
    try:
        started = time.monotonic()
        states = up(specs, timeout=240)
        print(f"\nearshot server up: both answer after {time.monotonic() - started:.1f} s")
        assert [s.state for s in states] == ["running", "running"]
        prefect, mlflow_spec = specs
        assert json.loads(_get(prefect.health_url)) is True
        run = json.loads(_get(f"{mlflow_spec.url}/api/2.0/mlflow/runs/get?run_id={offline_run}"))
        assert run["run"]["info"]["run_name"] == "offline"
        note = _get(f"{mlflow_spec.url}/get-artifact?path=note.txt&run_uuid={offline_run}")
        assert note == b"logged without a server"
        online_run = _log_run(mlflow_spec.url, tmp_path, "online")
        mlflow.set_tracking_uri(params.tracking.uri)
        assert mlflow.get_run(online_run).info.run_name == "online"
        assert Path(mlflow.get_run(online_run).info.artifact_uri.removeprefix("file://"), "note.txt").exists()
        assert (tmp_path / "state" / "prefect" / "prefect.db").exists()
        again = up(specs, timeout=10)
        assert [s.pid for s in again] == [s.pid for s in states]
    finally:
        stopped = down(specs, timeout=20)
    assert [s.state for s in stopped] == ["running", "running"]
    assert all(port_is_free(s.host, s.port) for s in specs)
    assert not any(_alive(s.pid) for s in states)
    assert not list((tmp_path / "state").glob("*.pid"))


def _log_run(uri: str, root: Path, name: str) -> str:
    """Log a run the way the stages do, in a fresh interpreter (a clean MLflow state)."""
    code = (
        "import sys, mlflow, pathlib\n"
        "from components.tracking import artifact_location\n"
        "uri, root, name = sys.argv[1:]\n"
        "mlflow.set_tracking_uri(uri)\n"
        "if mlflow.get_experiment_by_name('earshot') is None:\n"
        "    mlflow.create_experiment('earshot', artifact_location=artifact_location(uri))\n"
        "mlflow.set_experiment('earshot')\n"
        "with mlflow.start_run(run_name=name) as run:\n"
        "    mlflow.log_metric('m', 1.0)\n"
        "    note = pathlib.Path(root) / 'note.txt'\n"
        "    note.write_text(f'logged {\"without\" if name == \"offline\" else \"through\"} a server')\n"
        "    mlflow.log_artifact(str(note))\n"
        "    run_id = run.info.run_id\n"
        "print('run_id=' + run_id)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code, uri, str(root), name], capture_output=True, text=True,
                         env=env, check=True, cwd=root)
    return next(line for line in out.stdout.splitlines() if line.startswith("run_id=")).removeprefix("run_id=")


def _get(url: str) -> bytes:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as response:
        return response.read()


def _alive(pid: int | None) -> bool:
    from components.orchestration.servers import pid_alive

    return pid is not None and pid_alive(pid)


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members
