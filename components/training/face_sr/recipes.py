"""The five training stages of "Face super-resolution with an ear" as recipes for the loop.

Each ``build_<stage>(p, cfg, seed, device, up, perceptual, data)`` returns the
:class:`~components.training.loop.Stage` of one stage: its networks (new ones from
``build_models(cfg, seed)``, frozen or fine-tuned ones ``up`` from earlier stages), the
optimisers, the step of one iteration and the sample grid (``data``, the stage's training
feed, is read by the stages whose targets are statistics of it: train_ea's per-speaker codes). :func:`build_stage` loads
a stage's upstream networks (``model.pt`` files of family ``face_sr``) and builds it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from components.config import (
    Params,
    TrainEaParams,
    TrainEhParams,
    TrainElParams,
    TrainFusionParams,
    TrainGParams,
    TrainStageParams,
)
from components.errors import ConfigError
from components.models.face_sr import FAMILY, ModelConfig, build_models, config_dict
from components.models.layers import pixel_norm
from components.training import loop
from components.training.ema import ema_beta, update_ema
from components.training.face_sr.plan import UPSTREAM, stage_dir
from components.training.feeds import Batch, Batches, CachedFeed
from components.training.losses import (
    PerceptualLoss,
    d_logistic,
    g_nonsaturating,
    latent_loss,
    path_length_penalty,
    r1_penalty,
    reconstruction_loss,
)
from components.training.runtime import Runtime
from components.training.stage import load_upstream, to_runtime_layout

Upstream = Mapping[str, nn.Module]


def code_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Latent MSE between codes as G sees them (pixel-normalised per layer)."""
    return latent_loss(pixel_norm(pred.float()), pixel_norm(target.float()))


def image_losses(y: torch.Tensor, x: torch.Tensor, perceptual: PerceptualLoss | None) -> dict[str, torch.Tensor]:
    """L1 (``rec``) and, when the stage weights it (``perceptual`` given), shift-tolerant
    LPIPS (``perc``) of y against x."""
    losses = {"rec": reconstruction_loss(y.float(), x.float())}
    if perceptual is not None:
        losses["perc"] = perceptual(y, x)
    return losses


def active(always: tuple[str, ...], **weighted: float) -> tuple[str, ...]:
    """The metrics.tsv columns of a stage: its losses, those with a zero weight left out."""
    return always + tuple(name for name, weight in weighted.items() if weight > 0)


def encoder_metrics(p: TrainElParams | TrainEaParams | TrainFusionParams) -> tuple[str, ...]:
    """El, Ea and F log the image losses whenever they are computed (either is weighted)."""
    image = ("rec", "perc") if p.w_perc > 0 else ("rec",) if p.w_rec > 0 else ()
    return ("loss", *image, "latent")


# -- the stages ----------------------------------------------------------------------------------

class GeneratorWithWs(nn.Module):
    """G whose forward also returns the ws it synthesised from.

    The path-length regulariser needs d(image)/d(ws); under DDP every gradient must come
    from a forward of the wrapped module, so train_g calls G through this view (it owns no
    parameters of its own: its state is G's).
    """

    def __init__(self, g: nn.Module) -> None:
        super().__init__()
        self.g = g

    def forward(self, z: torch.Tensor, noise: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.g.mapping(z)
        ws = w.unsqueeze(1).expand(-1, self.g.n_latents, -1)
        return self.g.synthesis(ws, noise=noise), ws


def _stage(name: str, cfg: ModelConfig, networks: dict[str, nn.Module], trained: tuple[str, ...],
           optimizers: dict[str, torch.optim.Optimizer], step: Callable, sample: Callable, **rest: Any) -> loop.Stage:
    """A face-SR stage: its files are of family ``face_sr`` and record the model config."""
    return loop.Stage(name, FAMILY, config_dict(cfg), networks, trained, optimizers, step, sample, **rest)


def _adam(groups: Any, p: TrainStageParams) -> torch.optim.Adam:
    return torch.optim.Adam(groups, lr=p.lr, betas=p.betas)


def _fixed_noise(n: int, *shape: int, seed: int, device: torch.device) -> torch.Tensor:
    """Noise for the sample grids from its own generator: the global RNG is not touched."""
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed)).to(device)


def _spec_image(spec: torch.Tensor) -> torch.Tensor:
    """(B, 1, time, freq) -> an image with time left to right and low frequencies at the bottom."""
    return spec.transpose(-1, -2).flip(-2)


def build_train_g(p: TrainGParams, cfg: ModelConfig, seed: int, device: torch.device, up: Upstream,
                  perceptual: PerceptualLoss | None, data: Batches) -> loop.Stage:
    """One GAN iteration: a D step (real vs a fresh fake), lazy R1 every ``r1_every``, a G step
    through the updated D on the same fake, optional path length, then the EMA of G.
    (``up``, ``perceptual`` and ``data`` are unused: G comes first and has no image loss;
    every builder takes them so that :func:`build_stage` calls each alike.)"""
    nets = build_models(cfg, seed, ("G", "D"))
    G, D = nets["G"].to(device), nets["D"].to(device)
    g_ema = copy.deepcopy(G).requires_grad_(False)
    pl_mean = torch.zeros((), device=device)
    z_preview = _fixed_noise(32, cfg.latent_dim, seed=seed, device=device)

    def step(ctx: loop.StepContext, batch: Batch) -> dict[str, torch.Tensor]:
        g, d = ctx.nets["G"], ctx.nets["D"]
        real = batch["hr"]
        with ctx.autocast():
            fake, _ = g(torch.randn(len(real), cfg.latent_dim, device=ctx.device))
            d_loss = d_logistic(d(real), d(fake.detach()))
        ctx.optimize("D", d_loss)
        losses = {"d": d_loss}
        if p.r1_gamma > 0 and ctx.step % p.r1_every == 0:
            # Lazy R1 in float32 (it squares input gradients, which fp16 would underflow);
            # `0 * out` keeps every D parameter in the graph, as DDP requires.
            real_ = real.detach().requires_grad_(True)
            out = d(real_)
            r1 = r1_penalty(out, real_)
            ctx.optimize("D", p.r1_gamma / 2 * p.r1_every * r1 + 0 * out.sum())
            losses["r1"] = r1
        with ctx.autocast():
            g_loss = g_nonsaturating(d(fake))
        ctx.optimize("G", g_loss)
        losses["g"] = g_loss
        if p.pl_weight > 0 and ctx.step % p.pl_every == 0:
            img, ws = g(torch.randn(len(real), cfg.latent_dim, device=ctx.device))
            pl, new_mean = path_length_penalty(img, ws, pl_mean)
            pl_mean.copy_(new_mean)
            ctx.optimize("G", p.pl_weight * p.pl_every * pl + 0 * img.sum())
            losses["pl"] = pl
        batch_all = len(real) * ctx.runtime.world_size
        update_ema(g_ema, G, ema_beta(ctx.images_seen, batch_all, p.ema_kimg, p.ema_rampup))
        return losses

    def sample(n: Mapping[str, nn.Module], batch: Batch) -> list[tuple[str, torch.Tensor]]:
        fakes = n["G_ema"](z_preview).chunk(4)
        return [*(("G_ema(z)", f) for f in fakes), ("real", batch["hr"])]

    return _stage(
        "train_g", cfg, {"G": G, "D": D, "G_ema": g_ema}, ("G", "D"),
        {"G": _adam(G.parameters(), p), "D": _adam(D.parameters(), p)},
        step, sample, export={"G": "G_ema", "D": "D"}, metrics=active(("d", "g"), r1=p.r1_gamma, pl=p.pl_weight),
        views={"G": GeneratorWithWs(G)}, state={"pl_mean": pl_mean})


def build_train_eh(p: TrainEhParams, cfg: ModelConfig, seed: int, device: torch.device,
                   up: Upstream, perceptual: PerceptualLoss | None, data: Batches) -> loop.Stage:
    """Eh and G as an autoencoder of the real faces: G(Eh(x)) = x, G from train_g's EMA."""
    Eh = build_models(cfg, seed, ("Eh",))["Eh"].to(device)
    G = up["G"].to(device)
    trained = ("Eh", "G") if p.g_lr > 0 else ("Eh",)
    # Noise inputs are off from here on (inference does not use them): their strengths
    # get no gradient, and DDP requires every trained parameter to get one.
    G.requires_grad_(p.g_lr > 0)
    for name, param in G.named_parameters():
        if name.endswith("noise_strength"):
            param.requires_grad_(False)
    groups = [{"params": list(Eh.parameters()), "lr": p.lr}]
    if p.g_lr > 0:
        groups.append({"params": [q for q in G.parameters() if q.requires_grad], "lr": p.g_lr})
    n_latents = cfg.n_latents

    def step(ctx: loop.StepContext, batch: Batch) -> dict[str, torch.Tensor]:
        eh, g = ctx.nets["Eh"], ctx.nets["G"]
        x = batch["hr"]
        with ctx.autocast():
            y = g(eh(x))
            losses = image_losses(y, x, perceptual)
            total = sum(getattr(p, f"w_{k}") * v for k, v in losses.items())
            if p.w_latent > 0:
                z = torch.randn(len(x), n_latents, cfg.latent_dim, device=ctx.device)
                with torch.no_grad():
                    img = g(z)
                losses["latent"] = code_loss(eh(img), z)
                total = total + p.w_latent * losses["latent"]
        ctx.optimize("Eh", total)
        return {"loss": total, **losses}

    def sample(n: Mapping[str, nn.Module], batch: Batch) -> list[tuple[str, torch.Tensor]]:
        x = batch["hr"]
        return [("input", x), ("G(Eh(x))", n["G"](n["Eh"](x)))]

    return _stage("train_eh", cfg, {"Eh": Eh, "G": G}, trained, {"Eh": _adam(groups, p)}, step, sample,
                  export={"Eh": "Eh", "G": "G"}, metrics=active(("loss", "rec"), perc=p.w_perc, latent=p.w_latent))


def speaker_codes(eh: nn.Module, data: Batches, device: torch.device, batch_size: int = 64) -> torch.Tensor:
    """(speakers, n_latents, dim): the mean of Eh's codes (as G sees them, pixel-normalised)
    over each speaker's cached training frames; row i is speaker index i of the cache."""
    if not isinstance(data, CachedFeed) or "speaker" not in data.tensors:
        raise ConfigError("train_ea.target: speaker needs the training faces in memory "
                          "(face_sr.cache_frames_per_clip > 0); use target: frame to stream them")
    speaker = data.tensors["speaker"]
    total: torch.Tensor | None = None
    with torch.no_grad():
        for start in range(0, len(speaker), batch_size):
            rows = torch.arange(start, min(start + batch_size, len(speaker)))
            codes = pixel_norm(eh(data.take(rows, ("hr",))["hr"].to(device)).float())  # not the spectrograms
            if total is None:
                total = torch.zeros(int(speaker.max()) + 1, *codes.shape[1:], device=device)
            total.index_add_(0, speaker[rows].to(device), codes)
    counts = torch.bincount(speaker, minlength=len(total)).clamp(min=1).to(device)
    return total / counts.view(-1, 1, 1)


def _build_code_regressor(stage: str, name: str, key: str, show: Callable[[torch.Tensor], tuple[str, torch.Tensor]],
                          p: TrainElParams | TrainEaParams, cfg: ModelConfig, seed: int, device: torch.device,
                          up: Upstream, perceptual: PerceptualLoss | None,
                          targets: torch.Tensor | None = None) -> loop.Stage:
    """The stage of El and Ea: network ``name`` encodes ``batch[key]`` to Eh's code of the
    same face (latent loss), or, with ``targets`` (one code per speaker), to the code of the
    sample's speaker; plus, when weighted, the image losses of G's decoding of that code
    against the frame. Eh and G (train_eh's) stay frozen. ``show`` turns the input into a
    grid column."""
    net = build_models(cfg, seed, (name,))[name].to(device)
    Eh, G = up["Eh"].to(device), up["G"].to(device)

    def step(ctx: loop.StepContext, batch: Batch) -> dict[str, torch.Tensor]:
        x = batch["hr"]
        with ctx.autocast():
            if targets is not None:
                target = targets[batch["speaker"]]
            else:
                with torch.no_grad():
                    target = Eh(x)
            code = ctx.nets[name](batch[key])
            losses = image_losses(G(code), x, perceptual) if p.w_rec or p.w_perc else {}
            losses["latent"] = code_loss(code, target)
            total = sum(getattr(p, f"w_{k}") * v for k, v in losses.items())
        ctx.optimize(name, total)
        return {"loss": total, **losses}

    def sample(n: Mapping[str, nn.Module], batch: Batch) -> list[tuple[str, torch.Tensor]]:
        x, inputs = batch["hr"], batch[key]
        columns = [show(inputs), (f"G({name})", G(n[name](inputs))), ("G(Eh)", G(Eh(x)))]
        if targets is not None:
            columns.append(("G(speaker)", G(targets[batch["speaker"]])))
        return [*columns, ("target", x)]

    return _stage(stage, cfg, {name: net, "Eh": Eh, "G": G}, (name,), {name: _adam(net.parameters(), p)},
                  step, sample, export={name: name, "G": "G"}, metrics=encoder_metrics(p))


def build_train_el(p: TrainElParams, cfg: ModelConfig, seed: int, device: torch.device,
                   up: Upstream, perceptual: PerceptualLoss | None, data: Batches) -> loop.Stage:
    """El: G(El(x_l)) = x_h and El(x_l) = Eh(x_h), through the frozen G and Eh of train_eh."""
    return _build_code_regressor("train_el", "El", "lr", lambda xl: ("8x8", xl), p, cfg, seed, device, up, perceptual)


def build_train_ea(p: TrainEaParams, cfg: ModelConfig, seed: int, device: torch.device,
                   up: Upstream, perceptual: PerceptualLoss | None, data: Batches) -> loop.Stage:
    """Ea: speech -> the code of its speaker's face: with ``target: speaker`` the mean of Eh's
    codes over the speaker's training frames (what a voice can tell: not the frame's pose,
    mouth or light), with ``target: frame`` Eh(x_h) of a frame of the same clip; optionally
    G(Ea(a)) = x_h."""
    targets = speaker_codes(up["Eh"].to(device), data, device) if p.target == "speaker" else None
    return _build_code_regressor("train_ea", "Ea", "spec", lambda spec: ("speech", _spec_image(spec)), p, cfg, seed,
                                 device, up, perceptual, targets)


def noisy_code(code: torch.Tensor, std: float) -> torch.Tensor:
    """``code`` plus Gaussian noise of ``std`` times its RMS per latent (training only)."""
    if std <= 0:
        return code
    rms = code.float().pow(2).mean(dim=-1, keepdim=True).sqrt()
    return code + torch.randn_like(code) * (std * rms).to(code.dtype)


def build_train_fusion(p: TrainFusionParams, cfg: ModelConfig, seed: int, device: torch.device,
                       up: Upstream, perceptual: PerceptualLoss | None, data: Batches) -> loop.Stage:
    """F: G(F(El(x_l), Ea(a))) = x_h and F(...) = Eh(x_h); El, Ea, Eh, G frozen. Ea's code
    gets ``audio_noise`` (relative) Gaussian noise in training: on its training clips Ea is
    more accurate than on new speakers, and F would learn to trust it more than it should."""
    F = build_models(cfg, seed, ("F",))["F"].to(device)
    Eh, G, El, Ea = (up[k].to(device) for k in ("Eh", "G", "El", "Ea"))

    def step(ctx: loop.StepContext, batch: Batch) -> dict[str, torch.Tensor]:
        x, xl, spec = batch["hr"], batch["lr"], batch["spec"]
        with ctx.autocast():
            with torch.no_grad():
                wl, wa, target = El(xl), noisy_code(Ea(spec), p.audio_noise), Eh(x)
            code = ctx.nets["F"](wl, wa)
            losses = image_losses(G(code), x, perceptual) if p.w_rec or p.w_perc else {}
            losses["latent"] = code_loss(code, target)
            total = sum(getattr(p, f"w_{k}") * v for k, v in losses.items())
        ctx.optimize("F", total)
        return {"loss": total, **losses}

    def sample(n: Mapping[str, nn.Module], batch: Batch) -> list[tuple[str, torch.Tensor]]:
        x, xl, spec = batch["hr"], batch["lr"], batch["spec"]
        wl = El(xl)
        return [("8x8", xl), ("speech", _spec_image(spec)), ("G(El)", G(wl)), ("G(F)", G(n["F"](wl, Ea(spec)))),
                ("target", x)]

    networks = {"F": F, "El": El, "Ea": Ea, "Eh": Eh, "G": G}
    return _stage("train_fusion", cfg, networks, ("F",), {"F": _adam(F.parameters(), p)}, step, sample,
                  export={"G": "G", "El": "El", "Ea": "Ea", "F": "F"}, metrics=encoder_metrics(p))


BUILDERS = {"train_g": build_train_g, "train_eh": build_train_eh, "train_el": build_train_el,
            "train_ea": build_train_ea, "train_fusion": build_train_fusion}


def build_stage(name: str, params: Params, cfg: ModelConfig, runtime: Runtime, data: Batches) -> loop.Stage:
    """The :class:`~components.training.loop.Stage` of ``name`` on its training feed ``data``,
    its upstream networks loaded."""
    p, seed, device = getattr(params, name), params.face_sr.seed, runtime.device
    up = load_upstream(UPSTREAM[name], lambda prev: stage_dir(params, prev), family=FAMILY, config=config_dict(cfg))
    perceptual = PerceptualLoss().to(device) if getattr(p, "w_perc", 0) > 0 else None
    return to_runtime_layout(BUILDERS[name](p, cfg, seed, device, up, perceptual, data), runtime)


