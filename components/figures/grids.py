"""Labelled image grids: one row per sample, one labelled column per image kind
(input | output | target ..., or the frames of a video strip), drawn with PIL and written
atomically so a viewer never sees half a PNG. Used for every training stage's samples
(:func:`save_grid`); matplotlib figures with titles live in :mod:`components.figures.plots`.

A column is ``(label, tensor)`` with images ``(N, C, h, w)`` (C = 1 or 3) or video
frames ``(N, T, C, h, w)``; a video column becomes a strip of T columns, the label over
its first frame.
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


def image_columns(columns: Sequence[tuple[str, torch.Tensor]]) -> list[tuple[str, torch.Tensor]]:
    """The columns with every video column ``(N, T, C, h, w)`` cut into its T frames."""
    out = []
    for label, images in columns:
        if images.ndim == 5:
            out += [(label if t == 0 else "", images[:, t]) for t in range(images.shape[1])]
        else:
            out.append((label, images))
    return out


def picture_size(columns: Sequence[tuple[str, torch.Tensor]]) -> int:
    """The side of a grid cell: the largest RGB column (faces, frames; not spectrograms)."""
    sides = [images.shape[-1] for _, images in columns if images.shape[-3] == 3]
    return max(sides or [images.shape[-1] for _, images in columns])


def grid_image(columns: Sequence[tuple[str, torch.Tensor]], size: int, pad: int = 2) -> np.ndarray:
    """Tile labelled image (or video) columns into one HxWx3 uint8 picture (a label row on top)."""
    from PIL import Image, ImageDraw

    columns = image_columns(columns)
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


def save_grid(path: str | Path, columns: Sequence[tuple[str, torch.Tensor]], size: int | None = None) -> Path:
    """Write the grid of ``columns`` as a PNG; cells of ``size`` px (default :func:`picture_size`)."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(grid_image(columns, size or picture_size(columns))).save(tmp, format="PNG")
    return Path(path)
