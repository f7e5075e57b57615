"""The ``evaluators`` stage: the face judge trained on high-res true faces, on the shared loop.

The judge (:class:`~components.models.face_sr.judge.FaceEvaluator`) learns the sex-like
attribute, age and identity of true faces (the ground truth, never a model output), held
in memory: with ``evaluators.train_on: rendered`` the ``judge_faces`` stage's speakers
(``data/judge_faces/faces.parquet``: people who appear nowhere in the corpus, so its
identity classes and embedding are trained on identities disjoint from every test
speaker's), with ``corpus`` ``evaluators.frames_per_clip`` random frames of each clip of
the corpus's training split (what a user with real labelled data trains on). Each step
draws a batch with replacement and augments it (flip, small shifts and zooms, blur by
down-and-up resampling, brightness/contrast) so that the judge looks at what survives
super-resolution rather than at pixel-exact detail, which every method's output lacks.
AdamW with a linear warm-up and cosine decay of the learning rate.

Every random draw of the data (indices and augmentations) comes from one
``torch.Generator(evaluators.seed)`` in a fixed order (a
:class:`~components.training.feeds.DrawnFeed`), the network starts from
``torch.manual_seed(evaluators.seed)`` in a forked RNG, and dropout draws from the global
RNG the loop seeds: the same data and settings give the same judge, and a resumed run
the weights of an unbroken one. The stage folder holds what every stage writes
(``model.pt`` of family ``face_judge``, ``checkpoint.pt``, ``metrics.tsv``,
``summary.json``, ``samples/``) and ``metrics.json``: how well the judge reads the
corpus's TRUE faces (attributes on train, test_seen and test_unseen; identity on
test_seen against a gallery of the training clips' faces; identity verification by
embedding), i.e. how far its verdicts on super-resolved faces can be trusted.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from components.config import EvaluatorsParams, Params
from components.errors import EarshotError
from components.evaluation.judge import (
    FaceJudge,
    FaceSet,
    OnnxFaceEmbedder,
    identity_labels,
    judge_report,
    load_faces,
    load_judge,
    load_rendered_faces,
    training_speakers,
)
from components.io import fingerprint, sha256_file, write_json_atomic
from components.models.face_sr.judge import (
    COSFACE_MARGIN,
    COSFACE_SCALE,
    FAMILY,
    NETWORK,
    STAGE,
    FaceEvaluator,
    judge_config,
)
from components.tracking import StageRun
from components.training import loop
from components.training.face_sr.plan import model_config, stage_dir
from components.training.feeds import Batch, DrawnFeed
from components.training.runtime import Runtime
from components.training.stage import StagePlan

log = logging.getLogger(__name__)

METRICS = ("loss", "sex", "age", "id")
SPLITS = (("train", "train"), ("test_seen", "seen"), ("test_unseen", "unseen"))


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


def draw_augmentation(b: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """The random draws of :func:`augment` for a batch of ``b``, in the order it makes them."""

    def uniform(lo: float, hi: float, n: int = b) -> torch.Tensor:
        return torch.rand(n, generator=gen) * (hi - lo) + lo

    flip = torch.rand(b, generator=gen) < 0.5
    scale = uniform(0.9, 1.1)
    shift = torch.rand(b, 2, generator=gen) * 0.16 - 0.08
    blurred = torch.rand(b, generator=gen) < 0.5
    blur = uniform(0.25, 0.75, 1)
    contrast, brightness = uniform(0.85, 1.15), uniform(-0.1, 0.1)
    return {"flip": flip, "scale": scale, "shift": shift, "blurred": blurred, "blur": blur, "contrast": contrast,
            "brightness": brightness}


def apply_augmentation(img: torch.Tensor, drawn: dict[str, torch.Tensor]) -> torch.Tensor:
    """Random flip, shift/zoom, blur (down-and-up resampling) and brightness/contrast, as drawn.

    Everything a super-resolved face may differ in from its ground truth without
    changing who it is: the judge must not rely on it.
    """
    b, _, r, _ = img.shape
    img = torch.where(drawn["flip"][:, None, None, None], img.flip(3), img)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / drawn["scale"]
    theta[:, :, 2] = drawn["shift"]
    grid = F.affine_grid(theta, list(img.shape), align_corners=False)
    img = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)
    size = max(4, int(r * float(drawn["blur"])))
    soft = F.interpolate(F.interpolate(img, size=size, mode="bilinear", antialias=True, align_corners=False),
                         size=r, mode="bicubic", align_corners=False)
    img = torch.where(drawn["blurred"][:, None, None, None], soft, img)
    contrast, brightness = drawn["contrast"][:, None, None, None], drawn["brightness"][:, None, None, None]
    return (img * contrast + brightness).clamp(-1.0, 1.0)


def augment(img: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """:func:`apply_augmentation` of draws from ``gen``."""
    return apply_augmentation(img, draw_augmentation(len(img), gen))


class JudgeFaces:
    """The training faces as targets: standardised ages, identity labels over ``speakers``."""

    def __init__(self, faces: FaceSet, speakers: list[str]) -> None:
        if len(faces) < 2:  # batch norm needs two samples
            raise EarshotError(f"{len(faces)} training face(s): the judge needs two faces or more to train on")
        ages = faces.age[~np.isnan(faces.age)]
        self.age_mean = float(ages.mean()) if len(ages) else 0.0
        self.age_std = float(ages.std()) if len(ages) > 1 and ages.std() > 0 else 1.0
        self.images, self.speakers = faces.images, speakers
        self.sex = torch.as_tensor(faces.sex, dtype=torch.float32)
        self.age_z = (torch.as_tensor(faces.age, dtype=torch.float32) - self.age_mean) / self.age_std
        self.labels = torch.as_tensor(identity_labels(faces.speaker_ids.tolist(), speakers))

    def __len__(self) -> int:
        return len(self.images)

    def feed(self, batch_size: int, seed: int) -> DrawnFeed:
        """Batches of ``batch_size`` drawn with replacement, augmented, from ``seed``."""
        b = min(batch_size, len(self))

        def draw(gen: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            return torch.randint(len(self), (b,), generator=gen), draw_augmentation(b, gen)

        def make(drawn: tuple[torch.Tensor, dict[str, torch.Tensor]]) -> Batch:
            idx, augmentation = drawn
            return {"image": apply_augmentation(self.images[idx], augmentation), "sex": self.sex[idx],
                    "age_z": self.age_z[idx], "label": self.labels[idx]}

        return DrawnFeed(draw, make, batch_size=b, seed=seed)


def build_judge(cfg: EvaluatorsParams, faces: JudgeFaces, device: torch.device) -> loop.Stage:
    """The judge's recipe: one network, AdamW, warm-up + cosine LR, one loss per step."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        net = FaceEvaluator(faces.images.shape[-1], len(faces.speakers), width=cfg.width,
                            embedding_dim=cfg.embedding_dim, age_mean=faces.age_mean, age_std=faces.age_std)
    net = net.to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = max(1, cfg.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps)))

    def step(ctx: loop.StepContext, batch: Batch) -> dict[str, torch.Tensor]:
        with ctx.autocast():
            out = ctx.nets[NETWORK](batch["image"])
            losses = evaluator_loss(out, batch["sex"], batch["age_z"], batch["label"], cfg.age_weight)
        total = losses["loss"]
        if ctx.runtime.distributed:  # DDP: every parameter in the graph, even in a batch of unnamed speakers
            total = total + 0 * out["cosines"].sum()
        ctx.optimize(NETWORK, total)
        return losses

    def sample(n: dict[str, nn.Module], batch: Batch) -> list[tuple[str, torch.Tensor]]:
        x = batch["image"]
        return [("input", x), ("judged", x * n[NETWORK].mask)]

    return loop.Stage(STAGE, FAMILY, judge_config(net, faces.speakers), {NETWORK: net}, (NETWORK,), {NETWORK: opt},
                      step, sample, export={NETWORK: NETWORK}, metrics=METRICS, schedulers={NETWORK: schedule})


def judge_plan(params: Params) -> StagePlan:
    """The ``evaluators`` stage's run: the judge at the face-SR model's resolution, on the
    faces ``evaluators.train_on`` names, then its report on the true faces of every split
    of the corpus (``metrics.json``)."""
    started = time.time()
    cfg, fs, shards = params.evaluators, params.face_sr, params.data_path("shards")
    resolution = model_config(fs).resolution
    out = stage_dir(params, STAGE)
    rendered = params.data_path("judge_faces", "faces.parquet")  # the judge_faces stage's table
    files = {"shards": shards / "index.json"}
    if cfg.train_on == "rendered":
        files["rendered"] = rendered
    if cfg.face_recognition_path:
        files["face_recognition"] = cfg.face_recognition_path
    inputs = {key: sha256_file(path) for key, path in files.items() if Path(path).is_file()}
    # cadences change how the run goes, not what it learns (``steps`` does: the LR schedule spans it)
    learns = cfg.model_dump(mode="json", exclude={"log_every", "sample_every", "checkpoint_every"})
    fp = fingerprint(STAGE, learns, {"resolution": resolution}, inputs)

    def build(runtime: Runtime) -> tuple[loop.Stage, DrawnFeed]:
        if cfg.train_on == "rendered":
            faces = load_rendered_faces(rendered, resolution)
        else:
            faces = load_faces(shards, "train", resolution, frames_per_clip=cfg.frames_per_clip, seed=cfg.seed)
        speakers = training_speakers(faces)
        log.info("%s: %d %s faces of %d speakers at %d px", STAGE, len(faces), cfg.train_on, len(speakers),
                 resolution)
        targets = JudgeFaces(faces, speakers)
        # every rank holds all the faces and draws its own batches (rank 0 those of one process)
        feed = targets.feed(cfg.batch_size, cfg.seed + 1_000_003 * runtime.rank)
        return build_judge(cfg, targets, runtime.device), feed

    def report(stage: loop.Stage, runtime: Runtime, tracker: StageRun) -> None:
        embedder = OnnxFaceEmbedder(cfg.face_recognition_path) if cfg.face_recognition_path else None
        judge = load_judge(out / "model.pt", embedder)
        metrics = judge_metrics(judge, shards, resolution)
        metrics["seconds"] = round(time.time() - started, 2)
        write_json_atomic(out / "metrics.json", metrics)
        tracker.log_metrics(metrics)
        tracker.log_artifact(out / "metrics.json")
        log.info("%s: %s", STAGE, metrics)

    loop_config = loop.LoopConfig(cfg.steps, cfg.log_every, cfg.sample_every, cfg.checkpoint_every, cfg.seed, fp)
    # channels-last off: the judge's numbers are those of the contiguous layout it was made with
    inputs = [shards, rendered.parent] if cfg.train_on == "rendered" else [shards]
    return StagePlan(STAGE, FAMILY, params, out, loop_config, build, section=cfg.model_dump(mode="json"),
                     inputs=inputs, device=fs.device, amp=fs.amp, channels_last=False, threads=fs.threads,
                     report=report, outputs=("metrics.json",))


def judge_metrics(judge: FaceJudge, shards: Path, resolution: int) -> dict[str, float]:
    """Flat metrics of the judge on the corpus's true faces: ``<split>.sex_acc``,
    ``<split>.age_mae``, ``<split>.id_verif_acc`` for ``train`` (evaluation frames of the
    training clips), ``seen`` and ``unseen``; ``seen.id_acc``: identification against the
    training clips' faces (as the ``evaluate`` stage identifies seen speakers);
    ``train.id_acc``: the judge's classifier, where its classes are the corpus's training
    speakers (``train_on: corpus``); ``n_speakers`` (its identity classes) and
    ``id_chance`` (1 / classes)."""
    metrics: dict[str, float] = {"n_speakers": float(len(judge.speakers)),
                                 "id_chance": 1.0 / max(len(judge.speakers), 1)}
    train = load_faces(shards, "train", resolution)
    for split, name in SPLITS:
        faces = train if split == "train" else load_faces(shards, split, resolution)
        found = judge_report(judge, faces, closed_set=name == "train", gallery=train if name == "seen" else None)
        metrics |= {f"{name}.{k}": round(v, 6) for k, v in found.items() if v is not None}
    return metrics
