"""Faults of the ``download`` stage (issue 10, items 2, 5 and 6, and what a user may hand it).

A source that drips bytes, manifests that are not clean CSV, entries of an input folder
that are not video files, odd URLs and names: each is quarantined with its reason (or
refused with one line naming the input), the good inputs beside it go on, and nothing
downloaded earlier is rewritten. Every server is a thread on 127.0.0.1 that stops by
itself; nothing leaves the machine.
"""

from __future__ import annotations

import http.server
import logging
import os
import threading
import resource
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.data.download import run_stage
from components.data.sources import fetch
from components.data.sources.manifest import read_manifest
from components.errors import ConfigError, Rejected
from components.media.ffmpeg import run_ffmpeg
from components.orchestration.runner import Outcome
from tests.conftest import tiny_params

DRIP_BYTES = 20  # the drip source gives up by itself after this many bytes (~10 s)
DRIP_PAUSE_S = 0.5


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "good.mp4"
    run_ffmpeg(["-y", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=25:duration=1",
                "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000:duration=1",
                "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path)])
    return path


@pytest.fixture
def drip_server(clip: Path) -> Iterator[str]:
    """``/good.mp4`` at once; ``/drip.mp4`` promises a file and sends a byte every 0.5 s."""
    good = clip.read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server API
            body = good if self.path == "/good.mp4" else b"x" * DRIP_BYTES
            self.send_response(200 if self.path in ("/good.mp4", "/drip.mp4") else 404)
            self.send_header("Content-Length", str(len(good) if self.path == "/drip.mp4" else len(body)))
            self.end_headers()
            try:
                if self.path != "/drip.mp4":
                    self.wfile.write(body)
                    return
                for byte in body:  # bounded: the source stops by itself
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(DRIP_PAUSE_S)
            except OSError:  # the client gave up: that is the point
                pass
            self.close_connection = True

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _manifest(tmp_path: Path, text: str | bytes, name: str = "manifest.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def _run_manifest(tmp_path: Path, manifest: Path, **extra: object) -> Outcome:
    params = tiny_params(tmp_path, **{"download.source": "manifest", "download.input": str(manifest),
                                      "download.retries": 0, "download.backoff_seconds": 0.001,
                                      "download.timeout_seconds": 5, "tracking.enabled": False, **extra})
    return run_stage(params, params.data_path("raw"), progress=False)


def _reasons(outcome: Outcome) -> dict[str, tuple[str, str]]:
    return {q["key"]: (q["reason"], q["detail"]) for q in outcome.quarantine}


def _no_partial_files(folder: Path) -> bool:
    return not [p for p in folder.rglob(".tmp-*") if p.is_file()]


def test_dripping_source_hits_the_deadline_and_the_good_url_downloads(tmp_path: Path, drip_server: str) -> None:
    first = _run_manifest(tmp_path, _manifest(tmp_path, f"speaker_id,video_id,url\nspk,good,{drip_server}/good.mp4\n"),
                          **{"download.deadline_seconds": 2, "download.min_bytes_per_second": 0})
    assert [r["key"] for r in first.records] == ["spk/good/00000"]
    kept = tmp_path / "data" / "raw" / "spk" / "good" / "00000.mp4"
    before = kept.stat()

    manifest = _manifest(tmp_path, f"speaker_id,video_id,url\nspk,good,{drip_server}/good.mp4\n"
                                   f"spk,drip,{drip_server}/drip.mp4\n")
    started = time.monotonic()
    outcome = _run_manifest(tmp_path, manifest, **{"download.deadline_seconds": 2, "download.min_bytes_per_second": 0})
    took = time.monotonic() - started

    reason, detail = _reasons(outcome)["spk/drip/00000"]
    assert reason == "download_timeout" and "drip.mp4" in detail and "deadline_seconds=2" in detail
    assert took < DRIP_BYTES * DRIP_PAUSE_S / 2, f"the stage waited {took:.1f}s on a dripping source"
    assert [r["key"] for r in outcome.records] == ["spk/good/00000"]
    after = kept.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # nothing earlier rewritten
    assert _no_partial_files(tmp_path / "data" / "raw")


def test_an_attempt_under_the_minimum_rate_is_abandoned(tmp_path: Path, drip_server: str) -> None:
    started = time.monotonic()
    with pytest.raises(Rejected) as caught:
        fetch.fetch_http(f"{drip_server}/drip.mp4", tmp_path / "d.mp4", timeout=1, max_bytes=10**6, retries=1,
                         backoff_seconds=0, deadline_seconds=None, min_bytes_per_second=1000)
    assert time.monotonic() - started < 5
    assert caught.value.reason == "download_timeout" and "min_bytes_per_second=1000" in caught.value.detail
    assert not (tmp_path / "d.mp4").exists() and _no_partial_files(tmp_path)


def test_unreadable_manifest_rows_are_quarantined_and_the_good_rows_run(tmp_path: Path, clip: Path) -> None:
    url = clip.as_uri()
    text = (b"speaker_id,video_id,url\n"
            + f"spk,first,{url}\n".encode()
            + b"spk,bad\xffbyte," + url.encode() + b"\n"
            + f"spk,ragged,{url},surplus\n".encode()
            + b"spk,short\n"
            + b"\n"
            + f"spk,last,{url}\n".encode())
    outcome = _run_manifest(tmp_path, _manifest(tmp_path, text))
    assert sorted(r["key"] for r in outcome.records) == ["spk/first/00000", "spk/last/00000"]
    reasons = _reasons(outcome)
    assert reasons["row-2"] == ("bad_manifest_row", "manifest.csv row 2 (line 3): not UTF-8 text (byte 0xff at column 8)")
    assert reasons["row-3"] == ("bad_manifest_row", "manifest.csv row 3 (line 4): 4 fields, the header has 3")
    assert reasons["row-4"] == ("bad_manifest_row", "manifest.csv row 4 (line 5): 2 fields, the header has 3")
    assert len(reasons) == 3


def test_empty_and_header_only_manifests(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ConfigError, match=r"empty.csv: the file is empty; a manifest starts with a header line"):
        read_manifest(_manifest(tmp_path, "", "empty.csv"))
    with pytest.raises(ConfigError, match=r"bad.parquet: not a readable Parquet file"):
        read_manifest(_manifest(tmp_path, b"PAR1 this is no parquet", "bad.parquet"))
    with pytest.raises(ConfigError, match=r"header line \(line 1\): not UTF-8 text"):
        read_manifest(_manifest(tmp_path, b"speaker_id,vid\xe9o_id,url\n", "latin1.csv"))
    with caplog.at_level(logging.WARNING, logger="components.data.download"):
        outcome = _run_manifest(tmp_path, _manifest(tmp_path, "speaker_id,video_id,url\r\n", "header.csv"))
    assert outcome.records == [] and outcome.quarantine == []
    assert "header.csv: the manifest has no rows; nothing to download" in caplog.text


def test_odd_urls_and_path_escaping_ids(tmp_path: Path, clip: Path) -> None:
    spaced = tmp_path / "a b%c;$(x).mp4"
    spaced.write_bytes(clip.read_bytes())
    (tmp_path / "folder.mp4").mkdir()
    rows = [("spk", "spaced", spaced.as_uri()), ("spk", "dir", (tmp_path / "folder.mp4").as_uri()),
            ("spk", "gone", (tmp_path / "gone.mp4").as_uri()), ("spk", "host", "file://otherhost/etc/passwd"),
            ("spk", "rel", "file:relative.mp4"), ("spk", "ftp", "ftp://127.0.0.1/a.mp4"),
            ("spk", "js", "javascript:alert(1)"), ("spk", "nohost", "http:///a.mp4"),
            ("..", "up", clip.as_uri()), ("spk", "../../etc", clip.as_uri()), ("spk", "$(reboot)", clip.as_uri())]
    text = "speaker_id,video_id,url\n" + "".join(f'{s},{v},"{u}"\n' for s, v, u in rows)
    outcome = _run_manifest(tmp_path, _manifest(tmp_path, text))
    assert [r["key"] for r in outcome.records] == ["spk/spaced/00000"]
    reasons = _reasons(outcome)
    assert reasons["spk/dir/00000"][0] == "unreadable" and "is a folder, not a video file" in reasons["spk/dir/00000"][1]
    assert reasons["spk/gone/00000"][0] == "unreadable" and "gone.mp4 is missing" in reasons["spk/gone/00000"][1]
    bad_rows = {k: d for k, (r, d) in reasons.items() if r == "bad_manifest_row"}
    assert len(bad_rows) == 8
    assert "url='file://otherhost/etc/passwd': file URLs must be file:///absolute/path" in bad_rows["row-4"]
    assert "scheme ftp: not allowed" in bad_rows["row-6"] and "scheme javascript: not allowed" in bad_rows["row-7"]
    assert "speaker_id='..': must not be '.' or '..'" in bad_rows["row-9"]
    assert "video_id='../../etc': must match" in bad_rows["row-10"]
    raw = tmp_path / "data" / "raw"
    assert sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*.mp4")) == ["spk/spaced/00000.mp4"]


def test_input_folder_entries_that_are_not_video_files_are_quarantined(tmp_path: Path, clip: Path) -> None:
    src = tmp_path / "videos"
    src.mkdir()
    (src / "good.mp4").write_bytes(clip.read_bytes())
    (src / "näme $(rm -rf ~); 'q' `x`.mp4").write_bytes(clip.read_bytes())
    (src / "x.mp4").mkdir()
    (src / "dangling.mp4").symlink_to(tmp_path / "nowhere.mp4")
    os.mkfifo(src / "pipe.mp4")  # opening it would block forever
    params = tiny_params(tmp_path, **{"download.source": "local", "download.input": str(src),
                                      "download.layout": "flat", "tracking.enabled": False})
    outcome = run_stage(params, params.data_path("raw"), progress=False)
    assert sorted(r["key"] for r in outcome.records) == ["unknown/good/00000", "unknown/n_me_rm_-rf_q_x/00000"]
    reasons = _reasons(outcome)
    assert reasons == {
        "unknown/x/00000": ("unreadable", f"{src / 'x.mp4'} is a folder, not a video file"),
        "unknown/dangling/00000": ("unreadable", f"{src / 'dangling.mp4'} is a broken symbolic link "
                                                 f"(to {tmp_path / 'nowhere.mp4'})"),
        "unknown/pipe/00000": ("unreadable", f"{src / 'pipe.mp4'} is not a regular file (a FIFO, socket or device)"),
    }


def test_a_folder_where_every_input_is_bad_quarantines_each(tmp_path: Path) -> None:
    src = tmp_path / "videos"
    src.mkdir()
    (src / "x.mp4").mkdir()
    (src / "dangling.mkv").symlink_to(tmp_path / "nowhere.mkv")
    (src / "zero.mp4").write_bytes(b"")
    params = tiny_params(tmp_path, **{"download.source": "local", "download.input": str(src),
                                      "download.layout": "flat", "tracking.enabled": False})
    outcome = run_stage(params, params.data_path("raw"), progress=False)
    assert outcome.records == []
    reasons = {k: r for k, (r, _) in _reasons(outcome).items()}
    assert reasons["unknown/x/00000"] == "unreadable" and reasons["unknown/dangling/00000"] == "unreadable"
    assert len(reasons) == 3


def test_a_manifest_of_100000_rows_is_read_quickly_and_in_little_memory(tmp_path: Path) -> None:
    rows = 100_000
    lines = ["speaker_id,video_id,clip_id,url,start,end"]
    lines += [f"id{i // 100:05d},vid{i // 10:06d},{i:06d},https://example.invalid/v{i // 10}.mp4,{i % 10},{i % 10 + 1}"
              for i in range(rows)]
    manifest = _manifest(tmp_path, "\n".join(lines) + "\n")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux: the peak so far
    started = time.perf_counter()
    entries, errors = read_manifest(manifest)
    took = time.perf_counter() - started
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    print(f"read_manifest: {rows} rows in {took:.1f}s, peak memory grew by {grown:.0f} MiB")
    assert len(entries) == rows and not errors
    assert took < 60 and grown < 500


def test_a_youtube_download_is_held_to_the_deadline_and_the_rate(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import yt_dlp

    class SlowYDL:
        """Reports progress like yt-dlp: the video file, then the audio file, then a stall."""

        def __init__(self, options: dict[str, object]):
            self.hooks = options["progress_hooks"]

        def __enter__(self) -> "SlowYDL":
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def download(self, urls: list[str]) -> int:
            for filename, sent in (("v.f137.mp4", 100_000), ("v.f140.m4a", 0), ("v.f140.m4a", 10)):
                time.sleep(0.3)
                for hook in self.hooks:  # type: ignore[attr-defined]
                    hook({"status": "downloading", "filename": filename, "downloaded_bytes": sent})
            raise AssertionError("the hook let a stalled download go on")

    monkeypatch.setattr(yt_dlp, "YoutubeDL", SlowYDL)
    url = "https://www.youtube.com/watch?v=21Uxsk56VDQ"
    with pytest.raises(Rejected) as caught:  # 100 kB in 0.6 s is fast enough; nothing more for 0.9 s is not
        fetch.fetch_youtube(url, tmp_path / "v", fmt="b", timeout=0.2, retries=0, max_bytes=10**9,
                            deadline_seconds=None, min_bytes_per_second=120_000)
    assert caught.value.reason == "download_timeout" and "min_bytes_per_second=120000" in caught.value.detail
    assert ": 0 bytes/s" not in caught.value.detail  # the rate counts the video's bytes too, not the audio's alone
    with pytest.raises(Rejected) as caught:
        fetch.fetch_youtube(url, tmp_path / "v", fmt="b", timeout=5, retries=0, max_bytes=10**9,
                            deadline_seconds=0.5, min_bytes_per_second=0)
    assert caught.value.reason == "download_timeout" and "deadline_seconds=0.5" in caught.value.detail
