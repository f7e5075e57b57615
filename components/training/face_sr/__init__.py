"""The five training stages of "Face super-resolution with an ear" (Meishvili et al., CVPR 2020).

The paper trains its networks one after the other, each on top of the frozen result of
the previous ones, and so does this module, one DVC stage each:

1. ``train_g``: a StyleGAN-style generator G on the high-res training faces, against a
   discriminator D (non-saturating logistic loss, lazy R1, optional path-length
   regulariser), keeping an exponential moving average ``G_ema`` that later stages use.
2. ``train_eh``: the high-res encoder Eh learns to invert G: G(Eh(x)) = x (L1 +
   shift-tolerant LPIPS, optionally a latent cycle Eh(G(z)) = z), while G is fine-tuned
   at a low learning rate so that it can reproduce the real faces, not only its samples.
3. ``train_el``: the low-res encoder El maps the 8x8 face to a code G turns into the
   high-res face; its loss is on the image and on the code, to Eh's code of the
   high-res face (Eh and G frozen).
4. ``train_ea``: the audio encoder Ea regresses, from 4 s of speech, Eh's code of the
   same person's face (optionally with an image loss through G).
5. ``train_fusion``: F combines El's and Ea's codes (both frozen) into the code of the
   high-res face.

Codes are per-layer z vectors that G's mapping network normalises (pixel norm) before
use, so only their direction matters to G; latent losses compare codes after that same
normalisation, which keeps their scale meaningful whatever the encoders' output norm.

Each stage's folder ``<face_sr.out_dir>/<stage>/`` holds ``checkpoint.pt`` (resume),
``model.pt`` (the networks for the next stages and inference), ``metrics.tsv``,
``summary.json`` and ``samples/``. A rerun with the same settings and inputs after the
stage finished is a no-op; after a kill it resumes; with other settings or inputs (a
new G, new shards) it starts over.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from components.config import (
    FaceSRParams,
    Params,
    TrainEaParams,
    TrainEhParams,
    TrainElParams,
    TrainFusionParams,
    TrainGParams,
    TrainStageParams,
)
from components.data.dataset import ShardDataset
from components.errors import ConfigError
from components.io import fingerprint, sha256_file
from components.models.face_sr import ModelConfig, build_models, get_preset
from components.models.face_sr.presets import config_fields
from components.models.layers import pixel_norm
from components.tracking import StageRun, stage_run
from components.training import loop
from components.models.checkpoint import CheckpointError, load_checkpoint, load_networks
from components.training.feeds import Batch, Batches, CachedFaceSR, StreamingFaceSR
from components.training.losses import (
    PerceptualLoss,
    d_logistic,
    g_nonsaturating,
    latent_loss,
    path_length_penalty,
    r1_penalty,
    reconstruction_loss,
)

log = logging.getLogger(__name__)

STAGES = ("train_g", "train_eh", "train_el", "train_ea", "train_fusion")
# The networks each stage takes from the model.pt of earlier stages.
UPSTREAM: dict[str, dict[str, tuple[str, ...]]] = {
    "train_g": {},
    "train_eh": {"train_g": ("G",)},
    "train_el": {"train_eh": ("Eh", "G")},
    "train_ea": {"train_eh": ("Eh", "G")},
    "train_fusion": {"train_eh": ("Eh", "G"), "train_el": ("El",), "train_ea": ("Ea",)},
}
USES_AUDIO = {"train_ea", "train_fusion"}
# Settings that change how a run goes, not what it learns: a checkpoint made with other
# values is still resumed (e.g. raise `steps` to train a finished stage further).
RUN_ONLY = {"steps", "log_every", "sample_every", "checkpoint_every", "threads", "device", "amp",
            "channels_last", "out_dir"}


# The networks each stage trains (what its fingerprint covers of the model config; the
# upstream networks enter it through the hashes of their model.pt files).
TRAINS = {"train_g": ("G", "D"), "train_eh": ("Eh", "G"), "train_el": ("El",), "train_ea": ("Ea",),
          "train_fusion": ("F",)}
# face_sr keys that are model config fields too (the ablation knobs), by their config name.
KNOBS = {"lr_size": "lr_size", "audio_seconds": "audio_seconds", "audio": "fusion_audio", "fusion": "fusion"}


def model_config(face_sr: FaceSRParams) -> ModelConfig:
    """The networks' sizes: ``face_sr.preset`` with ``face_sr.overrides`` and the ablation
    knobs (``face_sr.lr_size``, ``audio_seconds``, ``audio``, ``fusion``) applied."""
    clash = sorted(set(face_sr.overrides) & set(KNOBS.values()))
    if clash:
        raise ConfigError(f"params.yaml: face_sr.overrides: set {clash} with face_sr."
                          f"{', face_sr.'.join(k for k, v in KNOBS.items() if v in clash)} instead")
    knobs = {field: getattr(face_sr, key) for key, field in KNOBS.items()}
    try:
        return get_preset(face_sr.preset, **face_sr.overrides, **knobs)
    except (ValidationError, ValueError, TypeError) as exc:
        raise ConfigError(f"params.yaml: face_sr.overrides: {exc}") from None


def stage_dir(params: Params, stage: str) -> Path:
    return Path(params.face_sr.out_dir) / stage


def upstream_files(params: Params, stage: str) -> list[Path]:
    return [stage_dir(params, up) / "model.pt" for up in UPSTREAM[stage]]


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


@torch.no_grad()
def update_ema(ema: nn.Module, net: nn.Module, beta: float) -> None:
    """ema = beta * ema + (1 - beta) * net (parameters); buffers (w_avg) are copied."""
    for p_ema, p in zip(ema.parameters(), net.parameters()):
        p_ema.copy_(p.detach().lerp(p_ema, beta))
    for b_ema, b in zip(ema.buffers(), net.buffers()):
        b_ema.copy_(b)


def ema_beta(images_seen: int, batch: int, kimg: float, rampup: float | None) -> float:
    """StyleGAN2-ADA's EMA decay: half-life ``kimg`` thousand images, at most ``rampup``
    times the images seen so far (early weights are noise and must be forgotten fast)."""
    half_life = kimg * 1000
    if rampup is not None:
        half_life = min(half_life, images_seen * rampup)
    return 0.5 ** (batch / max(half_life, 1e-8))


def _adam(groups: Any, p: TrainStageParams) -> torch.optim.Adam:
    return torch.optim.Adam(groups, lr=p.lr, betas=p.betas)


def _fixed_noise(n: int, *shape: int, seed: int, device: torch.device) -> torch.Tensor:
    """Noise for the sample grids from its own generator: the global RNG is not touched."""
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed)).to(device)


def _spec_image(spec: torch.Tensor) -> torch.Tensor:
    """(B, 1, time, freq) -> an image with time left to right and low frequencies at the bottom."""
    return spec.transpose(-1, -2).flip(-2)


def build_train_g(p: TrainGParams, cfg: ModelConfig, seed: int, device: torch.device) -> loop.Stage:
    """One GAN iteration: a D step (real vs a fresh fake), lazy R1 every ``r1_every``, a G step
    through the updated D on the same fake, optional path length, then the EMA of G."""
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

    return loop.Stage(
        "train_g", {"G": G, "D": D, "G_ema": g_ema}, ("G", "D"),
        {"G": _adam(G.parameters(), p), "D": _adam(D.parameters(), p)},
        step, sample, export={"G": "G_ema", "D": "D"}, metrics=active(("d", "g"), r1=p.r1_gamma, pl=p.pl_weight),
        views={"G": GeneratorWithWs(G)}, state={"pl_mean": pl_mean})


def build_train_eh(p: TrainEhParams, cfg: ModelConfig, seed: int, device: torch.device,
                   up: Mapping[str, nn.Module], perceptual: PerceptualLoss | None) -> loop.Stage:
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

    return loop.Stage("train_eh", {"Eh": Eh, "G": G}, trained, {"Eh": _adam(groups, p)}, step, sample,
                      export={"Eh": "Eh", "G": "G"}, metrics=active(("loss", "rec"), perc=p.w_perc, latent=p.w_latent))


def _regress_eh_step(name: str, key: str, p: TrainElParams | TrainEaParams, Eh: nn.Module, G: nn.Module,
                     perceptual: PerceptualLoss | None):  # type: ignore[no-untyped-def]
    """The step of El and Ea: encode ``batch[key]`` to Eh's code of the same face (latent
    loss), plus, when weighted, the image losses of G's decoding of that code."""

    def step(ctx: loop.StepContext, batch: Batch) -> dict[str, torch.Tensor]:
        x = batch["hr"]
        with ctx.autocast():
            with torch.no_grad():
                target = Eh(x)
            code = ctx.nets[name](batch[key])
            losses = image_losses(G(code), x, perceptual) if p.w_rec or p.w_perc else {}
            losses["latent"] = code_loss(code, target)
            total = sum(getattr(p, f"w_{k}") * v for k, v in losses.items())
        ctx.optimize(name, total)
        return {"loss": total, **losses}

    return step


def build_train_el(p: TrainElParams, cfg: ModelConfig, seed: int, device: torch.device,
                   up: Mapping[str, nn.Module], perceptual: PerceptualLoss | None) -> loop.Stage:
    """El: G(El(x_l)) = x_h and El(x_l) = Eh(x_h), through the frozen G and Eh of train_eh."""
    El = build_models(cfg, seed, ("El",))["El"].to(device)
    Eh, G = up["Eh"].to(device), up["G"].to(device)

    step = _regress_eh_step("El", "lr", p, Eh, G, perceptual)

    def sample(n: Mapping[str, nn.Module], batch: Batch) -> list[tuple[str, torch.Tensor]]:
        x, xl = batch["hr"], batch["lr"]
        return [("8x8", xl), ("G(El)", G(n["El"](xl))), ("G(Eh)", G(Eh(x))), ("target", x)]

    return loop.Stage("train_el", {"El": El, "Eh": Eh, "G": G}, ("El",), {"El": _adam(El.parameters(), p)},
                      step, sample, export={"El": "El", "G": "G"}, metrics=encoder_metrics(p))


def build_train_ea(p: TrainEaParams, cfg: ModelConfig, seed: int, device: torch.device,
                   up: Mapping[str, nn.Module], perceptual: PerceptualLoss | None) -> loop.Stage:
    """Ea: Ea(speech) = Eh(x_h) for a frame of the same clip (optionally G(Ea(a)) = x_h)."""
    Ea = build_models(cfg, seed, ("Ea",))["Ea"].to(device)
    Eh, G = up["Eh"].to(device), up["G"].to(device)

    step = _regress_eh_step("Ea", "spec", p, Eh, G, perceptual)

    def sample(n: Mapping[str, nn.Module], batch: Batch) -> list[tuple[str, torch.Tensor]]:
        x, spec = batch["hr"], batch["spec"]
        return [("speech", _spec_image(spec)), ("G(Ea)", G(n["Ea"](spec))), ("G(Eh)", G(Eh(x))), ("target", x)]

    return loop.Stage("train_ea", {"Ea": Ea, "Eh": Eh, "G": G}, ("Ea",), {"Ea": _adam(Ea.parameters(), p)},
                      step, sample, export={"Ea": "Ea", "G": "G"}, metrics=encoder_metrics(p))


def build_train_fusion(p: TrainFusionParams, cfg: ModelConfig, seed: int, device: torch.device,
                       up: Mapping[str, nn.Module], perceptual: PerceptualLoss | None) -> loop.Stage:
    """F: G(F(El(x_l), Ea(a))) = x_h and F(...) = Eh(x_h); El, Ea, Eh, G frozen."""
    F = build_models(cfg, seed, ("F",))["F"].to(device)
    Eh, G, El, Ea = (up[k].to(device) for k in ("Eh", "G", "El", "Ea"))

    def step(ctx: loop.StepContext, batch: Batch) -> dict[str, torch.Tensor]:
        x, xl, spec = batch["hr"], batch["lr"], batch["spec"]
        with ctx.autocast():
            with torch.no_grad():
                wl, wa, target = El(xl), Ea(spec), Eh(x)
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
    return loop.Stage("train_fusion", networks, ("F",), {"F": _adam(F.parameters(), p)}, step, sample,
                      export={"G": "G", "El": "El", "Ea": "Ea", "F": "F"},
                      metrics=encoder_metrics(p))


BUILDERS = {"train_eh": build_train_eh, "train_el": build_train_el, "train_ea": build_train_ea,
            "train_fusion": build_train_fusion}


def build_stage(name: str, params: Params, cfg: ModelConfig, runtime: loop.Runtime) -> loop.Stage:
    """The :class:`~components.training.loop.Stage` of ``name``, its inputs loaded."""
    p, seed, device = getattr(params, name), params.face_sr.seed, runtime.device
    if name == "train_g":
        stage = build_train_g(p, cfg, seed, device)
    else:
        up: dict[str, nn.Module] = {}
        for prev, names in UPSTREAM[name].items():
            up |= load_networks(stage_dir(params, prev) / "model.pt", names, expect_stage=prev, expect_config=cfg)
        perceptual = PerceptualLoss().to(device) if getattr(p, "w_perc", 0) > 0 else None
        stage = BUILDERS[name](p, cfg, seed, device, up, perceptual)
    if runtime.channels_last:
        for net in stage.networks.values():
            net.to(memory_format=torch.channels_last)
    return stage


# -- running a stage ---------------------------------------------------------------------------------

def training_data(params: Params, name: str, cfg: ModelConfig, batch_size: int, runtime: loop.Runtime) -> Batches:
    """The train split: cached in memory (``cache_frames_per_clip > 0``) or streamed."""
    fs = params.face_sr
    dataset = ShardDataset(params.data_path("shards"), "train", "face_sr", train=True, hr_size=cfg.resolution,
                           lr_size=cfg.lr_size, spec_seconds=cfg.audio_seconds, shuffle_buffer=fs.shuffle_buffer,
                           seed=fs.seed)
    if fs.cache_frames_per_clip > 0:
        return CachedFaceSR.from_dataset(dataset, fs.cache_frames_per_clip, batch_size=batch_size,
                                         with_spec=name in USES_AUDIO, num_workers=fs.num_workers)
    return StreamingFaceSR(dataset, batch_size=batch_size, num_workers=fs.num_workers,
                           pin_memory=runtime.device.type == "cuda")


def run_fingerprint(params: Params, name: str, cfg: ModelConfig) -> str:
    """What the stage learns from: its settings, the model, the shards and upstream models."""
    section = getattr(params, name).model_dump(mode="json", exclude=RUN_ONLY)
    face_sr = params.face_sr.model_dump(mode="json", exclude=RUN_ONLY | set(KNOBS))  # knobs: in the config part
    files = {"shards": params.data_path("shards", "index.json")}  # index.json holds every shard's sha256
    files |= {up: stage_dir(params, up) / "model.pt" for up in UPSTREAM[name]}
    inputs = {key: sha256_file(path) for key, path in files.items() if path.is_file()}
    return fingerprint(name, section, face_sr, config_fields(cfg, TRAINS[name]), inputs)


def steps_of(params: Params, name: str, cfg: ModelConfig) -> int:
    """Steps the stage trains: none for ``train_fusion`` with fusion off (F is unused then;
    the stage only bundles G, El and Ea into the model file inference reads)."""
    return 0 if name == "train_fusion" and not cfg.fusion else getattr(params, name).steps


def previous_run(out: Path, name: str, fp: str) -> dict[str, Any] | None:
    """The stage's checkpoint when it belongs to this configuration, else None (start over)."""
    path = out / "checkpoint.pt"
    if not path.exists():
        return None
    try:
        ckpt = load_checkpoint(path, expect_stage=name, expect_kind="checkpoint")
    except CheckpointError as exc:
        log.warning("%s: cannot resume (%s): training from scratch", name, exc)
        return None
    if ckpt.get("fingerprint") != fp:
        log.info("%s: settings or inputs changed since %s: training from scratch", name, path)
        return None
    return ckpt


def clear_outputs(out: Path) -> None:
    for name in ("checkpoint.pt", "model.pt", "metrics.tsv", "summary.json"):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "samples", ignore_errors=True)


def train_stage(name: str, params: Params, *, progress: bool = True) -> dict[str, Any]:
    """Run (or resume, or skip as up to date) training stage ``name``; returns its summary.

    Launched by ``torchrun``, every rank calls this: rank 0 alone talks to MLflow, writes
    the stage folder and returns the summary (the other ranks return an empty dict).
    """
    if name not in STAGES:
        raise ValueError(f"unknown training stage {name!r}: expected one of {STAGES}")
    p, fs = getattr(params, name), params.face_sr
    cfg = model_config(fs)
    out = stage_dir(params, name)
    for path in upstream_files(params, name):
        if not path.is_file():
            raise CheckpointError(f"{path}: no such model: run the earlier stages first (`dvc repro {name}`)")
    fp = run_fingerprint(params, name, cfg)
    steps = steps_of(params, name, cfg)
    resume = previous_run(out, name, fp)
    if resume is not None and resume["final"] and resume["step"] == steps and (out / "model.pt").is_file() \
            and (out / "summary.json").is_file():
        log.info("%s: up to date (%d steps, same settings and inputs): nothing to do", name, steps)
        return json.loads((out / "summary.json").read_text())
    if resume is not None and resume["step"] > steps:
        log.info("%s: checkpoint is at step %d, beyond steps=%d: training from scratch", name, resume["step"], steps)
        resume = None

    runtime = loop.setup_runtime(fs.device, amp=fs.amp, channels_last=fs.channels_last, threads=fs.threads)
    try:
        if resume is None and runtime.is_main:
            clear_outputs(out)
        out.mkdir(parents=True, exist_ok=True)
        data = training_data(params, name, cfg, p.batch_size, runtime)
        stage = build_stage(name, params, cfg, runtime)
        config = loop.LoopConfig(steps, p.log_every, p.sample_every, p.checkpoint_every, fs.seed, cfg, fp)
        section = {**p.model_dump(mode="json"), "face_sr": fs.model_dump(mode="json"),
                   "model": cfg.model_dump(mode="json")}
        inputs = [params.data_path("shards"), *upstream_files(params, name)]
        tracking = stage_run(name, params, section=section, inputs=inputs) if runtime.is_main \
            else contextlib.nullcontext(StageRun(None))
        with tracking as tracker:
            return loop.train(stage, data, config, out, runtime, tracker, resume, progress=progress)
    finally:
        loop.teardown_runtime(runtime)
