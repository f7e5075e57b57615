"""The method comparison of "Face super-resolution with an ear" on the test splits.

Every method super-resolves the same test clips: the deterministic evaluation samples
of :class:`~components.data.dataset.ShardDataset` (each clip's middle frame at the
model's resolution, its 8x8 degradation, and the 4 s of audio centred on the frame),
for the splits ``test_seen`` (new clips of training speakers, reported as ``seen``) and
``test_unseen`` (speakers never trained on, ``unseen``):

* ``bicubic``: the 8x8 input upsampled bicubically (the no-learning baseline);
* ``reconstruction``: ``G(Eh(x_h))``, the TRUE high-resolution face through G's code
  space (when the model carries Eh): the ceiling of every method that ends in G; if it is
  judged worse than bicubic, G cannot draw what the judge looks for;
* ``image_only``: ``G(El(x_l))``;
* ``audio_only``: ``G(Ea(a))``, a face from the voice alone;
* ``fused``: ``G(F(El(x_l), Ea(a)))``, the paper's model;
* ``mismatched``: ``G(F(El(x_l), Ea(a')))`` with ``a'`` the voice of another speaker
  of the split, of the other sex where there is one (seeded draw): does the voice
  steer the face?

Metrics per method (:mod:`components.evaluation.metrics`): ``psnr``, ``ssim``,
``lpips`` (only when AlexNet's weights are on disk), ``stlpips``; and through the
evaluator network (:mod:`components.evaluation.judge`), always against the
speaker whose FACE was the input: ``attr_acc`` (predicted sex-like attribute of the
output = the speaker's), ``age_err`` (mean absolute error in years), ``id_acc`` and
``id_cos`` (cosine between the output's and the ground truth's embeddings). ``id_acc`` is
identification by the nearest true face embedding (one rule,
:func:`~components.evaluation.metrics.nearest_hits`): on seen speakers closed-set, against
the :class:`Gallery` of the TRAINING split's true faces (one frame per training clip; the
judge's identity classes may be other people, the rendered ``judge_faces`` speakers); on
unseen speakers against the split's true faces of OTHER videos (see :func:`recordings`; a
face whose speaker has no other video is not scored). A real face-recognition network,
dlib's 128-d ResNet (:mod:`components.evaluation.face_id`, trained on real faces, shipped
in a wheel), adds ``id_dist_dlib`` (distance to the true face's descriptor; dlib's
same-person threshold is 0.6) and ``id_acc_dlib`` (the same identification rule on dlib's
descriptors, same galleries), on one frame per clip.
``mismatched`` adds ``follows_audio``: over pairs whose two speakers differ in the
attribute, the fraction of outputs whose predicted attribute is the VOICE's.

Every mean comes with its 95 % interval from a bootstrap over the split's test speakers
(:mod:`components.evaluation.stats`; ``evaluate.bootstrap_samples`` resamples, seeded by
``evaluate.seed``), and the paper's comparison, fused minus image-only on the same faces,
is bootstrapped as a paired difference.

:func:`evaluate` writes ``metrics.json`` (flat keys: ``<split>.<method>.<metric>`` with
``_lo`` / ``_hi``; ``<split>.truth.<metric>``, the judge on the true faces, the ceiling;
``<split>.delta.<metric>`` with ``_lo`` / ``_hi`` for fused minus image-only;
``<split>.n_speakers`` and ``<split>.n_id_scored``; a metric that is skipped or does not
apply is absent, never faked), ``results.md`` (the table with intervals, and the claims
with whether each holds), ``grid_<split>.png``, ``mixing_<split>.png`` and ``ablation.png``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import track
from torch import nn

from components.config import EvaluateParams
from components.evaluation import HIGHER_IS_BETTER
from components.figures import plots
from components.figures.grids import save_grid
from components.figures.images import nearest_up, to_hwc
from components.evaluation import metrics as M
from components.evaluation.face_id import FaceIdentity, identification_hits
from components.evaluation.judge import (FaceJudge, FaceSet, Gallery, Judgement, encode_gallery, gallery_hits,
                                         identity_of)
from components.evaluation.stats import Estimate, claim_verdict, put_estimate, speaker_bootstrap, with_interval
from components.inference.face_sr import FaceSR
from components.io import iter_chunks, write_bytes_atomic, write_json_atomic

log = logging.getLogger(__name__)

SPLITS = {"seen": "test_seen", "unseen": "test_unseen"}
METHODS = ("bicubic", "reconstruction", "image_only", "audio_only", "fused", "mismatched")
GAIN_METRICS = ("attr_acc", "age_err", "id_acc")
"""Judged metrics of reconstruction minus bicubic (``<split>.reconstruction_gain.<metric>``)."""
METRICS = ("psnr", "ssim", "lpips", "stlpips", "attr_acc", "age_err", "id_acc", "id_cos", "id_acc_dlib", "id_dist_dlib")
DELTA_METRICS = ("attr_acc", "age_err", "id_acc", "id_cos", "psnr", "stlpips")
"""Metrics of the paper's comparison, fused minus image-only (``<split>.delta.<metric>``)."""
FOLLOWS_AUDIO_CLAIM = 0.5
"""``follows_audio`` above this: the voice, more often than the face, decides the attribute."""
SEX_NAMES = {0.0: "F", 1.0: "M"}
FIGURE_CELL = 96
"""Side in pixels of each face in the grids (a 64 px output is shown enlarged, 8x8 inputs as pixels)."""


@dataclass
class EncodedSplit:
    """One test split in memory: ground truth, inputs, and both encoders' codes.

    Test splits are small (a sixth of the clips by default), and keeping the codes
    rather than the spectrograms lets any face be paired with any voice cheaply.
    """

    name: str
    keys: list[str]
    hr: torch.Tensor  # (N, 3, R, R)
    lr: torch.Tensor  # (N, 3, 8, 8)
    wl: torch.Tensor  # El codes (N, n_latents, latent_dim)
    wa: torch.Tensor  # Ea codes
    speaker_ids: np.ndarray
    identities: np.ndarray  # who each clip shows (evaluators.identity_of)
    sex: np.ndarray
    age: np.ndarray

    def __len__(self) -> int:
        return len(self.keys)


def encode_split(model: FaceSR, name: str, samples: Iterable[dict[str, Any]], batch_size: int) -> EncodedSplit:
    """Read the split's samples in batches and run El and Ea on them once."""
    keys: list[str] = []
    hr, lr, wl, wa, speakers, sex, age = [], [], [], [], [], [], []
    for chunk in iter_chunks(samples, batch_size):
        keys += [s["key"] for s in chunk]
        speakers += [s["speaker_id"] for s in chunk]
        sex += [float(s.get("attr_sex", np.nan)) for s in chunk]
        age += [float(s.get("attr_age", np.nan)) for s in chunk]
        hr.append(torch.stack([s["hr"] for s in chunk]))
        lr.append(torch.stack([s["lr"] for s in chunk]))
        wl.append(model.encode_image(lr[-1]).cpu())
        wa.append(model.encode_audio(torch.stack([s["spec"] for s in chunk])).cpu())
    res, size, code = model.config.resolution, model.config.lr_size, (model.config.n_latents, model.config.latent_dim)

    def cat(parts: list[torch.Tensor], shape: tuple[int, ...]) -> torch.Tensor:
        return torch.cat(parts) if parts else torch.zeros(0, *shape)

    identities = [identity_of(s, k) for s, k in zip(speakers, keys)]
    return EncodedSplit(name, keys, cat(hr, (3, res, res)), cat(lr, (3, size, size)), cat(wl, code), cat(wa, code),
                        np.array(speakers, dtype=str), np.array(identities, dtype=str),
                        np.array(sex, dtype=np.float64), np.array(age, dtype=np.float64))


def mismatch_partners(identities: np.ndarray, sex: np.ndarray, seed: int) -> np.ndarray:
    """For each sample, the index of a voice from another person, of the other sex when
    the split has one (a seeded draw); the sample itself when the split has one person."""
    rng = np.random.default_rng(seed)
    partners = np.arange(len(identities))
    for i in range(len(identities)):
        others = identities != identities[i]
        opposite = others & ~np.isnan(sex) & (sex != sex[i]) if not np.isnan(sex[i]) else np.zeros_like(others)
        candidates = np.flatnonzero(opposite if opposite.any() else others)
        if len(candidates):
            partners[i] = rng.choice(candidates)
    return partners


def method_output(model: FaceSR, data: EncodedSplit, method: str, rows: np.ndarray,
                  partners: np.ndarray) -> torch.Tensor:
    """The faces ``method`` makes for samples ``rows`` of the split, on the CPU."""
    if method == "bicubic":
        size = model.config.resolution
        return F.interpolate(data.lr[rows].float(), size=(size, size), mode="bicubic",
                             align_corners=False).clamp(-1, 1)
    if method == "reconstruction":
        return model.reconstruct(data.hr[rows]).cpu()
    wl, wa = data.wl[rows].to(model.device), data.wa[rows].to(model.device)
    if method == "image_only":
        codes = wl
    elif method == "audio_only":
        codes = wa
    elif method == "fused":
        codes = model.fuse(wl, wa)
    elif method == "mismatched":
        codes = model.fuse(wl, data.wa[partners[rows]].to(model.device))
    else:
        raise ValueError(f"unknown method {method!r}: expected one of {METHODS}")
    return model.generate(codes).cpu()


@dataclass
class Scorers:
    """The judges of an output: the evaluator, and the perceptual metrics' networks."""

    judge: FaceJudge
    stlpips: nn.Module  # components.models.perceptual.PerceptualLoss
    lpips: nn.Module | None = None  # None: AlexNet weights unavailable, LPIPS skipped
    face_id: FaceIdentity | None = None  # dlib's face ResNet (components.evaluation.face_id); None: skipped


def recordings(keys: Sequence[str]) -> np.ndarray:
    """The video (recording session) of each ``<speaker>/<video>/<clip>`` key. Identity
    galleries leave out the query's whole video, not just its clip: clips of one video share
    background, light and pose (VoxCeleb's as the rendered corpus's), so the nearest face of
    another clip of the same video re-identifies the picture, not the person (bicubic scored
    1.000 on unseen speakers with only the clip left out)."""
    return np.array([key.rsplit("/", 1)[0] for key in keys], dtype=str)


def dlib_rows(data: EncodedSplit) -> np.ndarray:
    """The samples dlib's ResNet scores: one per clip (its first frame), ~80 ms an image."""
    return np.sort(np.unique(np.asarray(data.keys, dtype=str), return_index=True)[1])


def dlib_metrics(face_id: FaceIdentity, outputs: torch.Tensor, data: EncodedSplit, rows: np.ndarray,
                 truth: np.ndarray, gallery: Gallery | None) -> dict[str, np.ndarray]:
    """Per-sample ``id_dist_dlib`` (distance of the output's descriptor to its true face's;
    dlib says the same person below 0.6) and ``id_acc_dlib`` (its nearest true face in
    ``gallery``, else among the split's other videos, is the speaker's), NaN outside
    ``rows``; ``truth``: the descriptors of the true faces of ``rows``."""
    found = face_id.embed(list(to_hwc(outputs[rows])))
    videos, people = recordings(data.keys)[rows], np.asarray(data.identities)[rows]
    dist, hits = np.full(len(data), np.nan), np.full(len(data), np.nan)
    dist[rows] = np.linalg.norm(found - truth, axis=1)
    if gallery is not None and gallery.descriptors is not None:
        hits[rows] = identification_hits(found, people, np.asarray(data.keys, dtype=str)[rows], gallery.descriptors,
                                         gallery.faces.identities, gallery.faces.keys)
    else:
        hits[rows] = identification_hits(found, people, videos, truth, people, videos)
    return {"id_acc_dlib": hits, "id_dist_dlib": dist}


def judged_metrics(judgement: Judgement, data: EncodedSplit, truth: Judgement,
                   gallery: Gallery | None) -> dict[str, np.ndarray]:
    """Per-sample attribute and identity metrics of outputs judged as ``judgement``,
    against the true speaker of each input face (see the module docstring). ``id_acc``:
    the nearest face of ``gallery`` (seen speakers), else of the split's true faces of
    other videos (``truth``), is the speaker's."""
    if gallery is not None:
        id_hits = gallery_hits(judgement, data.identities, np.asarray(data.keys, dtype=str), gallery)
    else:
        videos = recordings(data.keys)
        id_hits = M.nearest_gallery_hits(judgement.embedding, truth.embedding, data.identities, data.identities,
                                         videos, videos)
    return {"attr_acc": M.binary_hits(judgement.sex, data.sex), "age_err": M.abs_error(judgement.age, data.age),
            "id_acc": id_hits, "id_cos": M.rowwise_cosine(judgement.embedding, truth.embedding)}


def score_split(model: FaceSR, scorers: Scorers, data: EncodedSplit, partners: np.ndarray, batch_size: int, *,
                gallery: Gallery | None = None,
                progress: bool = False) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """Per-sample metrics of every method, and of the ground truth itself: how well the
    judge reads true faces, the ceiling of its verdicts on outputs (attributes and
    identity; id_cos would compare a face with itself there). ``gallery``: the identity
    gallery of a seen split (None: identification among the split's other videos)."""
    truth = scorers.judge(data.hr)
    meaningful = ("attr_acc", "age_err", "id_acc")
    reference = {k: v for k, v in judged_metrics(truth, data, truth, gallery).items() if k in meaningful}
    id_rows = dlib_rows(data)
    true_ids = None if scorers.face_id is None else scorers.face_id.embed(list(to_hwc(data.hr[id_rows])))
    if true_ids is not None:  # the truth row: each true face identified by the same rule as the outputs
        reference["id_acc_dlib"] = dlib_metrics(scorers.face_id, data.hr, data, id_rows, true_ids,
                                                gallery)["id_acc_dlib"]
    per_method: dict[str, dict[str, np.ndarray]] = {}
    for method in track(methods_of(model), description=f"evaluate {data.name}", disable=not progress):
        pixel: dict[str, list[np.ndarray]] = {"psnr": [], "ssim": [], "stlpips": [], "lpips": []}
        outputs = []
        for rows in iter_chunks(range(len(data)), batch_size):
            rows = np.asarray(rows)
            out, target = method_output(model, data, method, rows, partners), data.hr[rows]
            pixel["psnr"].append(M.psnr(out, target).numpy())
            pixel["ssim"].append(M.ssim(out, target).numpy())
            pixel["stlpips"].append(M.stlpips(scorers.stlpips, out, target).numpy())
            if scorers.lpips is not None:
                pixel["lpips"].append(M.lpips_distance(scorers.lpips, out, target).numpy())
            outputs.append(out)
        made = torch.cat(outputs)
        judgement = scorers.judge(made)
        scores = {k: np.concatenate(v) for k, v in pixel.items() if v}
        scores |= judged_metrics(judgement, data, truth, gallery)
        if true_ids is not None:
            scores |= dlib_metrics(scorers.face_id, made, data, id_rows, true_ids, gallery)
        if method == "mismatched":
            scores["follows_audio"] = M.follows_audio(judgement.sex, data.sex, data.sex[partners])
        per_method[method] = scores
        log.info("%s %s: %s", data.name, method,
                 {k: None if (v := M.nanmean(s)) is None else round(v, 4) for k, s in scores.items()})
    return per_method, reference


def methods_of(model: FaceSR) -> tuple[str, ...]:
    """The methods ``model`` can run (reconstruction needs Eh)."""
    return tuple(m for m in METHODS if m != "reconstruction" or model.can_reconstruct)


def summarize(split: str, per_method: Mapping[str, Mapping[str, np.ndarray]], truth: Mapping[str, np.ndarray],
              people: np.ndarray, n_resamples: int, seed: int) -> dict[str, float]:
    """The split's flat metrics (see the module docstring): every mean with its 95 %
    interval over ``people`` (who each sample shows), resampled ``n_resamples`` times;
    metrics without any known value are left out."""
    def estimate(values: np.ndarray) -> Estimate | None:
        return speaker_bootstrap(values, people, n_resamples, seed)

    out: dict[str, float] = {f"{split}.n_speakers": len(np.unique(people))}
    if "id_acc" in truth:  # who can be scored depends on the split's clips, not on the method
        out[f"{split}.n_id_scored"] = int(np.count_nonzero(~np.isnan(truth["id_acc"])))
    for method, scores in {**per_method, "truth": truth}.items():
        for metric, values in scores.items():
            put_estimate(out, f"{split}.{method}.{metric}", estimate(values))
    fused, image_only = per_method.get("fused", {}), per_method.get("image_only", {})
    for metric in DELTA_METRICS:
        if metric in fused and metric in image_only:
            put_estimate(out, f"{split}.delta.{metric}", estimate(fused[metric] - image_only[metric]))
    recon, bicubic = per_method.get("reconstruction", {}), per_method.get("bicubic", {})
    for metric in GAIN_METRICS:
        if metric in recon and metric in bicubic:
            put_estimate(out, f"{split}.reconstruction_gain.{metric}", estimate(recon[metric] - bicubic[metric]))
    return out


# --------------------------------------------------------------------------- figures


def pick_faces(identities: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Up to ``n`` samples, one per person first (people in a seeded order)."""
    rng = np.random.default_rng(seed)
    people = rng.permutation(np.unique(identities)) if len(identities) else np.array([], dtype=str)
    first = [int(np.flatnonzero(identities == p)[0]) for p in people]
    chosen = set(first)
    return np.array((first + [i for i in range(len(identities)) if i not in chosen])[:n], dtype=np.int64)


def pick_voices(identities: np.ndarray, sex: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Up to ``n`` voices of different people, alternating the sexes while both last."""
    female: list[int] = []
    male: list[int] = []
    unknown: list[int] = []
    for i in pick_faces(identities, len(identities), seed + 1)[:len(np.unique(identities))]:
        (female if sex[i] == 0 else male if sex[i] == 1 else unknown).append(int(i))
    k = min(len(female), len(male))
    mixed = [i for pair in zip(female, male) for i in pair]
    return np.array((mixed + female[k:] + male[k:] + unknown)[:n], dtype=np.int64)


def _label(data: EncodedSplit, i: int) -> str:
    return f"{data.identities[i]} ({SEX_NAMES.get(float(data.sex[i]), '?')})"


def draw_figures(model: FaceSR, data: EncodedSplit, out_dir: Path, cfg: EvaluateParams,
                 partners: np.ndarray) -> None:
    """``grid_<split>.png`` and ``mixing_<split>.png`` of one split."""
    res = model.config.resolution
    rows = pick_faces(data.identities, cfg.grid_samples, cfg.seed)
    columns = {"8x8 input": nearest_up(data.lr[rows], res)}
    shown = [("bicubic", "bicubic"), ("image only", "image_only"), ("fused", "fused")]
    if model.can_reconstruct:
        shown.append(("G(Eh(truth))", "reconstruction"))
    for title, method in shown:
        columns[title] = method_output(model, data, method, rows, partners)
    columns["ground truth"] = data.hr[rows]
    save_grid(out_dir / f"grid_{data.name}.png", list(columns.items()), FIGURE_CELL, title=f"{data.name} speakers",
              row_labels=[_label(data, int(i)) for i in rows])
    faces = pick_faces(data.identities, cfg.mix_faces, cfg.seed + 2)
    voices = pick_voices(data.identities, data.sex, cfg.mix_voices, cfg.seed)
    wa = data.wa[voices].to(model.device)
    mixed = torch.stack([model.generate(model.fuse(data.wl[[int(i)] * len(voices)].to(model.device), wa)).cpu()
                         for i in faces])
    columns = [("input", nearest_up(data.lr[faces], res))]
    columns += [(f"voice {_label(data, int(v))}", mixed[:, j]) for j, v in enumerate(voices)]
    save_grid(out_dir / f"mixing_{data.name}.png", columns, FIGURE_CELL,
              title=f"{data.name}: each row's face with the voice of each column",
              row_labels=[_label(data, int(i)) for i in faces])


# --------------------------------------------------------------------------- the report


def _difference_claims(metrics: Mapping[str, float], split: str, group: str, metrics_of: Iterable[str],
                       claim: str) -> list[str]:
    """Rows for the paired differences ``<split>.<group>.<metric>``: ``claim`` says what
    holds when the difference is on the metric's good side (``{better}`` and ``{metric}``)."""
    rows = []
    for metric in metrics_of:
        key = f"{split}.{group}.{metric}"
        if f"{key}_lo" in metrics:
            up = HIGHER_IS_BETTER[metric]
            verdict = claim_verdict(metrics[f"{key}_lo"], metrics[f"{key}_hi"], up)
            text = claim.format(better="higher" if up else "lower", metric=metric, sign="> 0" if up else "< 0")
            rows.append(f"| {split} | {text} | {with_interval(metrics, key, signed=True)} | {verdict} |")
    return rows


def claims_table(metrics: Mapping[str, float], splits: Iterable[str]) -> list[str]:
    """The paper's claims, each with its estimate, 95 % interval and whether it holds."""
    lines = ["| split | claim | estimate [95 % interval] | holds? |", "|---|---|---:|---|"]
    for split in splits:
        lines += _difference_claims(metrics, split, "delta", DELTA_METRICS,
                                    "fused {better} than image-only on {metric} (delta {sign})")
        lines += _difference_claims(metrics, split, "reconstruction_gain", GAIN_METRICS,
                                    "G can draw it: G(Eh(truth)) {better} than bicubic on {metric}")
        key = f"{split}.mismatched.follows_audio"
        if f"{key}_lo" in metrics:
            verdict = claim_verdict(metrics[f"{key}_lo"], metrics[f"{key}_hi"], True, FOLLOWS_AUDIO_CLAIM)
            lines.append(f"| {split} | a voice of the other sex moves the attribute (follows_audio > "
                         f"{FOLLOWS_AUDIO_CLAIM}) | {with_interval(metrics, key)} | {verdict} |")
    return lines


def results_table(metrics: Mapping[str, float], counts: Mapping[str, tuple[int, int, int]],
                  notes: Iterable[str]) -> str:
    """``results.md``: rows split x method (+ the judge's ceiling on true faces), columns
    metrics, each value with its 95 % interval; then the claims and whether they hold."""
    arrows = {m: "↑" if HIGHER_IS_BETTER[m] else "↓" for m in METRICS}
    lines = ["# Face super-resolution with an ear: evaluation", ""]
    for split, (n, clips, speakers) in counts.items():
        scored = metrics.get(f"{split}.n_id_scored")
        lines.append(f"- **{split}** ({SPLITS[split]}): {n} test faces from {clips} clips of {speakers} people" +
                     ("" if scored is None else f"; id_acc scored on {scored} of them"))
    lines += ["", "Means with their 95 % interval [lo, hi] from a bootstrap over the split's speakers.", "",
              "| split | method | " + " | ".join(f"{m} {arrows[m]}" for m in METRICS) + " |",
              "|---|---|" + "---:|" * len(METRICS)]
    for split in counts:
        lines.append(f"| {split} | *ground truth (judge)* | " +
                     " | ".join(with_interval(metrics, f"{split}.truth.{m}") if f"{split}.truth.{m}" in metrics
                                else "" for m in METRICS) + " |")
        for method in (m for m in METHODS if any(k.startswith(f"{split}.{m}.") for k in metrics)):
            lines.append(f"| {split} | {method} | " +
                         " | ".join(with_interval(metrics, f"{split}.{method}.{m}") for m in METRICS) + " |")
    lines += ["", "**follows_audio** (mismatched voices of the other sex: fraction of outputs whose predicted "
              "sex-like attribute is the voice's, not the face's): " +
              ", ".join(f"{s} {with_interval(metrics, f'{s}.mismatched.follows_audio')}" for s in counts), ""]
    lines += ["## Claims", "", "Fused minus image-only is paired per face; a claim holds when its whole 95 % "
              "interval is on the paper's side.", ""]
    lines += claims_table(metrics, counts) + [""]
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def evaluate(model: FaceSR, scorers: Scorers, splits: Mapping[str, Callable[[], Iterable[dict[str, Any]]]],
             out_dir: str | Path, cfg: EvaluateParams, notes: Iterable[str] = (), *,
             gallery: Callable[[], FaceSet] | None = None, progress: bool = False) -> dict[str, float]:
    """Run the comparison and write every output (see the module docstring).

    ``splits`` maps ``seen``/``unseen`` to a function giving that split's evaluation
    samples (a :class:`ShardDataset` in eval mode); an empty split is reported as such.
    ``gallery`` gives the training split's true faces, one per clip
    (:func:`~components.evaluation.judge.load_faces`), the seen speakers' identity gallery,
    read and encoded once; without it seen speakers are identified like unseen ones.
    Returns the flat metrics.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, float] = {}
    counts: dict[str, tuple[int, int, int]] = {}
    for name, samples in splits.items():
        data = encode_split(model, name, samples(), cfg.batch_size)
        counts[name] = (len(data), len(set(data.keys)), len(np.unique(data.identities)))
        if not len(data):
            log.warning("%s (%s): no clips: nothing to evaluate", name, SPLITS[name])
            for figure in (f"grid_{name}.png", f"mixing_{name}.png"):  # declared outputs: say why they are blank
                plots.message_figure(f"no clips in the {SPLITS[name]} split", out_dir / figure)
            continue
        partners = mismatch_partners(data.identities, data.sex, cfg.seed)
        seen_gallery = None
        if name == "seen" and gallery is not None:
            seen_gallery = encode_gallery(scorers.judge, gallery(), scorers.face_id)
        per_method, truth = score_split(model, scorers, data, partners, cfg.batch_size, gallery=seen_gallery,
                                        progress=progress)
        metrics |= summarize(name, per_method, truth, data.identities, cfg.bootstrap_samples, cfg.seed)
        draw_figures(model, data, out_dir, cfg, partners)
    notes = list(notes)
    if scorers.lpips is None:
        notes.append("LPIPS (AlexNet) skipped: its ImageNet weights are not on disk (set evaluate.lpips_alexnet_path "
                     "to torchvision's alexnet-owt-7be5be79.pth); stlpips is the shift-tolerant LPIPS.")
    seen_rule = ("closed-set identification against the TRAINING split's true faces (one frame per training "
                 "clip): the nearest one is of the speaker" if gallery is not None else
                 "identification by the nearest ground-truth face among the split's OTHER videos")
    notes += ["attr_acc, age_err, id_acc, id_cos: judged by the evaluator network against the speaker whose face "
              f"was the input (also for mismatched); id_acc by the judge's face embedding: on seen speakers "
              f"{seen_rule}; on unseen speakers identification by the nearest ground-truth face among the split's "
              "OTHER videos (a face whose speaker has no other video in the split is not scored)."]
    if scorers.face_id is not None:
        notes.append("id_acc_dlib, id_dist_dlib: dlib's 128-d face ResNet (trained on real faces; same person below "
                     "a distance of 0.6), on the first frame of every clip; id_acc_dlib: the same identification "
                     "rule as id_acc on dlib's descriptors.")
    write_json_atomic(out_dir / "metrics.json", metrics)
    write_bytes_atomic(out_dir / "results.md", results_table(metrics, counts, notes).encode())
    plots.ablation_plot(metrics, out_dir / "ablation.png", splits=list(counts), methods=methods_of(model),
                        names=METRICS)
    return metrics
