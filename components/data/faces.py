"""The ``faces`` stage: one square face-crop track and one track file per raw clip.

For every video in ``data/raw`` (``index.parquet``) it writes, per the layout contract:

* ``data/faces/<key>.mkv``: the whole clip at ``common.fps``, cropped around the main
  face to ``faces.crop_size`` squares, Motion-JPEG at ``faces.jpeg_quality`` (every
  frame one JPEG, which the shards stage copies as they are: one lossy step; see
  :mod:`components.media.jpeg_video`), no audio;
* ``data/faces/<key>.npz``: per output frame ``boxes`` (face box, source px),
  ``scores``, ``detected``, ``landmarks`` (crop px), ``crop_boxes`` (source px), plus
  ``keyframe`` (RetinaFace ran on the frame) and ``crop_angles`` (degrees, non-zero
  with ``faces.align``). Boxes and landmarks are the face's estimated position
  (detections, interpolated between keyframes); the crop window follows a smoothed
  copy of the path so that it does not jitter with the detector's noise;

or a quarantine row saying why not (broken file, ``too_short``, ``no_face``,
``face_too_small``, ``track_lost``, ``multiple_faces``, ``extreme_pose``). Index rows
carry the contract's columns plus the figures the quality rules used (``n_keyframes``,
``lost_fraction``, ``competing_fraction``, ``extreme_fraction``) and ``recropped``.

**One decode per clip.** Decoding dominates the cost, so frames are decoded once and
the crops are written *while* detecting: RetinaFace runs on keyframes only, on an
adaptive schedule (``detect_every_max`` frames apart where tracking is confident,
bisected down to ``detect_every`` where the face moves or others come and go; see
:class:`_SinglePass`); the frames in between wait in a buffer until the next keyframe's
detection lets the path builder interpolate them, then they are cropped and JPEG-encoded
in this process (at most ``detect_every_max`` frames are held, whatever the resolution or
length). The crops follow the track that leads *so far*, which is the track finally
chosen unless a larger face shows up later or the first keyframe has no face. Both
cases are detected exactly (the observations that drove the crops are compared with the
final track's), and only then is the clip decoded a second time and re-cropped along the
final track; for a rejected clip the partial output is discarded.

Workers load the detector once each, before their first clip (:func:`warm_worker`, the
pool's warm-up); a worker decodes HD video with ``cores // common.workers`` FFmpeg threads
(:func:`decode_threads`).
"""

from __future__ import annotations

import functools
import logging
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from components.config import FacesParams, Params
from components.errors import Rejected
from components.faces.crop import CropGeometry, crop_face, crop_geometry
from components.faces.detect import FaceDetector
from components.faces.track import (FacePath, Observation, PathBuilder, TrackLinker, TrackStats, build_path,
                                    main_track, pairwise_iou)
from components.io import atomic_path, file_identity
from components.media.probe import probe, readable_size
from components.media.read import iter_frames
from components.media.jpeg_video import write_jpeg_video
from components.orchestration.executors import fanout
from components.orchestration.runner import Item, Outcome, run_items

log = logging.getLogger(__name__)

STAGE = "faces"
CROP_SUFFIX = ".mkv"  # Motion-JPEG in Matroska (components.media.jpeg_video)


@dataclass(frozen=True)
class ClipFaces:
    """What the stage learned about one clip (its crops are already written)."""

    n_frames: int
    path: FacePath
    geometry: list[CropGeometry]
    stats: TrackStats
    recropped: bool  # the single pass's crops were replaced by a second pass

    def track_arrays(self) -> dict[str, np.ndarray]:
        """The ``<key>.npz`` content (see the module docstring)."""
        return {
            "boxes": self.path.boxes.astype(np.float32),
            "scores": self.path.scores,
            "detected": self.path.detected,
            "landmarks": np.stack([g.to_crop(lm) for g, lm in zip(self.geometry, self.path.landmarks)]
                                  ).astype(np.float32),
            "crop_boxes": np.stack([g.box for g in self.geometry]).astype(np.float32),
            "keyframe": self.path.keyframe,
            "crop_angles": np.array([g.angle for g in self.geometry], np.float32),
        }


class _NoFaceYet(Exception):
    """The first keyframe has no face: no frame can be placed until one is found, which
    may be any number of frames later (more than the buffer may hold)."""


class _SinglePass:
    """Detect on keyframes, link tracks and crop along the leading track, in one decode.

    Keyframes follow an adaptive schedule: ``detect_every_max`` frames apart, where
    tracking is *confident* at the new keyframe: the same number of faces as at the
    previous one, and the leading track's constant-velocity prediction overlapping a
    detection by at least ``track_iou``. Where it is not, the gap is bisected: the
    buffered frame halfway is detected and used first, and the new keyframe is judged
    again against the prediction that frame updated, until it is confident or the gaps
    are ``detect_every`` frames. A face that moves, turns away or is joined by another is
    thus seen at the base rate, at no more detections than a fixed ``detect_every``
    schedule would make there, and only steady stretches are interpolated over long
    gaps (a talking head: 3-5 % of the frames detected). A face that comes and goes
    entirely between two keyframes is not seen. The buffer holds the frames since the
    last keyframe (at most ``detect_every_max``).
    """

    def __init__(self, frames: Iterator[tuple[int, np.ndarray]], detector: FaceDetector, faces: FacesParams):
        self.frames, self.detector, self.faces = frames, detector, faces
        self.linker = TrackLinker()
        self.builder = PathBuilder(faces.smoothing)
        self.fed: list[Observation | None] = []  # what drove the crops, per keyframe
        self.last: tuple[int, np.ndarray] | None = None
        self.buffer: deque[tuple[int, np.ndarray]] = deque()  # decoded frames not yet placed
        self.next_key, self.n_faces = 0, -1
        self.placing = True

    @property
    def n_frames(self) -> int:
        return self.last[0] + 1 if self.last else 0

    def crops(self) -> Iterator[np.ndarray]:
        """Crops of every frame, in order; raises :class:`_NoFaceYet` (and stops) when
        the first keyframe has no face."""
        for i, frame in self.frames:
            self.last = (i, frame)
            self.buffer.append((i, frame))
            if i == self.next_key:
                yield from self._keyframe(i, frame)
        if self.buffer:  # the last frame is always a keyframe
            yield from self._keyframe(*self.buffer[-1])

    def finish_detection(self) -> None:
        """After :meth:`crops` stopped early: the same schedule over the remaining frames,
        detecting without cropping."""
        self.placing = False
        last_key = self.linker.keyframes[-1]  # the keyframe that found no face to place
        self._drop_through(last_key)
        self.next_key = last_key + self.faces.detect_every_max
        for _ in self.crops():
            pass

    def _keyframe(self, i: int, frame: np.ndarray) -> Iterator[np.ndarray]:
        yield from self._settle(i, self.detector(frame))
        self.next_key = i + self.faces.detect_every_max

    def _settle(self, i: int, detections) -> Iterator[np.ndarray]:  # noqa: ANN001 - Detections
        """Use keyframe ``i``; first, if tracking is not confident there and the gap since the
        previous keyframe is longer than ``detect_every``, settle its midpoint (a buffered
        frame), and so on down: a gap is halved until its end is confident or it is short."""
        keyframes = self.linker.keyframes
        if keyframes and i - keyframes[-1] > self.faces.detect_every and not self._confident(i, detections):
            mid = keyframes[-1] + (i - keyframes[-1]) // 2
            yield from self._settle(mid, self.detector(self._buffered(mid)))
            yield from self._settle(i, detections)
            return
        self._update(i, detections)
        yield from self._place(i)

    def _buffered(self, i: int) -> np.ndarray:
        for f, frame in self.buffer:
            if f == i:
                return frame
        raise AssertionError(f"frame {i} is not buffered")  # the buffer holds every frame since the last keyframe

    def _confident(self, i: int, detections) -> bool:  # noqa: ANN001 - Detections
        leader = self.linker.leader()
        if leader is None or not len(detections) or len(detections) != self.n_faces:
            return False
        predicted = leader.predict(i)
        return float(pairwise_iou(predicted[None], detections.boxes).max()) >= self.faces.track_iou

    def _update(self, i: int, detections) -> None:  # noqa: ANN001 - Detections
        self.linker.update(i, detections)
        self.n_faces = len(detections)

    def _drop_through(self, i: int) -> None:
        """Forget the buffered frames up to frame ``i``, uncropped."""
        while self.buffer and self.buffer[0][0] <= i:
            self.buffer.popleft()

    def _place(self, i: int) -> Iterator[np.ndarray]:
        """Crop the buffered frames up to keyframe ``i`` (just detected)."""
        if not self.placing:
            self._drop_through(i)
            return
        leader = self.linker.leader()
        obs = leader.observations.get(i) if leader is not None else None
        self.fed.append(obs)
        points = self.builder.add_keyframe(i, obs)
        if not points:
            raise _NoFaceYet(f"no face at keyframe {i}")
        for point in points:
            frame_index, frame = self.buffer.popleft()
            assert frame_index == point.frame
            yield crop_face(frame, geometry(point.smooth_box, point.smooth_landmarks, self.faces))


def geometry(box: np.ndarray, landmarks: np.ndarray, faces: FacesParams) -> CropGeometry:
    """The crop around a (smoothed) face ``box`` / ``landmarks`` (source px)."""
    return crop_geometry(box, landmarks, margin=faces.margin, size=faces.crop_size, align=faces.align)


def quality_rules(faces: FacesParams) -> dict[str, Any]:
    """The keyword arguments of :func:`components.faces.track.main_track`: the thresholds
    of the ``faces`` section that reject a clip."""
    return {"score_threshold": faces.score_threshold, "min_face": faces.min_face,
            "max_lost_fraction": faces.max_lost_fraction, "competing_ratio": faces.competing_ratio,
            "max_competing_fraction": faces.max_competing_fraction, "max_yaw": faces.max_yaw,
            "max_extreme_fraction": faces.max_extreme_fraction}


def extract_faces(video: str | Path, crop_path: str | Path, faces: FacesParams, fps: int,
                  decode_threads: int = 1) -> ClipFaces:
    """Write the face-crop track of ``video`` to ``crop_path`` (Motion-JPEG, see
    :mod:`components.media.jpeg_video`) and return its track.

    Raises :class:`Rejected` when the clip is unusable; ``crop_path`` may then hold a
    partial video, so callers write to a temporary path (see :func:`process_clip`).
    ``decode_threads``: FFmpeg's decoder threads (1 where a worker per core runs).
    """
    detector = FaceDetector(faces.score_threshold, faces.detect_size, threads=1)
    single = _SinglePass(iter_frames(video, fps, threads=decode_threads), detector, faces)
    encode = functools.partial(write_jpeg_video, crop_path, fps=fps, quality=faces.jpeg_quality)
    try:
        encode(single.crops())
        cropped = True
    except _NoFaceYet:
        single.finish_detection()
        cropped = False
    n = single.n_frames
    if n < faces.min_seconds * fps:
        raise Rejected("too_short", f"{n / fps:.2f} s of video < min_seconds {faces.min_seconds}")
    main, stats = main_track(single.linker, **quality_rules(faces))
    keyframes = single.linker.keyframes
    path = build_path(main, keyframes, faces.smoothing)
    geom = [geometry(box, landmarks, faces) for box, landmarks in zip(path.smooth_boxes, path.smooth_landmarks)]
    recrop = not cropped or any(a is not main.observations.get(f) for a, f in zip(single.fed, keyframes))
    if recrop:
        log.info("%s: the crops followed another track than the final one; cropping again", video)
        encode(crop_face(frame, geom[i]) for i, frame in iter_frames(video, fps, threads=decode_threads))
    return ClipFaces(n, path, geom, stats, recrop)


def warm_worker(faces: FacesParams) -> None:
    """Pool initializer: load the detector once per worker process, before its first clip."""
    FaceDetector(faces.score_threshold, faces.detect_size, threads=1)(np.zeros((32, 32, 3), np.uint8))


THREADED_DECODE_PIXELS = 1280 * 720
"""Frames at least this large decode with several FFmpeg threads where cores are free; on
smaller ones frame threading costs more (thread hand-offs, 7 s of system time on the
default corpus' 256 px clips with one worker) than it saves."""


def decode_threads(workers: int, source: dict[str, float] | None) -> int:
    """FFmpeg decoder threads for one clip: the cores this process may use, shared by the
    workers, for HD video (``source``: its probed width and height); 1 for smaller video."""
    if source is None or source["width"] * source["height"] < THREADED_DECODE_PIXELS:
        return 1
    return max(1, len(os.sched_getaffinity(0)) // max(1, workers))


def process_clip(item: Item, *, faces: FacesParams, fps: int, out_dir: str, workers: int = 1) -> dict[str, Any]:
    """Runner work function: one raw clip -> ``<key>.mkv`` + ``<key>.npz`` and its record
    (``workers``: how many run at once, for :func:`decode_threads`)."""
    video = Path(item.payload["path"])
    source = item.payload.get("source_info")
    if source is None:  # not probed upstream: broken files are unreadable / empty_file / corrupt / ...
        info = probe(video)
        source = {"fps": info.fps, "width": info.width, "height": info.height}
    else:  # the download stage probed it; what broke since is unreadable / empty_file, or corrupt in decoding
        readable_size(video)
    out = Path(out_dir)
    crop_rel, track_rel = f"{item.key}{CROP_SUFFIX}", f"{item.key}.npz"
    with atomic_path(out / crop_rel) as tmp_crop:
        clip = extract_faces(video, tmp_crop, faces, fps, decode_threads(workers, source))
        with atomic_path(out / track_rel) as tmp_track:
            np.savez(tmp_track, **clip.track_arrays())
    return {
        "speaker_id": item.payload["speaker_id"],
        "video_id": item.payload["video_id"],
        "clip_id": item.payload["clip_id"],
        "crop_path": crop_rel,
        "track_path": track_rel,
        "n_frames": clip.n_frames,
        "fps": fps,
        "src_fps": float(source["fps"]),
        "src_width": int(source["width"]),
        "src_height": int(source["height"]),
        "face_px": round(clip.stats.face_px, 1),
        "duration_s": clip.n_frames / fps,
        **{k: v for k, v in asdict(clip.stats).items() if k != "face_px"},
        "recropped": clip.recropped,
        "outputs": [crop_rel, track_rel],
    }


def clip_items(raw_dir: str | Path) -> list[Item]:
    """One item per video listed in ``raw_dir/index.parquet``."""
    raw_dir = Path(raw_dir)
    index = pd.read_parquet(raw_dir / "index.parquet")
    items = []
    for row in index.itertuples(index=False):
        video = raw_dir / row.path
        known = isinstance(row.sha256, str) and row.sha256  # the download stage's content hash
        identity = {"path": row.path, "sha256": row.sha256} if known else file_identity(video)
        payload = {"path": str(video), "speaker_id": row.speaker_id, "video_id": row.video_id, "clip_id": row.clip_id,
                   "source_info": _source_info(row)}
        items.append(Item(key=row.key, payload=payload, identity=identity, source=str(video)))
    return items


def _source_info(row: Any) -> dict[str, float] | None:
    """The download stage's probe of a video (its index's ``fps``, ``width``, ``height``), or
    None where the index lacks it: the stage then probes the file itself."""
    values = {name: getattr(row, name, None) for name in ("fps", "width", "height")}
    if any(v is None or pd.isna(v) or not v > 0 for v in values.values()):
        return None
    return {name: float(v) for name, v in values.items()}


def run_stage(params: Params, raw_dir: str | Path, out_dir: str | Path, progress: bool = True) -> Outcome:
    """Run the stage over ``raw_dir`` into ``out_dir`` (resumable; see components.orchestration.runner)."""
    work = functools.partial(process_clip, faces=params.faces, fps=params.common.fps, out_dir=str(out_dir),
                             workers=params.common.workers)
    config = {"fps": params.common.fps, "faces": params.faces.model_dump(mode="json")}
    with fanout(params, warmup=functools.partial(warm_worker, params.faces)) as pool:
        return run_items(STAGE, clip_items(raw_dir), work, out_dir, config=config, executor=pool, progress=progress)
