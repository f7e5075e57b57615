"""Stage ``download``: put every source video in ``data/raw`` and index it.

Sources (``params.download.source``):

* ``synthetic``: the procedural talking-face corpus, generated straight into
  ``data/raw`` by :func:`components.data.synth.generate_corpus` (which also writes the
  ground truth ``speakers.parquet`` and ``speech.rttm``), then indexed in place.
* ``local``: a folder of videos (:mod:`components.data.sources.local`), hard-linked
  into ``data/raw`` (copied across filesystems).
* ``manifest``: rows of a CSV/Parquet manifest or VoxCeleb2 metadata folder
  (:mod:`components.data.sources.manifest`), fetched over HTTP(S), ``file://`` or
  YouTube, then cut to their ``[start, end]`` segment.

Whatever the source, a clip enters ``data/raw/<key>.<ext>`` only after
:func:`~components.media.probe.probe` decoded it; a broken one goes to the quarantine
table with its reason. Items run through :func:`~components.orchestration.runner.run_items` with a
thread pool (the work is I/O, ffmpeg subprocesses and PyAV decoding, all of which
release the GIL), which gives resume and pruning. On top of the runner's resume, a
rerun re-checks the previous results first (:func:`forget_stale`): an item whose file
is gone or no longer matches its recorded sha256 is redone, and so is an item whose
download failed or timed out (network errors are often transient).
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import shutil
import threading
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

import pandas as pd

from components.config import DownloadParams, Params
from components.data.sources.fetch import fetch_http, fetch_youtube, place_file, trim_args, trim_segment
from components.data.sources.local import not_a_video_file, scan_folder
from components.data.sources.manifest import ManifestRow, read_manifest
from components.errors import Rejected
from components.io import atomic_path, file_identity, fingerprint, sha256_file
from components.media.probe import MediaInfo, probe
from components.orchestration.runner import SIDECARS, Item, Outcome, run_items

log = logging.getLogger(__name__)

STAGE = "download"
SOURCES_DIR = ".sources"  # per-run cache of fetched source videos, below data/raw
SPEAKERS = "speakers.parquet"
RTTM = "speech.rttm"
SYNTH_CLIPS = "clips.parquet"
RETRIED_REASONS = ("download_failed", "download_timeout")  # worth another try on the next run

# Extension for a fetched file whose URL does not tell, from the demuxer PyAV picked.
CONTAINER_EXT = {"mov,mp4,m4a,3gp,3g2,mj2": ".mp4", "matroska,webm": ".mkv", "avi": ".avi", "mpeg": ".mpg",
                 "flv": ".flv", "mpegts": ".ts"}


def run_stage(params: Params, out_dir: str | Path, *, progress: bool = True) -> Outcome:
    """Fill ``out_dir`` (``data/raw``) from ``params.download.source``; return the outcome.

    The caller (``pipelines/download.py``) writes ``index.parquet``/``quarantine.parquet``
    and the summary from the returned outcome; this function writes the videos,
    ``speakers.parquet`` and keeps or removes ``speech.rttm``.
    """
    cfg = params.download
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    outcome = Outcome(STAGE)
    cache: SourceCache | None = None
    threads, config = params.common.workers, None
    if cfg.source == "synthetic":
        items = synthetic_items(params, out_dir, progress=progress)
        work = partial(index_in_place, out_dir=out_dir)
    elif cfg.source == "local":
        items = local_items(cfg)
        work = partial(ingest_local, out_dir=out_dir, extensions=tuple(cfg.extensions))
    else:
        items = manifest_items(cfg, outcome)
        cache = SourceCache(out_dir / SOURCES_DIR, cfg, urls=[it.payload["url"] for it in items])
        work = partial(fetch_clip, out_dir=out_dir, cache=cache, extensions=tuple(cfg.extensions))
        # What shapes a fetched clip's bytes; retries, timeouts and concurrency do not.
        threads, config = cfg.concurrency, {"ytdlp_format": cfg.ytdlp_format, "trim": trim_args("SRC", "DST", 0, 1)}
    items.sort(key=lambda it: it.key)  # clips of one source video run together (see SourceCache)
    try:
        with cf.ThreadPoolExecutor(max(1, threads), thread_name_prefix=STAGE) as pool:
            forget_stale(out_dir, items, pool)
            outcome = run_items(STAGE, items, work, out_dir, config=config, executor=pool, progress=progress,
                                outcome=outcome)
    finally:
        if cache is not None:
            cache.clear()
    if cfg.source != "synthetic":
        write_found_speakers(outcome, out_dir)
        for stale in (RTTM, SYNTH_CLIPS):  # ground truth of a previous synthetic run does not apply
            (out_dir / stale).unlink(missing_ok=True)
    return outcome


# ----------------------------------------------------------------------------- records


def clip_record(item: Item, rel_path: str, source: str, info: MediaInfo, sha256: str) -> dict[str, Any]:
    """The ``data/raw/index.parquet`` row of a clip (the runner adds ``key``)."""
    speaker_id, video_id, clip_id = item.key.split("/")
    return {"speaker_id": speaker_id, "video_id": video_id, "clip_id": clip_id, "path": rel_path,
            "source": source, "sha256": sha256, "bytes": info.bytes, "duration_s": info.duration_s,
            "width": info.width, "height": info.height, "fps": info.fps, "vcodec": info.vcodec,
            "acodec": info.acodec, "has_audio": info.has_audio, "outputs": [rel_path]}


def _replace_variants(dest: Path, extensions: tuple[str, ...]) -> None:
    """Remove the clip's file under another extension (its source changed container)."""
    stem = dest.name[: -len(dest.suffix)] if dest.suffix else dest.name
    for ext in {e.lower() for e in extensions} | {".mp4"}:
        other = dest.with_name(f"{stem}{ext}")
        if other != dest:
            other.unlink(missing_ok=True)


def write_found_speakers(outcome: Outcome, out_dir: Path) -> None:
    """``speakers.parquet`` for sources without speaker attributes: the ids found."""
    ids = sorted({r["speaker_id"] for r in outcome.records})
    with atomic_path(out_dir / SPEAKERS) as tmp:
        pd.DataFrame({"speaker_id": pd.Series(ids, dtype="string")}).to_parquet(tmp, index=False)


def forget_stale(out_dir: Path, items: list[Item], pool: cf.Executor) -> None:
    """Drop the runner's sidecar of items whose previous result must not be reused.

    The runner reuses an item when its inputs and config are unchanged. For downloads
    that is not enough: the output file may since have been deleted or altered (it is
    then re-hashed here and compared with the recorded sha256), and a failed download
    deserves another try on the next run.
    """

    def check(item: Item) -> None:
        sidecar = out_dir / SIDECARS / f"{item.key}.json"
        try:
            state = json.loads(sidecar.read_text())
        except (FileNotFoundError, ValueError):
            return
        record = state.get("record") or {}
        if state.get("status") == "rejected" and record.get("reason") in RETRIED_REASONS:
            log.info("%s: the download failed or timed out last time; trying again", item.key)
            sidecar.unlink(missing_ok=True)
        elif state.get("status") == "ok":
            path = out_dir / record.get("path", "")
            if not path.is_file() or sha256_file(path) != record.get("sha256"):
                log.warning("%s: %s is missing or changed since it was indexed; redoing it", item.key, path)
                sidecar.unlink(missing_ok=True)

    list(pool.map(check, items))


# ----------------------------------------------------------------------------- synthetic


def synthetic_items(params: Params, out_dir: Path, *, progress: bool = True) -> list[Item]:
    """Generate the synthetic corpus into ``out_dir`` and list its clips as items."""
    from components.data.synth import generate_corpus  # renders with PIL/numpy: import only when used

    clips = generate_corpus(params.download.synth, out_dir, workers=params.common.workers, progress=progress,
                            fps=params.common.fps, sample_rate=params.common.sample_rate)
    items = []
    for row in clips.itertuples(index=False):
        path = out_dir / row.relpath
        items.append(Item(f"{row.speaker_id}/{row.video_id}/{row.clip_id}", payload={"relpath": row.relpath},
                          identity=file_identity(path), source="synthetic"))
    return items


def index_in_place(item: Item, *, out_dir: Path) -> dict[str, Any]:
    """Probe and hash a clip that is already in ``data/raw``; a broken one is removed."""
    rel = item.payload["relpath"]
    path = out_dir / rel
    try:
        info = probe(path)
    except Rejected:
        path.unlink(missing_ok=True)  # broken files never stay in data/raw
        raise
    return clip_record(item, rel, item.source, info, sha256_file(path))


# ----------------------------------------------------------------------------- local


def local_items(cfg: DownloadParams) -> list[Item]:
    """The folder's videos as items; an entry that is no video file keeps its problem as identity."""
    items = []
    for clip in scan_folder(cfg.input, cfg.layout, cfg.extensions):
        problem = not_a_video_file(clip.path)
        identity = {"path": str(clip.path), "problem": problem} if problem else file_identity(clip.path)
        items.append(Item(clip.key, payload={"src": str(clip.path)}, identity=identity, source=str(clip.path)))
    return items


def ingest_local(item: Item, *, out_dir: Path, extensions: tuple[str, ...]) -> dict[str, Any]:
    """Probe a local video, then hard-link (or copy) it to ``data/raw/<key><ext>``."""
    src = Path(item.payload["src"])
    if problem := not_a_video_file(src):
        raise Rejected("unreadable", f"{src} is {problem}")
    info = probe(src)  # before placing: broken files never enter data/raw
    rel = f"{item.key}{src.suffix.lower()}"
    dest = out_dir / rel
    _replace_variants(dest, extensions)
    place_file(src, dest)
    return clip_record(item, rel, item.source, info, sha256_file(dest))


# ----------------------------------------------------------------------------- manifest


def manifest_items(cfg: DownloadParams, outcome: Outcome) -> list[Item]:
    """The manifest's valid rows as items; its bad rows go to ``outcome``'s quarantine."""
    entries, errors = read_manifest(cfg.input)
    if not entries and not errors:
        log.warning("%s: the manifest has no rows; nothing to download", cfg.input)
    for err in errors:
        outcome.reject(err.key, "bad_manifest_row", err.detail, err.source)
    items = []
    for entry in entries:
        row = entry.row.model_dump(mode="json")  # the row is both the work and its identity
        items.append(Item(entry.row.key, payload=row, identity=row, source=entry.row.url))
    return items


@dataclass(frozen=True)
class Fetched:
    """A source video on local disk, probed."""

    path: Path
    info: MediaInfo
    sha256: str
    ext: str  # the extension the clip keeps when it is not trimmed


class SourceCache:
    """Fetch each distinct URL once per run, however many clips (segments) it has.

    VoxCeleb2 has several utterances per YouTube video: each is an item of its own, but
    the video is downloaded once into ``data/raw/.sources/`` and each item cuts its
    segment from it. A source file is deleted as soon as the last item that needs it
    is done (items are sorted by key, so clips of one video run together); whatever is
    left (items resumed from an earlier run) goes in :meth:`clear`. A failed fetch is
    remembered too, so the clips of an unavailable video fail fast.
    """

    def __init__(self, folder: Path, cfg: DownloadParams, urls: list[str]):
        self.folder = folder
        self.cfg = cfg
        self._lock = threading.Lock()
        self._url_locks: dict[str, threading.Lock] = {}
        self._results: dict[str, Fetched | Rejected] = {}
        self._pending: dict[str, int] = {}
        for url in urls:
            self._pending[url] = self._pending.get(url, 0) + 1

    def get(self, url: str, kind: str) -> Fetched:
        with self._lock:
            url_lock = self._url_locks.setdefault(url, threading.Lock())
        with url_lock:
            if url not in self._results:
                try:
                    self._results[url] = self._fetch(url, kind)
                except Rejected as exc:  # kept without its traceback: that would hold every frame alive
                    self._results[url] = Rejected(exc.reason, exc.detail)
        result = self._results[url]
        if isinstance(result, Rejected):
            raise Rejected(result.reason, result.detail)
        return result

    def release(self, url: str) -> None:
        """One item that needed ``url`` is done; after the last one, forget it and delete the source."""
        with self._lock:
            self._pending[url] -= 1
            last = self._pending[url] == 0
            result = self._results.get(url)
            if last:  # a manifest of 100,000 rows must not keep 100,000 results alive
                for table in (self._pending, self._results, self._url_locks):
                    table.pop(url, None)
        if last and isinstance(result, Fetched) and result.path.is_relative_to(self.folder):
            result.path.unlink(missing_ok=True)

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def _fetch(self, url: str, kind: str) -> Fetched:
        cfg = self.cfg
        stem = self.folder / fingerprint(url)
        url_ext = Path(unquote(urlsplit(url).path)).suffix.lower()
        url_ext = url_ext if url_ext in {e.lower() for e in cfg.extensions} else ""
        if kind == "file":
            path = Path(url2pathname(urlsplit(url).path))
            if problem := not_a_video_file(path):
                raise Rejected("unreadable", f"{url}: {path} is {problem}")
        elif kind == "youtube":
            self.folder.mkdir(parents=True, exist_ok=True)
            path = fetch_youtube(url, stem, fmt=cfg.ytdlp_format, timeout=cfg.timeout_seconds,
                                 retries=cfg.retries, max_bytes=cfg.max_bytes, deadline_seconds=cfg.deadline_seconds,
                                 min_bytes_per_second=cfg.min_bytes_per_second)
            url_ext = path.suffix.lower()
        else:
            path = stem.with_suffix(url_ext or ".bin")
            fetch_http(url, path, timeout=cfg.timeout_seconds, max_bytes=cfg.max_bytes, retries=cfg.retries,
                       backoff_seconds=cfg.backoff_seconds, deadline_seconds=cfg.deadline_seconds,
                       min_bytes_per_second=cfg.min_bytes_per_second)
        info = probe(path)
        ext = url_ext or CONTAINER_EXT.get(info.container, f".{info.container.split(',')[0]}")
        return Fetched(path, info, sha256_file(path), ext)


def fetch_clip(item: Item, *, out_dir: Path, cache: SourceCache, extensions: tuple[str, ...]) -> dict[str, Any]:
    """Fetch a manifest row's source (once per URL), check it, cut its segment, place it."""
    row = ManifestRow.model_validate(item.payload)
    try:
        src = cache.get(row.url, row.kind)
        if row.sha256 and src.sha256 != row.sha256:
            raise Rejected("checksum_mismatch", f"{row.url}: sha256 {src.sha256}, manifest says {row.sha256}")
        if row.segment is None:
            rel = f"{item.key}{src.ext}"
            dest = out_dir / rel
            _replace_variants(dest, extensions)
            # Link what we fetched into the cache; copy a user's file:// source (never share its inode).
            place_file(src.path, dest, link=src.path.is_relative_to(cache.folder))
            info = src.info
        else:
            start, end = row.segment
            if start is not None and start >= src.info.duration_s:
                raise Rejected("too_short", f"{row.url}: the video ({src.info.duration_s:.2f}s) ends before the "
                                            f"segment starts ({start:.2f}s)")
            rel = f"{item.key}.mp4"
            dest = out_dir / rel
            _replace_variants(dest, extensions)
            info = _trim_checked(src.path, dest, start, end)
    finally:
        cache.release(row.url)
    return clip_record(item, rel, row.url, info, sha256_file(dest))


def _trim_checked(src: Path, dest: Path, start: float | None, end: float | None) -> MediaInfo:
    """Cut the segment beside ``dest``, probe it, and only then move it into place."""
    tmp = dest.with_name(f".tmp-{dest.name}")
    try:
        trim_segment(src, tmp, start, end)
        info = probe(tmp)
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)
    return info
