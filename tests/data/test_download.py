"""Stage ``download``: HTTP fetching with retries, manifests, VoxCeleb2 metadata, local folders.

Everything runs offline: a local HTTP server on 127.0.0.1 plays the internet (good,
missing, truncated, corrupt and flaky files, with a hit counter per path), the videos are
made with ffmpeg's lavfi sources, and YouTube is covered at the yt-dlp API boundary.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest

from components.config import Params
from components.data.download import run_stage
from components.data.sources import fetch
from components.data.sources.local import scan_folder
from components.data.sources.manifest import ManifestRow, parse_voxceleb_txt, read_manifest
from components.errors import ConfigError, Rejected
from components.media.ffmpeg import run_ffmpeg
from pipelines.download import main as download_main
from tests.conftest import tiny_params


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    good = d / "good.mp4"
    run_ffmpeg(["-y", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=25:duration=2",
                "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000:duration=2",
                "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(good)])
    # Frame i has luma 8*i: which source frame a cut starts with can be read off its pixels.
    ramp = d / "ramp.mkv"
    run_ffmpeg(["-y", "-f", "lavfi", "-i", "color=c=black:size=32x32:rate=25:duration=1.2,geq=lum='8*N':cb=128:cr=128",
                "-f", "lavfi", "-i", "sine=frequency=300:duration=1.2", "-c:v", "libx264", "-g", "10",
                "-pix_fmt", "yuv420p", "-c:a", "aac", str(ramp)])
    return {"good": good, "ramp": ramp}


class _Server:
    """Routes: path -> handler(hit number) -> (status, headers, body, bytes actually sent)."""

    def __init__(self, good: bytes):
        self.hits: Counter[str] = Counter()
        self.good = good
        self.corrupt = np.random.default_rng(0).bytes(30_000)
        handler = self._handler()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def respond(self, path: str, hit: int) -> tuple[int, bytes, int | None]:
        """(status, body sent, declared Content-Length or None for len(body))."""
        if path in ("/good.mp4", "/other.mp4", "/noext"):
            return 200, self.good, None
        if path == "/truncated.mp4":  # promises the whole file, sends half, hangs up
            return 200, self.good[: len(self.good) // 2], len(self.good)
        if path == "/corrupt.mp4":
            return 200, self.corrupt, None
        if path == "/flaky.mp4":  # two server errors, then the file
            return (500, b"try later", None) if hit <= 2 else (200, self.good, None)
        return 404, b"not here", None

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                server.hits[self.path] += 1
                status, body, declared = server.respond(self.path, server.hits[self.path])
                self.send_response(status)
                self.send_header("Content-Length", str(declared if declared is not None else len(body)))
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(videos: dict[str, Path]) -> Iterator[_Server]:
    srv = _Server(videos["good"].read_bytes())
    yield srv
    srv.close()


def _manifest_params(tmp_path: Path, manifest: Path, **extra: object) -> Params:
    return tiny_params(tmp_path, **{"download.source": "manifest", "download.input": str(manifest),
                                    "download.retries": 2, "download.backoff_seconds": 0.001,
                                    "download.timeout_seconds": 5, "download.concurrency": 4,
                                    "tracking.enabled": False, **extra})


def _write_csv(path: Path, rows: list[dict[str, object]]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_http_manifest_keeps_good_quarantines_bad_and_resumes(tmp_path: Path, server: _Server) -> None:
    good = server.good
    manifest = _write_csv(tmp_path / "m.csv", [
        {"speaker_id": "spk1", "video_id": "good", "url": f"{server.url}/good.mp4", "sha256": _sha(good)},
        {"speaker_id": "spk1", "video_id": "noext", "url": f"{server.url}/noext"},
        {"speaker_id": "spk1", "video_id": "flaky", "url": f"{server.url}/flaky.mp4"},
        {"speaker_id": "spk2", "video_id": "missing", "url": f"{server.url}/missing.mp4"},
        {"speaker_id": "spk2", "video_id": "trunc", "url": f"{server.url}/truncated.mp4"},
        {"speaker_id": "spk2", "video_id": "corrupt", "url": f"{server.url}/corrupt.mp4"},
        {"speaker_id": "spk2", "video_id": "badsum", "url": f"{server.url}/other.mp4", "sha256": "0" * 64},
        {"speaker_id": "../evil", "video_id": "x", "url": f"{server.url}/good.mp4"},
    ])
    params = _manifest_params(tmp_path, manifest)
    raw = params.data_path("raw")
    download_main(["--no-progress", "-S", "common.data_dir=" + str(tmp_path / "data"),
                   "-S", "download.source=manifest", "-S", f"download.input={manifest}",
                   "-S", "download.retries=2", "-S", "download.backoff_seconds=0.001",
                   "-S", "download.timeout_seconds=5", "-S", "tracking.enabled=false"])

    index = pd.read_parquet(raw / "index.parquet").set_index("key")
    assert sorted(index.index) == ["spk1/flaky/00000", "spk1/good/00000", "spk1/noext/00000"]
    for key, row in index.iterrows():
        assert (raw / row["path"]).read_bytes() == good, key
        assert row["sha256"] == _sha(good) and row["bytes"] == len(good)
        assert (row["width"], row["height"], row["has_audio"]) == (64, 48, True)
    assert index.loc["spk1/noext/00000", "path"].endswith(".mp4")  # extension from the container
    reasons = pd.read_parquet(raw / "quarantine.parquet").set_index("key")["reason"].to_dict()
    assert reasons == {"spk2/missing/00000": "download_failed", "spk2/trunc/00000": "download_failed",
                       "spk2/corrupt/00000": "corrupt", "spk2/badsum/00000": "checksum_mismatch",
                       "row-8": "bad_manifest_row"}
    # Nothing broken entered data/raw, and the source cache is gone.
    assert sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*.mp4") if ".items" not in p.parts) == \
        sorted(index["path"])
    assert not (raw / ".sources").exists()
    assert server.hits["/flaky.mp4"] == 3  # 500, 500, then OK: retried with backoff
    assert server.hits["/truncated.mp4"] == 3  # retried, then given up
    assert server.hits["/missing.mp4"] == 1  # a 404 is not retried
    assert pd.read_parquet(raw / "speakers.parquet")["speaker_id"].tolist() == ["spk1"]
    assert not (raw / "speech.rttm").exists()

    before = server.hits.copy()
    outcome = run_stage(params, raw, progress=False)
    assert outcome.skipped == 5  # 3 kept + corrupt + checksum mismatch: nothing refetched
    for path in ("/good.mp4", "/noext", "/flaky.mp4", "/corrupt.mp4", "/other.mp4"):
        assert server.hits[path] == before[path], path
    # Failed downloads are retried on a rerun (they are often transient).
    assert server.hits["/missing.mp4"] == before["/missing.mp4"] + 1

    # A clip deleted (or altered) since is fetched again, and only it.
    (raw / index.loc["spk1/good/00000", "path"]).unlink()
    outcome = run_stage(params, raw, progress=False)
    assert server.hits["/good.mp4"] == before["/good.mp4"] + 1
    assert server.hits["/noext"] == before["/noext"]
    assert len(outcome.records) == 3


def test_fetch_http_gives_up_on_truncated_body(tmp_path: Path, server: _Server) -> None:
    pauses: list[float] = []
    with pytest.raises(Rejected) as caught:
        fetch.fetch_http(f"{server.url}/truncated.mp4", tmp_path / "t.mp4", timeout=5, max_bytes=10**9,
                         retries=3, backoff_seconds=0.5, sleep=pauses.append)
    assert caught.value.reason == "download_failed"
    assert pauses == [0.5, 1.0, 2.0]  # exponential backoff
    assert not list(tmp_path.iterdir())  # no partial file left behind


def test_fetch_http_refuses_oversized_body(tmp_path: Path, server: _Server) -> None:
    with pytest.raises(Rejected, match="max_bytes"):
        fetch.fetch_http(f"{server.url}/good.mp4", tmp_path / "g.mp4", timeout=5, max_bytes=100,
                         retries=3, backoff_seconds=0, sleep=lambda s: None)
    assert server.hits["/good.mp4"] == 1


@pytest.mark.parametrize(("row", "field"), [
    ({"speaker_id": "../evil"}, "speaker_id='../evil'"),
    ({"video_id": "a/b"}, "video_id='a/b'"),
    ({"clip_id": ";rm -rf"}, "clip_id=';rm -rf'"),
    ({"speaker_id": ".."}, "speaker_id='..'"),
    ({"url": "javascript:alert(1)"}, "url='javascript:alert(1)'"),
    ({"url": "ftp://host/a.mp4"}, "url='ftp://host/a.mp4'"),
    ({"url": "https://www.youtube.com/watch?v=short"}, "YouTube"),
    ({"start": 5, "end": 5}, "start (5) must be before end (5)"),
    ({"start": 6, "end": 2}, "start (6) must be before end (2)"),
    ({"sha256": "xyz"}, "sha256='xyz'"),
])
def test_manifest_rejects_bad_rows_naming_row_and_field(tmp_path: Path, row: dict[str, object], field: str) -> None:
    base = {"speaker_id": "s", "video_id": "v", "clip_id": "c", "url": "https://example.org/a.mp4"}
    ok = {**base, "clip_id": "ok"}
    entries, errors = read_manifest(_write_csv(tmp_path / "m.csv", [ok, {**base, **row}]))
    assert [e.row.key for e in entries] == ["s/v/ok"]  # the rest goes on
    assert len(errors) == 1 and errors[0].key == "row-2"
    assert errors[0].detail.startswith("m.csv row 2 (line 3): ")
    assert field in errors[0].detail


def test_manifest_urls_ids_and_defaults(tmp_path: Path) -> None:
    entries, errors = read_manifest(_write_csv(tmp_path / "m.csv", [
        {"speaker_id": "id00012", "video_id": "21Uxsk56VDQ", "url": "21Uxsk56VDQ", "start": 1.5, "end": 4},
        {"speaker_id": "id00012", "video_id": "21Uxsk56VDQ", "url": "https://youtu.be/21Uxsk56VDQ?t=3"},
        {"speaker_id": "00001", "video_id": "v", "url": "file:///data/a.mkv"},
        {"speaker_id": "00001", "video_id": "v", "url": "file:///data/b.mkv"},  # same key as above
    ]))
    rows = [e.row for e in entries]
    assert [r.key for r in rows] == ["id00012/21Uxsk56VDQ/00001500-00004000", "id00012/21Uxsk56VDQ/00000",
                                     "00001/v/00000"]  # ids stay text: "00001" is not 1
    assert [r.kind for r in rows] == ["youtube", "youtube", "file"]
    assert rows[0].url == rows[1].url == "https://www.youtube.com/watch?v=21Uxsk56VDQ"
    assert len(errors) == 1 and "already used by m.csv row 3" in errors[0].detail


def test_manifest_parquet_and_missing_column(tmp_path: Path) -> None:
    frame = pd.DataFrame({"speaker_id": ["s"], "video_id": ["v"], "url": ["https://e.org/x.mp4"], "end": [3.0]})
    frame.to_parquet(tmp_path / "m.parquet")
    entries, errors = read_manifest(tmp_path / "m.parquet")
    assert not errors and entries[0].row.key == "s/v/00000000-00003000"
    frame.drop(columns="url").to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ConfigError, match="missing column"):
        read_manifest(tmp_path / "bad.parquet")


VOX_TXT = """Identity  : \tid00012
Reference : \t21Uxsk56VDQ
Offset    : \t1
FV Conf   : \t16.647\t(1)
ASD Conf  : \t4.931

FRAME \tX \tY \tW \tH
000245 \t0.476 \t0.156 \t0.233 \t0.414
000246 \t0.477 \t0.157 \t0.232 \t0.413
000247 \t0.478 \t0.157 \t0.232 \t0.413
000345 \t0.480 \t0.158 \t0.230 \t0.410
"""


def test_voxceleb_txt_parser() -> None:
    fields = parse_voxceleb_txt(VOX_TXT)
    assert fields == {"speaker_id": "id00012", "video_id": "21Uxsk56VDQ", "url": "21Uxsk56VDQ",
                      "start": 245 / 25, "end": 345 / 25}
    with pytest.raises(ValueError, match="Reference"):
        parse_voxceleb_txt(VOX_TXT.replace("Reference", "Refrence"))
    with pytest.raises(ValueError, match="FRAME"):
        parse_voxceleb_txt(VOX_TXT.split("FRAME")[0])


def test_voxceleb_txt_folder_becomes_manifest_rows(tmp_path: Path) -> None:
    root = tmp_path / "txt"
    (root / "id00012" / "21Uxsk56VDQ").mkdir(parents=True)
    (root / "id00012" / "21Uxsk56VDQ" / "00001.txt").write_text(VOX_TXT)
    (root / "id00012" / "21Uxsk56VDQ" / "00002.txt").write_text(VOX_TXT.replace("000245", "000400"))
    (root / "id00012" / "21Uxsk56VDQ" / "00003.txt").write_text("Identity : id00012\n")
    (root / "id00012" / "21Uxsk56VDQ" / "00004.txt").write_text(VOX_TXT.replace("21Uxsk56VDQ", "../../etc"))
    entries, errors = read_manifest(root)
    assert [(e.row.key, e.row.start, e.row.end, e.row.kind) for e in entries] == [
        ("id00012/21Uxsk56VDQ/00001", 9.8, 13.8, "youtube"),
        ("id00012/21Uxsk56VDQ/00002", 246 / 25, 400 / 25, "youtube"),  # first/last frame, any row order
    ]
    assert {e.key: e.detail.split(":")[0] for e in errors} == {
        "id00012/21Uxsk56VDQ/00003.txt": "id00012/21Uxsk56VDQ/00003.txt",
        "id00012/21Uxsk56VDQ/00004.txt": "id00012/21Uxsk56VDQ/00004.txt",
    }
    assert "video_id='../../etc'" in errors[1].detail


def _lumas(path: Path) -> list[float]:
    with av.open(str(path)) as container:
        return [float(f.to_ndarray(format="gray").mean()) for f in container.decode(video=0)]


def test_file_url_segments_are_cut_frame_accurately_and_copied(tmp_path: Path, videos: dict[str, Path]) -> None:
    ramp = videos["ramp"]
    url = ramp.resolve().as_uri()
    manifest = _write_csv(tmp_path / "m.csv", [
        {"speaker_id": "s", "video_id": "ramp", "clip_id": "whole", "url": url},
        {"speaker_id": "s", "video_id": "ramp", "url": url, "start": 0.4, "end": 0.8},
        {"speaker_id": "s", "video_id": "ramp", "url": url, "start": 5.0, "end": 6.0},  # after the end
    ])
    params = _manifest_params(tmp_path, manifest)
    raw = params.data_path("raw")
    outcome = run_stage(params, raw, progress=False)
    records = {r["key"]: r for r in outcome.records}
    whole = raw / records["s/ramp/whole"]["path"]
    assert whole.suffix == ".mkv" and whole.read_bytes() == ramp.read_bytes()
    assert os.stat(whole).st_ino != os.stat(ramp).st_ino  # file:// sources are copied, not linked
    cut = records["s/ramp/00000400-00000800"]
    assert cut["path"].endswith(".mp4") and cut["vcodec"] == "h264" and cut["acodec"] == "aac"
    assert cut["duration_s"] == pytest.approx(0.4, abs=0.05)
    source = _lumas(ramp)
    first = _lumas(raw / cut["path"])[0]
    assert int(np.argmin([abs(first - v) for v in source])) == 10  # the frame at 0.4 s * 25 fps
    assert [(q["key"], q["reason"]) for q in outcome.quarantine] == [("s/ramp/00005000-00006000", "too_short")]


def test_ytdlp_options_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import yt_dlp

    opts = fetch.ytdlp_options(str(tmp_path / "abc.%(ext)s"), fmt="bv*+ba/b", timeout=7, retries=2, max_bytes=1000)
    assert opts["format"] == "bv*+ba/b" and opts["outtmpl"] == {"default": str(tmp_path / "abc.%(ext)s")}
    assert (opts["socket_timeout"], opts["retries"], opts["max_filesize"]) == (7, 2, 1000)
    assert opts["noplaylist"] is True and opts["ffmpeg_location"]

    calls: list[tuple[dict[str, object], list[str]]] = []

    class FailingYDL:
        def __init__(self, options: dict[str, object]):
            self.options = options

        def __enter__(self) -> "FailingYDL":
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def download(self, urls: list[str]) -> int:
            calls.append((self.options, urls))
            raise yt_dlp.utils.DownloadError("ERROR: [youtube] 21Uxsk56VDQ: Video unavailable")

    monkeypatch.setattr(yt_dlp, "YoutubeDL", FailingYDL)
    url = ManifestRow(speaker_id="s", video_id="v", url="21Uxsk56VDQ").url
    with pytest.raises(Rejected) as caught:
        fetch.fetch_youtube(url, tmp_path / "abc", fmt="b", timeout=5, retries=0, max_bytes=10)
    assert caught.value.reason == "download_failed" and "Video unavailable" in caught.value.detail
    assert calls[0][1] == ["https://www.youtube.com/watch?v=21Uxsk56VDQ"]  # a list argument, no shell

    # Through the stage: every clip of the unavailable video is quarantined, the video is asked for once.
    manifest = _write_csv(tmp_path / "yt.csv", [
        {"speaker_id": "s", "video_id": "21Uxsk56VDQ", "url": "21Uxsk56VDQ", "start": 1, "end": 2},
        {"speaker_id": "s", "video_id": "21Uxsk56VDQ", "url": "21Uxsk56VDQ", "start": 3, "end": 4},
    ])
    calls.clear()
    outcome = run_stage(_manifest_params(tmp_path, manifest), tmp_path / "data" / "raw", progress=False)
    assert [q["reason"] for q in outcome.quarantine] == ["download_failed", "download_failed"]
    assert len(calls) == 1


def test_trim_args_are_frame_accurate_and_shell_free() -> None:
    args = fetch.trim_args("/in/a b;rm.mkv", "/out/c.mp4", 1.25, 3.5)
    assert args[:5] == ["-y", "-ss", "1.250", "-to", "3.500"]  # input options: seek, then decode
    assert args[args.index("-i") + 1] == "/in/a b;rm.mkv"  # one argument, never parsed by a shell
    assert args[args.index("-c:v") + 1] == "libx264" and args[args.index("-c:a") + 1] == "aac"


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def test_local_voxceleb_tree_is_linked_and_broken_files_stay_out(tmp_path: Path, videos: dict[str, Path]) -> None:
    good = videos["good"].read_bytes()
    src = _tree(tmp_path / "vox", {"id001/vidA/00001.mp4": good, "id001/vidA/00002.mp4": good,
                                   "id002/vidB/00001.mp4": good, "id002/vidB/00002.mp4": b"\0" * 5000,
                                   "id002/vidB/notes.txt": b"not a video", "id002/.hidden/x/y.mp4": good})
    params = tiny_params(tmp_path, **{"download.source": "local", "download.input": str(src)})
    raw = params.data_path("raw")
    outcome = run_stage(params, raw, progress=False)
    assert sorted(r["key"] for r in outcome.records) == ["id001/vidA/00001", "id001/vidA/00002", "id002/vidB/00001"]
    assert [(q["key"], q["reason"]) for q in outcome.quarantine] == [("id002/vidB/00002", "corrupt")]
    assert not (raw / "id002/vidB/00002.mp4").exists()
    placed = raw / "id001/vidA/00001.mp4"
    assert os.stat(placed).st_ino == os.stat(src / "id001/vidA/00001.mp4").st_ino  # hard link, same filesystem
    assert pd.read_parquet(raw / "speakers.parquet")["speaker_id"].tolist() == ["id001", "id002"]

    # The source folder changes: a clip removed is pruned from data/raw, a clip fixed is redone.
    (src / "id001/vidA/00002.mp4").unlink()
    (src / "id002/vidB/00002.mp4").unlink()
    (src / "id002/vidB/00002.mp4").write_bytes(good)
    outcome = run_stage(params, raw, progress=False)
    assert sorted(r["key"] for r in outcome.records) == ["id001/vidA/00001", "id002/vidB/00001", "id002/vidB/00002"]
    assert outcome.skipped == 2 and not outcome.quarantine
    assert not (raw / "id001/vidA/00002.mp4").exists()


def test_local_flat_folder_ids(tmp_path: Path, videos: dict[str, Path]) -> None:
    good, ramp = videos["good"].read_bytes(), videos["ramp"].read_bytes()
    src = _tree(tmp_path / "flat", {"talk one.mp4": good, "talk_one.MP4": good, "b.mkv": ramp})
    clips = scan_folder(src, "auto", [".mp4", ".mkv"])
    assert [(c.key, c.relpath) for c in clips] == [("unknown/b/00000", "b.mkv"),
                                                    ("unknown/talk_one/00000", "talk one.mp4"),
                                                    ("unknown/talk_one/00000-2", "talk_one.MP4")]
    params = tiny_params(tmp_path, **{"download.source": "local", "download.input": str(src)})
    outcome = run_stage(params, params.data_path("raw"), progress=False)
    assert sorted(r["path"] for r in outcome.records) == ["unknown/b/00000.mkv", "unknown/talk_one/00000-2.mp4",
                                                          "unknown/talk_one/00000.mp4"]
    assert {r["speaker_id"] for r in outcome.records} == {"unknown"}


def test_local_layout_detection_refuses_to_guess(tmp_path: Path) -> None:
    src = _tree(tmp_path / "mixed", {"a.mp4": b"x", "s/v/c.mp4": b"x"})
    with pytest.raises(ConfigError, match="download.layout"):
        scan_folder(src, "auto", [".mp4"])
    assert [c.key for c in scan_folder(src, "flat", [".mp4"])] == ["unknown/a/00000", "unknown/s_v_c/00000"]
    assert [c.key for c in scan_folder(src, "voxceleb", [".mp4"])] == ["s/v/c"]
    with pytest.raises(ConfigError, match="no video files"):
        scan_folder(_tree(tmp_path / "empty", {"readme.txt": b""}), "auto", [".mp4"])


@pytest.mark.realdata
def test_local_source_on_the_real_clips(tmp_path: Path, real_data: Path) -> None:
    """Every real clip (H.264/MPEG-4 mp4, MPEG-1 .mpg) is probed, kept and indexed."""
    clips = real_data / "clips"
    params = tiny_params(tmp_path, **{"download.source": "local", "download.input": str(clips)})
    outcome = run_stage(params, params.data_path("raw"), progress=False)
    expected = pd.read_csv(clips / "manifest.csv")
    assert not outcome.quarantine
    by_video = {r["video_id"]: r for r in outcome.records}
    assert sorted(by_video) == sorted(Path(f).stem for f in expected["file"])
    for row in expected.itertuples():
        record = by_video[Path(row.file).stem]
        assert record["path"].endswith(Path(row.file).suffix)  # container kept
        assert f"{record['width']}x{record['height']}" == row.resolution
        assert record["has_audio"] and record["sha256"] == hashlib.sha256((clips / row.file).read_bytes()).hexdigest()


def test_synthetic_source_generates_into_raw_and_indexes(tmp_path: Path) -> None:
    params = tiny_params(tmp_path, **{"download.synth.n_speakers": 2, "download.synth.clips_per_video": 1,
                                      "download.synth.frame_size": 64})
    raw = params.data_path("raw")
    outcome = run_stage(params, raw, progress=False)
    assert not outcome.quarantine
    records = {r["key"]: r for r in outcome.records}
    clips = pd.read_parquet(raw / "clips.parquet")
    assert sorted(records) == sorted(f"{c.speaker_id}/{c.video_id}/{c.clip_id}" for c in clips.itertuples())
    for key, record in records.items():
        assert record["path"] == f"{key}.mp4" and record["source"] == "synthetic"
        assert (record["width"], record["height"], record["fps"], record["has_audio"]) == (64, 64, 25.0, True)
        assert record["sha256"] == hashlib.sha256((raw / record["path"]).read_bytes()).hexdigest()
    # The generator's ground truth stays: speaker attributes and speech segments keyed by clip.
    speakers = pd.read_parquet(raw / "speakers.parquet")
    assert set(speakers["speaker_id"]) == {r["speaker_id"] for r in records.values()}
    assert len(speakers.columns) > 1
    uris = {line.split()[1] for line in (raw / "speech.rttm").read_text().splitlines()}
    assert uris and uris <= set(records)
