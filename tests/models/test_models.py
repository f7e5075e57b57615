"""Networks of "Face SR with an ear": sizes, shapes, init, determinism, autocast, gradients.

The paper preset (861M parameters) is only ever built on the meta device, where
parameters have shapes but no storage, so counting and shape checks cost no memory.
Everything that computes uses the small preset and batches of 2.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from components.data.features import face_sr_spectrogram
from components.models.face_sr import (
    MODEL_NAMES,
    AudioEncoder,
    Discriminator,
    ModelConfig,
    build_models,
    count_parameters,
    get_preset,
)
from components.models.layers import SameConv2d

SMALL = get_preset("small")


def inputs(cfg: ModelConfig, batch: int = 2, device: str = "cpu", seed: int = 0) -> dict[str, torch.Tensor]:
    """Random inputs of the right shapes for every network of ``cfg``."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return (torch.rand(*shape, generator=gen) * 2 - 1).to(device)

    return {
        "z": rand(batch, cfg.latent_dim),
        "hr": rand(batch, 3, cfg.resolution, cfg.resolution),
        "lr": rand(batch, 3, cfg.lr_size, cfg.lr_size),
        "spec": rand(batch, 1, *cfg.spectrogram_shape),
    }


def forward_all(models: dict[str, torch.nn.Module], x: dict[str, torch.Tensor],
                noise: bool = False) -> dict[str, torch.Tensor]:
    """One forward of every network; G decodes the fused per-layer code, D judges it."""
    wl, wa = models["El"](x["lr"]), models["Ea"](x["spec"])
    fused = models["F"](wl, wa)
    img = models["G"](fused, noise=noise)
    return {"El": wl, "Ea": wa, "F": fused, "G": img, "D": models["D"](img), "Eh": models["Eh"](x["hr"]),
            "G(z)": models["G"](x["z"])}


# --- sizes -----------------------------------------------------------------------------


def test_paper_preset_parameter_counts() -> None:
    """El ~89M and Ea ~400M as in the paper (the layouts of the reference code give
    El = 88,744,192 and Ea = 402,623,168)."""
    with torch.device("meta"):
        models = build_models(get_preset("paper"))
    counts = {name: count_parameters(m) for name, m in models.items()}
    print("\nparameters, paper preset:", {k: f"{v / 1e6:.1f}M" for k, v in counts.items()},
          f"total {sum(counts.values()) / 1e6:.1f}M")
    assert counts["El"] == pytest.approx(89e6, rel=0.10)
    assert counts["Ea"] == pytest.approx(400e6, rel=0.10)
    assert all(p.is_meta for m in models.values() for p in m.parameters())


def test_small_preset_is_small() -> None:
    counts = {name: count_parameters(m) for name, m in build_models(SMALL).items()}
    print("\nparameters, small preset:", {k: f"{v / 1e6:.2f}M" for k, v in counts.items()},
          f"total {sum(counts.values()) / 1e6:.2f}M")
    assert sum(counts.values()) < 10e6
    assert counts["G"] < 1.5e6 and counts["D"] < 1.5e6


@pytest.mark.parametrize("preset", ["paper", "small"])
def test_output_shapes(preset: str) -> None:
    cfg = get_preset(preset)
    device = "meta" if preset == "paper" else "cpu"
    with torch.device(device):
        models = build_models(cfg)
    x = inputs(cfg, device=device) if device == "cpu" else {
        k: torch.empty(v.shape, device="meta") for k, v in inputs(cfg).items()}
    out = forward_all(models, x)
    code = (2, cfg.n_latents, cfg.latent_dim)
    assert cfg.n_latents == {"paper": 12, "small": 10}[preset]
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "El": code, "Ea": code, "F": code, "Eh": code, "D": (2,),
        "G": (2, 3, cfg.resolution, cfg.resolution), "G(z)": (2, 3, cfg.resolution, cfg.resolution),
    }
    G = models["G"]
    assert tuple(G.mapping(x["z"]).shape) == (2, cfg.latent_dim)
    ws = torch.empty(code, device=device)
    assert tuple(G.synthesis(ws).shape) == (2, 3, cfg.resolution, cfg.resolution)


def test_encoders_reject_wrong_input_shapes() -> None:
    models = build_models(SMALL, names=("Eh", "El", "Ea", "D"))
    x = inputs(SMALL)
    with pytest.raises(ValueError, match="HighResEncoder"):
        models["Eh"](x["hr"][:, :, :32, :32])
    with pytest.raises(ValueError, match="LowResEncoder"):
        models["El"](x["hr"])
    with pytest.raises(ValueError, match="AudioEncoder"):
        models["Ea"](x["spec"][:, 0])
    with pytest.raises(ValueError, match="expected images"):
        models["D"](x["lr"])


# --- config ------------------------------------------------------------------------------


def test_model_config_derives_and_checks_n_latents() -> None:
    assert ModelConfig().n_latents == 12
    assert ModelConfig(resolution=64).n_latents == 10
    assert ModelConfig(resolution=256, n_latents=14).n_latents == 14
    assert get_preset("paper", resolution=256).n_latents == 14
    with pytest.raises(ValidationError, match="n_latents must be 10"):
        ModelConfig(resolution=64, n_latents=12)
    with pytest.raises(ValidationError, match="power of two"):
        ModelConfig(resolution=96)
    with pytest.raises(ValidationError, match="extra"):
        ModelConfig(bogus=1)
    with pytest.raises(ValueError, match="unknown model preset"):
        get_preset("huge")
    with pytest.raises(ValueError, match="unknown models"):
        build_models(SMALL, names=("G", "X"))


def test_audio_encoder_takes_the_feature_spectrogram() -> None:
    """The config's spectrogram shape is what ``face_sr_spectrogram`` makes of 4 s."""
    audio = np.random.default_rng(0).standard_normal(70000).astype(np.float32)
    spec = face_sr_spectrogram(audio, seconds=SMALL.audio_seconds)
    assert tuple(spec.shape) == SMALL.spectrogram_shape == (257, 257)
    assert ModelConfig(audio_seconds=2.0).spectrogram_shape == tuple(face_sr_spectrogram(audio, seconds=2.0).shape)
    for norm in ("batch", "instance", "none"):
        torch.manual_seed(0)
        ea = AudioEncoder(SMALL.spectrogram_shape, SMALL.n_latents, SMALL.latent_dim, base=8, cap=32, fc=64, norm=norm)
        code = ea(torch.stack([spec, -spec])[:, None])
        assert code.shape == (2, SMALL.n_latents, SMALL.latent_dim) and torch.isfinite(code).all()


@pytest.mark.parametrize(("size", "kernel", "stride", "expected"),
                         [(257, 4, 2, 129), (129, 4, 1, 129), (8, 3, 2, 4), (8, 4, 2, 4), (3, 4, 2, 2)])
def test_same_conv_matches_tensorflow_output_size(size: int, kernel: int, stride: int, expected: int) -> None:
    conv = SameConv2d(1, 1, kernel, stride)
    assert conv(torch.zeros(1, 1, size, size)).shape[-1] == expected


# --- initialisation ----------------------------------------------------------------------


def test_init_is_deterministic_per_seed() -> None:
    a, b, c = build_models(SMALL, seed=0), build_models(SMALL, seed=0), build_models(SMALL, seed=1)
    subset = build_models(SMALL, seed=0, names=("Ea",))
    for name in MODEL_NAMES:
        sa, sb, sc = a[name].state_dict(), b[name].state_dict(), c[name].state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
        assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    assert all(torch.equal(v, a["Ea"].state_dict()[k]) for k, v in subset["Ea"].state_dict().items())


def test_fusion_is_identity_at_init() -> None:
    models = build_models(SMALL, names=("El", "Ea", "F"))
    x = inputs(SMALL, batch=4)
    with torch.no_grad():
        wl, wa = models["El"](x["lr"]), models["Ea"](x["spec"])
        fused = models["F"](wl, wa)
    assert wl.abs().mean() > 0.1  # a real code, not a vanishing one
    assert (fused - wl).abs().max() < 1e-3


# --- generator ---------------------------------------------------------------------------


def test_synthesis_without_noise_is_deterministic() -> None:
    G = build_models(SMALL, names=("G",))["G"].eval()
    for layer in G.synthesis.modules():
        if hasattr(layer, "noise_strength"):
            layer.noise_strength.data.fill_(0.5)  # trained strengths are non-zero
    ws = torch.randn(2, SMALL.n_latents, SMALL.latent_dim)
    with torch.no_grad():
        assert torch.equal(G.synthesis(ws), G.synthesis(ws, noise=False))
        assert not torch.allclose(G.synthesis(ws, noise=True), G.synthesis(ws, noise=True))


def test_generator_decodes_per_layer_codes_like_the_reference() -> None:
    """3-D input = one z per layer, each mapped separately; 2-D input = one z for all."""
    G = build_models(SMALL, names=("G",))["G"].eval()
    codes = torch.randn(2, SMALL.n_latents, SMALL.latent_dim)
    z = torch.randn(2, SMALL.latent_dim)
    with torch.no_grad():
        assert torch.allclose(G(codes), G.synthesis(G.mapping(codes)))
        per_image = G.mapping(z).unsqueeze(1).expand(-1, SMALL.n_latents, -1)
        assert torch.allclose(G(z), G.synthesis(per_image))
        assert torch.allclose(G.mapping(codes)[:, 3], G.mapping(codes[:, 3]), atol=1e-5, rtol=1e-5)


def test_w_avg_tracking_and_truncation() -> None:
    G = build_models(SMALL, names=("G",))["G"]
    assert torch.equal(G.mapping.w_avg, torch.zeros(SMALL.latent_dim))
    G.train()
    with torch.no_grad():
        for _ in range(3):
            G.mapping(torch.randn(8, SMALL.latent_dim))
    w_avg = G.mapping.w_avg.clone()
    assert w_avg.abs().sum() > 0
    G.eval()
    z = torch.randn(2, SMALL.latent_dim)
    with torch.no_grad():
        w = G.mapping(z)
        assert torch.equal(G.mapping.w_avg, w_avg)  # eval mode does not track
        assert torch.allclose(G.truncate(w, 0.0), w_avg.expand_as(w))
        assert torch.allclose(G.truncate(w, 1.0), w)
        assert torch.allclose(G.truncate(w, 0.5), (w + w_avg) / 2, atol=1e-6)
        avg_faces = G(z, psi=0.0)
        assert torch.allclose(avg_faces[0], avg_faces[1], atol=1e-5)


def test_discriminator_accepts_any_batch_size() -> None:
    torch.manual_seed(0)
    D = Discriminator(16, {16: 8, 8: 8, 4: 8})
    for batch in (1, 3, 6):
        out = D(torch.randn(batch, 3, 16, 16))
        assert out.shape == (batch,) and torch.isfinite(out).all()


# --- training-time properties ------------------------------------------------------------


def test_gradients_reach_every_parameter() -> None:
    """One backward through El, Ea, F, G (with noise), D and Eh touches every parameter."""
    models = build_models(SMALL)
    for m in models.values():
        m.train()
    out = forward_all(models, inputs(SMALL), noise=True)
    loss = sum(v.float().square().mean() for v in out.values())
    loss.backward()
    for name, m in models.items():
        for pname, p in m.named_parameters():
            assert p.grad is not None, f"{name}.{pname} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{name}.{pname} has a non-finite gradient"
            assert p.grad.abs().sum() > 0, f"{name}.{pname} has an all-zero gradient"


def test_autocast_bf16_forward_on_cpu() -> None:
    models = build_models(SMALL)
    for m in models.values():
        m.eval()
    x = inputs(SMALL)
    with torch.no_grad():
        ref = forward_all(models, x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = forward_all(models, x)
    for name, v in low.items():
        assert torch.isfinite(v).all(), name
        cos = torch.nn.functional.cosine_similarity(v.float().flatten(), ref[name].flatten(), dim=0)
        assert cos > 0.98, f"{name}: bf16 output diverges from fp32 (cosine {cos:.3f})"


def test_channels_last_gives_the_same_result() -> None:
    models = build_models(SMALL)
    x = inputs(SMALL)
    with torch.no_grad():
        for m in models.values():
            m.eval()
        ref = forward_all(models, x)
        for m in models.values():
            m.to(memory_format=torch.channels_last)
        x_cl = {k: v.contiguous(memory_format=torch.channels_last) if v.ndim == 4 else v for k, v in x.items()}
        out = forward_all(models, x_cl)
    assert out["G"].is_contiguous(memory_format=torch.channels_last)
    for name, v in out.items():
        assert torch.allclose(v, ref[name], atol=1e-4, rtol=1e-4), name
