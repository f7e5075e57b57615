"""The UIs in a real browser: Debian's chromium and chromedriver, driven by selenium.

On a scratch copy of the project (the working tree's files, a shrunk corpus, its own git
and DVC repositories) the test starts both servers with `earshot server up`'s code on
free ports of 127.0.0.1, runs the Prefect pipeline flow up to ``report`` (every data
stage) against them, and runs one variant of the faces stage as a DVC experiment
(``dvc exp run -S faces.detect_every=2 faces``). Then headless chromium opens the
Prefect UI, where the flow run must show as Completed, and MLflow's run comparison of
the two faces runs (detect_every 5 and 2), and saves screenshots.

Setup: ``bash scripts/setup.sh --browser``; run: ``.venv/bin/pytest -m browser -s``.
Screenshots go to ``$EARSHOT_SCREENSHOTS`` when set, else to a temporary folder; the
test prints where. About 3-5 minutes on 2 cores (the servers ~30 s, the flow the rest).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from components.config import load_params
from components.orchestration.servers import down, server_specs, up
from tests.conftest import ROOT

pytestmark = pytest.mark.browser

# The corpus of tests/conftest.py's tiny_params: 4 speakers, 8 clips of 2 s.
TINY = {"common.workers": 1, "download.synth.n_speakers": 4, "download.synth.videos_per_speaker": 1,
        "download.synth.clips_per_video": 2, "download.synth.clip_seconds": 2.0,
        "download.synth.clip_seconds_jitter": 0.0}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _browser_tools() -> tuple[str, str]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        chromium = None
    if not (chromium and driver):
        pytest.skip("needs chromium, chromedriver and selenium: bash scripts/setup.sh --browser")
    return chromium, driver


def _run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """Run a command, failing the test with the end of its output when it fails."""
    out = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        pytest.fail(f"{' '.join(argv)} exited {out.returncode}:\n{(out.stdout + out.stderr)[-4000:]}")
    return out


def _set(tree: dict, dotted: str, value: object) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree[key]
    tree[leaf] = value


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """The working tree's files (tracked and new, as git sees them; .dvc/ among them) in a
    fresh git repository, with the tiny corpus in its params.yaml."""
    _browser_tools()  # skip before minutes of work when the browser is missing
    root = tmp_path_factory.mktemp("project")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file() and not rel.startswith(("tests/", "notebooks/")):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / rel)
    params = yaml.safe_load((root / "params.yaml").read_text())
    for key, value in TINY.items():
        _set(params, key, value)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = _env({})
    git = ["git", "-c", "user.name=earshot-test", "-c", "user.email=test@earshot.invalid"]
    _run(["git", "init", "-q"], root, env, 60)  # .dvc/config came with the files: a DVC repository already
    _run(["git", "add", "-A"], root, env, 60)
    _run([*git, "commit", "-q", "-m", "scratch copy of the working tree"], root, env, 60)
    return root


def _env(extra: dict[str, str]) -> dict[str, str]:
    """The venv's python first on PATH (dvc.yaml's commands say `python`), offline."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "HF_HUB_OFFLINE": "1", "DVC_NO_ANALYTICS": "1", "PYTHONUNBUFFERED": "1", **extra}
    env.pop("PYTHONPATH", None)  # the scratch copy's own code, from its working directory
    return env


@pytest.fixture(scope="module")
def servers(project: Path):
    ports = {"EARSHOT_PREFECT_PORT": str(free_port()), "EARSHOT_MLFLOW_PORT": str(free_port())}
    specs = server_specs(load_params(project / "params.yaml"), project, environ={**os.environ, **ports})
    started = time.monotonic()
    states = up(specs, timeout=300)
    print(f"\nservers up in {time.monotonic() - started:.1f} s: " + ", ".join(s.spec.url for s in states))
    yield {s.spec.name: s.spec for s in states}
    down(specs, timeout=20)


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("EARSHOT_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots: {folder}")
    return folder


@pytest.fixture(scope="module")
def browser():
    chromium, driver_path = _browser_tools()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1600,1000", "--no-proxy-server", "--disable-extensions"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def pipeline(project: Path, servers) -> dict[str, str]:
    """The pipeline flow up to `report` on the servers, then a faces variant as a DVC
    experiment; the environment that points at the servers."""
    env = _env({"PREFECT_API_URL": servers["prefect"].client_value,
                "MLFLOW_TRACKING_URI": servers["mlflow"].client_value})
    started = time.monotonic()
    _run([sys.executable, "-c", "from pipelines.flows import pipeline; pipeline(target='report')"],
         project, env, timeout=1500)
    print(f"pipeline flow (target report, tiny corpus): {time.monotonic() - started:.1f} s")
    started = time.monotonic()
    _run([sys.executable, "-m", "dvc", "exp", "run", "-q", "-n", "detect-every-2", "-S", "faces.detect_every=2",
          "faces"], project, env, timeout=900)
    print(f"dvc exp run -S faces.detect_every=2 faces: {time.monotonic() - started:.1f} s")
    return env


def _api(url: str, body: dict | None = None) -> object:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=30) as response:
        return json.loads(response.read())


def _wait_for_text(driver, *needles: str, timeout: float = 90) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def found(d) -> str | bool:
        text = d.find_element(By.TAG_NAME, "body").text
        return text if all(n in text for n in needles) else False

    return WebDriverWait(driver, timeout, poll_frequency=0.5).until(
        found, message=f"{driver.current_url} never showed {needles}")


def test_prefect_ui_shows_the_completed_flow_run(pipeline, servers, browser, shots):
    prefect = servers["prefect"]
    runs = _api(f"{prefect.url}/api/flow_runs/filter", {"sort": "START_TIME_DESC", "limit": 20})
    top = [r for r in runs if r.get("parent_task_run_id") is None]
    assert len(top) == 1, f"expected one pipeline flow run, got {[r['name'] for r in top]}"
    run = top[0]
    assert run["state_type"] == "COMPLETED", run["state_name"]
    flow = _api(f"{prefect.url}/api/flows/{run['flow_id']}")

    browser.get(f"{prefect.url}/runs/flow-run/{run['id']}")
    text = _wait_for_text(browser, run["name"], "Completed", flow["name"])
    assert "Can't connect to Server API" not in text
    time.sleep(1)  # let the timeline finish drawing
    browser.save_screenshot(str(shots / "prefect_flow_run.png"))

    browser.get(f"{prefect.url}/runs")
    _wait_for_text(browser, run["name"], "Completed")
    time.sleep(1)
    browser.save_screenshot(str(shots / "prefect_runs.png"))

    # The flow's summary artifact: every stage, with links into the MLflow server's UI.
    [artifact] = _api(f"{prefect.url}/api/artifacts/filter",
                      {"artifacts": {"flow_run_id": {"any_": [run["id"]]}, "key": {"any_": ["pipeline-summary"]}}})
    assert f"{servers['mlflow'].url}/#/experiments/" in artifact["data"]
    browser.get(f"{prefect.url}/artifacts/artifact/{artifact['id']}")
    _wait_for_text(browser, "pipeline-summary", "download", "faces", "audio", "shards", "report")
    time.sleep(1)
    browser.save_screenshot(str(shots / "prefect_artifact.png"))


def test_mlflow_ui_compares_two_variants(pipeline, servers, browser, shots):
    import mlflow

    url = servers["mlflow"].url
    client = mlflow.MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name("earshot")
    faces = client.search_runs([experiment.experiment_id], "tags.stage = 'faces'", order_by=["start_time ASC"])
    assert [r.data.params["faces.detect_every"] for r in faces] == ["5", "2"]
    assert faces[1].data.tags.get("dvc_exp_name") == "detect-every-2"
    ids = [r.info.run_id for r in faces]

    query = urllib.parse.urlencode({"runs": json.dumps(ids), "experiments": json.dumps([experiment.experiment_id])})
    browser.get(f"{url}/#/compare-runs?{query}")
    _wait_for_text(browser, "Comparing 2 Runs", "faces.detect_every", *ids)
    _close_assistant(browser)
    time.sleep(1)
    browser.save_screenshot(str(shots / "mlflow_compare.png"))

    from selenium.webdriver.common.by import By

    params_header = browser.find_element(By.XPATH, "//*[normalize-space(text())='Parameters']")
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'});", params_header)
    row = browser.find_element(By.XPATH, "//tr[.//*[normalize-space(text())='faces.detect_every']]")
    assert row.text.split()[-2:] == ["5", "2"], row.text
    time.sleep(0.5)
    browser.save_screenshot(str(shots / "mlflow_compare_params.png"))


def _close_assistant(driver) -> None:
    """MLflow 3 opens an assistant side panel over a third of the page: close it."""
    from selenium.webdriver.common.by import By

    for button in driver.find_elements(By.CSS_SELECTOR, "button[aria-label*='lose']"):
        if button.is_displayed():
            button.click()
            return
