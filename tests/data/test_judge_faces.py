"""The judge_faces stage: speakers rendered for the judge alone, cropped as the faces stage crops."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.config import Params
from components.data.synth.attributes import sample_speaker
from components.data.synth.judge_faces import COLUMNS, frame_indices, render_judge_faces
from components.errors import ConfigError
from components.faces.detect import FaceDetector
from components.media.jpeg_video import decode_jpeg
from tests.conftest import tiny_params

N_SPEAKERS, FRAMES = 3, 4


def judge_params(root: Path, **overrides: object) -> Params:
    return tiny_params(root, **{"judge_faces.n_speakers": N_SPEAKERS, "judge_faces.frames_per_speaker": FRAMES,
                                "judge_faces.clips_per_speaker": 2, "judge_faces.clip_seconds": 1.0,
                                **overrides})


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Params, Path, dict]:
    root = tmp_path_factory.mktemp("judge_faces")
    params = judge_params(root)
    summary = render_judge_faces(params, root / "out", progress=False)
    return params, root / "out", summary


def test_every_speaker_gets_its_frames_cropped_to_a_face(rendered: tuple[Params, Path, dict]):
    params, out, summary = rendered
    table = pd.read_parquet(out / "faces.parquet")
    assert list(table.columns) == list(COLUMNS)
    assert summary["speakers"] == N_SPEAKERS and summary["faces"] == len(table) == N_SPEAKERS * FRAMES
    assert summary["frames_without_face"] == 0 and summary["seconds"] > 0
    assert json.loads((out / "summary.json").read_text()) == summary
    assert table.groupby("speaker_id").size().tolist() == [FRAMES] * N_SPEAKERS
    # frames of both clips, spread out, each a distinct picture
    assert {key.split("/")[1] for key in table["key"]} == {"clip0", "clip1"}
    assert table["jpeg"].nunique() == len(table)
    detector = FaceDetector(params.faces.score_threshold, params.faces.detect_size)
    size = params.faces.crop_size
    for data in table["jpeg"]:
        crop = decode_jpeg(data)
        assert crop.shape == (size, size, 3)
        found = detector(crop)
        assert len(found) >= 1
        # framed as the faces stage frames: the face box fills 1 / (1 + 2 margin) of the side
        side = np.max(found.boxes[0, 2:] - found.boxes[0, :2])
        assert side / size == pytest.approx(1 / (1 + 2 * params.faces.margin), rel=0.15)


def test_labels_are_the_sampled_speakers_and_nobody_of_the_corpus(rendered: tuple[Params, Path, dict]):
    params, out, _ = rendered
    table = pd.read_parquet(out / "faces.parquet").drop_duplicates("speaker_id")
    synth = params.download.synth
    for i, row in enumerate(table.itertuples(index=False)):
        truth = sample_speaker(params.judge_faces.seed, i, glasses_prob=synth.glasses_prob,
                               beard_prob=synth.beard_prob)
        corpus = sample_speaker(synth.seed, i, glasses_prob=synth.glasses_prob, beard_prob=synth.beard_prob)
        assert row.speaker_id == f"judge{i:05d}" != corpus["speaker_id"]
        assert (row.sex, row.age) == (truth["sex"], truth["age"])
        assert (truth["age"], truth["skin_tone"]) != (corpus["age"], corpus["skin_tone"])


def test_the_set_is_deterministic_for_a_seed_and_another_seed_is_other_people(
        rendered: tuple[Params, Path, dict], tmp_path: Path):
    params, out, _ = rendered
    first = pd.read_parquet(out / "faces.parquet")
    render_judge_faces(judge_params(tmp_path, **{"common.workers": 2}), tmp_path / "again", progress=False)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "again" / "faces.parquet"), first)
    other = judge_params(tmp_path, **{"judge_faces.seed": params.judge_faces.seed + 1, "judge_faces.n_speakers": 2,
                                      "judge_faces.frames_per_speaker": 1})
    render_judge_faces(other, tmp_path / "other", progress=False)
    assert not set(pd.read_parquet(tmp_path / "other" / "faces.parquet")["jpeg"]) & set(first["jpeg"])


def test_the_corpus_seed_is_refused(tmp_path: Path):
    params = judge_params(tmp_path)
    same = judge_params(tmp_path, **{"judge_faces.seed": params.download.synth.seed})
    with pytest.raises(ConfigError, match="judge_faces.seed .* is download.synth.seed"):
        render_judge_faces(same, tmp_path / "out", progress=False)


def test_frames_are_spread_over_the_clip():
    assert frame_indices(75, 4).tolist() == [15, 30, 44, 59]
    assert frame_indices(3, 10).tolist() == [0, 1, 2]
