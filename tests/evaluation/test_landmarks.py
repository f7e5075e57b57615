"""dlib 68-point landmarks on real stills, and the normalised landmark distance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components.errors import EarshotError
from components.evaluation.landmarks import MOUTH, N_POINTS, FaceLandmarks, landmark_errors

STILLS = ("voxceleb2_00022", "voxceleb2_00062", "voxceleb2_00116")  # three different people


@pytest.fixture(scope="module")
def face_landmarks() -> FaceLandmarks:
    return FaceLandmarks()


def still(real_data: Path, name: str) -> np.ndarray:
    return np.asarray(Image.open(real_data / "stills" / f"{name}.png").convert("RGB"))


def degraded(image: np.ndarray, size: int) -> np.ndarray:
    """Down to size x size and back up, bicubic (the inputs of the video paper)."""
    small = Image.fromarray(image).resize((size, size), Image.BICUBIC)
    return np.asarray(small.resize(image.shape[:2][::-1], Image.BICUBIC))


def test_hand_computed_errors_normalise_by_the_outer_eye_corners():
    truth = np.zeros((N_POINTS, 2))
    truth[36], truth[45] = (0.0, 0.0), (10.0, 0.0)
    prediction = truth.copy()
    prediction[MOUTH] += (0.0, 2.0)  # every mouth point 2 px off: 0.2 inter-ocular distances
    errors = landmark_errors(prediction, truth)
    assert errors.mouth == pytest.approx(0.2)
    assert errors.face == pytest.approx(0.2 * 20 / 68)
    assert np.isnan(landmark_errors(None, truth).face) and np.isnan(landmark_errors(prediction, None).mouth)
    with pytest.raises(ValueError, match="68"):
        landmark_errors(prediction[:5], truth)


def test_no_face_in_noise_or_a_flat_image(face_landmarks: FaceLandmarks):
    noise = (np.random.default_rng(0).random((128, 128, 3)) * 255).astype(np.uint8)
    flat = np.full((96, 96, 3), 120, np.uint8)
    assert face_landmarks.landmarks(noise) is None
    assert face_landmarks.landmarks(flat) is None
    errors = face_landmarks.errors(noise, flat, rectangles="truth")
    assert np.isnan(errors.face) and np.isnan(errors.mouth)
    with pytest.raises(ValueError, match="rectangles"):
        face_landmarks.errors(noise, flat, rectangles="whole")
    with pytest.raises(ValueError, match="uint8"):
        face_landmarks.landmarks(noise.astype(np.float32))


def test_a_missing_model_file_is_named(tmp_path: Path):
    with pytest.raises(EarshotError, match="shape_predictor_68_face_landmarks.dat"):
        FaceLandmarks(tmp_path)


@pytest.mark.realdata
@pytest.mark.parametrize("name", STILLS)
def test_real_stills_get_68_plausible_points(face_landmarks: FaceLandmarks, real_data: Path, name: str):
    image = still(real_data, name)
    points = face_landmarks.landmarks(image)
    assert points.shape == (N_POINTS, 2)
    assert (points >= -5).all() and (points <= 133).all()  # inside the 128 px crop (the jaw may touch its edge)
    eyes, nose, mouth, jaw = points[36:48], points[27:36], points[MOUTH], points[0:17]
    assert points[36, 0] < points[39, 0] < points[42, 0] < points[45, 0]  # eye corners left to right
    assert eyes[:, 1].mean() < nose[:, 1].mean() < mouth[:, 1].mean() < jaw[8, 1]  # eyes, nose, mouth, chin
    assert face_landmarks.errors(image, image, rectangles="own").face == 0.0


@pytest.mark.realdata
def test_errors_grow_with_degradation_and_follow_a_known_shift(face_landmarks: FaceLandmarks, real_data: Path):
    truth = still(real_data, STILLS[0])
    points = face_landmarks.landmarks(truth)
    interocular = np.linalg.norm(points[36] - points[45])
    shifted = np.pad(truth, ((0, 0), (4, 0), (0, 0)), mode="edge")[:, :-4]  # the face moved 4 px right
    shift_errors = face_landmarks.errors(shifted, truth, rectangles="own")
    assert shift_errors.face == pytest.approx(4 / interocular, rel=0.25)

    mild = face_landmarks.errors(degraded(truth, 32), truth, rectangles="truth")
    severe = face_landmarks.errors(degraded(truth, 8), truth, rectangles="truth")
    other_person = face_landmarks.errors(still(real_data, STILLS[1]), truth, rectangles="truth")
    assert mild.face < 0.1 and mild.mouth < 0.15
    assert mild.face < severe.face and mild.face < other_person.face
    # the detector finds no face in an 8x8 -> 128 bicubic crop: undefined with its own rectangle
    assert np.isnan(face_landmarks.errors(degraded(truth, 8), truth, rectangles="own").face)
