"""On-the-fly model inputs: degradation, the face-SR spectrogram, per-frame mel windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.figures.images import from_hwc
from components.data.features import (
    degrade,
    face_sr_spectrogram,
    log_mel,
    mel_windows,
    resize,
)

SR = 16000


def tone(seconds: float, freq: float, sr: int = SR) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# ------------------------------------------------------------------ degrade / resize


def test_degrade_uint8_image_keeps_kind_and_layout():
    img = np.full((128, 128, 3), (200, 100, 50), np.uint8)
    lr = degrade(img)
    assert isinstance(lr, np.ndarray) and lr.dtype == np.uint8 and lr.shape == (8, 8, 3)
    assert np.abs(lr.astype(int) - (200, 100, 50)).max() <= 1  # a flat image stays flat
    lr_t = degrade(torch.from_numpy(img), size=16)
    assert isinstance(lr_t, torch.Tensor) and lr_t.dtype == torch.uint8 and lr_t.shape == (16, 16, 3)


def test_degrade_float_batches_and_range():
    hr = torch.rand(4, 3, 128, 128) * 2 - 1
    lr = degrade(hr, size=8)
    assert lr.shape == (4, 3, 8, 8) and lr.dtype == torch.float32
    assert lr.min() >= -1 and lr.max() <= 1
    assert torch.allclose(degrade(hr[1], size=8), lr[1], atol=1e-6)  # per-image, batch-independent


def test_degrade_antialiases_fine_detail():
    """Pixel-level noise has no content at 8x8: antialiased output averages it away, where
    plain bicubic sampling (4x4 source pixels per output pixel) would alias it through."""
    noise = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    lr = degrade(noise).astype(float)
    assert abs(lr.mean() - 127.5) < 3 and lr.std() < 8
    plain = torch.nn.functional.interpolate(from_hwc(noise)[None], size=(8, 8), mode="bicubic")
    assert plain.mul(127.5).std() > 3 * lr.std()  # what antialiasing prevents


def test_degrade_matches_pillow_bicubic():
    """The reference downsampled with Pillow's bicubic (via scipy.misc.imresize)."""
    from PIL import Image

    img = np.random.default_rng(2).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    pillow = np.asarray(Image.fromarray(img).resize((8, 8), Image.BICUBIC)).astype(int)
    assert np.abs(degrade(img).astype(int) - pillow).max() <= 2


def test_degrade_float_path_equals_the_pillow_path_by_value():
    """Training, evaluation and the CLI degrade float tensors: the values must be the
    uint8/Pillow path's, with the sign of [-1, 1] and the antialiasing kept."""
    from PIL import Image

    img = np.random.default_rng(4).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    pillow = np.asarray(Image.fromarray(img).resize((8, 8), Image.BICUBIC)).astype(np.float64)
    lr = degrade(from_hwc(img)[None])[0]  # (3, 8, 8) in [-1, 1]
    assert lr.shape == (3, 8, 8)
    in_pixels = lr.permute(1, 2, 0).add(1).mul(127.5).numpy()
    assert np.abs(in_pixels - pillow).max() <= 2.5
    assert np.abs(in_pixels - degrade(img).astype(np.float64)).max() <= 0.51  # the uint8 path, before rounding
    # pixel-level checkerboard of -1 / +1: nothing of it survives at 8x8 but its average, grey (0)
    board = torch.from_numpy((np.indices((128, 128)).sum(0) % 2) * 2.0 - 1).float().expand(3, 128, 128)
    assert degrade(board).abs().max() < 0.05
    # a dark face in [-1, 0] stays dark: the sign is kept, values too
    dark = torch.full((2, 3, 64, 64), -0.6)
    dark[:, :, :32] = -0.9
    low = degrade(dark)
    assert (low < 0).all() and low[:, :, 0].sub(-0.9).abs().max() < 0.02 and low[:, :, -1].sub(-0.6).abs().max() < 0.02


def test_degrade_stretch_is_opt_in():
    low_contrast = np.full((64, 64, 3), 100, np.uint8)
    low_contrast[:32] = 140
    plain = degrade(low_contrast, size=8)
    stretched = degrade(low_contrast, size=8, stretch=True)
    assert 95 <= plain.min() and plain.max() <= 145
    assert stretched.min() <= 5 and stretched.max() >= 250


def test_resize_and_to_float_image():
    img = np.zeros((32, 32, 3), np.uint8)
    img[..., 0] = 255
    x = from_hwc(img)
    assert x.shape == (3, 32, 32) and x[0].eq(1).all() and x[1:].eq(-1).all()
    assert resize(x, 16).shape == (3, 16, 16)
    wild = torch.full((3, 16, 16), 2.0)
    assert resize(wild, 16).max() == 1 and wild.max() == 2  # clamped copy, input untouched
    with pytest.raises(ValueError):
        from_hwc(np.zeros((3, 32, 32), np.float32))


# ------------------------------------------------------------------ face-SR spectrogram


def test_spectrogram_is_257_by_257_in_unit_range():
    spec = face_sr_spectrogram(tone(4.0, 440) + 0.01 * np.random.default_rng(0).normal(size=64000))
    assert spec.shape == (257, 257) and spec.dtype == torch.float32
    assert spec.min().item() == pytest.approx(-1) and spec.max().item() == pytest.approx(1)


def test_spectrogram_axes():
    """Rows are time, columns frequency: a 1 kHz tone peaks in bin 1000 / (16000 / 512) = 32,
    and a tone starting half-way shows up in the second half of the rows."""
    spec = face_sr_spectrogram(tone(4.0, 1000))
    assert int(spec.mean(dim=0).argmax()) == 32
    late = tone(4.0, 1000)
    late[:32000] = 0
    by_row = face_sr_spectrogram(late)[:, 32]
    assert by_row[:120].max() < -0.5 and by_row[140:].min() > 0.5


def test_spectrogram_matches_the_reference_formula():
    """Frame j is the Hann-windowed samples [248 j, 248 j + 512): |FFT|^2, log(+1e-6), min-max."""
    x = np.random.default_rng(3).normal(size=64000).astype(np.float32)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(512) / 512)  # periodic, as TensorFlow's
    frames = np.stack([x[248 * j:248 * j + 512] * hann for j in range(257)])
    ref = np.log(np.abs(np.fft.rfft(frames, axis=1)) ** 2 + 1e-6)
    ref = 2 * (ref - ref.min()) / (ref.max() - ref.min()) - 1
    np.testing.assert_allclose(face_sr_spectrogram(x).numpy(), ref, atol=2e-4)


def test_spectrogram_short_audio_is_repeated():
    one_second = tone(1.0, 300) * np.linspace(0.2, 1, SR, dtype=np.float32)
    spec = face_sr_spectrogram(one_second)
    assert spec.shape == (257, 257)
    assert torch.equal(spec, face_sr_spectrogram(np.tile(one_second, 4)))


def test_spectrogram_long_audio_crop():
    rng = np.random.default_rng(1)
    audio = rng.normal(size=SR * 10).astype(np.float32) * np.repeat(rng.uniform(0.1, 1, 10), SR).astype(np.float32)
    assert torch.equal(face_sr_spectrogram(audio), face_sr_spectrogram(audio[:64000]))  # eval: the start
    a = face_sr_spectrogram(audio, rng=np.random.default_rng(5))
    b = face_sr_spectrogram(audio, rng=np.random.default_rng(5))
    c = face_sr_spectrogram(audio, rng=np.random.default_rng(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_spectrogram_of_silence_is_finite():
    spec = face_sr_spectrogram(np.zeros(64000, np.float32))
    assert torch.isfinite(spec).all() and spec.abs().max() == 0


# ------------------------------------------------------------------ mel windows


def test_mel_windows_shape():
    audio = tone(2.0, 440)
    mel = mel_windows(audio, SR, 25)
    assert mel.shape == (50, 80, 16) and mel.dtype == np.float32
    assert mel_windows(audio, SR, 25, n_frames=48).shape == (48, 80, 16)
    assert log_mel(audio).shape == (80, 1 + len(audio) // 200)


@pytest.mark.parametrize("frame", [10, 23])
def test_mel_window_is_centred_on_its_frame(frame):
    """A 20 ms click at the time of video frame k sits in the middle of window k, and is
    outside the windows of frames k +- 4 (12.8 mel frames away: more than half a window
    plus the click's 2.8-frame spread through the 800-sample STFT window)."""
    fps, n = 25, 40
    audio = np.zeros(n * SR // fps, np.float32)
    at = frame * SR // fps
    audio[at - 160:at + 160] = tone(0.02, 2000)
    mel = mel_windows(audio, SR, fps)
    energy = mel[frame].mean(axis=0)
    # the click's energy is symmetric about the window's centre (mel steps 7-9 of 16):
    # which of two equal steps argmax picks is float noise of the BLAS build
    assert abs(int(energy.argmax()) - 8) <= 1
    assert energy[:6].max() < energy[8] and energy[11:].max() < energy[8]
    quiet = mel[0].mean()  # a window far from the click
    for other in (frame - 4, frame + 4):
        assert mel[other].mean(axis=0).max() < quiet + 1.0


def test_mel_windows_past_the_ends_are_silence():
    mel = mel_windows(tone(1.0, 440), SR, 25, n_frames=30)  # frames 25..29 have no audio
    assert np.allclose(mel[-1], np.log(1e-5))
    assert mel[0, :, :6].max() == pytest.approx(np.log(1e-5))  # before t = 0


@pytest.mark.realdata
def test_real_still_and_speech_pair(real_data):
    """The stills are exactly the paper's input pair: a 128 px face and 4 s of 16 kHz speech."""
    import soundfile as sf
    from PIL import Image

    stills = sorted((real_data / "stills").glob("*.png"))
    assert stills
    for png in stills:
        face = np.asarray(Image.open(png).convert("RGB"))
        lr = degrade(face)
        assert face.shape == (128, 128, 3) and lr.shape == (8, 8, 3) and lr.std() > 5  # a face, not a flat patch
        speech, sr = sf.read(png.with_suffix(".wav"), dtype="float32")
        assert sr == SR and len(speech) == 64000
        spec = face_sr_spectrogram(speech)
        assert spec.shape == (257, 257) and torch.isfinite(spec).all()
        # speech: most energy below 4 kHz (bin 64), little above 6 kHz (bin 96)
        assert spec[:, :64].mean() > spec[:, 96:].mean() + 0.1
