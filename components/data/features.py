"""Model inputs computed on the fly from the stored crops and audio.

Both papers feed their networks with features that are cheap to compute but would
multiply the dataset size if stored, so the shards keep only the 256 px face crops and
the aligned 16 kHz audio, and these pure functions make the rest:

* :func:`resize` / :func:`degrade`: the high-res target and the low-res input of face
  super-resolution, by antialiased bicubic resizing (Meishvili et al. "Learning to have
  an ear for face super-resolution", CVPR 2020, super-resolve 8x8 faces to 128x128).
* :func:`face_sr_spectrogram`: the audio encoder input of Meishvili et al.: a 257x257
  log-magnitude spectrogram of 4 s of speech.
* :func:`mel_windows`: one log-mel window per video frame (Wav2Lip-style), the audio
  input of talking-face video upsampling (Hegde et al., ACM MM 2022).

Only numpy and torch are used (torchaudio/torchvision are not importable on the CPU
torch build), and nothing here reads files: callers pass arrays.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from components.audio.spectrogram import SPEC_EPS, SPEC_HOP, SPEC_N_FFT, SPEC_SAMPLE_RATE
from components.figures.images import from_hwc


MEL_EPS = 1e-5


def resize(img: torch.Tensor, size: int) -> torch.Tensor:
    """Bicubic resize with antialiasing of float images (..., C, H, W) to size x size.

    Antialiasing matters when shrinking by large factors (256 -> 8 is 32x): plain
    bicubic would sample only a few source pixels per output pixel and alias. The
    result is clamped to [-1, 1] because the bicubic kernel overshoots at edges.
    """
    if not img.is_floating_point():
        raise ValueError(f"resize expects a float image in [-1, 1], got {img.dtype}")
    lead = img.shape[:-3]
    x = img.reshape(-1, *img.shape[-3:])
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return x.clamp(-1.0, 1.0).reshape(*lead, img.shape[-3], size, size)  # never in place: x may be img


def _stretch(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Per-image min-max stretch of (..., C, H, W) to [lo, hi] (all channels jointly)."""
    flat = x.reshape(*x.shape[:-3], -1)
    mn = flat.amin(-1)[..., None, None, None]
    mx = flat.amax(-1)[..., None, None, None]
    scale = torch.where(mx > mn, (hi - lo) / (mx - mn), torch.zeros_like(mx))
    return (x - mn) * scale + lo


def degrade(img: np.ndarray | torch.Tensor, size: int = 8, stretch: bool = False) -> np.ndarray | torch.Tensor:
    """High-res face -> the low-res network input, by antialiased bicubic downsampling.

    Accepts either an HxWx3 uint8 image (numpy array or tensor; returns the same kind,
    size x size x 3 uint8), or a float tensor (..., 3, H, W) in [-1, 1] (returns
    (..., 3, size, size) float in [-1, 1]). Torch's antialiased bicubic follows
    Pillow's, which the reference used (``scipy.misc.imresize(img, (8, 8), 'bicubic')``).

    ``stretch=True`` reproduces a side effect of that reference call: ``imresize`` on a
    float image first byte-scales it, mapping the image's own minimum and maximum (over
    all channels) to 0 and 255, so every low-res input had its contrast stretched. Off by
    default: it makes the low-res input's statistics differ from the high-res target's
    (which is not stretched) and from real low-res captures.
    """
    if isinstance(img, torch.Tensor) and img.is_floating_point():
        x = _stretch(img.float(), -1.0, 1.0) if stretch else img.float()
        return resize(x, size)
    x = from_hwc(img)
    if stretch:
        x = _stretch(x, -1.0, 1.0)
    out = resize(x, size).add_(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0)
    return out.numpy() if isinstance(img, np.ndarray) else out


def fit_length(audio: np.ndarray, n: int, *, start: int = 0) -> np.ndarray:
    """``audio[start:start + n]``, repeating (tiling) the signal when it is too short.

    Tiling instead of zero padding keeps the spectrogram free of digital silence, whose
    log(1e-6) floor would otherwise dominate the per-clip min-max normalisation.
    """
    if len(audio) == 0:
        raise ValueError("empty audio")
    if len(audio) < n:
        audio = np.tile(audio, -(-n // len(audio)))
        start = 0
    return audio[start:start + n]


def face_sr_spectrogram(
    audio: np.ndarray | torch.Tensor,
    sr: int = SPEC_SAMPLE_RATE,
    seconds: float = 4.0,
    rng: np.random.Generator | None = None,
) -> torch.Tensor:
    """The audio-encoder input of Meishvili et al.: a 257 x 257 log spectrogram in [-1, 1].

    As in the authors' code (TensorFlow ``audio_spectrogram(window_size=512, stride=248,
    magnitude_squared=True)`` on 4 s at 16 kHz): 64000 samples, periodic Hann window of
    512, hop 248, **no padding**: 1 + (64000 - 512) / 248 = 257 frames exactly, and
    512 / 2 + 1 = 257 bins (torch's default centre padding would give 1 + 64000 // 248
    = 259 frames). The power |X|^2 (the reference squares the magnitude) goes through
    log(x + 1e-6), then a per-clip min-max scaling to [-1, 1]. Layout as the reference:
    (257 time frames, 257 frequency bins), low frequencies first. The shape holds for
    the paper's 4 s at 16 kHz.

    Audio shorter than ``seconds`` is repeated (see :func:`fit_length`); longer audio is
    cut to a random window when ``rng`` is given (training) and to its start otherwise
    (evaluation).
    """
    x = audio.numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
    x = x.astype(np.float32, copy=False).reshape(-1)
    n = int(round(seconds * sr))
    start = int(rng.integers(0, len(x) - n + 1)) if rng is not None and len(x) > n else 0
    x = fit_length(x, n, start=start)
    stft = torch.stft(torch.from_numpy(np.ascontiguousarray(x)), n_fft=SPEC_N_FFT, hop_length=SPEC_HOP,
                      win_length=SPEC_N_FFT, window=_hann(SPEC_N_FFT), center=False, return_complex=True)
    spec = torch.log(stft.abs().square().T + SPEC_EPS)
    lo, hi = spec.min(), spec.max()
    if hi <= lo:  # constant input (e.g. digital silence): no contrast to normalise
        return torch.zeros_like(spec)
    return (spec - lo).mul_(2.0 / (hi - lo)).sub_(1.0)


@functools.lru_cache(maxsize=8)
def _hann(n: int) -> torch.Tensor:
    return torch.hann_window(n)


@functools.lru_cache(maxsize=8)
def mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> torch.Tensor:
    """Slaney-style mel filterbank (n_mels, n_fft // 2 + 1), built by librosa, cached."""
    import librosa

    return torch.from_numpy(librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax))


def log_mel(
    audio: np.ndarray | torch.Tensor,
    sr: int = SPEC_SAMPLE_RATE,
    *,
    n_mels: int = 80,
    n_fft: int = 800,
    hop: int = 200,
    fmin: float = 55.0,
    fmax: float = 7600.0,
) -> torch.Tensor:
    """log mel spectrogram (n_mels, 1 + len // hop); frame j is centred at j * hop / sr.

    Defaults are Wav2Lip's (800-sample window, hop 200 = 80 frames/s at 16 kHz,
    55-7600 Hz, mel filterbank on the STFT magnitude). The natural log of the mel
    magnitude floored at 1e-5 equals Wav2Lip's dB scale up to an affine map (Wav2Lip
    then clips to [-4, 4] and uses a 0.97 pre-emphasis, both left out here).
    """
    x = audio if isinstance(audio, torch.Tensor) else torch.from_numpy(np.array(audio, dtype=np.float32))
    x = x.float().reshape(-1)
    if len(x) <= n_fft // 2:  # reflect padding needs more samples than half a window
        x = F.pad(x, (0, n_fft // 2 + 1 - len(x)))
    magnitude = torch.stft(x, n_fft=n_fft, hop_length=hop, win_length=n_fft, window=_hann(n_fft), center=True,
                       pad_mode="reflect", return_complex=True).abs()
    mel = mel_filterbank(sr, n_fft, n_mels, fmin, fmax) @ magnitude
    return torch.log(mel.clamp_min(MEL_EPS))


def mel_windows(
    audio: np.ndarray | torch.Tensor,
    sr: int,
    fps: float,
    n_mels: int = 80,
    *,
    window: int = 16,
    hop: int = 200,
    n_fft: int = 800,
    n_frames: int | None = None,
) -> np.ndarray:
    """One log-mel window of ``window`` mel frames centred on each video frame.

    Video frame i is shown at time i / fps, which is mel frame c = i / fps * sr / hop
    (fractional in general: 3.2 i at 25 fps, 16 kHz, hop 200). Its window holds the
    mel frames ``round(c - (window - 1) / 2) + [0, window)``, i.e. 16 frames = 0.2 s
    centred on the frame (Wav2Lip's window starts at the frame, so its centre is 0.1 s
    after it). Windows reaching past either end of the audio are filled with the
    log floor (silence). Returns float32 (n_frames, n_mels, window); ``n_frames``
    defaults to the audio duration times fps.
    """
    x = np.asarray(audio.numpy() if isinstance(audio, torch.Tensor) else audio, dtype=np.float32).reshape(-1)
    if n_frames is None:
        n_frames = int(round(len(x) / sr * fps))
    mel = log_mel(x, sr, n_mels=n_mels, n_fft=n_fft, hop=hop).numpy()
    centres = np.arange(n_frames) / fps * sr / hop
    starts = np.round(centres - (window - 1) / 2).astype(np.int64)
    pad = window + max(0, int(starts.max(initial=0)) + window - mel.shape[1])
    padded = np.pad(mel, ((0, 0), (pad, pad)), constant_values=np.log(MEL_EPS))
    idx = starts[:, None] + pad + np.arange(window)[None, :]
    return np.ascontiguousarray(padded[:, idx].transpose(1, 0, 2), dtype=np.float32)
