"""The ``faces`` stage: one square face-crop video and one track file per raw clip.

For every video in ``data/raw`` (``index.parquet``) it writes, per the layout contract:

* ``data/faces/<key>.mp4``: the whole clip at ``common.fps``, cropped around the main
  face to ``faces.crop_size`` squares, H.264, no audio;
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

**One decode per clip.** Decoding dominates the cost on HD video, so frames are decoded
once and the crops are written *while* detecting: RetinaFace runs on every
``detect_every``-th frame; the frames in between wait in a buffer until the next
keyframe's detection lets the path builder interpolate them, then they are cropped and
streamed into the encoder (at most ``detect_every`` frames are held, whatever the
resolution or length). The crops follow the track that leads *so far*, which is the
track finally chosen unless a larger face shows up later or the first keyframe has no
face. Both cases are detected exactly (the observations that drove the crops are
compared with the final track's), and only then is the clip decoded a second time and
re-cropped along the final track; for a rejected clip the partial output is discarded.
"""

from __future__ import annotations

import functools
import logging
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
                                    main_track)
from components.io import atomic_path, file_identity
from components.media.probe import probe
from components.media.read import iter_frames
from components.media.write import write_video
from components.orchestration.executors import fanout
from components.orchestration.runner import Item, Outcome, run_items

log = logging.getLogger(__name__)

STAGE = "faces"


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
    """Detect on keyframes, link tracks and crop along the leading track, in one decode."""

    def __init__(self, frames: Iterator[tuple[int, np.ndarray]], detector: FaceDetector, faces: FacesParams):
        self.frames, self.detector, self.faces = frames, detector, faces
        self.linker = TrackLinker()
        self.builder = PathBuilder(faces.smoothing)
        self.fed: list[Observation | None] = []  # what drove the crops, per keyframe
        self.last: tuple[int, np.ndarray] | None = None

    @property
    def n_frames(self) -> int:
        return self.last[0] + 1 if self.last else 0

    def crops(self) -> Iterator[np.ndarray]:
        """Crops of every frame, in order; raises :class:`_NoFaceYet` (and stops) when
        the first keyframe has no face."""
        k = self.faces.detect_every
        buffer: deque[np.ndarray] = deque()
        for i, frame in self.frames:
            self.last = (i, frame)
            buffer.append(frame)
            if i % k == 0:
                self._detect(i, frame)
                yield from self._place(i, buffer)
        if self.last is not None and self.last[0] % k:  # the last frame is always a keyframe
            self._detect(*self.last)
            yield from self._place(self.last[0], buffer)

    def finish_detection(self) -> None:
        """After :meth:`crops` stopped early: detect on the remaining keyframes."""
        k = self.faces.detect_every
        for i, frame in self.frames:
            self.last = (i, frame)
            if i % k == 0:
                self._detect(i, frame)
        if self.last is not None and self.last[0] % k and self.linker.keyframes[-1] != self.last[0]:
            self._detect(*self.last)

    def _detect(self, i: int, frame: np.ndarray) -> None:
        self.linker.update(i, self.detector(frame))

    def _place(self, i: int, buffer: deque[np.ndarray]) -> Iterator[np.ndarray]:
        leader = self.linker.leader()
        obs = leader.observations.get(i) if leader is not None else None
        self.fed.append(obs)
        points = self.builder.add_keyframe(i, obs)
        if not points:
            raise _NoFaceYet(f"no face at keyframe {i}")
        for point in points:
            yield crop_face(buffer.popleft(), geometry(point.smooth_box, point.smooth_landmarks, self.faces))


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


def extract_faces(video: str | Path, crop_path: str | Path, faces: FacesParams, fps: int) -> ClipFaces:
    """Write the face-crop video of ``video`` to ``crop_path`` and return its track.

    Raises :class:`Rejected` when the clip is unusable; ``crop_path`` may then hold a
    partial video, so callers write to a temporary path (see :func:`process_clip`).
    """
    detector = FaceDetector(faces.score_threshold, faces.detect_size, threads=1)
    single = _SinglePass(iter_frames(video, fps, threads=1), detector, faces)
    encode = functools.partial(write_video, crop_path, fps=fps, crf=faces.crf, threads=1)
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
        encode(crop_face(frame, geom[i]) for i, frame in iter_frames(video, fps, threads=1))
    return ClipFaces(n, path, geom, stats, recrop)


def process_clip(item: Item, *, faces: FacesParams, fps: int, out_dir: str) -> dict[str, Any]:
    """Runner work function: one raw clip -> ``<key>.mp4`` + ``<key>.npz`` and its record."""
    video = Path(item.payload["path"])
    info = probe(video)  # broken files: unreadable / empty_file / corrupt / no_video_stream / ...
    out = Path(out_dir)
    crop_rel, track_rel = f"{item.key}.mp4", f"{item.key}.npz"
    with atomic_path(out / crop_rel) as tmp_crop:
        clip = extract_faces(video, tmp_crop, faces, fps)
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
        "src_fps": info.fps,
        "src_width": info.width,
        "src_height": info.height,
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
        payload = {"path": str(video), "speaker_id": row.speaker_id, "video_id": row.video_id, "clip_id": row.clip_id}
        items.append(Item(key=row.key, payload=payload, identity=identity, source=str(video)))
    return items


def run_stage(params: Params, raw_dir: str | Path, out_dir: str | Path, progress: bool = True) -> Outcome:
    """Run the stage over ``raw_dir`` into ``out_dir`` (resumable; see components.orchestration.runner)."""
    work = functools.partial(process_clip, faces=params.faces, fps=params.common.fps, out_dir=str(out_dir))
    config = {"fps": params.common.fps, "faces": params.faces.model_dump(mode="json")}
    with fanout(params) as pool:
        return run_items(STAGE, clip_items(raw_dir), work, out_dir, config=config, executor=pool, progress=progress)
