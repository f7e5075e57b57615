"""Metrics of face super-resolution, as pure functions of tensors and arrays.

Images are (B, 3, H, W) float tensors in [-1, 1], the range of every image in the
project (generator outputs may overshoot it: every image metric clamps first, as a
saved PNG would). Per-image functions return one value per image, so that a caller
can average over any subset (a split, a method, the pairs of a mismatch test) and the
mean over a split does not depend on how it was batched.

* Pixel fidelity: :func:`psnr` and :func:`ssim` (torchmetrics' definitions, images mapped to [0, 1],
  ``data_range=1``).
* Perceptual distance: LPIPS (Zhang et al. 2018, AlexNet; :func:`load_lpips`) when the
  AlexNet ImageNet weights are on disk, and the shift-tolerant LPIPS whose weights ship
  in the ``stlpips-pytorch`` wheel (:class:`components.models.perceptual.PerceptualLoss`,
  reused as is: :func:`stlpips`).
* Face attributes and identity as judged by an evaluator network
  (:mod:`components.evaluation.judge`): per-sample :func:`binary_hits`,
  :func:`abs_error`, :func:`closed_set_hits`, :func:`nearest_gallery_hits`,
  :func:`leave_one_out_hits`, :func:`rowwise_cosine` and :func:`follows_audio`, averaged by :func:`nanmean`. Unknown
  ground truth (NaN attributes, label -1) is NaN and left out of the mean rather than
  counted as wrong.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from components.errors import EarshotError
from components.weights import load_weights

log = logging.getLogger(__name__)

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
"""torchvision's ImageNet AlexNet weights, which LPIPS' AlexNet trunk is made of."""


def to_unit(img: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clamped (the range torchmetrics' image metrics expect)."""
    return img.float().clamp(-1.0, 1.0).add(1.0).mul(0.5)


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, (B,)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    _check_pair(pred, target)
    return peak_signal_noise_ratio(to_unit(pred), to_unit(target), data_range=1.0, reduction="none",
                                   dim=(1, 2, 3))


SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Structural similarity per image (Gaussian window 11, sigma 1.5), (B,).

    The value of torchmetrics' ``structural_similarity_index_measure`` (``data_range=1``,
    ``reduction="none"``: reflect-padded Gaussian statistics, the SSIM map averaged over
    channels and pixels; a test holds the two equal to 1e-6), with the Gaussian applied as
    OpenCV's separable filter: torchmetrics' grouped 11 x 11 ``conv2d`` is PyTorch's slowest
    convolution on CPU (0.26 s against 0.04 s for ten 256 px images on 2 cores), and SSIM is
    in every evaluation's per-clip loop.
    """
    from torchmetrics.functional.image.utils import _gaussian

    _check_pair(pred, target)
    size = int(3.5 * SSIM_SIGMA + 0.5) * 2 + 1  # 11, as torchmetrics sizes its window
    kernel = _gaussian(size, SSIM_SIGMA, torch.float64, torch.device("cpu")).numpy().ravel()
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    values = []
    for a, b in zip(to_unit(pred).permute(0, 2, 3, 1).cpu().numpy(), to_unit(target).permute(0, 2, 3, 1).cpu().numpy()):
        mu_a, mu_b, aa, bb, ab = (cv2.sepFilter2D(np.ascontiguousarray(m), -1, kernel, kernel,
                                                  borderType=cv2.BORDER_REFLECT_101)
                                  for m in (a, b, a * a, b * b, a * b))
        var_a, var_b = np.maximum(aa - mu_a * mu_a, 0.0), np.maximum(bb - mu_b * mu_b, 0.0)
        cov = ab - mu_a * mu_b
        index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2))
        values.append(float(index.mean(dtype=np.float64)))
    return torch.tensor(values, dtype=torch.float32)


def stlpips(model: nn.Module, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Shift-tolerant LPIPS per image, (B,), with ``model`` a
    :class:`~components.models.perceptual.PerceptualLoss` (its per-pair ``distances``)."""
    _check_pair(pred, target)
    with torch.no_grad():
        return model.distances(pred.clamp(-1, 1), target.clamp(-1, 1))


def lpips_distance(model: nn.Module, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """LPIPS per image, (B,), with ``model`` from :func:`load_lpips` (inputs in [-1, 1])."""
    _check_pair(pred, target)
    with torch.no_grad():
        return model(pred.float().clamp(-1, 1), target.float().clamp(-1, 1)).flatten()


def find_alexnet_weights(configured: str | Path | None = None) -> Path | None:
    """The AlexNet weights file LPIPS needs: ``configured`` if given, else torchvision's
    file in the torch hub cache (``$TORCH_HOME/hub/checkpoints``), else None.

    A configured path that does not exist is an error (the user asked for it); an empty
    cache is not (LPIPS is then skipped, see :func:`load_lpips`).
    """
    if configured:
        path = Path(configured).expanduser()
        if not path.is_file():
            raise EarshotError(f"{path}: evaluate.lpips_alexnet_path: no such file (torchvision's {ALEXNET_FILE})")
        return path
    hub = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints" / ALEXNET_FILE
    return hub if hub.is_file() else None


def load_lpips(alexnet_weights: str | Path | None = None) -> nn.Module | None:
    """LPIPS v0.1 with AlexNet (the ``lpips`` package), or None when the AlexNet ImageNet
    weights are not on disk: they are a torchvision download, impossible offline, and an
    LPIPS on a random trunk would be a number without meaning, so the metric is skipped
    (with a logged note) rather than faked.

    Both parts are loaded here with ``weights_only=True`` and checked to be complete: the
    trunk from the AlexNet file (its ``features.*`` tensors), the linear calibration
    layers from the weights inside the ``lpips`` wheel.
    """
    path = find_alexnet_weights(alexnet_weights)
    if path is None:
        log.info("LPIPS skipped: no AlexNet weights (%s) in the torch hub cache and evaluate.lpips_alexnet_path "
                 "is not set; the shift-tolerant LPIPS (stlpips) is reported instead", ALEXNET_FILE)
        return None
    import lpips

    with warnings.catch_warnings():  # lpips still passes torchvision's deprecated ``pretrained=False``
        warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
        model = lpips.LPIPS(net="alex", pretrained=False, pnet_rand=True, verbose=False)
    trunk = load_weights(path, f"{path}: evaluate.lpips_alexnet_path: not loadable AlexNet weights")
    if not isinstance(trunk, dict):
        raise EarshotError(f"{path}: evaluate.lpips_alexnet_path: not torchvision's AlexNet weights "
                           f"(a {type(trunk).__name__}, not a state dict)")
    # lpips splits torchvision's ``features`` Sequential into slices that keep the indices
    # as module names: features.3.weight lives at net.slice2.3.weight.
    where = {name: f"net.{slice_name}.{name}" for slice_name, part in model.net.named_children()
             for name in part._modules}
    state = {f"{where[key.split('.')[1]]}.{key.split('.', 2)[2]}": value for key, value in trunk.items()
             if key.startswith("features.") and key.split(".")[1] in where}
    lins = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"
    state.update(torch.load(lins, map_location="cpu", weights_only=True))
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # tensors of the wrong shapes
        raise EarshotError(f"{path}: not torchvision's AlexNet weights ({str(exc).splitlines()[-1].strip()})") from None
    # lins.* alias lin0-4; scaling_layer.* are the ImageNet mean/std constants set in code
    missing = [k for k in result.missing_keys if not k.startswith(("lins.", "scaling_layer."))]
    if missing or result.unexpected_keys:
        raise EarshotError(f"{path}: not torchvision's AlexNet weights (missing {missing[:4]}, "
                           f"unexpected {result.unexpected_keys[:4]})")
    return model.eval().requires_grad_(False)


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape or pred.ndim != 4 or pred.shape[1] != 3:
        raise ValueError(f"expected two (B, 3, H, W) images, got {tuple(pred.shape)} and {tuple(target.shape)}")


# --------------------------------------------------------------------------- attributes and identity


def binary_hits(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-sample correctness (1.0 / 0.0) of 0/1 predictions; NaN where ``truth`` is unknown."""
    pred, truth = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    return np.where(np.isnan(truth), np.nan, (pred == truth).astype(np.float64))


def abs_error(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-sample absolute error; NaN where ``truth`` is unknown."""
    return np.abs(np.asarray(pred, np.float64) - np.asarray(truth, np.float64))


def closed_set_hits(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-sample top-1 correctness of a classifier; NaN where the label is -1 (a class
    the classifier does not know, e.g. a speaker outside the training set)."""
    labels = np.asarray(labels)
    hits = (np.asarray(logits).argmax(axis=1) == labels).astype(np.float64)
    return np.where(labels < 0, np.nan, hits)


def nearest_gallery_hits(queries: np.ndarray, gallery: np.ndarray, query_ids: np.ndarray,
                         gallery_ids: np.ndarray, query_clips: np.ndarray, gallery_clips: np.ndarray) -> np.ndarray:
    """Per-query correctness of identification by the nearest gallery embedding (cosine).

    The open-set identity test: a super-resolved face counts as correct when, among the
    ground-truth faces of every test speaker, the closest one is its own speaker's. The
    gallery entries of the query's own clip are left out: the query was made from one of
    them, and finding it again would be image re-identification (a bicubic upsample of the
    input would score 1.0), not recognising the person. Embeddings must be L2-normalised.
    NaN for a query whose identity has no other clip in the gallery (it cannot be scored).
    """
    similarity = np.asarray(queries, np.float64) @ np.asarray(gallery, np.float64).T
    return nearest_hits(similarity, query_ids, gallery_ids, query_clips, gallery_clips)


def nearest_hits(similarity: np.ndarray, query_ids: np.ndarray, gallery_ids: np.ndarray,
                 query_clips: np.ndarray, gallery_clips: np.ndarray) -> np.ndarray:
    """Per-query 1.0 / 0.0: is the most similar gallery entry (``similarity``: queries x
    gallery, higher is closer) of the query's identity, gallery entries of the query's own
    clip left out? NaN where the identity has no entry left (the query cannot be scored)."""
    query_ids, gallery_ids = np.asarray(query_ids), np.asarray(gallery_ids)
    if not len(gallery_ids):
        return np.full(len(query_ids), np.nan)
    other_clip = np.asarray(query_clips)[:, None] != np.asarray(gallery_clips)[None, :]
    sim = np.where(other_clip, similarity, -np.inf)
    hits = (gallery_ids[sim.argmax(axis=1)] == query_ids).astype(np.float64)
    scorable = (other_clip & (query_ids[:, None] == gallery_ids[None, :])).any(axis=1)
    return np.where(scorable, hits, np.nan)


def leave_one_out_hits(embeddings: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Per-face correctness of identification by the nearest *other* face (cosine).

    Verification among faces of speakers the evaluator never saw: NaN for a face whose
    speaker has no other face to be found.
    """
    emb, ids = np.asarray(embeddings, np.float64), np.asarray(ids)
    sim = emb @ emb.T
    np.fill_diagonal(sim, -np.inf)
    hits = (ids[sim.argmax(axis=1)] == ids).astype(np.float64) if len(ids) > 1 else np.zeros(len(ids))
    others = (ids[:, None] == ids[None, :]).sum(axis=1) > 1
    return np.where(others, hits, np.nan)


def rowwise_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of matching rows of two (N, D) arrays."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    norm = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.einsum("nd,nd->n", a, b) / np.maximum(norm, 1e-12)


def follows_audio(pred: np.ndarray, image_attr: np.ndarray, audio_attr: np.ndarray) -> np.ndarray:
    """Per-pair 1.0 when a predicted binary attribute is the audio speaker's, 0.0 when it
    is not; NaN for pairs where the two speakers agree or one is unknown (the output
    cannot tell whom it follows there)."""
    pred, image_attr, audio_attr = (np.asarray(x, np.float64) for x in (pred, image_attr, audio_attr))
    decisive = ~np.isnan(image_attr) & ~np.isnan(audio_attr) & (image_attr != audio_attr)
    return np.where(decisive, (pred == audio_attr).astype(np.float64), np.nan)


def nanmean(values: np.ndarray) -> float | None:
    """Mean over the known values; None when there is none (a metric that does not apply)."""
    values = np.asarray(values, np.float64)
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else None
