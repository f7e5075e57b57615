"""Labelled image grids: one row per sample, one labelled column per image kind
(input | output | target ..., or the frames of a video strip), drawn with PIL and written
atomically so a viewer never sees half a PNG. Used for every training stage's samples
(:func:`save_grid`); matplotlib figures with titles live in :mod:`components.figures.plots`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from components.figures.images import to_pixels
from components.io import atomic_path

LABEL_HEIGHT = 14


def to_display(img: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, h, w) in [-1, 1] (C = 1 or 3) -> (N, 3, size, size) uint8.

    Small images (the 8x8 inputs) are enlarged with nearest neighbours so their pixels
    stay visible as pixels; larger ones (a 257x257 spectrogram) are resized smoothly.
    """
    img = img.detach().float().cpu()
    if img.shape[1] == 1:
        img = img.expand(-1, 3, -1, -1)
    if img.shape[-1] != size:
        mode = "nearest" if img.shape[-1] < size else "area"
        img = F.interpolate(img, size=(size, size), mode=mode)
    return to_pixels(img)


def grid_image(columns: Sequence[tuple[str, torch.Tensor]], size: int, pad: int = 2) -> np.ndarray:
    """Tile labelled image columns into one HxWx3 uint8 picture (a label row on top)."""
    from PIL import Image, ImageDraw

    n = min(len(images) for _, images in columns)
    cell = size + pad
    height, width = LABEL_HEIGHT + n * cell + pad, len(columns) * cell + pad
    canvas = np.full((height, width, 3), 255, np.uint8)
    for c, (_, images) in enumerate(columns):
        tiles = to_display(images[:n], size).permute(0, 2, 3, 1).numpy()
        for r, tile in enumerate(tiles):
            y, x = LABEL_HEIGHT + pad + r * cell, pad + c * cell
            canvas[y:y + size, x:x + size] = tile
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    for c, (label, _) in enumerate(columns):
        draw.text((pad + c * cell + 1, 1), label[: max(1, size // 6)], fill=(0, 0, 0))
    return np.asarray(picture)


def save_grid(path: str | Path, columns: Sequence[tuple[str, torch.Tensor]], size: int) -> Path:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(grid_image(columns, size)).save(tmp, format="PNG")
    return Path(path)
