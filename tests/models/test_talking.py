"""The video paper's networks: shapes, ablation switches, gradients, determinism, files, warps."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from components.models import checkpoint as ckpt_io
from components.models import face_sr
from components.models.talking import (
    FAMILY,
    MODEL_NAMES,
    MODEL_STAGE,
    PRESETS,
    RandomWarp,
    VideoUpsampler,
    animate,
    build_models,
    config_dict,
    config_fields,
    get_preset,
    load_video_sr,
    lower_half,
    sync_probability,
)
from components.models.talking.blocks import coordinate_grid
from components.models.talking.motion import sparse_motions

SMALL = get_preset("small")


def _inputs(cfg, batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "lr": torch.rand(batch, cfg.window, 3, cfg.lr_size, cfg.lr_size, generator=g) * 2 - 1,
        "mel": torch.randn(batch, 1, cfg.n_mels, cfg.mel_steps, generator=g) * 2 - 6,
        "faces": torch.rand(batch, cfg.window, 3, cfg.coarse_size, cfg.coarse_size, generator=g) * 2 - 1,
        "photo": torch.rand(batch, 3, cfg.out_size, cfg.out_size, generator=g) * 2 - 1,
    }


def _check_shapes(cfg, batch: int) -> None:
    nets = build_models(cfg)
    x = _inputs(cfg, batch)
    coarse = nets["coarse"](x["lr"], x["mel"])
    assert coarse.shape == (batch, 3, cfg.coarse_size, cfg.coarse_size)
    assert coarse.abs().max() <= 1
    video, audio = nets["expert"](lower_half(x["faces"]), x["mel"])
    assert video.shape == audio.shape == (batch, cfg.expert_dim)
    out = animate(nets, x["photo"], coarse)
    assert out["prediction"].shape == (batch, 3, cfg.out_size, cfg.out_size)
    assert out["prediction"].abs().max() <= 1
    for kp in (out["kp_source"], out["kp_driving"]):
        assert kp["value"].shape == (batch, cfg.num_kp, 2) and kp["value"].abs().max() <= 1
        assert kp["jacobian"].shape == (batch, cfg.num_kp, 2, 2)
    assert out["deformation"].shape == (batch, cfg.kp_size, cfg.kp_size, 2)
    occlusion = out["occlusion"]
    assert occlusion.shape == (batch, 1, cfg.kp_size, cfg.kp_size)
    assert occlusion.min() > 0 and occlusion.max() < 1


def test_small_preset_shapes_in_training_mode():
    _check_shapes(SMALL, 2)


@torch.no_grad()
def test_paper_preset_builds_and_runs_one_forward():
    cfg = PRESETS["paper"]
    assert (cfg.coarse_size, cfg.out_size, cfg.lr_size, cfg.num_kp) == (96, 256, 8, 10)
    _check_shapes(cfg, 1)


def test_a_16x16_input_works_and_bad_sizes_are_refused_clearly():
    cfg = get_preset("small", lr_size=16)
    x = _inputs(cfg, 2)
    assert build_models(cfg, ("coarse",))["coarse"](x["lr"], x["mel"]).shape == (2, 3, 48, 48)
    with pytest.raises(ValueError, match="coarse_size 50 must be a multiple of 2\\*\\*coarse_up_blocks = 4"):
        get_preset("small", coarse_size=50)
    with pytest.raises(ValueError, match="out_size 128 must be kp_size \\* 2\\*\\*gen_down_blocks = 256"):
        get_preset("small", out_size=128)
    with pytest.raises(ValueError, match="window must be odd"):
        get_preset("small", window=4)
    with pytest.raises(ValueError, match="kp_size 40 must be a multiple of 2\\*\\*kp_blocks = 16"):
        get_preset("small", kp_size=40, out_size=160)
    with pytest.raises(ValueError, match="unknown model preset 'huge'"):
        get_preset("huge")


@torch.no_grad()
def test_without_audio_the_coarse_face_ignores_the_mel():
    x, other = _inputs(SMALL, 2, seed=0), _inputs(SMALL, 2, seed=1)
    for audio in (True, False):
        net = build_models(SMALL.model_copy(update={"audio": audio}), ("coarse",))["coarse"].eval()
        a, b = net(x["lr"], x["mel"]), net(x["lr"], other["mel"])
        assert torch.equal(a, b) != audio, f"audio={audio}"
        assert not torch.equal(a, net(other["lr"], x["mel"]))  # the frames always count


def test_expert_embeddings_are_unit_vectors_and_sync_is_a_probability():
    x = _inputs(SMALL, 3)
    faces = x["faces"]
    assert torch.equal(lower_half(faces), faces[..., SMALL.coarse_size // 2:, :])
    video, audio = build_models(SMALL, ("expert",))["expert"](lower_half(faces), x["mel"])
    assert torch.allclose(video.norm(dim=1), torch.ones(3)) and torch.allclose(audio.norm(dim=1), torch.ones(3))
    p = sync_probability(video, audio)
    assert p.shape == (3,) and (p > 0).all() and (p < 1).all()
    assert torch.allclose(p, (video * audio).sum(1))
    assert sync_probability(video, -video).min() > 0 and sync_probability(video, video).max() < 1
    assert sync_probability(video.bfloat16(), video.bfloat16()).max() < 1  # no log(0) in BCE under autocast


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_gradients_reach_every_trained_parameter(name: str):
    nets = build_models(SMALL)
    x = _inputs(SMALL, 2)
    if name == "expert":
        video, audio = nets["expert"](lower_half(x["faces"]), x["mel"])
        loss = -sync_probability(video, audio).log().mean()
    elif name == "coarse":
        loss = nets["coarse"](x["lr"], x["mel"]).square().mean()
    else:
        out = animate(nets, x["photo"], x["faces"][:, 0])
        loss = out["prediction"].square().mean()
    loss.backward()
    dead = [k for k, p in nets[name].named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"{name}: no gradient for {dead}"


def test_build_models_is_deterministic_from_the_seed():
    def weights(seed, names=MODEL_NAMES):
        nets = build_models(SMALL, names, seed)
        return {n: torch.cat([p.flatten() for p in m.parameters()]) for n, m in nets.items()}

    torch.manual_seed(123)
    before = torch.rand(1)
    a, b, c = weights(0), weights(0), weights(1)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(1), before)  # the global RNG is left alone
    assert all(torch.equal(a[n], b[n]) for n in MODEL_NAMES)
    assert not any(torch.equal(a[n], c[n]) for n in MODEL_NAMES)
    assert torch.equal(weights(0, ("motion",))["motion"], a["motion"])  # a subset gets the same weights


def test_config_fields_follow_the_networks_a_file_holds():
    expert = config_fields(SMALL, ("expert",))
    assert "expert_dim" in expert and "gen_expansion" not in expert and "audio" not in expert
    assert {"audio", "lr_size"} <= set(config_fields(SMALL, ("coarse",)))
    assert "identity" in config_fields(SMALL, ("generator",))


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A train_animate model.pt of the small preset with perturbed weights (so a fresh build differs)."""
    nets = build_models(SMALL, seed=3)
    with torch.no_grad():
        for net in nets.values():
            for p in net.parameters():
                p.add_(0.01 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("talking") / "model.pt"
    ckpt_io.save_model(path, family=FAMILY, stage=MODEL_STAGE, config=config_dict(SMALL), networks=nets, step=5)
    return path, nets


@torch.no_grad()
def test_load_video_sr_round_trip_gives_the_same_outputs(saved):
    path, nets = saved
    loaded = load_video_sr(path)
    reference = VideoUpsampler(SMALL, nets)
    x = _inputs(SMALL, 2)
    coarse = loaded.coarse(x["lr"], x["mel"])
    assert torch.equal(coarse, reference.coarse(x["lr"], x["mel"]))
    state = loaded.prepare_identity(x["photo"][:1])
    frames = loaded.animate(state, coarse)
    assert torch.equal(frames, reference.animate(reference.prepare_identity(x["photo"][:1]), coarse))
    assert not torch.equal(frames, VideoUpsampler(SMALL, build_models(SMALL, seed=3)).animate(
        reference.prepare_identity(x["photo"][:1]), coarse))
    # one photo's state serves a batch of frames as that photo repeated would
    repeated = animate(loaded.nets, x["photo"][:1].expand(2, -1, -1, -1), coarse)["prediction"]
    assert torch.allclose(frames, repeated, atol=1e-5)


@torch.no_grad()
def test_without_identity_animate_ignores_the_photo(saved):
    path, nets = saved
    x, other = _inputs(SMALL, 2, seed=0), _inputs(SMALL, 2, seed=1)
    coarse = x["faces"][:, 0]
    for identity in (True, False):
        up = VideoUpsampler(SMALL.model_copy(update={"identity": identity}), nets)
        a = up.animate(up.prepare_identity(x["photo"][:1]), coarse)
        b = up.animate(up.prepare_identity(other["photo"][:1]), coarse)
        assert a.shape == (2, 3, 256, 256)
        assert torch.equal(a, b) != identity, f"identity={identity}"


def test_load_video_sr_refuses_a_face_sr_file_naming_the_family(tmp_path: Path):
    cfg = face_sr.get_preset("small", resolution=32, latent_dim=32)
    path = tmp_path / "model.pt"
    ckpt_io.save_model(path, family=face_sr.FAMILY, stage=MODEL_STAGE, config=face_sr.config_dict(cfg),
                       networks=face_sr.build_models(cfg, 0, ("El",)), step=1)
    with pytest.raises(ckpt_io.CheckpointError, match=r"a 'face_sr' checkpoint, expected 'talking'"):
        load_video_sr(path)


def test_an_expert_file_is_checked_on_the_expert_fields_only(tmp_path: Path):
    path = tmp_path / "expert.pt"
    ckpt_io.save_model(path, family=FAMILY, stage="train_expert", config=config_dict(SMALL),
                       networks=build_models(SMALL, ("expert",)), step=1)
    assert ckpt_io.load_checkpoint(path, expect_config=config_dict(SMALL.model_copy(update={"gen_expansion": 4})))
    with pytest.raises(ckpt_io.CheckpointError, match=r"params talking: .*expert_dim: 128 in the file, 64 in params"):
        ckpt_io.load_checkpoint(path, expect_config=config_dict(SMALL.model_copy(update={"expert_dim": 64})))


def test_sparse_motions_move_by_the_keypoint_displacement():
    grid = coordinate_grid(8, 8)
    source = {"value": torch.tensor([[[0.2, -0.1], [0.0, 0.5]]]), "jacobian": torch.eye(2).expand(1, 2, 2, 2)}
    shift = torch.tensor([0.1, -0.3])
    driving = {"value": source["value"] + shift, "jacobian": source["jacobian"]}
    motions = sparse_motions(grid, driving, source)
    assert motions.shape == (1, 3, 8, 8, 2)
    assert torch.equal(motions[0, 0], grid)  # background: identity
    assert torch.allclose(motions[0, 1:], (grid - shift).expand(2, 8, 8, 2), atol=1e-6)
    # local frames: T_k(z) = s_k + J_s J_d^-1 (z - d_k), here with a sheared source and a rotated driving frame
    shear, rot = torch.tensor([[1.0, 0.5], [0.0, 1.0]]), torch.tensor([[0.0, -1.0], [1.0, 0.0]])
    source = {"value": source["value"], "jacobian": shear.expand(1, 2, 2, 2)}
    driving = {"value": source["value"] + shift, "jacobian": rot.expand(1, 2, 2, 2)}
    z = grid[2, 5]
    expected = source["value"][0, 0] + shear @ rot.T @ (z - driving["value"][0, 0])
    assert torch.allclose(sparse_motions(grid, driving, source)[0, 1, 2, 5], expected, atol=1e-6)


def test_identity_warp_is_the_identity():
    warp = RandomWarp.identity(2)
    img = torch.rand(2, 3, 9, 11)
    assert torch.allclose(warp.warp_image(img), img, atol=1e-5)
    pts = torch.rand(2, 4, 2) * 2 - 1
    assert torch.allclose(warp.warp_points(pts), pts)
    assert torch.allclose(warp.jacobian(pts), torch.eye(2).expand(2, 4, 2, 2))


def test_a_known_affine_moves_points_and_pixels_as_computed_by_hand():
    warp = RandomWarp.identity(1)
    warp.theta = torch.tensor([[[0.9, -0.1, 0.05], [0.2, 1.1, -0.1]]])
    pts = torch.tensor([[[0.5, -0.5], [0.0, 0.0]]])
    # x' = 0.9 * 0.5 - 0.1 * -0.5 + 0.05 = 0.55; y' = 0.2 * 0.5 + 1.1 * -0.5 - 0.1 = -0.55
    assert torch.allclose(warp.warp_points(pts), torch.tensor([[[0.55, -0.55], [0.05, -0.1]]]))
    assert torch.allclose(warp.jacobian(pts), torch.tensor([[0.9, -0.1], [0.2, 1.1]]).expand(1, 2, 2, 2))
    # a shift by one pixel spacing (2 / (W - 1) = 0.5 on 5 columns): output column j = input column j + 1
    warp.theta = torch.tensor([[[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]]])
    img = torch.arange(25.0).reshape(1, 1, 5, 5)
    assert torch.allclose(warp.warp_image(img)[..., :-1], img[..., 1:], atol=1e-5)


def test_the_thin_plate_jacobian_is_the_derivative_of_warp_points():
    warp = RandomWarp(3, sigma_affine=0.05, sigma_tps=0.05, points=5, generator=torch.Generator().manual_seed(0))
    pts = (torch.rand(3, 6, 2, dtype=torch.float64) * 2 - 1).requires_grad_()
    warp.theta, warp.weights = warp.theta.double(), warp.weights.double()
    out = warp.warp_points(pts)
    rows = [torch.autograd.grad(out[..., i].sum(), pts, retain_graph=True)[0] for i in range(2)]
    assert torch.allclose(warp.jacobian(pts.detach()), torch.stack(rows, dim=-2), atol=1e-8)
    assert not torch.allclose(warp.jacobian(pts.detach()), warp.theta[:, None, :, :2].expand(3, 6, 2, 2), atol=1e-3)


def test_warp_image_and_warp_points_agree_on_a_rendered_dot():
    size, p = 96, torch.tensor([0.3, -0.2])
    grid = coordinate_grid(size, size)
    dot = torch.exp(-(grid - p).square().sum(-1) / (2 * 0.03**2))[None, None]
    warp = RandomWarp(1, sigma_affine=0.1, sigma_tps=0.02, points=5, generator=torch.Generator().manual_seed(4))
    warped = warp.warp_image(dot)[0, 0]
    q = (warped[..., None] * grid).sum((0, 1)) / warped.sum()  # where the dot went
    moved = (q - p).norm()
    assert moved > 0.02  # the warp really moves it ...
    back = warp.warp_points(q.reshape(1, 1, 2))[0, 0]
    assert (back - p).norm() < 0.1 * moved  # ... and T maps it back where it was
    assert math.isfinite(float(back.sum()))
