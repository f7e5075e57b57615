"""What a training stage shows of itself: sample grids (PNG) and the loss table (TSV).

* :func:`save_grid`: one row per sample, one labelled column per image kind
  (input | output | target ...), written atomically so a viewer never sees half a PNG.
* :class:`MetricsTable`: ``metrics.tsv``, one row per logging step, the file DVC draws
  with ``dvc plots show`` (``x: step``). A resumed run first drops the rows logged after
  the checkpoint it resumes from (they belong to the steps it redoes).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from components.io import atomic_path

LABEL_HEIGHT = 14


def to_display(img: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, h, w) in [-1, 1] (C = 1 or 3) -> (N, 3, size, size) in [0, 1].

    Small images (the 8x8 inputs) are enlarged with nearest neighbours so their pixels
    stay visible as pixels; larger ones (a 257x257 spectrogram) are resized smoothly.
    """
    img = img.detach().float().cpu()
    if img.shape[1] == 1:
        img = img.expand(-1, 3, -1, -1)
    if img.shape[-1] != size:
        mode = "nearest" if img.shape[-1] < size else "area"
        img = F.interpolate(img, size=(size, size), mode=mode)
    return img.add(1.0).div(2.0).clamp(0.0, 1.0)


def grid_image(columns: Sequence[tuple[str, torch.Tensor]], size: int, pad: int = 2) -> np.ndarray:
    """Tile labelled image columns into one HxWx3 uint8 picture (a label row on top)."""
    from PIL import Image, ImageDraw

    n = min(len(images) for _, images in columns)
    cell = size + pad
    height, width = LABEL_HEIGHT + n * cell + pad, len(columns) * cell + pad
    canvas = np.full((height, width, 3), 255, np.uint8)
    for c, (_, images) in enumerate(columns):
        tiles = (to_display(images[:n], size).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
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


class MetricsTable:
    """``metrics.tsv``: a ``step`` column and one column per loss, appended as training goes."""

    def __init__(self, path: str | Path, columns: Sequence[str]) -> None:
        self.path, self.columns = Path(path), ["step", *columns]

    def reset(self, keep_until: int = 0) -> None:
        """Keep the header and the rows of steps <= ``keep_until`` (0: an empty table).

        Rows from a killed run beyond its last checkpoint, and a torn last line, go.
        """
        rows = []
        if keep_until > 0 and self.path.exists():
            lines = self.path.read_text().splitlines()
            if lines and lines[0].split("\t") == self.columns:
                for line in lines[1:]:
                    fields = line.split("\t")
                    if len(fields) == len(self.columns) and fields[0].isdigit() and int(fields[0]) <= keep_until:
                        rows.append(line)
        with atomic_path(self.path) as tmp:
            tmp.write_text("\n".join(["\t".join(self.columns), *rows]) + "\n")

    def append(self, step: int, values: Mapping[str, float]) -> None:
        cells = [str(step)] + [_fmt(values.get(c, math.nan)) for c in self.columns[1:]]
        with self.path.open("a") as f:
            f.write("\t".join(cells) + "\n")


def _fmt(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.6g}"
