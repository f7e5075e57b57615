"""The files inference reads and writes, whatever the model: images, voices, folders
of them paired by file stem, the device to run on, a PNG of images side by side.

Errors are one line naming the file (:class:`~components.errors.EarshotError`), as a
command-line user needs them. What a model makes of the pixels and samples (its input
size, its spectrogram) is the model wrapper's business, e.g.
:mod:`components.inference.face_sr`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from components.errors import EarshotError
from components.figures.images import to_hwc
from components.io import atomic_path


def resolve_device(device: str) -> torch.device:
    """``auto``: CUDA when torch sees a GPU, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise EarshotError("--device cuda: torch sees no CUDA device")
    return torch.device(device)


MAX_IMAGE_PIXELS = 50_000_000
"""Larger images are refused before decoding: a face photo needs far fewer pixels, and a
tiny PNG can claim 30000x30000 (2.7 GB decoded), a decompression bomb."""


def read_image(path: str | Path) -> np.ndarray:
    """An image file as HxWx3 RGB uint8, upright as displayed (its EXIF orientation
    applied, as a phone's photo viewer does); a one-line error naming ``path`` otherwise,
    an image over ``MAX_IMAGE_PIXELS`` included (its size is read from the header, before
    any pixel is decoded)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise EarshotError(f"{path}: no such image file")
    try:
        with Image.open(path) as img:
            width, height = img.size
            if width * height > MAX_IMAGE_PIXELS:
                raise EarshotError(f"{path}: image too large ({width}x{height} pixels, at most "
                                   f"{MAX_IMAGE_PIXELS:,} read): possibly a decompression bomb")
            return np.array(ImageOps.exif_transpose(img).convert("RGB"))
    except Image.DecompressionBombError:  # over PIL's own limit: the header alone said so
        raise EarshotError(f"{path}: image too large (over {Image.MAX_IMAGE_PIXELS * 2:,} pixels): "
                           "possibly a decompression bomb") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise EarshotError(f"{path}: not an image ({type(exc).__name__})") from None


def read_voice(path: str | Path, sample_rate: int) -> np.ndarray:
    """Mono float32 samples at ``sample_rate`` of any file ffmpeg decodes.

    One-line errors naming ``path``: missing, not decodable, no audio stream, empty,
    digital silence.
    """
    from components.audio.extract import check_not_silent, load_audio

    audio = load_audio(path, sample_rate)  # Rejected (an EarshotError) names the file
    if len(audio) == 0:
        raise EarshotError(f"{path}: empty audio (no samples)")
    check_not_silent(audio, name=str(path))
    return audio


def image_files(folder: Path) -> dict[str, Path]:
    """Files of ``folder`` with an image extension Pillow knows, by stem."""
    from PIL import Image

    known = set(Image.registered_extensions())
    return _by_stem(folder, lambda p: p.suffix.lower() in known)


def audio_files(folder: Path) -> dict[str, Path]:
    """The other files of ``folder`` (any media ffmpeg may decode), by stem."""
    from PIL import Image

    known = set(Image.registered_extensions())
    return _by_stem(folder, lambda p: p.suffix.lower() not in known)


def _by_stem(folder: Path, keep: Callable[[Path], bool]) -> dict[str, Path]:
    if not folder.is_dir():
        raise EarshotError(f"{folder}: not a folder")
    out: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.startswith(".") and keep(path):
            if path.stem in out:
                raise EarshotError(f"{folder}: {out[path.stem].name} and {path.name} have the same stem: "
                                   "pairing by stem is ambiguous")
            out[path.stem] = path
    return out


def pair_by_stem(image_dir: Path, audio_dir: Path) -> tuple[list[tuple[str, Path, Path]], list[str]]:
    """(stem, image, audio) for every stem present in both folders, and the unpaired files.

    The two folders may be the same one (``face.png`` beside ``face.wav``).
    """
    images, audios = image_files(image_dir), audio_files(audio_dir)
    pairs = [(stem, images[stem], audios[stem]) for stem in sorted(images.keys() & audios.keys())]
    unpaired = sorted(str(p) for stem, p in {**images, **audios}.items() if stem not in images or stem not in audios)
    return pairs, unpaired


def save_png(path: str | Path, panels: Sequence[torch.Tensor], gap: int = 4) -> Path:
    """Write (3, H, W) images in [-1, 1] side by side (white gaps) as one PNG, atomically."""
    from PIL import Image

    arrays = [to_hwc(p) for p in panels]
    height = max(a.shape[0] for a in arrays)
    canvas = np.full((height, sum(a.shape[1] for a in arrays) + gap * (len(arrays) - 1), 3), 255, np.uint8)
    x = 0
    for a in arrays:
        canvas[:a.shape[0], x:x + a.shape[1]] = a
        x += a.shape[1] + gap
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(canvas).save(tmp, format="PNG")
    return path
