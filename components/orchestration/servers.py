"""Local Prefect and MLflow servers for the UIs (``earshot server up|down|status``).

Nothing in the project needs these servers: without them MLflow writes to the
project's SQLite file and Prefect runs flows against a temporary local API. They only
add the two web UIs and a place where deployments wait for runs. So the rules are:

* each server runs in the background as its own process group (``setsid``), with a
  PID file and a log under ``orchestration.state_dir``; ``down`` signals exactly those
  groups and never a process found by name;
* a PID file is trusted only while its process is alive *and* still looks like the
  server (its command line), so a PID reused by an unrelated process is never killed
  and a stale file is simply removed;
* the MLflow server serves the very SQLite database (and artifact folder) the stages
  write without a server, so runs made with or without it are the same runs; Prefect
  keeps its own SQLite database under the state dir, unless
  ``PREFECT_API_DATABASE_CONNECTION_URL`` already names another one (PostgreSQL).

Pure parts (:func:`server_specs`, :func:`server_ports`, :func:`read_pid`,
:func:`port_is_free`, :func:`inspect`) are separate from the parts that start and
signal processes (:func:`up`, :func:`down`), so they are tested without a server.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from components.config import OrchestrationParams, Params
from components.config.orchestration import is_loopback
from components.errors import EarshotError
from components.io import atomic_path
from components.tracking import artifact_location, server_backend_uri

log = logging.getLogger(__name__)

PORT_ENV = {"prefect": "EARSHOT_PREFECT_PORT", "mlflow": "EARSHOT_MLFLOW_PORT"}


class ServerError(EarshotError):
    """A server could not be started or stopped; the message names its port or log."""


@dataclass(frozen=True)
class ServerSpec:
    """How to run one server and where its state lives (no process is touched here)."""

    name: str
    argv: tuple[str, ...]
    host: str
    port: int
    health_path: str
    state_dir: Path
    cwd: Path
    store: str  # where its data lives, shown by `status`
    client_var: str  # the environment variable that points clients at it
    client_suffix: str = ""  # appended to the URL for client_var (Prefect: /api)
    env: Mapping[str, str] = field(default_factory=dict)  # on top of os.environ

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def health_url(self) -> str:
        return self.url + self.health_path

    @property
    def client_value(self) -> str:
        return self.url + self.client_suffix

    @property
    def pid_file(self) -> Path:
        return self.state_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / f"{self.name}.log"


@dataclass(frozen=True)
class ServerState:
    """What is known of one server right now.

    ``state`` is one of: ``running`` (our process answers), ``starting`` (our process is
    alive but does not answer yet), ``stopped`` (no PID file), ``stale`` (a PID file
    whose process is gone or is not the server).
    """

    spec: ServerSpec
    state: str
    pid: int | None = None


def server_ports(cfg: OrchestrationParams, environ: Mapping[str, str]) -> dict[str, int]:
    """The ports of both servers: ``$EARSHOT_PREFECT_PORT`` / ``$EARSHOT_MLFLOW_PORT`` win."""
    ports = {"prefect": cfg.prefect_port, "mlflow": cfg.mlflow_port}
    for name, var in PORT_ENV.items():
        raw = environ.get(var, "").strip()
        if not raw:
            continue
        if not raw.isdigit() or not 1 <= int(raw) <= 65535:
            raise ServerError(f"${var}={raw!r} is not a port number (1-65535)")
        ports[name] = int(raw)
    if ports["prefect"] == ports["mlflow"]:
        raise ServerError(f"Prefect and MLflow cannot share port {ports['prefect']}: "
                          f"set orchestration.prefect_port/mlflow_port or ${PORT_ENV['mlflow']}")
    return ports


def remote_bind_warning(cfg: OrchestrationParams) -> str | None:
    """The warning for servers bound to a non-loopback ``cfg.host`` (allowed only with
    ``orchestration.allow_remote``, which the params validation enforces), else None."""
    if is_loopback(cfg.host):
        return None
    return (f"orchestration.host {cfg.host!r} is not a loopback address (allow_remote is on): the Prefect and "
            "MLflow UIs have no login, anyone who reaches these ports can read and start runs")


def server_specs(params: Params, root: Path, environ: Mapping[str, str] | None = None) -> list[ServerSpec]:
    """Both servers as configured by ``params.orchestration`` (and the environment)."""

    environ = os.environ if environ is None else environ
    cfg = params.orchestration
    if remote := remote_bind_warning(cfg):
        log.warning(remote)
    state = Path(cfg.state_dir) if Path(cfg.state_dir).is_absolute() else root / cfg.state_dir
    ports = server_ports(cfg, environ)
    prefect_home = state / "prefect"
    prefect_db = (environ.get("PREFECT_API_DATABASE_CONNECTION_URL")
                  or environ.get("PREFECT_SERVER_DATABASE_CONNECTION_URL")
                  or f"sqlite+aiosqlite:///{prefect_home / 'prefect.db'}")
    backend = server_backend_uri(params.tracking.uri, root)
    artifacts = artifact_location(backend) or (root / "mlartifacts").resolve().as_uri()
    python = sys.executable
    prefect = ServerSpec(
        name="prefect",
        argv=(python, "-m", "prefect", "server", "start", "--host", cfg.host, "--port", str(ports["prefect"]),
              "--analytics-off"),
        host=cfg.host, port=ports["prefect"], health_path="/api/health", state_dir=state, cwd=root,
        store=_hide_password(prefect_db), client_var="PREFECT_API_URL", client_suffix="/api",
        # The UI (JavaScript in the browser) calls the API at PREFECT_UI_API_URL, which
        # otherwise follows $PREFECT_API_URL or port 4200, whatever --port says.
        env={"PREFECT_HOME": str(prefect_home), "PREFECT_API_DATABASE_CONNECTION_URL": prefect_db,
             "PREFECT_SERVER_API_HOST": cfg.host, "PREFECT_SERVER_API_PORT": str(ports["prefect"]),
             "PREFECT_API_URL": f"http://{cfg.host}:{ports['prefect']}/api",
             "PREFECT_UI_API_URL": f"http://{cfg.host}:{ports['prefect']}/api",
             "PREFECT_SERVER_ANALYTICS_ENABLED": "false"},
    )
    mlflow = ServerSpec(
        name="mlflow",
        # One worker on a small machine; new experiments made through the server get the
        # same artifact root as without it (a file:// folder beside the database), and
        # --serve-artifacts also lets remote clients upload through the server.
        argv=(python, "-m", "mlflow", "server", "--host", cfg.host, "--port", str(ports["mlflow"]),
              "--workers", "1", "--backend-store-uri", backend, "--default-artifact-root", artifacts,
              "--serve-artifacts", "--artifacts-destination", artifacts),
        host=cfg.host, port=ports["mlflow"], health_path="/health", state_dir=state, cwd=root,
        store=_hide_password(backend), client_var="MLFLOW_TRACKING_URI",
        # The background job runner (GenAI scorers) costs seven processes and is unused here.
        env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")},
    )
    return [prefect, mlflow]


def _hide_password(uri: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``."""
    scheme, sep, rest = uri.partition("://")
    creds, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in creds:
        return uri
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"


def env_lines(specs: Sequence[ServerSpec]) -> list[str]:
    """``export VAR=URL`` lines that point the stages and flows of a shell at the servers."""
    return [f"export {s.client_var}={s.client_value}" for s in specs]


# --- processes -------------------------------------------------------------------------

def read_pid(path: Path) -> int | None:
    """The PID in a PID file, or None when the file is missing or garbled."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def write_pid(path: Path, pid: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(f"{pid}\n")


def _reap(pid: int) -> None:
    """Collect a child of this process that has exited (tests start servers in-process)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def pid_alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):  # no /proc (macOS): kill(0) is all we know
        return True


def looks_like(pid: int, spec: ServerSpec) -> bool:
    """Whether ``pid`` is still this server (guards against PID reuse). Without
    ``/proc`` the process group is the only evidence: we start each server as its
    own group leader."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    try:
        args = cmdline.read_bytes().decode(errors="replace").split("\0")
    except OSError:
        try:
            return os.getpgid(pid) == pid
        except OSError:
            return False
    return spec.name in " ".join(args) and "server" in args


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could bind ``host:port`` now (SO_REUSEADDR, as the servers do, so
    a closed connection lingering in TIME_WAIT does not count as taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def answers(url: str, timeout: float = 2.0) -> bool:
    """An HTTP 200 from ``url`` (the health endpoint). Proxies are bypassed: these
    servers are local."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def inspect(spec: ServerSpec) -> ServerState:
    """The state of one server from its PID file, its process and its health endpoint."""
    pid = read_pid(spec.pid_file)
    if pid is None:
        return ServerState(spec, "stale" if spec.pid_file.exists() else "stopped")
    if not pid_alive(pid) or not looks_like(pid, spec):
        return ServerState(spec, "stale", pid)
    return ServerState(spec, "running" if answers(spec.health_url) else "starting", pid)


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "\n".join("    " + line for line in text)


def _launch(spec: ServerSpec) -> int:
    """Start the server as its own process group, output appended to its log."""
    spec.state_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **spec.env}
    with spec.log_file.open("ab") as logf:
        logf.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(spec.argv)}\n".encode())
        logf.flush()
        proc = subprocess.Popen(spec.argv, cwd=spec.cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    write_pid(spec.pid_file, proc.pid)
    log.info("%s: started (pid %d), log %s", spec.name, proc.pid, spec.log_file)
    return proc.pid


def up(specs: Sequence[ServerSpec], timeout: float = 120.0) -> list[ServerState]:
    """Start the servers that are not running, then wait until every one answers.

    Idempotent: a server whose PID file names a live process of its own is not started
    again (only waited for); a stale PID file is removed. A port taken by anything else
    is an error that names the port, before anything starts. A server that exits or
    does not answer within ``timeout`` is stopped again and the error shows its log.
    """
    states = [inspect(s) for s in specs]
    for st in states:
        if st.state == "stale":
            log.info("%s: removing stale PID file %s (pid %s is gone)", st.spec.name, st.spec.pid_file, st.pid)
            st.spec.pid_file.unlink(missing_ok=True)
    to_start = [st.spec for st in states if st.state in ("stopped", "stale")]
    for spec in to_start:
        if not port_is_free(spec.host, spec.port):
            raise ServerError(
                f"{spec.name}: port {spec.port} on {spec.host} is already in use by a process earshot did not "
                f"start (no live PID file in {spec.state_dir}); stop it, or pick another port with "
                f"${PORT_ENV[spec.name]} or orchestration.{spec.name}_port")
    started = {spec.name: _launch(spec) for spec in to_start}
    pending = {st.spec.name: st for st in states}
    deadline = time.monotonic() + timeout
    done: dict[str, ServerState] = {}
    while pending:
        for name, st in list(pending.items()):
            pid = started.get(name, st.pid)
            assert pid is not None
            if answers(st.spec.health_url):
                done[name] = ServerState(st.spec, "running", pid)
                del pending[name]
            elif not pid_alive(pid):
                down([s for s in specs if s.name in started])  # all or nothing
                raise ServerError(f"{name} exited while starting; its log {st.spec.log_file} ends with:\n"
                                  f"{_log_tail(st.spec.log_file)}")
        if pending and time.monotonic() > deadline:
            down([s for s in specs if s.name in started])
            names = ", ".join(pending)
            logs = " ".join(str(s.spec.log_file) for s in pending.values())
            raise ServerError(f"{names}: no answer within {timeout:.0f} s (stopped what this call started); "
                              f"see {logs}, "
                              "or give it longer with --timeout")
        if pending:
            time.sleep(0.5)
    return [done[s.name] for s in specs]


def _group_alive(pgid: int) -> bool:
    _reap(pgid)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid_alive(pgid) or _has_members(pgid)


def _has_members(pgid: int) -> bool:
    """Whether a live (non-zombie) process other than the leader is in the group."""
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def stop(spec: ServerSpec, timeout: float = 15.0) -> ServerState:
    """Stop one server's process group: SIGTERM, then SIGKILL after ``timeout``.
    Returns the state it was found in."""
    found = inspect(spec)
    if found.state in ("running", "starting"):
        assert found.pid is not None
        pgid = found.pid
        log.info("%s: stopping process group %d", spec.name, pgid)
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:  # it exited since inspect()
            pass
        deadline = time.monotonic() + timeout
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _group_alive(pgid):
            log.warning("%s: still running after %.0f s: SIGKILL", spec.name, timeout)
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            while _group_alive(pgid) and time.monotonic() < deadline + 5:
                time.sleep(0.1)
    if found.state != "stopped":
        spec.pid_file.unlink(missing_ok=True)
    return found


def down(specs: Sequence[ServerSpec], timeout: float = 15.0) -> list[ServerState]:
    """Stop every server of ``specs`` that earshot started (and clean stale PID files)."""
    return [stop(s, timeout) for s in specs]
