"""Face-SR evaluation: metrics, the judge network, the evaluators and evaluate stages."""

from __future__ import annotations

import functools
import json
import logging
import math
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from PIL import Image

from components.config import Params, default_params
from components.data.shards import write_shards
from components.errors import EarshotError
from components.evaluation import metrics as M
from components.evaluation.judge import (FaceJudge, FaceSet, Gallery, OnnxFaceEmbedder, encode_gallery, identity_of,
                                         load_judge)
from components.evaluation.face_sr import (DELTA_METRICS, GAIN_METRICS, METHODS, METRICS, EncodedSplit, Scorers,
                                           claims_table, dlib_metrics, evaluate, judged_metrics,
                                           method_output,
                                           mismatch_partners, pick_voices, recordings, summarize)
from components.evaluation.stats import claim_verdict, speaker_bootstrap
from components.evaluation.judge import Judgement
from components.inference.face_sr import load_face_sr
from components.models.checkpoint import CheckpointError, save_model
from components.models.face_sr.judge import FAMILY, NETWORK, STAGE, FaceEvaluator, face_mask, judge_config
from components.models.perceptual import PerceptualLoss
from components.training.face_sr.judge import augment
from tests._fixtures import make_upstream
from tests.conftest import tiny_params
from tests.inference.test_face_sr_cli import save_tiny_model


@pytest.fixture(scope="module")
def alexnet_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """torchvision's AlexNet layout with random weights: LPIPS' loading path without a download."""
    import torchvision

    path = tmp_path_factory.mktemp("hub") / M.ALEXNET_FILE
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        torch.save(torchvision.models.alexnet().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, alexnet_file: Path) -> Params:
    """Tiny shards (6 drawn speakers + an unnamed one; with split seed 7 train has 4
    speakers and each test split 2, of both sexes everywhere), a random 32 px model
    where train_fusion leaves it, and params that point every stage at them."""
    root = tmp_path_factory.mktemp("world")
    up = make_upstream(root, n_speakers=6, crop_size=64, unknown_videos=1)
    params = tiny_params(root, **{
        "shards.rows_per_shard": 8, "shards.row_group_size": 2, "shards.unseen_speaker_fraction": 0.34,
        "shards.seen_test_fraction": 0.25, "shards.seed": 7,
        "face_sr.out_dir": str(root / "models"), "face_sr.overrides": {"resolution": 32, "latent_dim": 32},
        "face_sr.threads": 2,
        "evaluators.train_on": "corpus", "evaluators.steps": 60, "evaluators.frames_per_clip": 2,
        "evaluators.width": 8,
        "evaluators.embedding_dim": 16, "evaluators.batch_size": 16,
        "evaluate.out_dir": str(root / "results"), "evaluate.grid_samples": 3, "evaluate.mix_faces": 2,
        "evaluate.mix_voices": 3, "evaluate.lpips_alexnet_path": str(alexnet_file),
    })
    write_shards(params, up.raw, up.faces, up.audio, params.data_path("shards"), progress=False)
    save_tiny_model(Path(params.face_sr.out_dir))
    return params


def images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def mlflow_metrics(params: Params, stage: str) -> dict[str, float]:
    mlflow.set_tracking_uri(params.tracking.uri)
    runs = mlflow.search_runs(experiment_names=[params.tracking.experiment],
                              filter_string=f"tags.stage = '{stage}'", output_format="list")
    assert len(runs) == 1
    return runs[0].data.metrics


# --------------------------------------------------------------------------- metrics


def test_psnr_and_ssim_on_known_images():
    target = torch.zeros(2, 3, 16, 16)
    pred = target + torch.tensor([0.2, 0.02]).view(2, 1, 1, 1)  # [0, 1] errors of 0.1 and 0.01
    assert torch.allclose(M.psnr(pred, target), torch.tensor([20.0, 40.0]), atol=1e-3)
    x = images(3)
    assert torch.allclose(M.ssim(x, x), torch.ones(3), atol=1e-5)
    assert (M.ssim(x, images(3, seed=1)) < 0.2).all()
    assert torch.equal(M.psnr(x.mul(3), x.clamp(-1, 1)), M.psnr(x.mul(3).clamp(-1, 1), x))  # clamped like a PNG


@pytest.mark.parametrize("size", [(256, 256), (37, 53), (11, 11)])
def test_ssim_is_torchmetrics_ssim(size):
    from torchmetrics.functional.image import structural_similarity_index_measure

    gen = torch.Generator().manual_seed(sum(size))
    target = torch.rand(4, 3, *size, generator=gen) * 2 - 1
    pred = target + torch.tensor([0.0, 0.05, 0.3, 1.5]).view(4, 1, 1, 1) * torch.randn(4, 3, *size, generator=gen)
    pred[1] = pred[1].flip(-1)  # structure moved, not only noise
    expected = structural_similarity_index_measure(M.to_unit(pred), M.to_unit(target), data_range=1.0,
                                                   reduction="none")
    found = M.ssim(pred, target)
    assert found.shape == (4,) and found.dtype == torch.float32
    assert torch.allclose(found, expected, atol=1e-6), (found, expected)
    assert len(set(found.tolist())) == 4  # each image its own value


def test_stlpips_per_image_is_the_perceptual_loss_of_each_pair():
    loss = PerceptualLoss()
    x, y = images(3), images(3, seed=1)
    per_image = M.stlpips(loss, x, y)
    assert per_image.shape == (3,) and (per_image > 0).all()
    assert torch.allclose(per_image.mean(), loss(x, y), atol=1e-5)
    assert torch.allclose(M.stlpips(loss, x, x), torch.zeros(3), atol=1e-6)


def test_lpips_is_skipped_without_alexnet_weights_not_faked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture, alexnet_file: Path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with caplog.at_level(logging.INFO):
        assert M.load_lpips(None) is None
    assert "LPIPS skipped" in caplog.text
    # the torch hub cache is where torchvision would have put its download
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / M.ALEXNET_FILE).symlink_to(alexnet_file)
    model = M.load_lpips(None)
    trunk = torch.load(alexnet_file, weights_only=True)
    assert torch.equal(dict(model.net.named_parameters())["slice2.3.weight"], trunk["features.3.weight"])
    x, y = images(2), images(2, seed=1)
    assert torch.allclose(M.lpips_distance(model, x, x), torch.zeros(2), atol=1e-6)
    assert (M.lpips_distance(model, x, y) > 0).all()


def test_a_bad_lpips_alexnet_path_is_an_error_naming_it(tmp_path: Path):
    with pytest.raises(EarshotError, match="nowhere.pth: evaluate.lpips_alexnet_path: no such file"):
        M.load_lpips(tmp_path / "nowhere.pth")
    torch.save({"features.0.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(EarshotError, match="bad.pth: not torchvision's AlexNet weights"):
        M.load_lpips(tmp_path / "bad.pth")


def test_attribute_and_identity_metrics_leave_unknown_truth_out():
    nan = np.nan
    assert np.array_equal(M.binary_hits([1, 0, 1], [1, 1, nan]), [1.0, 0.0, nan], equal_nan=True)
    assert M.nanmean(M.binary_hits([1, 0, 1], [1, 1, nan])) == 0.5
    assert M.nanmean(M.abs_error([30, 40], [nan, 45])) == 5.0
    assert M.nanmean(np.array([nan, nan])) is None
    logits = np.array([[2.0, 1.0], [0.0, 3.0], [5.0, 0.0]])
    assert np.array_equal(M.closed_set_hits(logits, [0, 0, -1]), [1.0, 0.0, nan], equal_nan=True)
    gallery = np.eye(3)
    queries = np.array([[0.9, 0.1, 0.0], [0.0, 0.2, 0.9]])
    assert np.array_equal(M.nearest_gallery_hits(queries, gallery, np.array(["a", "b"]), np.array(["a", "b", "c"]),
                                                 np.array(["q1", "q2"]), np.array(["g1", "g2", "g3"])), [1.0, 0.0])
    emb = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    assert np.array_equal(M.leave_one_out_hits(emb, np.array(["a", "a", "b"])), [1.0, 1.0, nan], equal_nan=True)
    assert np.allclose(M.rowwise_cosine(emb, emb[[1, 0, 0]]), [0.9 / math.hypot(0.9, 0.1)] * 2 + [0.0])
    # pairs whose speakers agree on the attribute cannot say whom the output follows
    assert np.array_equal(M.follows_audio([1, 0, 1, 1], [0, 0, 1, nan], [1, 1, 1, 0]), [1.0, 0.0, nan, nan],
                          equal_nan=True)


def test_unseen_identity_leaves_the_query_video_out_of_the_gallery():
    # a bicubic-like query is its own gallery entry; the speaker's other video looks like someone else
    unit = lambda v: np.asarray(v, float) / np.linalg.norm(v)  # noqa: E731
    gallery = np.stack([unit([1, 0, 0]), unit([0.9, 0.1, 0]), unit([0, 0, 1]), unit([0, 0.1, 0.9]), unit([0, 1, 0])])
    ids = np.array(["a", "b", "a", "b", "c"])
    clips = np.array(["a/v1/1", "b/v1/1", "a/v2/1", "b/v2/1", "c/v1/1"])
    hits = M.nearest_gallery_hits(gallery, gallery, ids, ids, clips, clips)
    # image re-identification would score 1.0 everywhere; c has no other clip: not scored
    assert np.array_equal(hits, [0.0, 0.0, 0.0, 0.0, np.nan], equal_nan=True)
    # several frames of one clip are all left out, and a real match in another clip is found
    frames = np.array(["a/v1/1", "a/v1/1", "a/v2/1"])
    emb = np.stack([unit([1, 0, 0]), unit([1, 0.1, 0]), unit([1, 0.2, 0])])
    assert np.array_equal(M.nearest_gallery_hits(emb, emb, np.array(["a", "a", "a"]), np.array(["a", "a", "a"]),
                                                 frames, frames), [1.0, 1.0, 1.0])
    # the evaluation leaves out the sample's whole VIDEO: here another clip of a/v1 that looks
    # exactly like it (same background and pose) must not count as recognising the person
    n = 6
    keys = clips.tolist() + ["a/v1/2"]
    data = EncodedSplit("unseen", keys, torch.zeros(n, 3, 4, 4), torch.zeros(n, 3, 2, 2),
                        torch.zeros(n, 1, 2), torch.zeros(n, 1, 2), np.append(ids, "a"), np.append(ids, "a"),
                        np.zeros(n), np.zeros(n))
    truth = Judgement(np.zeros(n), np.zeros(n), np.zeros((n, 0)), np.vstack([gallery, unit([1, 0.02, 0])]))
    scores = judged_metrics(truth, data, truth, None)
    assert np.array_equal(scores["id_acc"], [0.0, 0.0, 0.0, 0.0, np.nan, 0.0], equal_nan=True)
    assert list(recordings(keys)) == ["a/v1", "b/v1", "a/v2", "b/v2", "c/v1", "a/v1"]


def test_seen_identity_is_the_nearest_face_of_the_training_gallery():
    """Seen speakers are identified against the TRAINING clips' true faces: a gallery of
    three speakers, each query near one of them (not its own split's other videos)."""
    unit = lambda v: np.asarray(v, float) / np.linalg.norm(v)  # noqa: E731
    people = np.array(["a", "b", "c"])
    train_keys = np.array(["a/v1/1", "b/v1/1", "c/v1/1"])
    train = FaceSet(torch.zeros(3, 3, 4, 4), train_keys, people, people, np.zeros(3), np.zeros(3))
    gallery = Gallery(train, Judgement(np.zeros(3), np.zeros(3), np.zeros((3, 0)), np.eye(3)),
                      descriptors=np.eye(3) * 10)
    # queries: a, b, c near their own gallery faces; a last "a" near b's
    keys = ["a/v1/2", "b/v1/2", "c/v1/2", "a/v2/1"]
    ids = np.array(["a", "b", "c", "a"])
    near = np.stack([unit([1, 0.2, 0]), unit([0.1, 1, 0]), unit([0, 0.3, 1]), unit([0.2, 1, 0])])
    data = EncodedSplit("seen", keys, torch.zeros(4, 3, 4, 4), torch.zeros(4, 3, 2, 2), torch.zeros(4, 1, 2),
                        torch.zeros(4, 1, 2), ids, ids, np.zeros(4), np.zeros(4))
    # the split's own faces would tell the other story: each query's truth is nearest another speaker's
    truth = Judgement(np.zeros(4), np.zeros(4), np.zeros((4, 0)), near[[1, 0, 0, 1]])
    judged = Judgement(np.zeros(4), np.zeros(4), np.zeros((4, 0)), near)
    assert np.array_equal(judged_metrics(judged, data, truth, gallery)["id_acc"], [1.0, 1.0, 1.0, 0.0])
    assert np.array_equal(judged_metrics(judged, data, truth, None)["id_acc"], [0.0, np.nan, np.nan, 1.0],
                          equal_nan=True)
    # dlib's descriptors by the same rule against the gallery's descriptors (one face per clip)

    class Descriptors:  # stands in for dlib: a face's descriptor is written in its pixels
        @staticmethod
        def embed(images: list[np.ndarray]) -> np.ndarray:
            return np.stack([image[0, 0].astype(np.float64) for image in images])

    outputs = torch.tensor(near[:, :, None, None] * 2 - 1, dtype=torch.float32).expand(-1, -1, 4, 4)
    rows = np.arange(4)
    found = dlib_metrics(Descriptors(), outputs, data, rows, np.zeros((4, 3)), gallery)
    assert np.array_equal(found["id_acc_dlib"], [1.0, 1.0, 1.0, 0.0])
    # encode_gallery embeds every training face once, with dlib's descriptors where dlib is scored
    judge = FaceJudge(FaceEvaluator(32, 2, width=8, embedding_dim=16), ["x", "y"])
    faces = FaceSet(images(3), train_keys, people, people, np.zeros(3), np.zeros(3))
    encoded = encode_gallery(judge, faces, Descriptors())
    assert encoded.judged.embedding.shape == (3, 16) and encoded.descriptors.shape == (3, 3)
    assert encode_gallery(judge, faces).descriptors is None


class VoiceAddingModel:
    """A stand-in FaceSR whose fusion adds the voice's code: outputs show whose voice was used."""

    device = "cpu"

    class config:  # noqa: N801 - mirrors FaceSR.config
        resolution = 4

    @staticmethod
    def fuse(wl: torch.Tensor, wa: torch.Tensor) -> torch.Tensor:
        return wl + wa

    @staticmethod
    def generate(codes: torch.Tensor) -> torch.Tensor:
        return codes.reshape(len(codes), 3, 1, 1).expand(-1, 3, 4, 4)


def test_mismatched_faces_use_the_partners_voice_not_their_own():
    n = 4
    wl = torch.zeros(n, 1, 3)
    wa = torch.arange(n, dtype=torch.float32).view(n, 1, 1).expand(n, 1, 3).clone()  # a different voice each
    people = np.array(["a", "b", "c", "d"])
    data = EncodedSplit("seen", list(people), torch.zeros(n, 3, 4, 4), torch.zeros(n, 3, 2, 2), wl, wa, people,
                        people, np.array([0.0, 1.0, 0.0, 1.0]), np.zeros(n))
    partners = mismatch_partners(people, data.sex, seed=0)
    rows = np.arange(n)
    model = VoiceAddingModel()
    fused = method_output(model, data, "fused", rows, partners)
    mismatched = method_output(model, data, "mismatched", rows, partners)
    assert all(not torch.equal(mismatched[i], fused[i]) for i in rows)  # every partner's voice differs
    assert torch.equal(mismatched, model.generate(model.fuse(wl, wa[partners])))


def test_summary_intervals_are_over_speakers_and_the_delta_is_paired():
    rng = np.random.default_rng(0)
    people = np.repeat(["a", "b", "c", "d", "e"], 6)
    image_only = rng.normal(20, 5, len(people))  # faces differ a lot ...
    per_method = {"image_only": {"psnr": image_only}, "fused": {"psnr": image_only + 1.0}}  # ... fusion adds 1 dB
    truth = {"attr_acc": np.r_[np.ones(24), np.zeros(6)], "id_acc": np.r_[np.full(6, np.nan), np.ones(24)]}
    out = summarize("unseen", per_method, truth, people, 500, seed=3)
    by_speaker = speaker_bootstrap(image_only, people, 500, seed=3)
    assert (out["unseen.image_only.psnr_lo"], out["unseen.image_only.psnr_hi"]) == pytest.approx(
        (by_speaker.lo, by_speaker.hi))
    # paired per face: every resample says +1 exactly, however much the faces differ
    assert out["unseen.delta.psnr"] == out["unseen.delta.psnr_lo"] == out["unseen.delta.psnr_hi"] == pytest.approx(1.0)
    assert out["unseen.truth.attr_acc"] == pytest.approx(0.8) and out["unseen.truth.attr_acc_lo"] < 0.8
    assert out["unseen.n_speakers"] == 5 and out["unseen.n_id_scored"] == 24


def test_a_claim_holds_only_when_its_whole_interval_is_on_the_papers_side():
    assert claim_verdict(0.01, 0.10, higher_is_better=True) == "**holds**"
    assert claim_verdict(-0.01, 0.10, higher_is_better=True) == "no: the interval contains 0"
    assert claim_verdict(-0.20, -0.10, higher_is_better=True) == "no: the opposite holds"
    assert claim_verdict(-0.20, -0.10, higher_is_better=False) == "**holds**"  # e.g. age error falls
    assert claim_verdict(0.45, 0.70, True, threshold=0.5) == "no: the interval contains 0.5"
    metrics = {"unseen.delta.age_err": -3.0, "unseen.delta.age_err_lo": -5.0, "unseen.delta.age_err_hi": -1.0,
               "unseen.delta.attr_acc": 0.02, "unseen.delta.attr_acc_lo": -0.01, "unseen.delta.attr_acc_hi": 0.05,
               "unseen.mismatched.follows_audio": 0.7, "unseen.mismatched.follows_audio_lo": 0.6,
               "unseen.mismatched.follows_audio_hi": 0.8}
    rows = claims_table(metrics, ["unseen"])[2:]
    assert rows == [
        "| unseen | fused higher than image-only on attr_acc (delta > 0) | +0.020 [-0.010, +0.050] | "
        "no: the interval contains 0 |",
        "| unseen | fused lower than image-only on age_err (delta < 0) | -3.000 [-5.000, -1.000] | **holds** |",
        "| unseen | a voice of the other sex moves the attribute (follows_audio > 0.5) | 0.700 [0.600, 0.800] | "
        "**holds** |"]


def test_mismatched_voices_come_from_another_person_of_the_other_sex_when_possible():
    people = np.array(["a", "a", "b", "c", "d"])
    sex = np.array([0.0, 0.0, 1.0, 0.0, np.nan])
    partners = mismatch_partners(people, sex, seed=0)
    assert np.array_equal(partners, mismatch_partners(people, sex, seed=0))
    assert partners[0] == partners[1] == 2 and partners[3] == 2  # the only male voice
    assert sex[partners[2]] == 0.0
    assert people[partners[4]] != "d"
    assert np.array_equal(mismatch_partners(np.array(["a", "a"]), np.array([0.0, 1.0]), 0), [0, 1])  # nobody else
    sexes = np.array([0.0, 0.0, 0.0, 1.0, 1.0])
    voices = pick_voices(np.array(["a", "b", "c", "d", "e"]), sexes, 4, seed=0)
    assert len(set(voices)) == 4 and sexes[voices].tolist() == [0.0, 1.0, 0.0, 1.0]


def test_unnamed_speakers_are_told_apart_by_video():
    assert identity_of("spk1", "spk1/vid0/00001") == "spk1"
    assert identity_of("unknown", "unknown/flat3/00000") == "unknown/flat3"


# --------------------------------------------------------------------------- the evaluator network


def test_augment_is_seeded_and_keeps_shape_and_range():
    x = images(4)
    a = augment(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, augment(x, torch.Generator().manual_seed(1)))
    assert not torch.equal(a, augment(x, torch.Generator().manual_seed(2)))


def test_the_judge_sees_the_face_not_the_background():
    model = FaceEvaluator(32, 3, width=8, embedding_dim=16).eval()
    x = images(2)
    background = face_mask(32) == 0
    assert background[0, 0] and background[0, -1] and not background[16, 16]
    other = x.clone()
    other[:, :, background] = -x[:, :, background]
    assert all(torch.equal(v, model(other)[k]) for k, v in model(x).items())
    other[:, :, 16, 16] += 0.5
    assert not torch.equal(model(x)["embedding"], model(other)["embedding"])


def test_the_judge_round_trips_and_refuses_other_files(tmp_path: Path):
    model = FaceEvaluator(32, 3, width=8, embedding_dim=16, age_mean=40, age_std=10).eval()
    save_model(tmp_path / "e.pt", family=FAMILY, stage=STAGE, config=judge_config(model, ["a", "b", "c"]),
               networks={NETWORK: model}, step=1)
    judge = load_judge(tmp_path / "e.pt")
    x = images(2)
    assert judge.speakers == ["a", "b", "c"] and judge.resolution == 32
    assert all(torch.equal(v, judge.evaluator(x)[k]) for k, v in model(x).items())
    with pytest.raises(CheckpointError, match=r"missing.pt: no such checkpoint.*`dvc repro evaluators`"):
        load_judge(tmp_path / "missing.pt")
    save_tiny_model(tmp_path / "models")
    with pytest.raises(CheckpointError, match=r"model.pt: a 'face_sr' checkpoint, expected 'face_judge'"):
        load_judge(tmp_path / "models" / "train_fusion" / "model.pt")


def tiny_embedder(dim: int = 8) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                   torch.nn.Flatten(), torch.nn.Linear(8, dim)).eval()


def export_onnx(net: torch.nn.Module, path: Path, size: int, dynamic: bool = True) -> Path:
    torch.onnx.export(net, (torch.zeros(1, 3, size, size),), str(path), dynamo=False, input_names=["input"],
                      output_names=["embedding"], dynamic_axes={"input": {0: "n"}} if dynamic else None)
    return path


def test_onnx_face_recognition_model_gives_the_identity_embedding(tmp_path: Path):
    net = tiny_embedder()
    embedder = OnnxFaceEmbedder(export_onnx(net, tmp_path / "arcface.onnx", 112))
    x = images(3)
    expected = torch.nn.functional.normalize(net(torch.nn.functional.interpolate(
        x, size=112, mode="bilinear", antialias=True, align_corners=False)), dim=1).detach().numpy()
    assert np.allclose(embedder(x), expected, atol=1e-5)
    # an export with a fixed batch of 1 is fed face by face
    assert np.allclose(OnnxFaceEmbedder(export_onnx(net, tmp_path / "b1.onnx", 112, dynamic=False))(x), expected,
                       atol=1e-5)
    judge = FaceJudge(FaceEvaluator(32, 2, width=8, embedding_dim=16), ["a", "b"], embedder)
    verdict = judge(x)
    assert verdict.embedding.shape == (3, 8) and np.allclose(verdict.embedding, expected, atol=1e-5)
    assert verdict.id_logits.shape == (3, 2)  # the closed-set classifier stays the trained one


def test_onnx_model_errors_name_the_file(tmp_path: Path):
    with pytest.raises(EarshotError, match="nope.onnx: evaluators.face_recognition_path: no such file"):
        OnnxFaceEmbedder(tmp_path / "nope.onnx")
    with pytest.raises(EarshotError, match=r"small.onnx: the face-recognition model takes inputs \[\['n', 3, 64, 64"):
        OnnxFaceEmbedder(export_onnx(tiny_embedder(), tmp_path / "small.onnx", 64))
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(EarshotError, match="junk.onnx: not a loadable ONNX model"):
        OnnxFaceEmbedder(tmp_path / "junk.onnx")


# --------------------------------------------------------------------------- the stages


@pytest.fixture(scope="module")
def evaluators_run(world: Params) -> dict:
    from pipelines.face_sr import judge

    return judge.run(world, progress=False)


def test_evaluators_stage_learns_the_training_faces_and_reports_held_out_accuracy(world: Params,
                                                                                 evaluators_run: dict):
    out = Path(world.face_sr.out_dir) / "evaluators"
    assert evaluators_run["stage"] == "evaluators" and evaluators_run["steps"] == 60
    written_files = {p.name for p in out.iterdir()}
    assert {"model.pt", "checkpoint.pt", "metrics.tsv", "summary.json", "metrics.json"} <= written_files
    assert (out / "metrics.tsv").read_text().splitlines()[0] == "step\tloss\tsex\tage\tid"
    assert (out / "samples" / "final.png").is_file()
    written = json.loads((out / "metrics.json").read_text())
    assert written["train.sex_acc"] == 1.0 and written["train.id_acc"] >= 0.9
    # held-out clips of training speakers are recognised (chance: 1 / speakers)
    assert written["seen.id_acc"] > written["id_chance"]
    for key in ("seen.sex_acc", "seen.age_mae", "unseen.sex_acc", "unseen.age_mae", "unseen.id_verif_acc"):
        assert key in written
    logged = mlflow_metrics(world, "evaluators")
    assert logged["seen.id_acc"] == pytest.approx(written["seen.id_acc"]) and "loss" in logged
    judge = load_judge(out / "model.pt")
    assert judge.resolution == 32 and judge.speakers == sorted(judge.speakers) and "unknown" not in judge.speakers
    from pipelines.face_sr import judge as judge_stage  # a rerun with the same settings and shards is a no-op

    before = (out / "model.pt").stat().st_mtime_ns
    assert judge_stage.run(world, progress=False) == evaluators_run
    assert (out / "model.pt").stat().st_mtime_ns == before


def test_evaluators_train_on_the_rendered_speakers_and_report_on_the_corpus(world: Params, tmp_path: Path):
    """train_on: rendered: the judge's identity classes are the judge_faces speakers (nobody
    of the corpus); its report still reads the corpus's true faces, seen identity against the
    training clips' faces."""
    from components.data.synth.judge_faces import render_judge_faces
    from components.training.face_sr import judge as recipe
    from components.training.stage import run_stage

    data = tmp_path / "data"
    data.mkdir()
    (data / "shards").symlink_to(world.data_path("shards"))
    params = world.model_copy(update={
        "common": world.common.model_copy(update={"data_dir": str(data)}),
        "face_sr": world.face_sr.model_copy(update={"out_dir": str(tmp_path / "models")}),
        "evaluators": world.evaluators.model_copy(update={"train_on": "rendered", "steps": 20}),
        "judge_faces": world.judge_faces.model_copy(update={"n_speakers": 5, "frames_per_speaker": 4,
                                                            "clip_seconds": 1.0}),
        "tracking": world.tracking.model_copy(update={"enabled": False})})
    with pytest.raises(EarshotError, match=r"judge_faces/faces.parquet: no rendered judge faces.*judge_faces"):
        run_stage(recipe.judge_plan(params), progress=False)
    render_judge_faces(params, data / "judge_faces", progress=False)
    assert run_stage(recipe.judge_plan(params), progress=False)["steps"] == 20
    out = tmp_path / "models" / "evaluators"
    assert load_judge(out / "model.pt").speakers == [f"judge{i:05d}" for i in range(5)]
    written = json.loads((out / "metrics.json").read_text())
    assert written["n_speakers"] == 5 and written["id_chance"] == pytest.approx(0.2)
    for key in ("train.sex_acc", "seen.sex_acc", "seen.age_mae", "seen.id_acc", "unseen.sex_acc",
                "unseen.id_verif_acc"):
        assert 0 <= written[key] <= (1 if "acc" in key else 100), key
    assert "train.id_acc" not in written  # no corpus speaker is one of its classes


def test_evaluate_stage_compares_every_method_on_both_splits(world: Params, evaluators_run: dict):
    from pipelines.face_sr import evaluate

    evaluate.run(world, progress=False)
    out = Path(world.evaluate.out_dir)
    metrics = json.loads((out / "metrics.json").read_text())
    means = {f"{s}.{m}.{k}" for s in ("seen", "unseen") for m in METHODS for k in METRICS}
    means |= {"seen.mismatched.follows_audio", "unseen.mismatched.follows_audio"}
    means |= {f"{s}.truth.{k}" for s in ("seen", "unseen") for k in ("attr_acc", "age_err", "id_acc", "id_acc_dlib")}
    means |= {f"{s}.delta.{k}" for s in ("seen", "unseen") for k in DELTA_METRICS}
    means |= {f"{s}.reconstruction_gain.{k}" for s in ("seen", "unseen") for k in GAIN_METRICS}
    allowed = means | {f"{k}_{end}" for k in means for end in ("lo", "hi")}
    allowed |= {f"{s}.{n}" for s in ("seen", "unseen") for n in ("n_speakers", "n_id_scored")}
    assert set(metrics) <= allowed
    # every metric applies here (LPIPS from the configured AlexNet file, follows_audio
    # because both splits have voices of both sexes), except dlib's identification on seen
    # speakers, whose held-out clips here all come from one video: no other video to find them in
    optional = {k for k in allowed if k.startswith("seen.") and ".id_acc_dlib" in k}
    assert allowed - optional <= set(metrics)
    assert metrics["seen.n_speakers"] == 2 and metrics["unseen.n_speakers"] == 2
    for key in means - optional:
        assert metrics[f"{key}_lo"] <= metrics[key] <= metrics[f"{key}_hi"], key
    assert metrics["seen.delta.psnr"] == pytest.approx(metrics["seen.fused.psnr"] - metrics["seen.image_only.psnr"],
                                                       abs=1e-5)
    # dlib's ResNet: distances are >= 0 and the true faces identify themselves at least as well as outputs
    assert all(metrics[f"{s}.{m}.id_dist_dlib"] >= 0 for s in ("seen", "unseen") for m in METHODS)
    assert metrics["unseen.truth.id_acc_dlib"] >= metrics["unseen.image_only.id_acc_dlib"]
    # the reconstruction row is G(Eh(truth)), compared with bicubic on the judge, paired
    assert metrics["unseen.reconstruction_gain.attr_acc"] == pytest.approx(
        metrics["unseen.reconstruction.attr_acc"] - metrics["unseen.bicubic.attr_acc"], abs=1e-5)
    assert all(0 <= metrics[f"{s}.mismatched.follows_audio"] <= 1 for s in ("seen", "unseen"))
    # an untrained generator is far from the truth; bicubic of the 8x8 input is not
    assert metrics["seen.bicubic.psnr"] > metrics["seen.image_only.psnr"] + 5
    assert metrics["seen.bicubic.ssim"] > metrics["seen.fused.ssim"]
    assert mlflow_metrics(world, "evaluate")["unseen.fused.id_cos"] == pytest.approx(metrics["unseen.fused.id_cos"])
    table = (out / "results.md").read_text()
    for split in ("seen", "unseen"):
        for method in METHODS:
            assert f"| {split} | {method} |" in table
        assert f"| {split} | fused higher than image-only on attr_acc (delta > 0) |" in table
        assert f"| {split} | G can draw it: G(Eh(truth)) higher than bicubic on attr_acc |" in table
    assert f"{metrics['seen.bicubic.psnr']:.3f} [{metrics['seen.bicubic.psnr_lo']:.3f}, " in table
    for name in ("grid_seen.png", "grid_unseen.png", "mixing_seen.png", "mixing_unseen.png", "ablation.png"):
        with Image.open(out / name) as img:
            assert img.width > 100 and img.height > 100


def test_an_empty_split_is_reported_not_an_error(world: Params, evaluators_run: dict, tmp_path: Path):
    from components.data.dataset import ShardDataset

    model = load_face_sr(world.face_sr.out_dir)
    scorers = Scorers(load_judge(Path(world.face_sr.out_dir) / "evaluators" / "model.pt"), PerceptualLoss())
    seen = functools.partial(ShardDataset, world.data_path("shards"), "test_seen", train=False, hr_size=32)
    metrics = evaluate(model, scorers, {"seen": seen, "unseen": list}, tmp_path, world.evaluate)
    assert metrics and all(k.startswith("seen.") for k in metrics)
    assert "**unseen** (test_unseen): 0 test faces from 0 clips" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "grid_unseen.png").is_file() and (tmp_path / "mixing_unseen.png").is_file()


def test_evaluate_needs_the_evaluator_and_the_model(world: Params, tmp_path: Path):
    from pipelines.face_sr import evaluate

    elsewhere = world.model_copy(update={"face_sr": world.face_sr.model_copy(update={"out_dir": str(tmp_path)})})
    save_tiny_model(tmp_path)
    with pytest.raises(EarshotError, match=r"evaluators/model.pt: no such checkpoint.*`dvc repro evaluators`"):
        evaluate.run(elsewhere, progress=False)
    (tmp_path / "train_fusion" / "model.pt").unlink()
    with pytest.raises(EarshotError, match="model.pt: no such checkpoint"):
        evaluate.run(elsewhere, progress=False)


def test_params_sections_validate():
    params = default_params()
    assert params.evaluators.face_recognition_path is None and params.evaluate.out_dir == "results/face_sr"
    with pytest.raises(EarshotError, match="evaluate.grid_samples"):
        default_params({"evaluate.grid_samples": 0})


def test_the_judge_resumed_after_a_kill_equals_an_unbroken_one(world: Params, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch):
    """The evaluators stage on the shared loop: its drawn batches (indices, augmentations)
    replay exactly after a kill, so the resumed judge is the unbroken one."""
    from components.training.face_sr import judge as recipe
    from components.training.stage import run_stage

    def train_stage(_name: str, params: Params, progress: bool) -> dict:
        return run_stage(recipe.judge_plan(params), progress=progress)


    def params(folder: str) -> Params:
        fs = world.face_sr.model_copy(update={"out_dir": str(tmp_path / folder)})
        return world.model_copy(update={"face_sr": fs, "evaluators": world.evaluators.model_copy(update={"steps": 12, "checkpoint_every": 5}),
                                        "tracking": world.tracking.model_copy(update={"enabled": False})})

    train_stage("evaluators", params("whole"), progress=False)
    build = recipe.build_judge

    def dying(*args, **kwargs):  # type: ignore[no-untyped-def]
        stage = build(*args, **kwargs)
        inner = stage.step

        def step(ctx, batch):  # type: ignore[no-untyped-def]
            if ctx.step == 8:
                raise KeyboardInterrupt
            return inner(ctx, batch)

        stage.step = step
        return stage

    monkeypatch.setattr(recipe, "build_judge", dying)
    with pytest.raises(KeyboardInterrupt):
        train_stage("evaluators", params("broken"), progress=False)
    monkeypatch.setattr(recipe, "build_judge", build)
    assert train_stage("evaluators", params("broken"), progress=False)["resumed_from"] == 5
    a, b = (load_judge(tmp_path / f / "evaluators" / "model.pt").evaluator.state_dict() for f in ("whole", "broken"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    reports = [json.loads((tmp_path / f / "evaluators" / "metrics.json").read_text()) for f in ("whole", "broken")]
    assert reports[0].pop("seconds") > 0 and reports[1].pop("seconds") > 0 and reports[0] == reports[1]


def test_reconstruction_is_g_of_eh_of_the_true_face(world: Params):
    """The reconstruction row decodes Eh's code of the TRUE high-res face (not the 8x8
    input): a model whose Eh is replaced must change it, the other methods not."""
    model = load_face_sr(world.face_sr.out_dir, reconstruction=True)
    hr = images(4, size=model.config.resolution, seed=3)
    expected = model.networks["G"](model.networks["Eh"](hr)).clamp(-1, 1)
    assert torch.allclose(model.reconstruct(hr), expected, atol=1e-6)
    assert not torch.allclose(model.reconstruct(hr), model.reconstruct(images(4, size=model.config.resolution, seed=4)))
    plain = load_face_sr(world.face_sr.out_dir)
    assert not plain.can_reconstruct
    with pytest.raises(EarshotError, match="reconstruction needs Eh"):
        plain.reconstruct(hr)
