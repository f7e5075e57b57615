"""Face identity by a real face-recognition network: dlib's 128-d face ResNet.

The judge network (``evaluators``) learns identity from the rendered corpus only; this
module gives evaluation an identity measure that was trained on real faces and ships
inside a wheel (``face-recognition-models`` with ``dlib-bin``), so nothing is downloaded.

:class:`FaceIdentity` turns RGB uint8 face crops (a face filling most of a square image,
as our crops and the real stills are) into 128-d descriptors: dlib's HOG face detector
(built into dlib, no file) for the face rectangle, the whole image where it finds none,
dlib's 5-point landmarks inside it, ``dlib.get_face_chip`` (150 px, aligned) and the
ResNet. dlib calls two faces the same person below a Euclidean distance of
:data:`SAME_PERSON_THRESHOLD`. The detector is there because it measured better: on the
real VoxCeleb2 stills, degraded copies of a face (through 32 px, blurred, mirrored) stay
within 0.49 of the original with it and up to 0.65 with the whole image as the
rectangle, while different people stay 0.77-0.96 apart either way; the detector costs
about a tenth of the ResNet's time (dlib's MMOD detector separates no better at 40x).

The metric helpers below work on descriptors only (no dlib): verification (distances of
same-speaker and different-speaker pairs, the 0.6-threshold accuracy and a threshold-free
AUC) and closed-set identification against a gallery with the query's own clip left out,
so that an image is never matched with itself or another frame of its own clip.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score

from components.errors import EarshotError
from components.evaluation.metrics import nearest_hits

SAME_PERSON_THRESHOLD = 0.6  # dlib's documented same-person distance for this ResNet
CHIP_SIZE = 150  # the aligned face size the ResNet was trained on
CHIP_PADDING = 0.25  # dlib's default margin around the landmarks
DETECTOR_UPSAMPLE = 1  # one 2x upsampling: the HOG detector then finds faces in 64 px crops
LANDMARKS_FILE = "shape_predictor_5_face_landmarks.dat"
RESNET_FILE = "dlib_face_recognition_resnet_model_v1.dat"
MODELS_PACKAGE = "face_recognition_models"


def packaged_models_dir() -> Path:
    """The ``models/`` folder of the installed ``face-recognition-models`` wheel.

    Found by the import system without importing the package (its ``__init__`` imports
    ``pkg_resources``, which recent setuptools no longer has).
    """
    spec = importlib.util.find_spec(MODELS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EarshotError(f"{MODELS_PACKAGE} is not installed (pip install face-recognition-models)")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


class FaceIdentity:
    """dlib's face-recognition ResNet applied to square face crops.

    The two ``.dat`` files are dlib's own serialisation: dlib deserialises them into a
    network type fixed at compile time (numbers and layer parameters only), so loading
    one cannot run code, unlike a pickle. A missing file is an :class:`EarshotError`
    naming it.
    """

    def __init__(self, models_dir: str | Path | None = None):
        import dlib  # heavy native module: imported only where identity is measured

        folder = Path(models_dir) if models_dir is not None else packaged_models_dir()
        landmarks_path, resnet_path = folder / LANDMARKS_FILE, folder / RESNET_FILE
        for path in (landmarks_path, resnet_path):
            if not path.is_file():
                raise EarshotError(f"{path}: dlib face model missing (from the face-recognition-models wheel)")
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._landmarks = dlib.shape_predictor(str(landmarks_path))
        self._resnet = dlib.face_recognition_model_v1(str(resnet_path))

    def face_rectangle(self, image: np.ndarray) -> tuple[object, bool]:
        """The largest face the HOG detector finds in a crop and True, or the whole image
        and False when it finds none (a crop is a face by construction)."""
        image = _rgb_uint8(image)
        found = self._detector(image, DETECTOR_UPSAMPLE)
        if len(found):
            return max(found, key=lambda rect: rect.area()), True
        return self.whole(image), False

    def whole(self, image: np.ndarray) -> object:
        """The rectangle of the whole image (what :meth:`face_rectangle` falls back to)."""
        height, width = np.asarray(image).shape[:2]
        return self._dlib.rectangle(0, 0, width - 1, height - 1)

    def chip(self, image: np.ndarray, rectangle: object | None = None) -> np.ndarray:
        """The aligned (150, 150, 3) uint8 face of one crop: 5 landmarks found inside
        ``rectangle`` (default: :meth:`face_rectangle`)."""
        image = _rgb_uint8(image)
        shape = self._landmarks(image, rectangle if rectangle is not None else self.face_rectangle(image)[0])
        return np.asarray(self._dlib.get_face_chip(image, shape, size=CHIP_SIZE, padding=CHIP_PADDING))

    def embed(self, images: Sequence[np.ndarray] | np.ndarray,
              rectangles: Sequence[object] | None = None) -> np.ndarray:
        """(N, 128) float32 descriptors of N RGB uint8 face crops, (H, W, 3) each; ``rectangles``
        (one per image) skip the detector, e.g. a prediction measured in its true frame's face box."""
        chips = [self.chip(image, rectangles[i] if rectangles is not None else None) for i, image in enumerate(images)]
        if not chips:
            return np.zeros((0, 128), np.float32)
        return np.asarray(self._resnet.compute_face_descriptor(chips), np.float32).reshape(len(chips), 128)


def _rgb_uint8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image)


# --------------------------------------------------------------------------- metrics on descriptors


def pairwise_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) Euclidean distances between the rows of two descriptor arrays."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(squared, 0.0))


@dataclass(frozen=True)
class Verification:
    """Same-speaker vs different-speaker distances over every pair of faces from
    different clips."""

    same: np.ndarray  # distances of same-speaker pairs
    different: np.ndarray  # distances of different-speaker pairs
    accuracy: float | None  # share of all pairs dlib's threshold decides right
    auc: float | None  # P(a different pair is farther than a same pair); None without both kinds


def verification(descriptors: np.ndarray, speakers: np.ndarray, clips: np.ndarray,
                 threshold: float = SAME_PERSON_THRESHOLD) -> Verification:
    """Verification over all pairs (i < j) of faces from different clips: a pair is
    "same" when both faces are one speaker's; pairs within one clip are left out."""
    speakers, clips = np.asarray(speakers), np.asarray(clips)
    distances = pairwise_distances(descriptors, descriptors)
    upper = np.triu(np.ones(distances.shape, bool), k=1) & (clips[:, None] != clips[None, :])
    same_speaker = speakers[:, None] == speakers[None, :]
    same, different = distances[upper & same_speaker], distances[upper & ~same_speaker]
    decided = np.concatenate([same < threshold, different >= threshold])
    accuracy = float(decided.mean()) if len(decided) else None
    auc = None
    if len(same) and len(different):
        truth = np.concatenate([np.zeros(len(same)), np.ones(len(different))])
        auc = float(roc_auc_score(truth, np.concatenate([same, different])))
    return Verification(same=same, different=different, accuracy=accuracy, auc=auc)


def identification_hits(queries: np.ndarray, query_speakers: np.ndarray, query_clips: np.ndarray,
                        gallery: np.ndarray, gallery_speakers: np.ndarray,
                        gallery_clips: np.ndarray) -> np.ndarray:
    """Per-query 1.0 / 0.0: is the nearest gallery face (Euclidean) of the query's speaker?

    Gallery faces from the query's own clip are left out, so a super-resolved frame is
    never matched with its own ground truth. NaN where the query's speaker has no face
    left in the gallery (the test cannot be passed or failed). The rule is the judge's
    (:func:`components.evaluation.metrics.nearest_hits`), on dlib's distances.
    """
    return nearest_hits(-pairwise_distances(queries, gallery), query_speakers, gallery_speakers, query_clips,
                        gallery_clips)
