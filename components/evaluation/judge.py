"""Evaluator networks: judges of the sex-like attribute, age and identity of a face.

The paper measures whether super-resolved faces keep their speaker's attributes and
identity with pretrained face classifiers. None can be downloaded here, so the project
trains its own judge on the HIGH-RES TRAINING faces (the ground truth, never a model
output) and applies it, frozen, to every method's outputs and to the true faces.

One network, :class:`FaceEvaluator`, with a shared trunk and four heads, because every
head needs the same evidence (face shape, colours, hair) and one network trains in a
minute on two CPU cores:

* ``sex_logit``: the binary sex-like attribute (``attr_sex``: 0 female, 1 male);
* ``age``: age regression in years (trained on standardised ages);
* ``id_logits``: closed-set identity over the training speakers, a cosine classifier
  with an additive margin (CosFace: Wang et al. 2018), so that
* ``embedding``, the L2-normalised penultimate layer, is trained for cosine comparison
  and also identifies faces of speakers it never saw (open-set verification).

Training augments the faces (flip, small shifts and zooms, blur by down-and-up
resampling, brightness/contrast) so that the judge looks at what survives
super-resolution rather than at pixel-exact detail, which every method's output lacks.

``evaluators.face_recognition_path`` replaces the identity embedding with a real
face-recognition network exported to ONNX (e.g. an ArcFace model): input (N, 3, 112,
112) RGB normalised as ``(x - 127.5) / 127.5``, output one embedding per face
(:class:`OnnxFaceEmbedder`). The crops here keep a margin around the face rather than
ArcFace's landmark-aligned framing, so its cosines compare methods with each other, not
with published numbers. (TorchScript, the other common export, is deprecated in
torch 2.13: export to ONNX instead.)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import track
from torch import nn

from components.config import EvaluatorsParams
from components.data.shards import UNKNOWN_SPEAKER, split_group
from components.errors import EarshotError
from components.io import atomic_path

log = logging.getLogger(__name__)

EVALUATOR_FORMAT = "earshot.face_evaluator"
EVALUATOR_VERSION = 1
COSFACE_SCALE = 16.0
"""Logit scale of the cosine classifier: cosines live in [-1, 1], too flat for softmax."""
COSFACE_MARGIN = 0.2
"""Subtracted from the true class' cosine in training: classes must win by a margin,
which packs each speaker's embeddings tightly (what open-set verification needs)."""
ARCFACE_SIZE = 112
MASK_CENTRE_Y = 0.45
MASK_RADII = (0.36, 0.5)  # x, y, as fractions of the crop side


def identity_of(speaker_id: str, key: str) -> str:
    """Who a clip shows, for identity metrics: its speaker; for a clip of an unnamed
    speaker (the ``unknown`` folder of flat corpora), its video: clips of one video show
    one person, while two unnamed videos may show two (the shards split them the same way)."""
    return split_group(speaker_id, key.split("/")[1] if key.count("/") >= 2 else key)


@dataclass(frozen=True)
class FaceSet:
    """Faces with their speakers' ground truth, in sample order."""

    images: torch.Tensor  # (N, 3, R, R) float in [-1, 1]
    speaker_ids: np.ndarray  # (N,) str
    identities: np.ndarray  # (N,) str, see identity_of
    sex: np.ndarray  # (N,) float: 0 female, 1 male, NaN unknown
    age: np.ndarray  # (N,) float years, NaN unknown

    def __len__(self) -> int:
        return len(self.speaker_ids)


def collect_faces(samples: Iterable[dict[str, Any]]) -> FaceSet:
    """A :class:`FaceSet` from face-SR samples of :class:`~components.data.dataset.ShardDataset`."""
    images, speakers, identities, sex, age = [], [], [], [], []
    for s in samples:
        images.append(s["hr"])
        speakers.append(s["speaker_id"])
        identities.append(identity_of(s["speaker_id"], s["key"]))
        sex.append(float(s.get("attr_sex", np.nan)))
        age.append(float(s.get("attr_age", np.nan)))
    if not images:
        empty = np.array([], dtype=str)
        return FaceSet(torch.zeros(0, 3, 1, 1), empty, empty, np.zeros(0), np.zeros(0))
    return FaceSet(torch.stack(images), np.array(speakers, dtype=str), np.array(identities, dtype=str),
                   np.array(sex), np.array(age))


def load_faces(shards_dir: str | Path, split: str, resolution: int, *, frames_per_clip: int = 1,
               seed: int = 0) -> FaceSet:
    """The faces of one split of the shards at ``resolution``.

    ``frames_per_clip == 1``: the deterministic evaluation sample of each clip (its middle
    frame). More: that many training passes, each drawing a random frame of every clip
    (seeded), which is how the evaluator sees several views of each training speaker.
    """
    from components.data.dataset import ShardDataset

    if frames_per_clip <= 1:
        return collect_faces(ShardDataset(shards_dir, split, "face_sr", train=False, hr_size=resolution))
    ds = ShardDataset(shards_dir, split, "face_sr", train=True, hr_size=resolution, seed=seed, shuffle_buffer=1)

    def passes() -> Iterable[dict[str, Any]]:
        for epoch in range(frames_per_clip):
            ds.set_epoch(epoch)
            yield from ds

    return collect_faces(passes())


def identity_labels(speaker_ids: Sequence[str], speakers: Sequence[str]) -> np.ndarray:
    """Class index of each speaker in ``speakers``; -1 for a speaker outside it."""
    index = {s: i for i, s in enumerate(speakers)}
    return np.array([index.get(s, -1) for s in speaker_ids], dtype=np.int64)


def training_speakers(faces: FaceSet) -> list[str]:
    """The identity classes: every named speaker of the training faces, sorted (clips of
    unnamed speakers train the attribute heads only)."""
    return sorted({s for s in faces.speaker_ids.tolist() if s and s != UNKNOWN_SPEAKER})


# --------------------------------------------------------------------------- the network


def _conv(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def face_mask(resolution: int) -> torch.Tensor:
    """(R, R) 1 inside an ellipse around the face of a face-stage crop, 0 outside.

    The crops keep a margin around the face (``faces.margin``: the face box is ~60% of
    the side, centred), so background and clothes fill the corners and the bottom. They
    change from video to video and say nothing about who is talking, but a network sees
    them first: trained on full crops, the judge identified held-out videos of training
    speakers at 0.3 on the default corpus, 0.6 with this mask (attributes improved too).
    The ellipse (72% of the width, all of the height but the bottom 5%) keeps hair.
    """
    centre = (torch.arange(resolution, dtype=torch.float32) + 0.5) / resolution
    yy, xx = torch.meshgrid(centre, centre, indexing="ij")
    return ((((xx - 0.5) / MASK_RADII[0]) ** 2 + ((yy - MASK_CENTRE_Y) / MASK_RADII[1]) ** 2) < 1).float()


class FaceEvaluator(nn.Module):
    """Face (B, 3, R, R) in [-1, 1] -> sex logit, age, identity logits, embedding.

    Only the face region counts: the input is multiplied by :func:`face_mask`. The trunk halves the resolution down to 4x4: a stride-2 stem conv to ``width``
    channels (no full-resolution layer: it would cost as much as the rest of the network
    together), then per scale a 3x3 conv and a stride-2 3x3 conv doubling the channels
    (up to ``8 * width``). The 4x4 map is flattened (position matters for faces: where
    the eyes, mouth and hair are) into an ``embedding_dim`` neck with batch norm, which
    feeds the sex and age heads directly and the identity head after L2 normalisation.
    """

    def __init__(self, resolution: int, n_identities: int, *, width: int = 32, embedding_dim: int = 128,
                 age_mean: float = 0.0, age_std: float = 1.0) -> None:
        super().__init__()
        if resolution < 8 or resolution & (resolution - 1):
            raise ValueError(f"resolution must be a power of two >= 8, got {resolution}")
        layers: list[nn.Module] = _conv(3, width, 2)
        c = width
        for _ in range(int(math.log2(resolution)) - 3):
            wider = min(2 * c, 8 * width)
            layers += _conv(c, c, 1) + _conv(c, wider, 2)
            c = wider
        self.features = nn.Sequential(*layers)
        self.neck = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(c * 16, embedding_dim),
                                  nn.BatchNorm1d(embedding_dim))
        self.sex_head = nn.Linear(embedding_dim, 1)
        self.age_head = nn.Linear(embedding_dim, 1)
        self.id_weight = nn.Parameter(torch.randn(max(n_identities, 1), embedding_dim) / math.sqrt(embedding_dim))
        self.register_buffer("mask", face_mask(resolution), persistent=False)
        self.register_buffer("age_mean", torch.tensor(float(age_mean)))
        self.register_buffer("age_std", torch.tensor(float(age_std)))
        self.config = {"resolution": resolution, "n_identities": n_identities, "width": width,
                       "embedding_dim": embedding_dim}

    def forward(self, img: torch.Tensor) -> dict[str, torch.Tensor]:
        r = self.config["resolution"]
        if img.ndim != 4 or tuple(img.shape[1:]) != (3, r, r):
            raise ValueError(f"FaceEvaluator expects (B, 3, {r}, {r}), got {tuple(img.shape)}")
        h = self.neck(self.features(img * self.mask))
        embedding = F.normalize(h, dim=1)
        cosines = embedding @ F.normalize(self.id_weight, dim=1).T
        age_z = self.age_head(h).squeeze(1)
        return {"sex_logit": self.sex_head(h).squeeze(1), "age_z": age_z, "age": age_z * self.age_std + self.age_mean,
                "cosines": cosines, "id_logits": COSFACE_SCALE * cosines, "embedding": embedding}


def evaluator_loss(out: dict[str, torch.Tensor], sex: torch.Tensor, age_z: torch.Tensor, labels: torch.Tensor,
                   age_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """Losses of one batch; unknown targets (NaN, label -1) are left out of their term.

    sex: binary cross-entropy; age: smooth L1 on standardised ages; identity: CosFace
    (softmax over ``scale * (cos - margin on the true class)``).
    """
    zero = out["sex_logit"].sum() * 0.0
    known = ~torch.isnan(sex)
    l_sex = F.binary_cross_entropy_with_logits(out["sex_logit"][known], sex[known]) if known.any() else zero
    known = ~torch.isnan(age_z)
    l_age = F.smooth_l1_loss(out["age_z"][known], age_z[known]) if known.any() else zero
    known = labels >= 0
    if known.any():
        cos = out["cosines"][known]
        margin = F.one_hot(labels[known], cos.shape[1]).to(cos.dtype) * COSFACE_MARGIN
        l_id = F.cross_entropy(COSFACE_SCALE * (cos - margin), labels[known])
    else:
        l_id = zero
    return {"loss": l_sex + age_weight * l_age + l_id, "sex": l_sex, "age": l_age, "id": l_id}


def augment(img: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random flip, shift/zoom, blur (down-and-up resampling) and brightness/contrast.

    Everything a super-resolved face may differ in from its ground truth without
    changing who it is: the judge must not rely on it.
    """
    b, _, r, _ = img.shape

    def uniform(lo: float, hi: float, n: int = b) -> torch.Tensor:
        return torch.rand(n, generator=gen) * (hi - lo) + lo

    flip = torch.rand(b, generator=gen) < 0.5
    img = torch.where(flip[:, None, None, None], img.flip(3), img)
    scale = uniform(0.9, 1.1)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale
    theta[:, :, 2] = torch.rand(b, 2, generator=gen) * 0.16 - 0.08
    grid = F.affine_grid(theta, list(img.shape), align_corners=False)
    img = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)
    blurred = torch.rand(b, generator=gen) < 0.5
    size = max(4, int(r * float(uniform(0.25, 0.75, 1))))
    soft = F.interpolate(F.interpolate(img, size=size, mode="bilinear", antialias=True, align_corners=False),
                         size=r, mode="bicubic", align_corners=False)
    img = torch.where(blurred[:, None, None, None], soft, img)
    contrast, brightness = uniform(0.85, 1.15)[:, None, None, None], uniform(-0.1, 0.1)[:, None, None, None]
    return (img * contrast + brightness).clamp(-1.0, 1.0)


def train_evaluator(faces: FaceSet, speakers: Sequence[str], cfg: EvaluatorsParams, *,
                    on_log: Callable[[int, dict[str, float]], None] | None = None,
                    log_every: int = 50, progress: bool = False) -> FaceEvaluator:
    """Train a :class:`FaceEvaluator` on ``faces`` (augmented batches drawn with a seeded
    generator: the same data and config give the same weights). ``speakers`` are the
    identity classes. AdamW with a linear warm-up and cosine decay."""
    if len(faces) < 2:  # batch norm needs two samples
        raise EarshotError(f"{len(faces)} training face(s): the evaluator needs a train split of two clips or more")
    ages = faces.age[~np.isnan(faces.age)]
    age_mean = float(ages.mean()) if len(ages) else 0.0
    age_std = float(ages.std()) if len(ages) > 1 and ages.std() > 0 else 1.0
    gen = torch.Generator().manual_seed(cfg.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = FaceEvaluator(faces.images.shape[-1], len(speakers), width=cfg.width,
                              embedding_dim=cfg.embedding_dim, age_mean=age_mean, age_std=age_std)
    sex = torch.as_tensor(faces.sex, dtype=torch.float32)
    age_z = (torch.as_tensor(faces.age, dtype=torch.float32) - age_mean) / age_std
    labels = torch.as_tensor(identity_labels(faces.speaker_ids.tolist(), speakers))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = max(1, cfg.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps)))
    model.train()
    for step in track(range(1, cfg.steps + 1), description="evaluators", disable=not progress):
        idx = torch.randint(len(faces), (min(cfg.batch_size, len(faces)),), generator=gen)
        out = model(augment(faces.images[idx], gen))
        losses = evaluator_loss(out, sex[idx], age_z[idx], labels[idx], cfg.age_weight)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        opt.step()
        sched.step()
        if on_log is not None and (step % log_every == 0 or step == cfg.steps):
            on_log(step, {f"loss.{k}": v.item() for k, v in losses.items()})
    return model.eval()


# --------------------------------------------------------------------------- judging faces


@dataclass(frozen=True)
class Judgement:
    """What the judge says about N faces."""

    sex: np.ndarray  # (N,) predicted 0/1
    age: np.ndarray  # (N,) years
    id_logits: np.ndarray  # (N, n_identities) over the evaluator's training speakers
    embedding: np.ndarray  # (N, D) L2-normalised (the evaluator's, or the ONNX model's)


class FaceJudge:
    """The frozen evaluator (+ optional external identity embedder) applied in batches."""

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


def save_evaluator(path: str | Path, model: FaceEvaluator, speakers: Sequence[str]) -> None:
    """Write the evaluator atomically as plain tensors and lists (``weights_only`` loadable)."""
    payload = {"format": EVALUATOR_FORMAT, "version": EVALUATOR_VERSION, "config": dict(model.config),
               "speakers": list(speakers), "state_dict": model.state_dict()}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_evaluator(path: str | Path) -> tuple[FaceEvaluator, list[str]]:
    """The evaluator and its identity classes; a clear error naming ``path`` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise EarshotError(f"{path}: evaluator not found: run `dvc repro evaluators`")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not our file"
        raise EarshotError(f"{path}: not a readable evaluator checkpoint ({type(exc).__name__})") from None
    found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
    if found != EVALUATOR_FORMAT:
        raise EarshotError(f"{path}: not an evaluator checkpoint (format {found!r}, expected {EVALUATOR_FORMAT!r})")
    if payload.get("version") != EVALUATOR_VERSION:
        raise EarshotError(f"{path}: evaluator version {payload.get('version')}, this code reads version "
                           f"{EVALUATOR_VERSION}: run `dvc repro evaluators`")
    model = FaceEvaluator(**payload["config"])
    model.load_state_dict(payload["state_dict"])
    return model.eval(), list(payload["speakers"])


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


def judge_report(judge: FaceJudge, faces: FaceSet, *, closed_set: bool) -> dict[str, float | None]:
    """How well the judge reads TRUE faces: sex-like attribute accuracy, age error,
    closed-set identity accuracy (speakers it was trained on) and leave-one-out identity
    verification by embedding. Its numbers on outputs mean only as much as these."""
    from components.evaluation.metrics import abs_error, binary_hits, closed_set_hits, leave_one_out_hits, nanmean

    j = judge(faces.images)
    report = {"n": float(len(faces)), "sex_acc": nanmean(binary_hits(j.sex, faces.sex)),
              "age_mae": nanmean(abs_error(j.age, faces.age)),
              "id_verif_acc": nanmean(leave_one_out_hits(j.embedding, faces.identities))}
    if closed_set:
        labels = identity_labels(faces.speaker_ids.tolist(), judge.speakers)
        report["id_acc"] = nanmean(closed_set_hits(j.id_logits, labels))
    return report


def build_evaluator(shards_dir: str | Path, out_path: str | Path, cfg: EvaluatorsParams, resolution: int, *,
                    on_log: Callable[[int, dict[str, float]], None] | None = None,
                    progress: bool = False) -> dict[str, float]:
    """The ``evaluators`` stage's work: train on the train split's faces, save to
    ``out_path``, and report how well the judge reads the held-out true faces.

    Returns flat metrics: ``<split>.sex_acc``, ``<split>.age_mae``, ``<split>.id_verif_acc``
    for ``train`` (evaluation frames of the training clips), ``seen`` and ``unseen``, plus
    ``seen.id_acc`` (closed set over the training speakers) and ``id_chance`` (1 / classes).
    """
    train = load_faces(shards_dir, "train", resolution, frames_per_clip=cfg.frames_per_clip, seed=cfg.seed)
    speakers = training_speakers(train)
    log.info("evaluators: %d training faces of %d speakers at %d px", len(train), len(speakers), resolution)
    model = train_evaluator(train, speakers, cfg, on_log=on_log, progress=progress)
    save_evaluator(out_path, model, speakers)
    embedder = OnnxFaceEmbedder(cfg.face_recognition_path) if cfg.face_recognition_path else None
    judge = FaceJudge(model, speakers, embedder)
    metrics: dict[str, float] = {"n_speakers": float(len(speakers)), "id_chance": 1.0 / max(len(speakers), 1)}
    for split, name in (("train", "train"), ("test_seen", "seen"), ("test_unseen", "unseen")):
        report = judge_report(judge, load_faces(shards_dir, split, resolution), closed_set=name != "unseen")
        metrics |= {f"{name}.{k}": round(v, 6) for k, v in report.items() if v is not None}
    log.info("evaluators: %s", metrics)
    return metrics
