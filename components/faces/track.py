"""From keyframe detections to one face track per clip, and a smooth per-frame path.

RetinaFace runs only on keyframes (an adaptive schedule, see :mod:`components.data.faces`; the
last frame is always one).
Three pure pieces turn its detections into what the stage stores:

* :class:`TrackLinker` links detections across keyframes into tracks, greedily by IoU
  with each track's constant-velocity prediction (a talking head moving 10 px/frame
  shifts 50 px between keyframes: the prediction keeps the overlap high).
* :func:`main_track` picks the clip's face, the track with the largest sum of box areas
  over its keyframes ("frames x area"), and applies the quality rules that reject a
  clip (``no_face``, ``face_too_small``, ``track_lost``, ``multiple_faces``,
  ``extreme_pose``).
* :class:`PathBuilder` turns one track's keyframe observations into a box and five
  landmarks for *every* frame: linear interpolation between consecutive detections,
  the last detection held while the face is missing (the first one back-filled before
  it is first seen); the crop follows an exponentially smoothed copy of it. It works
  incrementally, a keyframe at a time, so the stage can crop the frames between two keyframes as soon as the second
  one is detected, holding at most ``detect_every`` frames in memory;
  :func:`build_path` runs the same builder over a whole clip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from components.errors import Rejected
from components.faces.detect import Detections, box_area

LINK_IOU = 0.3
"""Minimum IoU between a track's predicted box and a detection to extend the track."""


@dataclass(frozen=True)
class Observation:
    """One detection of a tracked face at a keyframe, in source pixels."""

    box: np.ndarray  # (4,) x0 y0 x1 y1
    landmarks: np.ndarray  # (5, 2)
    score: float

    @property
    def area(self) -> float:
        return float(box_area(self.box))

    @property
    def side(self) -> float:
        """Side of the square with the box's area (robust to the box's aspect ratio)."""
        return float(np.sqrt(self.area))


@dataclass
class Track:
    """A face followed across keyframes: observations by keyframe frame index."""

    id: int
    observations: dict[int, Observation] = field(default_factory=dict)
    mass: float = 0.0  # sum of box areas over the keyframes where it was detected

    def add(self, frame: int, obs: Observation) -> None:
        self.observations[frame] = obs
        self.mass += obs.area

    def predict(self, frame: int) -> np.ndarray:
        """Box expected at ``frame``: constant velocity from the last two observations,
        extrapolated over at most the last observed interval (a lost track stays put)."""
        recent = reversed(self.observations)
        f2, f1 = next(recent), next(recent, None)
        last = self.observations[f2].box
        if f1 is None:
            return last
        velocity = (last - self.observations[f1].box) / (f2 - f1)
        return last + velocity * min(frame - f2, f2 - f1)


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (m, 4) with every box in ``b`` (n, 4) -> (m, n)."""
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


class TrackLinker:
    """Online linking of keyframe detections into tracks (greedy IoU matching)."""

    def __init__(self) -> None:
        self.tracks: list[Track] = []
        self.keyframes: list[int] = []

    def update(self, frame: int, detections: Detections) -> None:
        self.keyframes.append(frame)
        unmatched = set(range(len(detections)))
        if self.tracks and len(detections):
            predicted = np.stack([t.predict(frame) for t in self.tracks])
            iou = pairwise_iou(predicted, detections.boxes)
            while iou.size and iou.max() >= LINK_IOU:
                t, d = np.unravel_index(np.argmax(iou), iou.shape)
                self.tracks[t].add(frame, _observation(detections, d))
                unmatched.discard(int(d))
                iou[t, :] = -1
                iou[:, d] = -1
        for d in sorted(unmatched):
            track = Track(len(self.tracks))
            track.add(frame, _observation(detections, d))
            self.tracks.append(track)

    def leader(self) -> Track | None:
        """The track with the most mass so far (the main face, if the clip ended now)."""
        return max(self.tracks, key=lambda t: t.mass, default=None)


def _observation(detections: Detections, d: int) -> Observation:
    return Observation(detections.boxes[d].astype(np.float64), detections.landmarks[d].astype(np.float64),
                       float(detections.scores[d]))


def yaw_proxy(landmarks: np.ndarray) -> float:
    """Signed head-yaw proxy from 5 landmarks: the nose's offset from the eye midpoint,
    along the eye axis, in inter-ocular distances. 0 for a frontal face; about
    ``0.5 * tan(yaw)`` for a head turned by ``yaw`` (0.6 is ~50 degrees). In-plane
    rotation does not change it. Eyes on top of each other count as extreme."""
    left, right, nose = landmarks[0], landmarks[1], landmarks[2]
    axis = right - left
    iod2 = float(axis @ axis)
    if iod2 < 1e-9:
        return float("inf")
    return float((nose - (left + right) / 2) @ axis / iod2)


@dataclass(frozen=True)
class TrackStats:
    """The figures the quality rules look at (also logged in the stage record).

    Fractions are of the clip's *time*: each keyframe stands for the frames nearer to it
    than to its neighbours (:func:`keyframe_weights`), so a stretch the adaptive schedule
    samples densely (a moving or lost face) weighs what it lasts, not how often it was
    looked at. With evenly spaced keyframes that is the fraction of keyframes, the two ends
    counting half.
    """

    n_keyframes: int
    face_px: float  # median side of the main track's boxes, source px
    lost_fraction: float  # time without the main face
    competing_fraction: float  # time in which the strongest other track competes
    extreme_fraction: float  # share of the main face's time with |yaw proxy| > max_yaw


def keyframe_weights(keyframes: Sequence[int]) -> dict[int, float]:
    """The share of a clip's time each keyframe stands for (half of each gap to a neighbour), summing to 1."""
    frames = np.asarray(keyframes, np.float64)
    if len(frames) < 2 or frames[-1] == frames[0]:
        return {int(f): 1.0 / len(frames) for f in frames}
    gaps = np.diff(frames) / 2
    weights = np.zeros(len(frames))
    weights[:-1] += gaps
    weights[1:] += gaps
    return {int(f): float(w) for f, w in zip(frames, weights / weights.sum())}


def track_stats(main: Track, tracks: Sequence[Track], keyframes: Sequence[int], *, competing_ratio: float,
                max_yaw: float) -> TrackStats:
    """The figures of ``main`` among ``tracks`` over a clip's ``keyframes``: another track's
    box counts as competing at a keyframe when it is at least ``competing_ratio`` of the
    main face's area there; a pose is extreme where the yaw proxy exceeds ``max_yaw``."""
    weight = keyframe_weights(keyframes)
    obs = list(main.observations.values())
    sides = [o.side for o in obs]
    main_area = {f: o.area for f, o in main.observations.items()}
    typical = float(np.median([o.area for o in obs]))
    competing = 0.0
    for other in tracks:
        if other is not main:
            hits = sum(weight[f] for f, o in other.observations.items()
                       if o.area >= competing_ratio * main_area.get(f, typical) and not _same_face(main, f, o))
            competing = max(competing, hits)
    seen = sum(weight[f] for f in main.observations)
    lost = sum(weight[f] for f in keyframes if f not in main.observations)  # exactly 0 when never lost
    extreme = sum(weight[f] for f, o in main.observations.items() if abs(yaw_proxy(o.landmarks)) > max_yaw)
    return TrackStats(
        n_keyframes=len(keyframes),
        face_px=float(np.median(sides)),
        lost_fraction=lost,
        competing_fraction=competing,
        extreme_fraction=extreme / seen if seen > 0 else 1.0,
    )


def _same_face(main: Track, frame: int, obs: Observation) -> bool:
    """A second box overlapping the main face at the same keyframe is a duplicate
    detection of it (NMS keeps boxes overlapping < 0.4), not a competing face."""
    own = main.observations.get(frame)
    return own is not None and pairwise_iou(own.box[None], obs.box[None])[0, 0] >= LINK_IOU


def main_track(linker: TrackLinker, *, score_threshold: float, min_face: int, max_lost_fraction: float,
               competing_ratio: float, max_competing_fraction: float, max_yaw: float,
               max_extreme_fraction: float) -> tuple[Track, TrackStats]:
    """The clip's face track and its stats; raises :class:`Rejected` when a rule fails.

    Rules, in order: some face was detected (``no_face``); the main face's median side
    is at least ``min_face`` source px (``face_too_small``: it could not yield a useful
    high-resolution target); it is missing in at most ``max_lost_fraction`` of the
    keyframes (``track_lost``); no other track is at least ``competing_ratio`` of its
    area in more than ``max_competing_fraction`` of the keyframes (``multiple_faces``:
    whose voice is it?); its yaw proxy exceeds ``max_yaw`` in at most
    ``max_extreme_fraction`` of its keyframes (``extreme_pose``). ``score_threshold`` is the
    detector's, named when no face was found.
    """
    n = len(linker.keyframes)
    main = linker.leader()
    if main is None:
        raise Rejected("no_face", f"no face scored >= {score_threshold} in {n} keyframes")
    stats = track_stats(main, linker.tracks, linker.keyframes, competing_ratio=competing_ratio, max_yaw=max_yaw)
    if stats.face_px < min_face:
        raise Rejected("face_too_small", f"median face side {stats.face_px:.0f} px < min_face {min_face} px")
    if stats.lost_fraction > max_lost_fraction:
        raise Rejected("track_lost", f"face missing in {stats.lost_fraction:.0%} of the clip ({n} keyframes; "
                                     f"max {max_lost_fraction:.0%})")
    if stats.competing_fraction > max_competing_fraction:
        raise Rejected("multiple_faces", f"a second face >= {competing_ratio:.0%} of the main one's area in "
                                         f"{stats.competing_fraction:.0%} of the clip ({n} keyframes; "
                                         f"max {max_competing_fraction:.0%})")
    if stats.extreme_fraction > max_extreme_fraction:
        raise Rejected("extreme_pose", f"yaw proxy beyond {max_yaw} in {stats.extreme_fraction:.0%} of the "
                                       f"face's time (max {max_extreme_fraction:.0%})")
    return main, stats


@dataclass(frozen=True)
class PathPoint:
    """The face in one frame (source px).

    ``box``/``landmarks`` are the estimate of where the face is (interpolated between
    detections); ``smooth_box``/``smooth_landmarks`` the exponentially smoothed values
    the crop is cut from, steady but lagging a moving face by ``s / (1 - s)`` frames.
    """

    frame: int
    box: np.ndarray  # (4,)
    landmarks: np.ndarray  # (5, 2)
    smooth_box: np.ndarray  # (4,)
    smooth_landmarks: np.ndarray  # (5, 2)
    score: float  # detection score, interpolated between detections; 0 where held
    detected: bool  # True when backed by detections (a keyframe hit or between two hits)


class PathBuilder:
    """Per-frame face path from one track's keyframe observations, a keyframe at a time.

    :meth:`add_keyframe` returns the points of every frame that became final: usually
    the frames since the previous keyframe. Before the first detection nothing is
    final (those frames get the first detection's box, back-filled, once it comes).
    Identical inputs give identical outputs, which is what lets the stage check that
    the path it cropped on the fly is the path of the track it finally chose.
    """

    def __init__(self, smoothing: float):
        self.smoothing = smoothing
        self.next_frame = 0  # first frame not yet returned
        self._prev: tuple[int, Observation | None] = (-1, None)  # previous keyframe
        self._held: Observation | None = None  # last observation seen
        self._state: np.ndarray | None = None  # smoothed [box, landmarks] vector

    def add_keyframe(self, frame: int, obs: Observation | None) -> list[PathPoint]:
        prev_frame, prev = self._prev
        if frame <= prev_frame:
            raise ValueError(f"keyframes must increase: {frame} after {prev_frame}")
        self._prev = (frame, obs)
        if obs is None and self._held is None:
            return []  # still waiting for the first detection
        points = []
        for t in range(self.next_frame, frame + 1):
            if obs is not None and t == frame:
                vec, score, detected = _vector(obs), obs.score, True
            elif obs is not None and prev is not None and t > prev_frame:
                a = (t - prev_frame) / (frame - prev_frame)
                vec = (1 - a) * _vector(prev) + a * _vector(obs)
                score, detected = (1 - a) * prev.score + a * obs.score, True
            else:  # hold the last detection, or back-fill the first one
                vec, score, detected = _vector(self._held or obs), 0.0, False
            s = self.smoothing
            self._state = vec if self._state is None else s * self._state + (1 - s) * vec
            points.append(PathPoint(t, vec[:4], vec[4:].reshape(5, 2), self._state[:4],
                                    self._state[4:].reshape(5, 2), float(score), detected))
        if obs is not None:
            self._held = obs
        self.next_frame = frame + 1
        return points


def _vector(obs: Observation) -> np.ndarray:
    return np.concatenate([obs.box, obs.landmarks.reshape(-1)])


@dataclass(frozen=True)
class FacePath:
    """The face in every frame of a clip (arrays of length ``n_frames``, see :class:`PathPoint`)."""

    boxes: np.ndarray  # (n, 4) float64, source px
    landmarks: np.ndarray  # (n, 5, 2) float64, source px
    smooth_boxes: np.ndarray  # (n, 4) float64: what the crops are cut from
    smooth_landmarks: np.ndarray  # (n, 5, 2) float64
    scores: np.ndarray  # (n,) float32
    detected: np.ndarray  # (n,) bool
    keyframe: np.ndarray  # (n,) bool: RetinaFace ran on this frame

    @classmethod
    def from_points(cls, points: Sequence[PathPoint], keyframes: Sequence[int]) -> FacePath:
        n = len(points)
        keyframe = np.zeros(n, bool)
        keyframe[list(keyframes)] = True

        def stack(name: str, shape: tuple[int, ...]) -> np.ndarray:
            return np.array([getattr(p, name) for p in points], np.float64).reshape(n, *shape)

        return cls(
            boxes=stack("box", (4,)),
            landmarks=stack("landmarks", (5, 2)),
            smooth_boxes=stack("smooth_box", (4,)),
            smooth_landmarks=stack("smooth_landmarks", (5, 2)),
            scores=np.array([p.score for p in points], np.float32),
            detected=np.array([p.detected for p in points], bool),
            keyframe=keyframe,
        )


def build_path(track: Track, keyframes: Sequence[int], smoothing: float) -> FacePath:
    """The per-frame path of ``track`` over a clip whose last frame is ``keyframes[-1]``."""
    builder = PathBuilder(smoothing)
    points = [p for f in keyframes for p in builder.add_keyframe(f, track.observations.get(f))]
    if len(points) != keyframes[-1] + 1:
        raise ValueError(f"track {track.id} has no observation at any of the {len(keyframes)} keyframes")
    return FacePath.from_points(points, keyframes)
