"""The one image-grid renderer: one row per sample, one labelled column per image kind
(input | output | target ..., a voice of the mixing grid, or the frames of a video strip),
with an optional title and row labels, drawn with PIL and written atomically so a viewer
never sees half a PNG. Every training stage's samples, the evaluation grids and the
mixing grids are drawn by :func:`save_grid`; charts (bars, messages) are in
:mod:`components.figures.plots`.

A column is ``(label, tensor)`` with images ``(N, C, h, w)`` (C = 1 or 3) or video
frames ``(N, T, C, h, w)``; a video column becomes a strip of T columns, the label over
its first frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from components.figures.images import to_pixels
from components.io import atomic_path

PAD = 2
FONT_PX = 11
LABEL_HEIGHT = FONT_PX + 4
"""Height of the column-label row (and of the title band, when there is a title)."""


def _font(px: int = FONT_PX):  # type: ignore[no-untyped-def]
    from PIL import ImageFont

    return ImageFont.load_default(size=px)


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


def _fit(draw, text: str, width: float, font) -> str:  # type: ignore[no-untyped-def]
    """``text`` cut (with an ellipsis) to ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…" if text else ""


def grid_image(columns: Sequence[tuple[str, torch.Tensor]], size: int, *, title: str = "",
               row_labels: Sequence[str] | None = None) -> np.ndarray:
    """Tile labelled image (or video) columns into one HxWx3 uint8 picture: a title band
    (if any), a label row, then one row per sample with its label (if any) on the left."""
    from PIL import Image, ImageDraw

    columns = image_columns(columns)
    if not columns:
        raise ValueError("a grid needs at least one column")
    n = min(len(images) for _, images in columns)
    font = _font()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    labels = list(row_labels or [])[:n]
    left = int(max((measure.textlength(t, font=font) for t in labels), default=0)) + 2 * PAD if labels else 0
    line = LABEL_HEIGHT
    top = (line if title else 0) + line
    cell = size + PAD
    canvas = np.full((top + n * cell + PAD, left + len(columns) * cell + PAD, 3), 255, np.uint8)
    for c, (_, images) in enumerate(columns):
        tiles = to_display(images[:n], size).permute(0, 2, 3, 1).numpy()
        for r, tile in enumerate(tiles):
            y, x = top + PAD + r * cell, left + PAD + c * cell
            canvas[y:y + size, x:x + size] = tile
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    if title:
        draw.text((PAD, 1), _fit(draw, title, canvas.shape[1] - 2 * PAD, font), fill=(0, 0, 0), font=font)
    for c, (label, _) in enumerate(columns):
        draw.text((left + PAD + c * cell + 1, top - line + 1), _fit(draw, label, size, font), fill=(0, 0, 0), font=font)
    for r, label in enumerate(labels):
        draw.text((PAD, top + PAD + r * cell + (size - FONT_PX) // 2), label, fill=(0, 0, 0), font=font)
    return np.asarray(picture)


def save_grid(path: str | Path, columns: Sequence[tuple[str, torch.Tensor]], size: int | None = None, *,
              title: str = "", row_labels: Sequence[str] | None = None) -> Path:
    """Write the grid of ``columns`` as a PNG; cells of ``size`` px (default :func:`picture_size`)."""
    from PIL import Image

    picture = grid_image(columns, size or picture_size(columns), title=title, row_labels=row_labels)
    with atomic_path(path) as tmp:
        Image.fromarray(picture).save(tmp, format="PNG")
    return Path(path)
