"""``earshot demo`` in a real browser: headless chromium uploads, runs each tab, saves screenshots.

The demo runs as ``earshot demo --models DIR --port N`` in a subprocess on a free port of
127.0.0.1, on tiny untrained models saved as the training stages save them (or, with
``$EARSHOT_DEMO_MODELS`` naming a folder with ``face_sr/`` and ``talking/``, on those:
the README's screenshots come from the project's trained ``models/``). The inputs are
made here: a drawn face RetinaFace finds, two voices, a 2-second talking video.
Screenshots go to docs/demo_face_sr.png, docs/demo_video.png, docs/demo_codec.png.

Run: ``timeout 900 .venv/bin/pytest -m browser -s tests/browser/test_demo.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from components.media.write import write_video
from tests._fixtures import speech_like
from tests.browser.test_ui import _browser_tools, _env, browser, free_port  # noqa: F401 (a fixture)
from tests.conftest import ROOT
from tests.data.test_faces import render
from tests.demo.test_demo import save_tiny_models

pytestmark = pytest.mark.browser

SR, FPS = 16000, 25
DOCS = ROOT / "docs"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("uploads")
    rng = np.random.default_rng(0)
    face = render(192, 192, [(96, 96, 120)])
    Image.fromarray(face).save(root / "face.png")
    sf.write(root / "voice.wav", speech_like(3 * SR, SR, 2, rng), SR)
    sf.write(root / "second.wav", speech_like(3 * SR, SR, 7, rng), SR)
    write_video(root / "talk.mp4", [face] * (2 * FPS), FPS, audio=speech_like(2 * SR, SR, 2, rng), crf=16,
                preset="ultrafast")
    return {p.name: p for p in root.iterdir()}


def _answers(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    _browser_tools()
    models = os.environ.get("EARSHOT_DEMO_MODELS") or str(save_tiny_models(tmp_path_factory.mktemp("models")))
    port = free_port()
    log = tmp_path_factory.mktemp("demo") / "demo.log"
    argv = [sys.executable, "-m", "pipelines.cli", "demo", "--models", models, "--port", str(port), "--device", "cpu"]
    with log.open("w") as out:
        process = subprocess.Popen(argv, cwd=ROOT, env=_env({}), stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while not _answers(url):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"earshot demo did not come up on {url}:\n{log.read_text()[-4000:]}")
            time.sleep(1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        print(f"\ndemo log: {log}")


def _upload(driver, container: str, path: Path) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, f"#{container} input[type=file]").send_keys(str(path))


def _wait(driver, condition, timeout: float, message: str):  # type: ignore[no-untyped-def]
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.5).until(condition, message=message)


def _images(driver, container: str) -> list:
    from selenium.webdriver.common.by import By

    return [img for img in driver.find_elements(By.CSS_SELECTOR, f"#{container} img")
            if img.get_attribute("naturalWidth") not in (None, "0")]


def _video_src(driver, container: str) -> str | bool:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, f"#{container} video")
    return bool(found) and (found[0].get_attribute("src") or False)


def _tab(driver, name: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.XPATH, f"//button[@role='tab' and normalize-space()='{name}']").click()


def _no_error(driver) -> None:
    from selenium.webdriver.common.by import By

    toasts = [t.text for t in driver.find_elements(By.CSS_SELECTOR, ".toast-body") if t.text]
    assert not toasts, toasts


def _shot(driver, name: str) -> None:
    """The whole page (the window made as tall as it) into docs/."""
    DOCS.mkdir(exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1600, min(max(height + 120, 1000), 2400))
    time.sleep(1.5)  # let images and videos finish drawing
    driver.save_screenshot(str(DOCS / name))
    driver.set_window_size(1600, 1000)
    print(f"screenshot: {DOCS / name}")


def test_face_sr_tab_shows_the_panels_and_mixes_a_second_voice(demo_url, browser, inputs):  # noqa: F811
    from selenium.webdriver.common.by import By

    browser.get(demo_url)
    _wait(browser, lambda d: d.find_elements(By.ID, "face-run"), 60, "the page never showed its face-SR tab")
    _upload(browser, "face-image", inputs["face.png"])
    _upload(browser, "face-voice", inputs["voice.wav"])
    time.sleep(2)  # the uploads reach the server
    browser.find_element(By.ID, "face-run").click()
    _wait(browser, lambda d: len(_images(d, "face-panels")) >= 5, 120, "the five result images never appeared")
    _no_error(browser)
    assert "model:" in browser.find_element(By.ID, "face-line").text
    _upload(browser, "face-second", inputs["second.wav"])
    time.sleep(2)
    browser.find_element(By.ID, "face-run").click()
    _wait(browser, lambda d: len(_images(d, "face-panels")) >= 7, 120, "the mixed voices' images never appeared")
    _no_error(browser)
    text = browser.find_element(By.ID, "face-panels").text
    assert "with the second voice" in text and "voices mixed 0.50 : 0.50" in text
    _shot(browser, "demo_face_sr.png")


def _run_tab(browser, url: str, tab: str, prefix: str, video: Path) -> None:  # noqa: ANN001
    """Open the page on ``tab``, upload ``video`` into ``<prefix>-in`` and press ``<prefix>-run``."""
    from selenium.webdriver.common.by import By

    browser.get(url)
    _wait(browser, lambda d: d.find_elements(By.ID, "face-run"), 60, "the page never loaded")
    _tab(browser, tab)
    _upload(browser, f"{prefix}-in", video)
    time.sleep(3)
    browser.find_element(By.ID, f"{prefix}-run").click()


def test_video_tab_upsamples_a_two_second_video(demo_url, browser, inputs):  # noqa: F811
    from selenium.webdriver.common.by import By

    _run_tab(browser, demo_url, "Video upsampling", "video", inputs["talk.mp4"])
    _wait(browser, lambda d: _video_src(d, "video-result") and _video_src(d, "video-side"), 300,
          "the upsampled videos never appeared")
    _no_error(browser)
    assert "model:" in browser.find_element(By.ID, "video-line").text
    _shot(browser, "demo_video.png")


def test_codec_tab_compares_the_call_with_h264_and_h265(demo_url, browser, inputs):  # noqa: F811
    from selenium.webdriver.common.by import By

    _run_tab(browser, demo_url, "Codec", "codec", inputs["talk.mp4"])
    _wait(browser, lambda d: _video_src(d, "codec-side"), 300, "the decoded side-by-side video never appeared")
    _no_error(browser)
    report = browser.find_element(By.CSS_SELECTOR, "#codec-report textarea").get_attribute("value")
    assert "bits per pixel:" in report and "50 frames (2.00 s" in report
    baselines = browser.find_element(By.ID, "codec-baselines").text
    assert "H.264: CRF" in baselines and "H.265: CRF" in baselines
    _shot(browser, "demo_codec.png")


def _call(url: str, endpoint: str, data: list) -> str:
    """One call of the page's API as a script would make it: the event stream's text."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(f"{url}/gradio_api/call/{endpoint}", data=json.dumps({"data": data}).encode(),
                                     headers={"Content-Type": "application/json"})
    with opener.open(request, timeout=30) as response:
        event = json.loads(response.read())["event_id"]
    with opener.open(f"{url}/gradio_api/call/{endpoint}/{event}", timeout=60) as response:
        return response.read().decode()


def test_paths_sent_to_the_api_never_reach_the_disk(demo_url, inputs):
    """A file path not uploaded, or a pick that is not one of the offered test clips, is refused."""
    image, voice = ({"path": str(inputs[name]), "meta": {"_type": "gradio.FileData"}}
                    for name in ("face.png", "voice.wav"))
    answer = _call(demo_url, "run_face", [image, voice, None, None, None, 0.5, False])
    assert "event: error" in answer and "not uploaded by a user" in answer, answer
    answer = _call(demo_url, "run_face", [None, None, "/etc/passwd", None, None, 0.5, False])
    assert "event: error" in answer and "/etc/passwd" in answer and "complete" not in answer, answer
