"""The face judge: one network that reads the sex-like attribute, age and identity of a face.

The paper measures whether super-resolved faces keep their speaker's attributes and
identity with pretrained face classifiers. None can be downloaded here, so the project
trains its own judge on the HIGH-RES TRAINING faces (the ground truth, never a model
output; ``components/training/face_sr/judge.py``) and applies it, frozen, to every
method's outputs and to the true faces (``components/evaluation/judge.py``).

One network, :class:`FaceEvaluator`, with a shared trunk and four heads, because every
head needs the same evidence (face shape, colours, hair) and one network trains in a
minute on two CPU cores:

* ``sex_logit``: the binary sex-like attribute (``attr_sex``: 0 female, 1 male);
* ``age``: age regression in years (trained on standardised ages);
* ``id_logits``: closed-set identity over the training speakers, a cosine classifier
  with an additive margin (CosFace: Wang et al. 2018), so that
* ``embedding``, the L2-normalised penultimate layer, is trained for cosine comparison
  and also identifies faces of speakers it never saw (open-set verification).

Its files are of family ``"face_judge"`` (:mod:`components.models.checkpoint`): the
config holds the network's sizes and ``speakers``, the names of its identity classes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from components.models.checkpoint import register_family

FAMILY = "face_judge"
STAGE = "evaluators"
"""The stage that trains the judge: its files are ``<face_sr.out_dir>/evaluators/*.pt``."""
NETWORK = "judge"
"""The name of the one network in a judge's model.pt."""
COSFACE_SCALE = 16.0
"""Logit scale of the cosine classifier: cosines live in [-1, 1], too flat for softmax."""
COSFACE_MARGIN = 0.2
"""Subtracted from the true class' cosine in training: classes must win by a margin,
which packs each speaker's embeddings tightly (what open-set verification needs)."""
MASK_CENTRE_Y = 0.45
MASK_RADII = (0.36, 0.5)  # x, y, as fractions of the crop side


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

    Only the face region counts: the input is multiplied by :func:`face_mask`. The trunk
    halves the resolution down to 4x4: a stride-2 stem conv to ``width`` channels (no
    full-resolution layer: it would cost as much as the rest of the network together),
    then per scale a 3x3 conv and a stride-2 3x3 conv doubling the channels (up to
    ``8 * width``). The 4x4 map is flattened (position matters for faces: where the
    eyes, mouth and hair are) into an ``embedding_dim`` neck with batch norm, which
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


def judge_config(network: FaceEvaluator, speakers: list[str]) -> dict[str, object]:
    """What a judge's file records: the network's sizes and its identity classes."""
    return {**network.config, "speakers": list(speakers)}


def build_judge(config: Mapping[str, object], names: tuple[str, ...]) -> dict[str, nn.Module]:
    """The family's builder: an untrained :class:`FaceEvaluator` of ``config``'s sizes
    (age statistics and weights come from the file's state dict)."""
    sizes = {k: config[k] for k in ("resolution", "n_identities", "width", "embedding_dim")}
    return {name: FaceEvaluator(**sizes) for name in names}  # type: ignore[arg-type]


register_family(FAMILY, build=build_judge)
