"""Fetch one source video and cut a segment out of it.

* :func:`fetch_http`: ``requests`` streaming into a temporary file beside the target,
  replaced atomically on success. Connection errors, timeouts, 5xx/408/429 answers and
  bodies shorter than their ``Content-Length`` are retried with exponential backoff;
  other 4xx answers (404...) and bodies over ``max_bytes`` fail at once.
* :func:`fetch_youtube`: yt-dlp through its Python API (``yt_dlp.YoutubeDL``) with
  options built by :func:`ytdlp_options`; never a command line.
* :func:`trim_segment`: ffmpeg with input ``-ss``/``-to`` and a re-encode to H.264/AAC,
  so the cut is frame-accurate (a stream copy would snap to the previous keyframe).
* :func:`place_file`: hard link (same filesystem) or copy, atomically.

Every failure to get the bytes is a :class:`~components.errors.Rejected` with reason
``download_failed`` naming the URL. URLs and paths go to subprocesses only as list
arguments, never through a shell.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from components import __version__
from components.errors import Rejected
from components.io import CHUNK, atomic_path
from components.media.ffmpeg import ffmpeg_exe, run_ffmpeg

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 429, 500, 502, 503, 504}
TRIM_CRF = 18  # visually lossless: the faces stage crops and downsamples these frames anyway
TRIM_PRESET = "veryfast"
USER_AGENT = f"earshot-download/{__version__}"


class _Retryable(Exception):
    """A transient failure worth another attempt."""


def fetch_http(url: str, dest: str | Path, *, timeout: float, max_bytes: int, retries: int,
               backoff_seconds: float, sleep: Callable[[float], None] = time.sleep) -> int:
    """Download ``url`` to ``dest`` (atomically); return the number of bytes written.

    Attempt ``k`` (0-based) that fails transiently is followed by a pause of
    ``backoff_seconds * 2**k``; after ``retries`` retries the last error is reported.
    """
    dest = Path(dest)
    last = ""
    for attempt in range(retries + 1):
        if attempt:
            pause = backoff_seconds * 2 ** (attempt - 1)
            log.info("%s: retry %d/%d in %.2fs (%s)", url, attempt, retries, pause, last)
            sleep(pause)
        try:
            with atomic_path(dest) as tmp:
                size = _get_once(url, tmp, timeout=timeout, max_bytes=max_bytes)
            return size
        except _Retryable as exc:
            last = str(exc)
    raise Rejected("download_failed", f"{url}: {last} (gave up after {retries + 1} attempts)")


def _get_once(url: str, tmp: Path, *, timeout: float, max_bytes: int) -> int:
    """One GET into ``tmp``; raises ``_Retryable`` or ``Rejected``."""
    try:
        with requests.get(url, stream=True, timeout=timeout, headers={"User-Agent": USER_AGENT}) as resp:
            if resp.status_code in RETRY_STATUS:
                raise _Retryable(f"HTTP {resp.status_code}")
            if resp.status_code >= 400:
                raise Rejected("download_failed", f"{url}: HTTP {resp.status_code} {resp.reason}")
            expected = _declared_length(resp)
            if expected is not None and expected > max_bytes:
                raise Rejected("download_failed", f"{url}: {expected} bytes declared, over max_bytes={max_bytes}")
            written = 0
            with open(tmp, "wb") as f:
                for chunk in resp.iter_content(CHUNK):
                    written += len(chunk)
                    if written > max_bytes:
                        raise Rejected("download_failed", f"{url}: body exceeds max_bytes={max_bytes}")
                    f.write(chunk)
    except requests.RequestException as exc:  # connection refused/reset, timeout, body cut short
        raise _Retryable(f"{type(exc).__name__}: {exc}") from None
    if expected is not None and written != expected:
        raise _Retryable(f"truncated body: {written} of {expected} bytes")
    return written


def _declared_length(resp: requests.Response) -> int | None:
    """Content-Length of an identity-encoded body (a compressed body's length differs)."""
    if resp.headers.get("Content-Encoding", "identity").lower() not in ("identity", ""):
        return None
    try:
        return int(resp.headers["Content-Length"])
    except (KeyError, ValueError):
        return None


def ytdlp_options(outtmpl: str, *, fmt: str, timeout: float, retries: int, max_bytes: int) -> dict[str, Any]:
    """yt-dlp options for fetching one video to ``outtmpl`` (a yt-dlp output template)."""
    return {
        "format": fmt,
        "outtmpl": {"default": outtmpl},
        "merge_output_format": "mp4/mkv",  # mp4 when the streams allow it, else Matroska
        "noplaylist": True,
        "retries": retries,
        "fragment_retries": retries,
        "socket_timeout": timeout,
        "max_filesize": max_bytes,
        "ffmpeg_location": ffmpeg_exe(),
        "overwrites": True,
        "cachedir": False,
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "logger": logging.getLogger(f"{__name__}.yt_dlp"),
    }


def fetch_youtube(url: str, dest_stem: str | Path, *, fmt: str, timeout: float, retries: int,
                  max_bytes: int) -> Path:
    """Download a YouTube video to ``<dest_stem>.<ext>`` (ext chosen by yt-dlp); return the path."""
    import yt_dlp

    dest_stem = Path(dest_stem)
    opts = ytdlp_options(f"{dest_stem}.%(ext)s", fmt=fmt, timeout=timeout, retries=retries, max_bytes=max_bytes)
    try:
        with yt_dlp.YoutubeDL(opts) as ydl:
            ydl.download([url])
    except yt_dlp.utils.DownloadError as exc:
        raise Rejected("download_failed", f"{url}: yt-dlp: {exc}") from None
    done = [p for p in dest_stem.parent.glob(f"{dest_stem.name}.*") if p.suffix not in (".part", ".ytdl", ".temp")]
    if not done:  # e.g. every format was over max_filesize: yt-dlp skips without an error
        raise Rejected("download_failed", f"{url}: yt-dlp produced no file (over max_bytes={max_bytes}?)")
    return max(done, key=lambda p: p.stat().st_mtime_ns)


def trim_args(src: str | Path, dst: str | Path, start: float | None, end: float | None) -> list[str]:
    """ffmpeg arguments cutting ``[start, end]`` seconds of ``src`` into an H.264/AAC mp4.

    ``-ss``/``-to`` are input options: ffmpeg seeks to the keyframe before ``start``,
    decodes and drops the frames before it, so the first output frame is the one at
    ``start``. Odd frame sizes lose one pixel row/column (H.264 4:2:0 needs even sizes).
    """
    args = ["-y"]
    if start:
        args += ["-ss", f"{start:.3f}"]
    if end is not None:
        args += ["-to", f"{end:.3f}"]
    return [*args, "-i", str(src), "-map", "0:v:0", "-map", "0:a:0?",
            "-vf", "crop=trunc(iw/2)*2:trunc(ih/2)*2", "-fps_mode", "passthrough",
            "-c:v", "libx264", "-preset", TRIM_PRESET, "-crf", str(TRIM_CRF), "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-b:a", "160k", "-movflags", "+faststart", "-f", "mp4", str(dst)]


def trim_segment(src: str | Path, dst: str | Path, start: float | None, end: float | None) -> None:
    """Write ``[start, end]`` of ``src`` to ``dst`` (atomically)."""
    with atomic_path(dst) as tmp:
        try:
            run_ffmpeg(trim_args(Path(src).resolve(), tmp, start, end))
        except subprocess.CalledProcessError as exc:
            err = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
            raise Rejected("corrupt", f"{src}: ffmpeg could not cut [{start}, {end}]: "
                                      f"{err[-1] if err else exc}") from None


def place_file(src: str | Path, dest: str | Path, *, link: bool = True) -> str:
    """Put ``src`` at ``dest`` atomically: a hard link when allowed, else a copy.

    Returns ``"link"`` or ``"copy"``. A hard link costs no space and no time; it fails
    across filesystems (EXDEV) or on files we may not link (protected_hardlinks), and
    then the bytes are copied.
    """
    with atomic_path(dest) as tmp:
        if link:
            tmp.unlink()
            try:
                os.link(src, tmp)
                return "link"
            except OSError as exc:
                log.debug("hard link %s -> %s failed (%s); copying", src, dest, exc)
        shutil.copyfile(src, tmp)
        return "copy"
