"""The judge's own speakers: the ``judge_faces`` stage's work (``data/judge_faces/``).

The ``evaluators`` judge (components/training/face_sr/judge.py) reads the sex-like
attribute, age and identity of faces. Trained on the corpus's training split it knows a
few hundred people at most, too few to read unseen faces reliably; so with
``evaluators.train_on: rendered`` it trains on this set instead: ``judge_faces.n_speakers``
speakers drawn like the corpus's (:func:`~components.data.synth.attributes.sample_speaker`
with ``download.synth``'s glasses and beard probabilities) from their own
``judge_faces.seed``, so they are other people than every corpus speaker, and their ids
(``judge00000``, ...) can never be taken for a corpus speaker's.

Each speaker gets ``clips_per_speaker`` short clips, each in its own scene (background,
framing, light: :func:`~components.data.synth.scene.sample_scene`) with the corpus's head
motion, blinks, gaze and mouth movement (:func:`~components.data.synth.scene.animate` of
an utterance's visemes; the voice itself is not synthesised, nothing here hears it), and
``frames_per_speaker`` frames spread evenly over the clips are rendered at
``download.synth.frame_size`` (:func:`~components.data.synth.face.render_frame`). In each
frame the face is found and cropped as the ``faces`` stage crops its frames: RetinaFace at
``faces.detect_size`` and ``faces.score_threshold``, the largest face of at least
``faces.min_face`` px, the crop window of :func:`components.data.faces.geometry`
(``faces.margin``, ``faces.crop_size``, ``faces.align``) cut by
:func:`~components.faces.crop.crop_face` and stored as a JPEG at ``faces.jpeg_quality``,
the bytes the shards would hold. A frame without such a face is counted, not stored.

Outputs: ``faces.parquet`` (one row per face: :data:`COLUMNS`) and ``summary.json``
(speakers, faces, frames without a face, seconds). Speakers are rendered in parallel on
the project's fan-out (:func:`~components.orchestration.executors.fanout`), the detector
loaded once per worker (the faces stage's warm-up), and the table is in speaker order:
the same params give the same table whatever the number of workers.
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.progress import track

from components.config import FacesParams, JudgeFacesParams, Params
from components.data.faces import geometry, warm_worker
from components.data.synth.attributes import sample_speaker
from components.data.synth.corpus import MOTION_STREAM, SPEECH_STREAM
from components.data.synth.face import FaceStyle, render_frame
from components.data.synth.phonemes import plan_utterance, viseme_track
from components.data.synth.scene import animate, sample_scene
from components.errors import ConfigError
from components.faces.crop import crop_face
from components.faces.detect import FaceDetector
from components.io import atomic_path, write_json_atomic
from components.media.jpeg_video import encode_jpeg
from components.orchestration.executors import fanout, ordered_map

log = logging.getLogger(__name__)

STAGE = "judge_faces"
TABLE = "faces.parquet"
SPEAKER_PREFIX = "judge"
COLUMNS = ("key", "speaker_id", "speaker_index", "sex", "age", "jpeg")
"""``key``: ``<speaker_id>/clip<c>/<frame>``; ``sex`` 0/1 and ``age`` (years) are the
speaker's ground truth; ``jpeg``: the crop, ``faces.crop_size`` square."""


def judge_speaker(params: Params, index: int) -> dict[str, Any]:
    """Speaker ``index`` of the set: the corpus's attribute story from ``judge_faces.seed``."""
    synth = params.download.synth
    row = sample_speaker(params.judge_faces.seed, index, glasses_prob=synth.glasses_prob, beard_prob=synth.beard_prob)
    return row | {"speaker_id": f"{SPEAKER_PREFIX}{index:05d}"}


def frame_indices(n_frames: int, count: int) -> np.ndarray:
    """``count`` distinct frames of an ``n_frames`` clip, evenly spaced, away from its ends."""
    count = min(count, n_frames)
    return np.unique(np.linspace(0, n_frames - 1, count + 2)[1:-1].round().astype(int))


def render_speaker(speaker: dict[str, Any], *, cfg: JudgeFacesParams, faces: FacesParams, frame_size: int,
                   fps: int) -> tuple[list[dict[str, Any]], int]:
    """One speaker's rows (:data:`COLUMNS`) and how many of its frames had no usable face.

    Clip ``c`` of speaker ``i`` draws its scene from ``default_rng([seed, i, c])`` and its
    utterance and motion from ``default_rng([seed, i, c, 0, stream])``, as the corpus draws
    video ``c``'s set and its clip's streams.
    """
    detector = FaceDetector(faces.score_threshold, faces.detect_size, threads=1)
    style, spk = FaceStyle.from_attributes(speaker), int(speaker["speaker_index"])
    n_frames = max(1, round(cfg.clip_seconds * fps))
    per_clip = np.array_split(np.arange(cfg.frames_per_speaker), cfg.clips_per_speaker)
    rows, missed = [], 0
    for clip, share in enumerate(per_clip):
        if not len(share):
            continue
        scene, _ = sample_scene(np.random.default_rng([cfg.seed, spk, clip]), frame_size)
        events = plan_utterance(np.random.default_rng([cfg.seed, spk, clip, 0, SPEECH_STREAM]), n_frames / fps,
                                float(speaker["speaking_rate"]))
        states = animate(np.random.default_rng([cfg.seed, spk, clip, 0, MOTION_STREAM]),
                         viseme_track(events, n_frames, fps), fps, scene)
        for frame in frame_indices(n_frames, len(share)):
            image = render_frame(style, scene, states[frame]).image
            found = detector(image)
            large = np.flatnonzero(np.sqrt(found.areas) >= faces.min_face)
            if not len(large):
                missed += 1
                continue
            main = large[np.argmax(found.areas[large])]
            crop = crop_face(image, geometry(found.boxes[main], found.landmarks[main], faces))
            rows.append({"key": f"{speaker['speaker_id']}/clip{clip}/{frame:05d}",
                         "speaker_id": speaker["speaker_id"], "speaker_index": spk, "sex": int(speaker["sex"]),
                         "age": float(speaker["age"]), "jpeg": encode_jpeg(crop, faces.jpeg_quality)})
    return rows, missed


def render_judge_faces(params: Params, out_dir: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """Render the set into ``out_dir`` (``faces.parquet``, ``summary.json``); returns the summary."""
    cfg, synth = params.judge_faces, params.download.synth
    if cfg.seed == synth.seed:
        raise ConfigError(f"judge_faces.seed {cfg.seed} is download.synth.seed: the judge's speakers would be "
                          "the corpus's own; choose another seed")
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    speakers = [judge_speaker(params, i) for i in range(cfg.n_speakers)]
    work = functools.partial(render_speaker, cfg=cfg, faces=params.faces, frame_size=synth.frame_size,
                             fps=params.common.fps)
    rows: list[dict[str, Any]] = []
    missed = 0
    with fanout(params, warmup=functools.partial(warm_worker, params.faces)) as pool:
        for found, lost in track(ordered_map(work, speakers, pool, ahead=4 * params.common.workers),
                                 total=len(speakers), description=STAGE, disable=not progress):
            rows += found
            missed += lost
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    with atomic_path(out / TABLE) as tmp:
        table.to_parquet(tmp, index=False)
    summary = {"stage": STAGE, "speakers": int(table["speaker_id"].nunique()), "faces": len(table),
               "frames_without_face": missed, "seconds": round(time.perf_counter() - started, 2)}
    write_json_atomic(out / "summary.json", summary)
    log.info("%s: %s", STAGE, summary)
    return summary
