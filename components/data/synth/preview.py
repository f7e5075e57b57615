"""A contact sheet of a generated corpus: one mouth-open / mouth-closed pair per speaker.

The frames are decoded from the written MP4s (not re-rendered), so the sheet shows
exactly what the pipeline will read. ``clips.parquet``'s ``mouth_open`` ground truth
picks, per clip, the frame with the widest and with the most closed mouth.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pandas as pd
from PIL import Image

from components.io import atomic_path


def read_frames(path: str | Path, indices: list[int]) -> dict[int, np.ndarray]:
    """Decode the frames at ``indices`` (0-based) of a video as RGB arrays."""
    wanted, frames = set(indices), {}
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                frames[i] = frame.to_ndarray(format="rgb24")
            if len(frames) == len(wanted):
                break
    return frames


def contact_sheet(out_dir: str | Path, path: str | Path, n: int = 8, *, columns: int = 4, thumb: int = 128) -> Path:
    """Save a PNG grid of ``n`` speakers (evenly spread over the corpus), two frames each.

    Each cell is the speaker's first clip at its most open and its most closed mouth,
    side by side; ``columns`` cells per row, frames scaled to ``thumb`` px.
    """
    out_dir, path = Path(out_dir), Path(path)
    clips = pd.read_parquet(out_dir / "clips.parquet")
    firsts = clips.groupby("speaker_id", sort=True).head(1).reset_index(drop=True)
    picks = firsts.iloc[np.unique(np.linspace(0, len(firsts) - 1, min(n, len(firsts))).round().astype(int))]
    cells = []
    for clip in picks.itertuples():
        mouth = np.asarray(clip.mouth_open)
        opened, closed = int(mouth.argmax()), int(mouth.argmin())
        frames = read_frames(out_dir / clip.relpath, [opened, closed])
        pair = [Image.fromarray(frames[i]).resize((thumb, thumb), Image.LANCZOS) for i in (opened, closed)]
        cells.append(np.hstack([np.asarray(im) for im in pair]))
    rows = [cells[i: i + columns] for i in range(0, len(cells), columns)]
    blank = np.zeros_like(cells[0])
    grid = np.vstack([np.hstack(row + [blank] * (columns - len(row))) for row in rows])
    with atomic_path(path) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG", optimize=True)
    return path
