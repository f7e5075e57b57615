"""What the video paper's evaluation writes: ``results.md`` (table, claims), grids, side-by-side videos.

:func:`results_table` renders the flat metrics of :mod:`.video_sr` (each value with its
95 % interval over speakers) and the claims of the issue, each with the estimate its
verdict rests on; :func:`save_frame_grid` draws one row per test clip (8x8 | bicubic |
stage 1 | no audio | ours | other audio | photo | truth); :func:`write_side_by_side`
encodes a test clip's comparison video (the CLI's layout, :func:`~components.inference.video_sr.comparison`,
plus the truth) with the clip's audio.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from components.evaluation import HIGHER_IS_BETTER
from components.evaluation.stats import claim_verdict, with_interval
from components.figures.grids import save_grid
from components.figures.images import nearest_up, to_hwc
from components.inference.video_sr import comparison
from components.media.write import write_video

FID_CLAIM = 8.0  # the paper: 8x better FID than super-resolution baselines
TABLE_METRICS = ("psnr", "ssim", "stlpips", "fid", "kid", "lse_c", "lse_d", "id_dist_dlib", "lmd",
                 "lmd_mouth")
METHOD_NAMES = {"bicubic": "bicubic 8x8 -> 256", "stage1": "stage 1 alone (enlarged)",
                "no_audio": "stage 2 on the bicubic video (no audio)", "full": "full model (ours)",
                "other_audio": "full, another clip's audio", "truth": "*ground truth*"}
SPLITS = {"seen": "test_seen: new videos of training speakers", "unseen": "test_unseen: speakers never trained on"}


def verdict(metrics: Mapping[str, float], key: str, *, higher: bool, threshold: float = 0.0) -> str:
    """Whether the interval of ``key`` lies wholly on the good side of ``threshold``."""
    if f"{key}_lo" not in metrics:
        return "not measured"
    return claim_verdict(metrics[f"{key}_lo"], metrics[f"{key}_hi"], higher, threshold)


def claims(metrics: Mapping[str, float], splits: Iterable[str]) -> list[str]:
    """The issue's claims as table rows: split | claim | estimate [95 %] | holds?"""
    rows = ["| split | claim | estimate [95 % interval] | holds? |", "|---|---|---:|---|"]
    checks = [
        ("fid_ratio.bicubic_over_full", f"FID: bicubic / full >= {FID_CLAIM:g} (the paper's factor)", True, FID_CLAIM),
        ("full_minus_stage1.fid", "FID: full better than stage 1 alone (difference < 0)", False, 0.0),
        ("full_minus_no_audio.fid", "FID: full better than no audio (difference < 0)", False, 0.0),
        ("truth_minus_bicubic.lse_c", "instrument: the expert rates the true lips' sync above bicubic's (truth - "
         "bicubic LSE-C > 0; the LSE claims below mean something only if this holds)", True, 0.0),
        ("full_vs_truth.lse_c", "lips: LSE-C of full within 10 % of the truth's (full - 0.9 truth > 0)", True, 0.0),
        ("full_minus_no_audio.lse_c", "lips: LSE-C of full above no audio", True, 0.0),
        ("other_audio_follows.lse_c", "lips follow another clip's audio (its LSE-C minus the own audio's > 0)",
         True, 0.0),
        ("full_minus_stage1.id_dist_dlib", "identity: the photo brings it (dlib distance, full - stage 1 < 0)",
         False, 0.0),
    ]
    for split in splits:
        for key, text, higher, threshold in checks:
            full_key = f"{split}.{key}"
            if full_key in metrics:
                signed = threshold == 0.0
                rows.append(f"| {split} | {text} | {with_interval(metrics, full_key, signed=signed)} | "
                            f"{verdict(metrics, full_key, higher=higher, threshold=threshold)} |")
    return rows


def results_table(metrics: Mapping[str, float], splits: Sequence[str], notes: Iterable[str]) -> str:
    """``results.md``: rows split x method, columns the metrics (95 % intervals), then the claims."""
    arrows = {m: "↑" if HIGHER_IS_BETTER[m] else "↓" for m in TABLE_METRICS}
    shown = [m for m in TABLE_METRICS if any(k.endswith(f".{m}") for k in metrics)]
    lines = ["# Talking-face video upsampling (8x8 + audio + photo -> 256x256): evaluation", ""]
    for split in splits:
        lines.append(f"- **{split}** ({SPLITS[split]}): {int(metrics.get(f'{split}.n_clips', 0))} clips of "
                     f"{int(metrics.get(f'{split}.n_speakers', 0))} speakers, "
                     f"{int(metrics.get(f'{split}.n_scored_frames', 0))} scored frames")
    lines += ["", "Means with their 95 % interval [lo, hi] from a bootstrap over the split's speakers "
              "(FID and KID: recomputed on speaker resamples).", "",
              "| split | method | " + " | ".join(f"{m} {arrows[m]}" for m in shown) + " |",
              "|---|---|" + "---:|" * len(shown)]
    for split in splits:
        for method in ("truth", "bicubic", "stage1", "no_audio", "full", "other_audio"):
            if any(k.startswith(f"{split}.{method}.") for k in metrics):
                lines.append(f"| {split} | {METHOD_NAMES[method]} | " +
                             " | ".join(with_interval(metrics, f"{split}.{method}.{m}", missing="") for m in shown) + " |")
    lines += ["", "## Claims", "", "Paired over the same frames / clips / speaker resamples; a claim holds when "
              "its whole 95 % interval is on the paper's side.", ""]
    lines += claims(metrics, splits) + [""]
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def save_frame_grid(path: Path, rows: Sequence[Mapping[str, torch.Tensor]], labels: Sequence[str], title: str,
                    cell: int = 128) -> None:
    """One row per clip (a frame of its segment): the input, every method, the photo and the truth."""
    order = [("8x8 input", "lr"), ("bicubic", "bicubic"), ("stage 1", "stage1"), ("no audio", "no_audio"),
             ("ours", "full"), ("other audio", "other_audio"), ("photo", "photo"), ("truth", "truth")]
    columns = []
    for title_, key in order:
        if all(key in row for row in rows):
            images = torch.stack([row[key] for row in rows])
            columns.append((title_, nearest_up(images, cell) if key == "lr" else images))
    save_grid(path, columns, cell, title=title, row_labels=list(labels))


def write_side_by_side(path: Path, lr: torch.Tensor, coarse: torch.Tensor, ours: torch.Tensor, truth: torch.Tensor,
                       fps: float, audio: np.ndarray | None, sample_rate: int, batch: int = 16) -> Path:
    """The comparison video of a test clip, the CLI's layout plus the truth (8x8 | bicubic | stage 1 |
    ours | truth), with the clip's audio, H.264 + AAC."""
    def frames() -> Iterable[np.ndarray]:
        for lo in range(0, len(lr), batch):
            part = slice(lo, lo + batch)
            yield from to_hwc(comparison(lr[part], coarse[part], ours[part], truth[part]))

    return write_video(path, frames(), fps, audio=audio, sample_rate=sample_rate)
