"""Judging faces: how a trained face judge reads the sex-like attribute, age and identity.

The judge (:class:`~components.models.face_sr.judge.FaceEvaluator`, family
``"face_judge"``) is trained by the ``evaluators`` stage on high-res true faces
(``components/training/face_sr/judge.py``): the ``judge_faces`` stage's rendered speakers
(:func:`load_rendered_faces`) or the corpus's training split; here it is loaded from its
``model.pt`` (:func:`load_judge`) and applied, frozen, to every method's outputs and to
the true faces (:class:`FaceJudge`, :func:`judge_report`). :func:`load_faces` reads a
split's faces with their speakers' ground truth (:class:`FaceSet`).

Identity on SEEN speakers (new clips of the corpus's training speakers) is closed-set
identification against a gallery of the TRAINING split's true faces (one frame per
training clip): a face counts as recognised when its nearest gallery face is of its
speaker (:func:`~components.evaluation.metrics.nearest_gallery_hits`). The judge's own
identity classes may be other people (the rendered speakers), so its classifier is not
what identifies corpus speakers; its embedding is.

``evaluators.face_recognition_path`` replaces the identity embedding with a real
face-recognition network exported to ONNX (e.g. an ArcFace model): input (N, 3, 112,
112) RGB normalised as ``(x - 127.5) / 127.5``, output one embedding per face
(:class:`OnnxFaceEmbedder`). The crops here keep a margin around the face rather than
ArcFace's landmark-aligned framing, so its cosines compare methods with each other, not
with published numbers. (TorchScript, the other common export, is deprecated in
torch 2.13: export to ONNX instead.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from components.data.shards import UNKNOWN_SPEAKER, split_group
from components.errors import EarshotError
from components.models.checkpoint import load_model
from components.models.face_sr.judge import FAMILY, NETWORK, STAGE, FaceEvaluator

if TYPE_CHECKING:
    from components.evaluation.face_id import FaceIdentity

ARCFACE_SIZE = 112


def identity_of(speaker_id: str, key: str) -> str:
    """Who a clip shows, for identity metrics: its speaker; for a clip of an unnamed
    speaker (the ``unknown`` folder of flat corpora), its video: clips of one video show
    one person, while two unnamed videos may show two (the shards split them the same way)."""
    return split_group(speaker_id, key.split("/")[1] if key.count("/") >= 2 else key)


@dataclass(frozen=True)
class FaceSet:
    """Faces with their speakers' ground truth, in sample order."""

    images: torch.Tensor  # (N, 3, R, R) float in [-1, 1]
    keys: np.ndarray  # (N,) str, ``<speaker>/<video>/<clip>``: which clip each face is from
    speaker_ids: np.ndarray  # (N,) str
    identities: np.ndarray  # (N,) str, see identity_of
    sex: np.ndarray  # (N,) float: 0 female, 1 male, NaN unknown
    age: np.ndarray  # (N,) float years, NaN unknown

    def __len__(self) -> int:
        return len(self.speaker_ids)


def collect_faces(samples: Iterable[dict[str, Any]]) -> FaceSet:
    """A :class:`FaceSet` from face-SR samples of :class:`~components.data.dataset.ShardDataset`."""
    images, keys, speakers, identities, sex, age = [], [], [], [], [], []
    for s in samples:
        images.append(s["hr"])
        keys.append(s["key"])
        speakers.append(s["speaker_id"])
        identities.append(identity_of(s["speaker_id"], s["key"]))
        sex.append(float(s.get("attr_sex", np.nan)))
        age.append(float(s.get("attr_age", np.nan)))
    if not images:
        empty = np.array([], dtype=str)
        return FaceSet(torch.zeros(0, 3, 1, 1), empty, empty, empty, np.zeros(0), np.zeros(0))
    return FaceSet(torch.stack(images), np.array(keys, dtype=str), np.array(speakers, dtype=str),
                   np.array(identities, dtype=str), np.array(sex), np.array(age))


def load_faces(shards_dir: str | Path, split: str, resolution: int, *, frames_per_clip: int = 1,
               seed: int = 0) -> FaceSet:
    """The faces of one split of the shards at ``resolution`` (all of them, also in one
    rank of a ``torchrun`` launch).

    ``frames_per_clip == 1``: the deterministic evaluation sample of each clip (its middle
    frame). More: that many training passes, each drawing a random frame of every clip
    (seeded), which is how the judge sees several views of each training speaker.
    """
    from components.data.dataset import ShardDataset

    whole = {"rank": 0, "world_size": 1, "audio": False}  # faces only: the audio is neither read nor decoded
    if frames_per_clip <= 1:
        return collect_faces(ShardDataset(shards_dir, split, "face_sr", train=False, hr_size=resolution, **whole))
    ds = ShardDataset(shards_dir, split, "face_sr", train=True, hr_size=resolution, seed=seed, shuffle_buffer=1,
                      **whole)

    def passes() -> Iterable[dict[str, Any]]:
        for epoch in range(frames_per_clip):
            ds.set_epoch(epoch)
            yield from ds

    return collect_faces(passes())


def load_rendered_faces(table: str | Path, resolution: int) -> FaceSet:
    """The ``judge_faces`` stage's faces (its ``faces.parquet``) at ``resolution``, decoded
    and resized as :class:`~components.data.dataset.ShardDataset` reads a shard's crops."""
    import pandas as pd

    from components.data.features import resize
    from components.figures.images import from_hwc
    from components.media.jpeg_video import decode_jpeg

    path = Path(table)
    if not path.is_file():
        raise EarshotError(f"{path}: no rendered judge faces; run `dvc repro judge_faces` "
                           "(or set evaluators.train_on: corpus)")
    rows = pd.read_parquet(path)
    if rows.empty:
        raise EarshotError(f"{path}: no faces in the table")
    images = torch.stack([resize(from_hwc(decode_jpeg(data)), resolution) for data in rows["jpeg"]])
    speakers = np.array(rows["speaker_id"], dtype=str)
    return FaceSet(images, np.array(rows["key"], dtype=str), speakers, speakers.copy(),
                   np.array(rows["sex"], dtype=np.float64), np.array(rows["age"], dtype=np.float64))


def identity_labels(speaker_ids: Sequence[str], speakers: Sequence[str]) -> np.ndarray:
    """Class index of each speaker in ``speakers``; -1 for a speaker outside it."""
    index = {s: i for i, s in enumerate(speakers)}
    return np.array([index.get(s, -1) for s in speaker_ids], dtype=np.int64)


def training_speakers(faces: FaceSet) -> list[str]:
    """The identity classes: every named speaker of the training faces, sorted (clips of
    unnamed speakers train the attribute heads only)."""
    return sorted({s for s in faces.speaker_ids.tolist() if s and s != UNKNOWN_SPEAKER})


# --------------------------------------------------------------------------- judging faces


@dataclass(frozen=True)
class Judgement:
    """What the judge says about N faces."""

    sex: np.ndarray  # (N,) predicted 0/1
    age: np.ndarray  # (N,) years
    id_logits: np.ndarray  # (N, n_identities) over the evaluator's training speakers
    embedding: np.ndarray  # (N, D) L2-normalised (the evaluator's, or the ONNX model's)


class FaceJudge:
    """The frozen judge network (+ optional external identity embedder) applied in batches;
    ``speakers`` are its identity classes."""

    def __init__(self, evaluator: FaceEvaluator, speakers: Sequence[str],
                 embedder: Callable[[torch.Tensor], np.ndarray] | None = None, batch_size: int = 64) -> None:
        self.evaluator = evaluator.eval()
        self.speakers = list(speakers)
        self.embedder = embedder
        self.batch_size = batch_size

    @property
    def resolution(self) -> int:
        return int(self.evaluator.config["resolution"])

    def __call__(self, images: torch.Tensor) -> Judgement:
        if images.shape[-1] != self.resolution:
            images = F.interpolate(images.float(), size=self.resolution, mode="bicubic", antialias=True,
                                   align_corners=False)
        parts: dict[str, list[np.ndarray]] = {"sex": [], "age": [], "id_logits": [], "embedding": []}
        with torch.no_grad():
            for batch in images.float().clamp(-1, 1).split(self.batch_size):
                out = self.evaluator(batch)
                parts["sex"].append((out["sex_logit"] > 0).float().numpy())
                parts["age"].append(out["age"].numpy())
                parts["id_logits"].append(out["id_logits"].numpy())
                emb = self.embedder(batch) if self.embedder is not None else out["embedding"].numpy()
                parts["embedding"].append(emb)
        n_ids = len(self.speakers)
        empty = {"sex": (0,), "age": (0,), "id_logits": (0, n_ids), "embedding": (0, 1)}
        return Judgement(**{k: np.concatenate(v) if v else np.zeros(empty[k]) for k, v in parts.items()})


def load_judge(path: str | Path, embedder: Callable[[torch.Tensor], np.ndarray] | None = None) -> FaceJudge:
    """The judge trained by the ``evaluators`` stage, from its ``model.pt``; a
    :class:`~components.models.checkpoint.CheckpointError` naming ``path`` otherwise."""
    model = load_model(path, (NETWORK,), expect_family=FAMILY, expect_stage=STAGE)
    return FaceJudge(model.networks[NETWORK], model.config["speakers"], embedder)


class OnnxFaceEmbedder:
    """A face-recognition network in ONNX (e.g. ArcFace) as ``images -> (N, D) embeddings``.

    Input faces (N, 3, H, W) in [-1, 1] are resized to 112 x 112, which in [-1, 1] *is*
    ArcFace's ``(x - 127.5) / 127.5`` normalisation of RGB pixels. The model file is
    checked when it is opened: it must exist, load, and take one (N, 3, 112, 112) input.
    """

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise EarshotError(f"{self.path}: evaluators.face_recognition_path: no such file")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # An ONNX model is a protobuf graph of standard operators and tensors, data only:
        # loading it cannot run code. No custom-op library is registered (that would load
        # native code), so an unknown operator is refused as unloadable.
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise EarshotError(f"{self.path}: not a loadable ONNX model ({str(exc).splitlines()[0][:200]})") from None
        inputs = self.session.get_inputs()
        shape = list(inputs[0].shape) if len(inputs) == 1 else []
        if len(shape) != 4 or shape[1:] != [3, ARCFACE_SIZE, ARCFACE_SIZE]:
            got = [list(i.shape) for i in inputs]
            raise EarshotError(f"{self.path}: the face-recognition model takes inputs {got}; expected one "
                               f"(N, 3, {ARCFACE_SIZE}, {ARCFACE_SIZE}) RGB input")
        self.input_name = inputs[0].name
        # an export with a fixed batch size (often 1) is fed in chunks of exactly that size
        self.fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        x = F.interpolate(images.float().clamp(-1, 1), size=ARCFACE_SIZE, mode="bilinear", antialias=True,
                          align_corners=False).numpy().astype(np.float32)
        n, step = len(x), self.fixed_batch or max(len(x), 1)
        outs = []
        for start in range(0, n, step):
            chunk = x[start:start + step]
            padded = np.concatenate([chunk, np.zeros((step - len(chunk), *chunk.shape[1:]), np.float32)])
            outs.append(self.session.run(None, {self.input_name: padded})[0].reshape(step, -1)[:len(chunk)])
        out = np.concatenate(outs) if outs else np.zeros((0, 1), np.float32)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


@dataclass(frozen=True)
class Gallery:
    """Faces of known people that others are identified against (the seen speakers'
    training faces, one per clip), as each identity measure sees them: encoded once."""

    faces: FaceSet
    judged: Judgement  # the judge's view of them (its embeddings)
    descriptors: np.ndarray | None  # (N, 128) dlib's (components.evaluation.face_id); None: not scored


def encode_gallery(judge: FaceJudge, faces: FaceSet, face_id: FaceIdentity | None = None) -> Gallery:
    """The :class:`Gallery` of ``faces``: the judge's view, and dlib's descriptors where
    ``face_id`` is given."""
    from components.figures.images import to_hwc

    descriptors = None if face_id is None else face_id.embed(list(to_hwc(faces.images)))
    return Gallery(faces, judge(faces.images), descriptors)


def gallery_hits(judgement: Judgement, identities: np.ndarray, clips: np.ndarray, gallery: Gallery) -> np.ndarray:
    """Per-face closed-set identification of faces judged as ``judgement`` (who each shows:
    ``identities``; from ``clips``), 1.0 / 0.0, NaN where its person is not in the gallery:
    is the nearest gallery face by the judge's embedding of that person?"""
    from components.evaluation.metrics import nearest_gallery_hits

    return nearest_gallery_hits(judgement.embedding, gallery.judged.embedding, identities, gallery.faces.identities,
                                clips, gallery.faces.keys)


def judge_report(judge: FaceJudge, faces: FaceSet, *, closed_set: bool = False,
                 gallery: FaceSet | None = None) -> dict[str, float | None]:
    """How well the judge reads TRUE faces: sex-like attribute accuracy, age error,
    leave-one-out identity verification by embedding, and ``id_acc``: with ``gallery``,
    identification against it (:func:`gallery_hits`), else with ``closed_set`` the judge's
    classifier over its own identity classes (absent where none of the faces is one of
    them). Its numbers on outputs mean only as much as these."""
    from components.evaluation.metrics import abs_error, binary_hits, closed_set_hits, leave_one_out_hits, nanmean

    j = judge(faces.images)
    report = {"n": float(len(faces)), "sex_acc": nanmean(binary_hits(j.sex, faces.sex)),
              "age_mae": nanmean(abs_error(j.age, faces.age)),
              "id_verif_acc": nanmean(leave_one_out_hits(j.embedding, faces.identities))}
    if gallery is not None:
        report["id_acc"] = nanmean(gallery_hits(j, faces.identities, faces.keys, encode_gallery(judge, gallery)))
    elif closed_set:
        labels = identity_labels(faces.speaker_ids.tolist(), judge.speakers)
        report["id_acc"] = nanmean(closed_set_hits(j.id_logits, labels))
    return report
