"""Facial landmark distance to the ground truth, with dlib's 68-point predictor.

The predictor (``shape_predictor_68_face_landmarks.dat``, iBUG 300-W markup) ships in
the ``face-recognition-models`` wheel and is loaded by path, as
:mod:`components.evaluation.face_id` loads dlib's ResNet (dlib's own serialisation:
loading it cannot run code). It places 68 points inside a face rectangle, which comes
from dlib's HOG face detector (built into dlib; one 2x upsampling, the largest face).

The metric: the mean Euclidean distance between corresponding points of a prediction
and of its ground-truth frame, divided by the truth's inter-ocular distance (outer eye
corners, points 36 and 45, the 300-W normalisation), over all 68 points and over the
mouth alone (points 48-67, the lip-sync-relevant part). NaN where a face is missing.

Rectangles (``rectangles``, a choice of the caller):

* ``"truth"``: the detector runs on the truth frame and its rectangle is used for both
  images. A prediction is a crop of the same frame, so its face is where the truth's is;
  the distance then measures the face's shape, not the detector's jitter, and it is
  defined for a blurry prediction in which the detector finds nothing (bicubic from
  8x8). NaN only when the truth has no detectable face.
* ``"own"``: each image gets its own detection; NaN when either has none (then the share
  of predictions with a detected face is a result in itself).

No whole-image fallback: on the three real VoxCeleb2 stills (128 px crops) the 68 points
placed in the whole image lie 0.26-0.91 inter-ocular distances away from those placed in
the detector's rectangle, a larger error than the metric is meant to measure (the
predictor was trained on detector rectangles). Measured for a fallback too and left out:
dlib's MMOD CNN detector takes 0.6 s per 128 px image on one core and finds no face in
8x8->128 bicubic crops either.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.errors import EarshotError
from components.evaluation.face_id import DETECTOR_UPSAMPLE, _rgb_uint8, packaged_models_dir

LANDMARKS_68_FILE = "shape_predictor_68_face_landmarks.dat"
N_POINTS = 68
OUTER_EYE_CORNERS = (36, 45)  # 300-W inter-ocular normalisation
MOUTH = slice(48, 68)
RECTANGLE_MODES = ("truth", "own")


@dataclass(frozen=True)
class LandmarkErrors:
    """Mean point distance / truth's inter-ocular distance (NaN where a face is missing)."""

    face: float  # all 68 points
    mouth: float  # points 48-67


def landmark_errors(prediction: np.ndarray | None, truth: np.ndarray | None) -> LandmarkErrors:
    """Normalised distances between two (68, 2) landmark sets; NaN when either is None."""
    if prediction is None or truth is None:
        return LandmarkErrors(face=float("nan"), mouth=float("nan"))
    prediction, truth = np.asarray(prediction, np.float64), np.asarray(truth, np.float64)
    if prediction.shape != (N_POINTS, 2) or truth.shape != (N_POINTS, 2):
        raise ValueError(f"expected ({N_POINTS}, 2) landmarks, got {prediction.shape} and {truth.shape}")
    interocular = np.linalg.norm(truth[OUTER_EYE_CORNERS[0]] - truth[OUTER_EYE_CORNERS[1]])
    if interocular <= 0:
        return LandmarkErrors(face=float("nan"), mouth=float("nan"))
    distances = np.linalg.norm(prediction - truth, axis=1) / interocular
    return LandmarkErrors(face=float(distances.mean()), mouth=float(distances[MOUTH].mean()))


class FaceLandmarks:
    """dlib's HOG detector and 68-point predictor applied to RGB uint8 face crops."""

    def __init__(self, models_dir: str | Path | None = None):
        import dlib  # heavy native module: imported only where landmarks are measured

        path = (Path(models_dir) if models_dir is not None else packaged_models_dir()) / LANDMARKS_68_FILE
        if not path.is_file():
            raise EarshotError(f"{path}: dlib landmark model missing (from the face-recognition-models wheel)")
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(path))

    def face_rectangle(self, image: np.ndarray) -> object | None:
        """The largest face the HOG detector finds (a ``dlib.rectangle``), or None."""
        found = self._detector(_rgb_uint8(image), DETECTOR_UPSAMPLE)
        return max(found, key=lambda rect: rect.area()) if len(found) else None

    def landmarks(self, image: np.ndarray, rectangle: object | None = None) -> np.ndarray | None:
        """(68, 2) float64 (x, y) points of the face in ``rectangle`` (default: the detected
        face), or None when no face is detected."""
        image = _rgb_uint8(image)
        rectangle = rectangle if rectangle is not None else self.face_rectangle(image)
        if rectangle is None:
            return None
        shape = self._predictor(image, rectangle)
        return np.array([(shape.part(i).x, shape.part(i).y) for i in range(N_POINTS)], np.float64)

    def errors(self, prediction: np.ndarray, truth: np.ndarray, *, rectangles: str) -> LandmarkErrors:
        """Landmark errors of a prediction against its truth frame (see the module doc for
        ``rectangles``: ``"truth"`` or ``"own"``)."""
        if rectangles not in RECTANGLE_MODES:
            raise ValueError(f"rectangles must be one of {RECTANGLE_MODES}, got {rectangles!r}")
        truth_rectangle = self.face_rectangle(truth)
        if truth_rectangle is None:
            return landmark_errors(None, None)
        truth_points = self.landmarks(truth, truth_rectangle)
        prediction_points = self.landmarks(prediction, truth_rectangle if rectangles == "truth" else None)
        return landmark_errors(prediction_points, truth_points)
