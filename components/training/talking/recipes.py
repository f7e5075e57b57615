"""The three training stages of the video paper as recipes for the loop.

* ``train_sync``: the lip-sync expert (Wav2Lip's design): the lower halves of 5
  consecutive coarse frames and the 16 mel steps around their centre, embedded and
  L2-normalised, their cosine scored with binary cross-entropy; the negatives are mel
  windows of the same clip at least ``min_shift`` frames away (half the samples).
* ``train_coarse`` (stage 1): a window of ``lr_size`` frames and the centre's mel window
  -> the coarse centre frame. A sample is 5 consecutive centres: L1 on each output, and
  the frozen expert's BCE (target "in sync") on the 5 outputs with their audio.
* ``train_animate`` (stage 2, FOMM-style): keypoints with Jacobians on the identity photo
  and on the driving coarse frame, dense motion with occlusion, a generator warping the
  photo's features; multi-scale L1 to the true full-size frame and the equivariance of
  keypoints and Jacobians under random warps. Stage 1 is frozen and drives it
  (``driving: coarse``), as at inference.

``build_stage(name, params, cfg, runtime, data)`` loads a stage's upstream networks
(``model.pt`` files of family ``talking``) and builds it; ``data`` is its feed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from components.config import Params, TrainAnimateParams, TrainCoarseParams, TrainStageParams, TrainSyncParams
from components.data.features import resize
from components.models.talking import FAMILY, ModelConfig, build_models, config_dict
from components.models.talking.animation import animate
from components.models.talking.sync import lower_half, sync_probability
from components.models.talking.transforms import RandomWarp
from components.models.talking.upsampler import enlarge
from components.training import loop
from components.training.feeds import Batch
from components.training.losses import PerceptualLoss, pyramid_l1, reconstruction_loss
from components.training.runtime import Runtime
from components.training.stage import load_upstream, to_runtime_layout
from components.training.talking.plan import TRAINS, UPSTREAM, stage_dir

Upstream = Mapping[str, nn.Module]


def _stage(name: str, cfg: ModelConfig, networks: dict[str, nn.Module], trained: tuple[str, ...],
           optimizers: dict[str, torch.optim.Optimizer], step: Callable, sample: Callable, **rest: Any) -> loop.Stage:
    return loop.Stage(name, FAMILY, config_dict(cfg), networks, trained, optimizers, step, sample, **rest)


def _adam(params: Any, p: TrainStageParams) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=p.lr, betas=p.betas)


def _mel_image(mel: torch.Tensor) -> torch.Tensor:
    """(B, 1, mels, steps) log-mel -> a square image in [-1, 1], low frequencies at the bottom."""
    lo, hi = mel.amin(dim=(1, 2, 3), keepdim=True), mel.amax(dim=(1, 2, 3), keepdim=True)
    img = ((mel - lo) / (hi - lo).clamp(min=1e-6) * 2 - 1).flip(-2)
    return F.interpolate(img, size=(mel.shape[-2],) * 2, mode="nearest")


def sync_loss(expert: nn.Module, faces: torch.Tensor, mel: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """BCE of the expert's in-sync probability for (B, T, 3, c, c) faces and (B, 1, 80, 16) mel; and that probability."""
    video, audio = expert(lower_half(faces), mel)
    prob = sync_probability(video, audio).float().clamp(1e-6, 1 - 1e-6)
    return F.binary_cross_entropy(prob, label), prob


def build_train_sync(p: TrainSyncParams, cfg: ModelConfig, seed: int, device: torch.device, up: Upstream,
                     perceptual: PerceptualLoss | None) -> loop.Stage:
    nets = {"expert": build_models(cfg, names=("expert",), seed=seed)["expert"].to(device)}
    opt = {"expert": _adam(nets["expert"].parameters(), p)}

    def step(ctx: loop.StepContext, batch: Batch) -> dict[str, torch.Tensor]:
        with ctx.autocast():
            loss, prob = sync_loss(ctx.nets["expert"], batch["faces"], batch["sync_mel"], batch["label"])
        ctx.optimize("expert", loss)
        return {"bce": loss.detach(), "acc": ((prob > 0.5).float() == batch["label"]).float().mean()}

    def sample(n: Mapping[str, nn.Module], batch: Batch) -> list[tuple[str, torch.Tensor]]:
        _, prob = sync_loss(n["expert"], batch["faces"], batch["sync_mel"], batch["label"])
        mark = (batch["label"] * 2 - 1)[:, None, None, None].expand(-1, 3, 8, 8)  # white: in sync, black: shifted
        return [("window", batch["faces"]), ("mel", _mel_image(batch["sync_mel"])),
                ("in sync?", mark), ("p(sync)", (prob * 2 - 1)[:, None, None, None].expand(-1, 3, 8, 8))]

    return _stage("train_sync", cfg, nets, ("expert",), opt, step, sample, export={"expert": "expert"},
                  metrics=("acc", "bce"))


def build_train_coarse(p: TrainCoarseParams, cfg: ModelConfig, seed: int, device: torch.device, up: Upstream,
                       perceptual: PerceptualLoss | None) -> loop.Stage:
    coarse = build_models(cfg, names=("coarse",), seed=seed)["coarse"].to(device)
    expert = up["expert"].to(device).requires_grad_(False)
    nets = {"coarse": coarse, "expert": expert}
    opt = {"coarse": _adam(coarse.parameters(), p)}
    metrics = ("l1",) + (("sync",) if p.w_sync > 0 else ()) + (("perc",) if perceptual is not None else ())

    def outputs(net: nn.Module, batch: Batch) -> torch.Tensor:
        """The 5 consecutive outputs of each sample: (B, S, 3, c, c)."""
        lr, mel = batch["lr_span"], batch["mel_span"]
        b, s = lr.shape[:2]
        return net(lr.flatten(0, 1), mel.flatten(0, 1)).unflatten(0, (b, s))

    def step(ctx: loop.StepContext, batch: Batch) -> dict[str, torch.Tensor]:
        with ctx.autocast():
            pred = outputs(ctx.nets["coarse"], batch)
            target = batch["coarse_span"]
            losses = {"l1": reconstruction_loss(pred.float(), target)}
            if p.w_sync > 0:
                centre = batch["mel"]
                losses["sync"] = sync_loss(ctx.nets["expert"], pred, centre, torch.ones(len(pred), device=pred.device))[0]
            if perceptual is not None:
                losses["perc"] = perceptual(pred.flatten(0, 1), target.flatten(0, 1))
            total = p.w_l1 * losses["l1"] + p.w_sync * losses.get("sync", 0.0) + p.w_perc * losses.get("perc", 0.0)
        ctx.optimize("coarse", total)
        return {k: v.detach() for k, v in losses.items()}

    def sample(n: Mapping[str, nn.Module], batch: Batch) -> list[tuple[str, torch.Tensor]]:
        pred = outputs(n["coarse"], batch)
        half = cfg.window // 2
        return [("8x8", batch["lr_span"][:, :, half]), ("stage 1", pred), ("truth", batch["coarse_span"])]

    return _stage("train_coarse", cfg, nets, ("coarse",), opt, step, sample, export={"coarse": "coarse"},
                  metrics=metrics)


def equivariance_losses(kp_net: nn.Module, driving: torch.Tensor, kp_driving: Mapping[str, torch.Tensor],
                        warp: RandomWarp) -> dict[str, torch.Tensor]:
    """FOMM's equivariance: the keypoints of a warped frame, mapped back, are the frame's own,
    and their Jacobians composed with the warp's equal the frame's (a value and a Jacobian term)."""
    kp_warped = kp_net(warp.warp_image(driving))
    value = (warp.warp_points(kp_warped["value"]) - kp_driving["value"]).abs().mean()
    composed = warp.jacobian(kp_warped["value"]) @ kp_warped["jacobian"]
    eye = torch.eye(2, device=driving.device)
    jacobian = (torch.linalg.inv(kp_driving["jacobian"].float()) @ composed.float() - eye).abs().mean()
    return {"equiv_value": value, "equiv_jacobian": jacobian}


def build_train_animate(p: TrainAnimateParams, cfg: ModelConfig, seed: int, device: torch.device, up: Upstream,
                        perceptual: PerceptualLoss | None) -> loop.Stage:
    new = {k: v.to(device) for k, v in build_models(cfg, names=TRAINS["train_animate"], seed=seed).items()}
    frozen = {k: up[k].to(device).requires_grad_(False) for k in ("expert", "coarse")}
    nets = new | frozen
    opt = {"animation": _adam([q for net in new.values() for q in net.parameters()], p)}
    metrics = ("pyramid",) + (("equiv_value", "equiv_jacobian") if p.w_equivariance > 0 else ()) \
        + (("perc",) if perceptual is not None else ())

    def driving_frames(n: Mapping[str, nn.Module], batch: Batch) -> torch.Tensor:
        if p.driving == "truth":
            return batch["coarse"]
        with torch.no_grad():
            return n["coarse"](batch["lr"], batch["mel"])

    def source_of(batch: Batch, driving: torch.Tensor) -> torch.Tensor:
        """The identity photo, or with ``identity`` off the driving frame itself, enlarged (no photo)."""
        return batch["photo"] if cfg.identity else enlarge(driving, cfg.out_size)

    def step(ctx: loop.StepContext, batch: Batch) -> dict[str, torch.Tensor]:
        driving = driving_frames(ctx.nets, batch)
        with ctx.autocast():
            out = animate(ctx.nets, source_of(batch, driving), driving)
            pred = out["prediction"].float()
            losses = {"pyramid": pyramid_l1(pred, batch["hr"])}
            if p.w_equivariance > 0:
                warp = RandomWarp(len(driving), sigma_affine=p.warp_sigma_affine, sigma_tps=p.warp_sigma_tps,
                                  points=p.warp_points, device=driving.device)
                losses |= equivariance_losses(ctx.nets["kp"], driving, out["kp_driving"], warp)
            if perceptual is not None:
                losses["perc"] = perceptual(pred, batch["hr"])
            total = p.w_pyramid * losses["pyramid"] + p.w_perc * losses.get("perc", 0.0) \
                + p.w_equivariance * (losses.get("equiv_value", 0.0) + losses.get("equiv_jacobian", 0.0))
        ctx.optimize("animation", total)
        return {k: v.detach() for k, v in losses.items()}

    def sample(n: Mapping[str, nn.Module], batch: Batch) -> list[tuple[str, torch.Tensor]]:
        driving = driving_frames(n, batch)
        pred = animate(n, source_of(batch, driving), driving)["prediction"]
        return [("8x8", batch["lr"][:, cfg.window // 2]), ("stage 1", resize(driving, cfg.out_size)),
                ("source", source_of(batch, driving)), ("ours", pred), ("truth", batch["hr"])]

    return _stage("train_animate", cfg, nets, TRAINS["train_animate"], opt, step, sample,
                  export={name: name for name in (*TRAINS["train_animate"], "expert", "coarse")},
                  metrics=metrics, n_preview=4)


BUILDERS = {"train_sync": build_train_sync, "train_coarse": build_train_coarse, "train_animate": build_train_animate}


def build_stage(name: str, params: Params, cfg: ModelConfig, runtime: Runtime) -> loop.Stage:
    """The :class:`~components.training.loop.Stage` of ``name``, its upstream networks loaded."""
    p, seed, device = getattr(params, name), params.talking.seed, runtime.device
    up = load_upstream(UPSTREAM[name], lambda prev: stage_dir(params, prev), family=FAMILY, config=config_dict(cfg))
    perceptual = PerceptualLoss().to(device) if getattr(p, "w_perc", 0) > 0 else None
    return to_runtime_layout(BUILDERS[name](p, cfg, seed, device, up, perceptual), runtime)
