"""Fetch one source video and cut a segment out of it.

* :func:`fetch_http`: ``requests`` streaming into a temporary file beside the target,
  replaced atomically on success. Connection errors, timeouts, 5xx/408/429 answers,
  bodies shorter than their ``Content-Length`` and attempts slower than a minimum rate
  are retried with exponential backoff; other 4xx answers (404...) and bodies over
  ``max_bytes`` fail at once. ``timeout`` bounds each socket read; a total deadline
  bounds the whole download (every attempt and pause), so a source that drips a byte
  now and then cannot keep the stage busy (reason ``download_timeout``).
* :func:`fetch_youtube`: yt-dlp through its Python API (``yt_dlp.YoutubeDL``) with
  options built by :func:`ytdlp_options`; never a command line. A progress hook holds
  it to the same deadline and minimum rate.
* :func:`trim_segment`: ffmpeg with input ``-ss``/``-to`` and a re-encode to H.264/AAC,
  so the cut is frame-accurate (a stream copy would snap to the previous keyframe).
* :func:`place_file`: hard link (same filesystem) or copy, atomically.

Every failure to get the bytes is a :class:`~components.errors.Rejected` with reason
``download_failed`` (or ``download_timeout``) naming the URL. URLs and paths go to subprocesses only as list
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
import urllib3

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


class _TooSlow(_Retryable):
    """An attempt below the minimum rate: retried, reported as a timeout when it was the last."""


def fetch_http(url: str, dest: str | Path, *, timeout: float, max_bytes: int, retries: int,
               backoff_seconds: float, deadline_seconds: float | None = None,
               min_bytes_per_second: float | None = None, sleep: Callable[[float], None] = time.sleep) -> int:
    """Download ``url`` to ``dest`` (atomically); return the number of bytes written.

    Attempt ``k`` (0-based) that fails transiently is followed by a pause of
    ``backoff_seconds * 2**k``; after ``retries`` retries the last error is reported.
    ``deadline_seconds`` bounds the whole download, attempts and pauses included; an
    attempt whose average rate is under ``min_bytes_per_second`` once it has run
    ``timeout`` seconds is abandoned (``None``: no limit).
    """
    dest = Path(dest)
    deadline = None if deadline_seconds is None else time.monotonic() + deadline_seconds
    last: _Retryable | None = None
    for attempt in range(retries + 1):
        if attempt:
            pause = backoff_seconds * 2 ** (attempt - 1)
            if deadline is not None and time.monotonic() + pause >= deadline:
                raise Rejected("download_timeout", f"{url}: {last}; no time left for retry {attempt} within "
                                                   f"download.deadline_seconds={deadline_seconds:g}")
            log.info("%s: retry %d/%d in %.2fs (%s)", url, attempt, retries, pause, last)
            sleep(pause)
        try:
            with atomic_path(dest) as tmp:
                size = _get_once(url, tmp, timeout=timeout, max_bytes=max_bytes,
                                 limits=_Limits(deadline, deadline_seconds, min_bytes_per_second, timeout))
            return size
        except _Retryable as exc:
            last = exc
    reason = "download_timeout" if isinstance(last, _TooSlow) else "download_failed"
    raise Rejected(reason, f"{url}: {last} (gave up after {retries + 1} attempts)")


class _Limits:
    """The deadline and the minimum rate one attempt is held to."""

    def __init__(self, deadline: float | None, deadline_seconds: float | None, min_rate: float | None,
                 grace: float):
        self.deadline, self.deadline_seconds, self.min_rate, self.grace = deadline, deadline_seconds, min_rate, grace
        self.started = time.monotonic()

    def check(self, url: str, written: int) -> None:
        now = time.monotonic()
        if self.deadline is not None and now >= self.deadline:
            raise Rejected("download_timeout", f"{url}: not finished within download.deadline_seconds="
                                               f"{self.deadline_seconds:g} ({written} bytes received)")
        elapsed = now - self.started
        if self.min_rate is not None and elapsed >= self.grace and written / elapsed < self.min_rate:
            raise _TooSlow(f"{written / elapsed:.0f} bytes/s after {elapsed:.1f}s, under "
                           f"download.min_bytes_per_second={self.min_rate:g}")

    def read_timeout(self, timeout: float) -> float:
        """The socket timeout of the next read: never past the deadline."""
        if self.deadline is None:
            return timeout
        return max(0.01, min(timeout, self.deadline - time.monotonic()))


def _get_once(url: str, tmp: Path, *, timeout: float, max_bytes: int, limits: _Limits) -> int:
    """One GET into ``tmp``; raises ``_Retryable`` or ``Rejected``.

    The body is read with ``read1`` (what one socket read returns), so the limits are
    checked however slowly the bytes come.
    """
    written = 0
    try:
        with requests.get(url, stream=True, timeout=limits.read_timeout(timeout),
                          headers={"User-Agent": USER_AGENT}) as resp:
            if resp.status_code in RETRY_STATUS:
                raise _Retryable(f"HTTP {resp.status_code}")
            if resp.status_code >= 400:
                raise Rejected("download_failed", f"{url}: HTTP {resp.status_code} {resp.reason}")
            expected = _declared_length(resp)
            if expected is not None and expected > max_bytes:
                raise Rejected("download_failed", f"{url}: {expected} bytes declared, over max_bytes={max_bytes}")
            with open(tmp, "wb") as f:
                while True:
                    limits.check(url, written)
                    chunk = resp.raw.read1(CHUNK, decode_content=True)
                    if not chunk:
                        break
                    written += len(chunk)
                    if written > max_bytes:
                        raise Rejected("download_failed", f"{url}: body exceeds max_bytes={max_bytes}")
                    f.write(chunk)
    except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:  # refused/reset, timeout, cut short
        limits.check(url, written)  # a read cut short by the deadline is a timeout, not a retry
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
                  max_bytes: int, deadline_seconds: float | None = None,
                  min_bytes_per_second: float | None = None) -> Path:
    """Download a YouTube video to ``<dest_stem>.<ext>`` (ext chosen by yt-dlp); return the path.

    The deadline and the minimum rate are held by a progress hook (yt-dlp retries
    network errors itself, so a download under the rate is abandoned at once).
    """
    import yt_dlp

    dest_stem = Path(dest_stem)
    opts = ytdlp_options(f"{dest_stem}.%(ext)s", fmt=fmt, timeout=timeout, retries=retries, max_bytes=max_bytes)
    opts["progress_hooks"] = [_progress_limits(url, deadline_seconds, min_bytes_per_second, grace=timeout)]
    try:
        with yt_dlp.YoutubeDL(opts) as ydl:
            ydl.download([url])
    except yt_dlp.utils.DownloadError as exc:
        raise Rejected("download_failed", f"{url}: yt-dlp: {exc}") from None
    done = [p for p in dest_stem.parent.glob(f"{dest_stem.name}.*") if p.suffix not in (".part", ".ytdl", ".temp")]
    if not done:  # e.g. every format was over max_filesize: yt-dlp skips without an error
        raise Rejected("download_failed", f"{url}: yt-dlp produced no file (over max_bytes={max_bytes}?)")
    return max(done, key=lambda p: p.stat().st_mtime_ns)


def _progress_limits(url: str, deadline_seconds: float | None, min_bytes_per_second: float | None,
                     grace: float) -> Callable[[dict[str, Any]], None]:
    """A yt-dlp progress hook raising ``Rejected("download_timeout")`` past the limits."""
    deadline = None if deadline_seconds is None else time.monotonic() + deadline_seconds
    limits = _Limits(deadline, deadline_seconds, min_bytes_per_second, grace)
    per_file: dict[str, int] = {}  # the video and the audio stream are fetched one after the other

    def hook(status: dict[str, Any]) -> None:
        if status.get("status") != "downloading":
            return
        per_file[str(status.get("filename"))] = int(status.get("downloaded_bytes") or 0)
        try:
            limits.check(url, sum(per_file.values()))
        except _TooSlow as exc:
            raise Rejected("download_timeout", f"{url}: {exc}") from None

    return hook


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
