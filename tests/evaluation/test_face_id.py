"""dlib face identity: descriptors of drawn and real faces, and the metrics on them."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from components.errors import EarshotError
from components.evaluation.face_id import (LANDMARKS_FILE, RESNET_FILE, SAME_PERSON_THRESHOLD, FaceIdentity,
                                           identification_hits, packaged_models_dir, pairwise_distances,
                                           verification)

STILLS = ("voxceleb2_00022", "voxceleb2_00062", "voxceleb2_00116")  # three different people


@pytest.fixture(scope="module")
def face_identity() -> FaceIdentity:
    return FaceIdentity()


def drawn_face(size: int, skin: tuple[int, int, int]) -> np.ndarray:
    """A cartoon face filling most of a square crop: head, eyes, nose, mouth."""
    image = Image.new("RGB", (size, size), (70, 90, 110))
    draw = ImageDraw.Draw(image)
    s = size / 100
    draw.ellipse([18 * s, 8 * s, 82 * s, 96 * s], fill=skin)
    for x in (35, 65):
        draw.ellipse([(x - 7) * s, 38 * s, (x + 7) * s, 46 * s], fill=(250, 250, 250))
        draw.ellipse([(x - 3) * s, 39 * s, (x + 3) * s, 45 * s], fill=(40, 30, 20))
    draw.line([50 * s, 45 * s, 46 * s, 62 * s, 52 * s, 63 * s], fill=(150, 100, 80), width=max(1, int(2 * s)))
    draw.chord([36 * s, 68 * s, 64 * s, 82 * s], 0, 180, fill=(160, 50, 60))
    return np.asarray(image)


def test_embeds_drawn_faces_deterministically(face_identity: FaceIdentity):
    faces = [drawn_face(64, (225, 185, 160)), drawn_face(128, (140, 95, 70)), drawn_face(256, (225, 185, 160))]
    first, again = face_identity.embed(faces), face_identity.embed(faces)
    assert first.shape == (3, 128) and first.dtype == np.float32
    np.testing.assert_array_equal(first, again)
    assert np.all(np.isfinite(first)) and np.all(np.linalg.norm(first, axis=1) > 0.5)
    assert pairwise_distances(first[:1], first[1:2])[0, 0] > 0  # different images, different descriptors
    assert face_identity.embed([]).shape == (0, 128)


def test_whole_image_is_the_face_when_the_detector_finds_none(face_identity: FaceIdentity):
    blank = np.full((64, 64, 3), 128, np.uint8)
    rect, detected = face_identity.face_rectangle(blank)
    assert not detected and (rect.left(), rect.top(), rect.right(), rect.bottom()) == (0, 0, 63, 63)
    assert face_identity.chip(blank).shape == (150, 150, 3)


def test_rejects_images_that_are_not_rgb_uint8(face_identity: FaceIdentity):
    with pytest.raises(ValueError, match="uint8 RGB"):
        face_identity.embed([np.zeros((64, 64, 3), np.float32)])
    with pytest.raises(ValueError, match="uint8 RGB"):
        face_identity.embed([np.zeros((64, 64), np.uint8)])


@pytest.mark.parametrize("missing", [LANDMARKS_FILE, RESNET_FILE])
def test_missing_model_file_is_named(tmp_path: Path, missing: str):
    for name in (LANDMARKS_FILE, RESNET_FILE):
        if name != missing:
            (tmp_path / name).symlink_to(packaged_models_dir() / name)
    with pytest.raises(EarshotError, match=str(tmp_path / missing)):
        FaceIdentity(tmp_path)


def test_verification_pairs_across_clips_only():
    descriptors = np.array([[0.0, 0], [0.1, 0], [0.3, 0], [1.0, 0], [1.2, 0]])
    speakers = np.array(["a", "a", "a", "b", "b"])
    clips = np.array([1, 1, 2, 3, 4])  # faces 0 and 1 share a clip: not a pair
    result = verification(descriptors, speakers, clips, threshold=0.6)
    np.testing.assert_allclose(np.sort(result.same), [0.2, 0.2, 0.3])
    np.testing.assert_allclose(np.sort(result.different), [0.7, 0.9, 0.9, 1.0, 1.1, 1.2])
    assert result.accuracy == 1.0 and result.auc == 1.0
    mixed = verification(descriptors, np.array(["a", "b", "b", "a", "a"]), clips, threshold=0.6)
    # same 1.0 1.2 0.2 0.2, different 0.3 0.9 1.1 0.7 0.9: 11 of 20 (different, same)
    # pairs ordered right, 2 + 4 of 9 pairs on the right side of 0.6
    assert mixed.auc == pytest.approx(11 / 20) and mixed.accuracy == pytest.approx(6 / 9)
    one_speaker = verification(descriptors[:3], speakers[:3], clips[:3])
    assert one_speaker.auc is None and len(one_speaker.different) == 0


def test_identification_leaves_the_query_clip_out():
    gallery = np.array([[0.0, 0], [1.0, 0], [0.4, 0]])
    gallery_speakers, gallery_clips = np.array(["a", "b", "a"]), np.array([1, 2, 3])
    queries = np.array([[0.0, 0], [0.75, 0], [5.0, 0]])
    # query 0 is gallery face 0 itself (clip 1): its match must be another clip of "a";
    # query 1 (clip 3, speaker "a") is nearer b's face than a's face in clip 1;
    # query 2's speaker "c" is not in the gallery.
    hits = identification_hits(queries, np.array(["a", "a", "c"]), np.array([1, 3, 9]),
                               gallery, gallery_speakers, gallery_clips)
    assert hits[0] == 1.0 and hits[1] == 0.0 and np.isnan(hits[2])
    alone = identification_hits(queries[:1], np.array(["b"]), np.array([2]), gallery, gallery_speakers, gallery_clips)
    assert np.isnan(alone[0])  # b's only gallery face is in the query's own clip


def _stills(real_data: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(real_data / "stills" / f"{name}.png").convert("RGB")) for name in STILLS]


def _degraded(image: np.ndarray) -> np.ndarray:
    """Through 64 px and back: the detail a 64 px crop keeps."""
    still = Image.fromarray(image)
    return np.asarray(still.resize((64, 64), Image.BICUBIC).resize(still.size, Image.BICUBIC))


@pytest.mark.realdata
def test_real_people_apart_and_degraded_copies_close(real_data: Path, face_identity: FaceIdentity):
    stills = _stills(real_data)
    assert all(face_identity.face_rectangle(still)[1] for still in stills)
    originals = face_identity.embed(stills)
    copies = face_identity.embed([_degraded(still) for still in stills])
    between_people = pairwise_distances(originals, originals)[np.triu_indices(3, k=1)]
    assert between_people.min() > SAME_PERSON_THRESHOLD
    assert np.diag(pairwise_distances(originals, copies)).max() < 0.3
    both = np.concatenate([originals, copies])
    result = verification(both, np.array(STILLS * 2), np.arange(6))
    assert result.accuracy == 1.0 and result.auc == 1.0
    hits = identification_hits(copies, np.array(STILLS), np.arange(3, 6), originals, np.array(STILLS), np.arange(3))
    assert hits.tolist() == [1.0, 1.0, 1.0]
