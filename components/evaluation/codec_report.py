"""What ``evaluate_codec`` writes from the measured points (:mod:`.codec_rd`): metrics, curves, figures.

* ``metrics.json`` (flat, per split): earshot's default point (``<split>.bpp``,
  ``<split>.bpp_audio``, ``<split>.stlpips``, ``<split>.psnr``, ``<split>.ssim``,
  ``<split>.lse_c``, each with its speaker-bootstrap ``_lo`` / ``_hi``; ``<split>.fid``,
  ``<split>.kid``), the decoder's ceiling (``<split>.ceiling.<metric>``), the default
  point's mean bytes per payload (``<split>.bytes.<payload>``), and against each baseline
  ``b`` (h264, h265, av1): ``<split>.bpp_ratio.<b>``, the bits the baseline's front needs
  for earshot's ST-LPIPS over earshot's bits, with ``_lo`` / ``_hi`` where the bootstrap
  defines them; where earshot's quality is outside the baseline's range there is no ratio
  at equal quality, and ``<split>.bpp_ratio_at_most.<b>`` (earshot worse than the
  baseline's cheapest point) or ``_at_least`` says what there is; the same at equal PSNR
  (``bpp_ratio_psnr``), with the photo left out of earshot's bits (``bpp_ratio_stream``: a long call,
  where the one photo's share tends to 0), and ``<split>.bd_rate.<b>`` (earshot's front against the baseline's,
  ST-LPIPS, %) where the curves overlap enough.
* ``curves.csv``: one row per point and split (family, name, bpp, bpp_audio, every quality
  metric, FID, KID) for ``dvc plots``; ``results.md``; ``rd_<split>_stlpips.png`` and
  ``rd_<split>_psnr.png``; ``grid_<split>.png`` (the first clip's middle frame at each
  family's point nearest earshot's rate).
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from components.config import CodecParams, EvaluateCodecParams
from components.evaluation import fid as fid_lib
from components.evaluation import rd
from components.evaluation.codec_rd import (
    CEILING,
    EARSHOT,
    PAYLOADS,
    SPLITS,
    Baseline,
    Scoring,
    SplitMeasures,
    inception_of,
    measure_split,
)
from components.evaluation.stats import Estimate, put_estimate, speaker_bootstrap, with_interval
from components.figures.images import nearest_up

log = logging.getLogger(__name__)

QUALITY = ("stlpips", "psnr", "ssim", "lse_c")
SPLIT_NAMES = {"seen": "test_seen: new videos of training speakers", "unseen": "test_unseen: speakers never trained on"}


def point_values(found: SplitMeasures) -> list[rd.PointValues]:
    """Every coded point (not the ceiling) as :class:`~components.evaluation.rd.PointValues`."""
    return [rd.PointValues(found.family[name], name, np.asarray(v["bpp"]),
                           {m: np.asarray(v[m]) for m in (*QUALITY, "bpp_audio")})
            for name, v in found.values.items() if name != CEILING]


def set_metrics(found: SplitMeasures, inception: fid_lib.FIDInception, cfg: EvaluateCodecParams) -> dict[str, dict[str, float]]:
    """FID and KID of every point's scored frames against the true ones, by point."""
    features = inception_of(found.fid_frames, inception)
    truth = features.pop("truth")
    size = min(cfg.kid_subset_size, len(truth))
    return {point: {"fid": fid_lib.fid(f, truth), "kid": fid_lib.kid(f, truth, cfg.kid_subsets, size, cfg.seed)[0]}
            for point, f in features.items()}


def ratio_metrics(key: str, family: str, points: Sequence[rd.PointValues], speakers: np.ndarray, point: str,
                  metric: str, cfg: EvaluateCodecParams) -> dict[str, float]:
    """``<key>.<family>``: the bpp ratio at equal ``metric`` with its interval; where ``point``'s quality
    is outside the baseline's range, ``<key>_at_most.<family>`` or ``<key>_at_least.<family>`` instead."""
    found = rd.ratio_interval(points, speakers, family, point, metric, cfg.bootstrap_samples, cfg.seed)
    out: dict[str, float] = {}
    if math.isfinite(found.mean):
        put_estimate(out, f"{key}.{family}", found)
        return out
    lower = rd.LOWER_IS_BETTER[metric]
    bpp, quality = rd.curve([p for p in points if p.name == point], EARSHOT, metric)[0]
    kind, bound = rd.ratio_bound(rd.front(rd.curve(points, family, metric), lower), bpp, quality, lower)
    return {f"{key}_{kind}.{family}": round(bound, 6)}


def summarize(split: str, found: SplitMeasures, cfg: EvaluateCodecParams, sets: Mapping[str, Mapping[str, float]],
              baselines: Iterable[str]) -> dict[str, float]:
    """The split's flat metrics (the module docstring)."""
    speakers = np.asarray(found.speakers)
    default = f"{EARSHOT} {cfg.default_point}"
    out: dict[str, float] = {f"{split}.n_clips": len(found.keys), f"{split}.n_speakers": len(set(found.speakers))}

    def estimate(values: Sequence[float]) -> Estimate | None:
        return speaker_bootstrap(np.asarray(values, np.float64), speakers, cfg.bootstrap_samples, cfg.seed)

    for metric in ("bpp", "bpp_audio", "bpp_stream", *QUALITY):
        put_estimate(out, f"{split}.{metric}", estimate(found.values[default][metric]))
    for metric in QUALITY:
        put_estimate(out, f"{split}.ceiling.{metric}", estimate(found.values[CEILING][metric]))
    for metric in ("fid", "kid"):
        out[f"{split}.{metric}"] = round(sets[default][metric], 6)
        out[f"{split}.ceiling.{metric}"] = round(sets[CEILING][metric], 6)
    for part in PAYLOADS:
        out[f"{split}.bytes.{part}"] = round(float(np.mean(found.payload_bytes[cfg.default_point][part])), 1)
    points = point_values(found)
    stream = rd.PointValues(EARSHOT, f"{default} (stream)", np.asarray(found.values[default]["bpp_stream"]),
                            {"stlpips": np.asarray(found.values[default]["stlpips"])})
    for family in baselines:
        baseline = [p for p in points if p.family == family]
        for key, metric, point in (("bpp_ratio", "stlpips", default), ("bpp_ratio_psnr", "psnr", default),
                                   ("bpp_ratio_stream", "stlpips", stream.name)):
            chosen = [*baseline, next(p for p in [*points, stream] if p.name == point)]
            out |= ratio_metrics(f"{split}.{key}", family, chosen, speakers, point, metric, cfg)
        lower = rd.LOWER_IS_BETTER["stlpips"]
        bd = rd.bd_rate(rd.front(rd.curve(points, family, "stlpips"), lower),
                        rd.front(rd.curve(points, EARSHOT, "stlpips"), lower), lower)
        if math.isfinite(bd):
            out[f"{split}.bd_rate.{family}"] = round(bd, 3)
    return out


def split_rows(split: str, found: SplitMeasures, sets: Mapping[str, Mapping[str, float]]) -> list[dict]:
    """The split's rows of ``curves.csv``: every point with its FID and KID, then the ceiling."""
    rows = rd.curve_rows(point_values(found), split)
    ceiling = {"split": split, "family": CEILING, "name": CEILING, "bpp": float("nan"),
               **{m: float(np.nanmean(found.values[CEILING][m])) for m in QUALITY}, "bpp_audio": float("nan")}
    for row in [*rows, ceiling]:
        row |= {k: sets[row["name"]][k] for k in ("fid", "kid")}
    return [*rows, ceiling]


def write_curves(path: Path, rows: Sequence[Mapping[str, object]]) -> None:
    """``curves.csv`` (rounded; empty cells for values that do not apply)."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if isinstance(v, float) and not math.isfinite(v) else
                             round(v, 6) if isinstance(v, float) else v) for k, v in row.items()})
    from components.io import write_bytes_atomic

    write_bytes_atomic(path, buffer.getvalue().encode())


def plot_split(out_dir: Path, split: str, found: SplitMeasures, baselines: Sequence[str], default: str) -> list[Path]:
    """The split's rate-distortion charts: each baseline's front, earshot's points, the default starred."""
    from components.figures.plots import rd_plot

    points = point_values(found)
    paths = []
    for metric in ("stlpips", "psnr"):
        lower = rd.LOWER_IS_BETTER[metric]
        curves = {family: rd.front(rd.curve(points, family, metric), lower) for family in baselines}
        curves[EARSHOT] = rd.curve(points, EARSHOT, metric)
        star = rd.curve([p for p in points if p.name == f"{EARSHOT} {default}"], EARSHOT, metric)[0]
        paths.append(rd_plot(out_dir / f"rd_{split}_{metric}.png", curves, metric=metric, lower_is_better=lower,
                             title=f"{split}: {len(found.keys)} clips, ceiling {metric} "
                                   f"{np.nanmean(found.values[CEILING][metric]):.3f}", highlight=star))
    return paths


def save_grid(out_dir: Path, split: str, found: SplitMeasures, baselines: Sequence[str], default: str) -> Path:
    """The first clip's middle frame: 8x8 sent, earshot, the ceiling, each baseline at the point
    nearest earshot's bits on that clip, the truth."""
    from components.figures.grids import save_grid as write_grid

    target = found.values[f"{EARSHOT} {default}"]["bpp"][0]
    columns = [("8x8 sent", nearest_up(found.grid["lr"][None], 128)),
               (f"earshot {1e3 * target:.1f}m", found.grid[f"{EARSHOT} {default}"][None]),
               ("ceiling", found.grid[CEILING][None])]
    for family in baselines:
        names = [n for n, f in found.family.items() if f == family]
        nearest = min(names, key=lambda n: abs(found.values[n]["bpp"][0] - target))
        columns.append((f"{nearest.split(' crf')[0]} {1e3 * found.values[nearest]['bpp'][0]:.1f}m",
                        found.grid[nearest][None]))
    columns.append(("truth", found.grid["truth"][None]))
    columns = [(title, torch.nn.functional.interpolate(img, size=(128, 128), mode="area")) for title, img in columns]
    return write_grid(out_dir / f"grid_{split}.png", columns, 128,
                      title=f"{split}: {found.keys[0]}, each at the point nearest earshot's rate (m: millibits per pixel)")


def results_markdown(metrics: Mapping[str, float], rows: Sequence[Mapping[str, object]], splits: Sequence[str],
                     baselines: Sequence[str], notes: Iterable[str]) -> str:
    """``results.md``: the headline per split, the payloads, every point's values."""
    lines = ["# The talking-face codec: rate-distortion against H.264, H.265 and AV1", ""]
    for split in splits:
        lines.append(f"- **{split}** ({SPLIT_NAMES[split]}): {int(metrics[f'{split}.n_clips'])} clips of "
                     f"{int(metrics[f'{split}.n_speakers'])} speakers")
    lines += ["", "## At earshot's default operating point", "",
              "bpp: video bits / (256 x 256 x frames); the ratio: the bits a baseline's front (all its rates and sides) "
              "needs for earshot's ST-LPIPS, over earshot's bits (> 1: earshot needs fewer), 95 % interval over "
              "speakers; outside the baseline's range only a bound exists.", "",
              "| split | bpp | ST-LPIPS ↓ | ceiling ST-LPIPS | " + " | ".join(f"vs {b}" for b in baselines)
              + " | " + " | ".join(f"BD-rate vs {b}" for b in baselines) + " |",
              "|---|---:|---:|---:|" + "---:|" * (2 * len(baselines))]
    for split in splits:
        cells = [with_interval(metrics, f"{split}.bpp", digits=5), with_interval(metrics, f"{split}.stlpips"),
                 with_interval(metrics, f"{split}.ceiling.stlpips")]
        cells += [_ratio_cell(metrics, split, b, "bpp_ratio") for b in baselines]
        cells += [f"{metrics[f'{split}.bd_rate.{b}']:+.1f} %" if f"{split}.bd_rate.{b}" in metrics else "no overlap"
                  for b in baselines]
        lines.append(f"| {split} | " + " | ".join(cells) + " |")
    lines += ["", "The photo sent once in a long call (earshot's bits without it, `bpp_stream`), at equal ST-LPIPS: "
              + "; ".join(f"{split} " + ", ".join(f"{b} {_ratio_cell(metrics, split, b, 'bpp_ratio_stream')}"
                                                   for b in baselines) for split in splits) + "."]
    lines += ["", "At equal PSNR: " + "; ".join(f"{split} " + ", ".join(
        f"{b} {_ratio_cell(metrics, split, b, 'bpp_ratio_psnr')}" for b in baselines) for split in splits) + ".",
              "", "## Where earshot's bits go (default point, mean bytes per clip)", "",
              "| split | header | photo | video | audio | photo share of the video bits |", "|---|---:|---:|---:|---:|---:|"]
    for split in splits:
        b = {p: metrics[f"{split}.bytes.{p}"] for p in PAYLOADS}
        share = b["photo"] / max(1.0, b["header"] + b["photo"] + b["video"])
        lines.append(f"| {split} | {b['header']:.0f} | {b['photo']:.0f} | {b['video']:.0f} | {b['audio']:.0f} | "
                     f"{100 * share:.0f} % |")
    lines += point_ratio_lines(rows, splits, baselines)
    lines += ["", "## Every point (means over the split's clips; curves.csv has them all)", "",
              "| split | family | point | bpp | bpp with audio | ST-LPIPS ↓ | PSNR ↑ | SSIM ↑ | LSE-C ↑ | FID ↓ | KID ↓ |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        cells = [_num(row.get(k), 5 if k.startswith("bpp") else 3) for k in
                 ("bpp", "bpp_audio", "stlpips", "psnr", "ssim", "lse_c", "fid", "kid")]
        lines.append(f"| {row['split']} | {row['family']} | {row['name']} | " + " | ".join(cells) + " |")
    lines += ["", "## Notes", ""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def point_ratio_lines(rows: Sequence[Mapping[str, object]], splits: Sequence[str], baselines: Sequence[str]) -> list[str]:
    """The table of every earshot operating point's bpp ratio against each baseline's front at equal
    ST-LPIPS (from the points' means: no interval), the bound where its quality is outside the front."""
    lower = rd.LOWER_IS_BETTER["stlpips"]
    lines = ["", "## Each operating point against each baseline (bpp ratio at equal ST-LPIPS, from the means)", "",
             "| split | point | bpp | ST-LPIPS ↓ | " + " | ".join(f"vs {b}" for b in baselines) + " |",
             "|---|---|---:|---:|" + "---:|" * len(baselines)]
    for split in splits:
        mine = [r for r in rows if r["split"] == split]
        fronts = {b: rd.front([(float(r["bpp"]), float(r["stlpips"])) for r in mine if r["family"] == b], lower)
                  for b in baselines}
        for row in sorted((r for r in mine if r["family"] == EARSHOT), key=lambda r: float(r["bpp"])):
            bpp, quality = float(row["bpp"]), float(row["stlpips"])
            cells = []
            for b in baselines:
                kind, value = rd.ratio_bound(fronts[b], bpp, quality, lower)
                cells.append(f"{value:.2f}x" if kind == "equal" else f"{'≤' if kind == 'at_most' else '≥'} {value:.2f}x")
            lines.append(f"| {split} | {row['name']} | {bpp:.5f} | {quality:.3f} | " + " | ".join(cells) + " |")
    return lines


def _num(value: object, digits: int) -> str:
    return "" if not isinstance(value, (int, float)) or not math.isfinite(value) else f"{value:.{digits}f}"


def _ratio_cell(metrics: Mapping[str, float], split: str, family: str, key: str) -> str:
    if f"{split}.{key}.{family}" in metrics:
        return with_interval(metrics, f"{split}.{key}.{family}") + "x"
    for kind, words in (("at_most", "≤"), ("at_least", "≥")):
        if f"{split}.{key}_{kind}.{family}" in metrics:
            return f"{words} {metrics[f'{split}.{key}_{kind}.{family}']:.2f}x (outside its range)"
    return "n/a"


def evaluate(scoring: Scoring, inception: fid_lib.FIDInception, shards: str | Path, out_dir: str | Path,
             points: Mapping[str, CodecParams], baselines: Sequence[Baseline], *, fps: int, model_id: bytes,
             num_workers: int = 0, notes: Iterable[str] = (), progress: bool = False) -> dict[str, float]:
    """Measure both splits and write every output (the module docstring); returns the metrics."""
    from components.figures import plots
    from components.io import write_bytes_atomic, write_json_atomic

    cfg, out_dir = scoring.cfg, Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    families = list(dict.fromkeys(b.family for b in baselines))
    metrics: dict[str, float] = {}
    rows: list[dict] = []
    done = []
    for split, shard_split in SPLITS.items():
        found = measure_split(scoring, shards, shard_split, points, list(baselines), fps=fps, model_id=model_id,
                              num_workers=num_workers, progress=progress)
        if len(set(found.speakers)) < 2:
            log.warning("%s (%s): %d clips: too few speakers to evaluate", split, shard_split, len(found.keys))
            plots.message_figure(f"too few clips in the {shard_split} split", out_dir / f"grid_{split}.png")
            continue
        sets = set_metrics(found, inception, cfg)
        metrics |= summarize(split, found, cfg, sets, families)
        rows += split_rows(split, found, sets)
        plot_split(out_dir, split, found, families, cfg.default_point)
        save_grid(out_dir, split, found, families, cfg.default_point)
        done.append(split)
    write_json_atomic(out_dir / "metrics.json", metrics)
    write_curves(out_dir / "curves.csv", rows)
    write_bytes_atomic(out_dir / "results.md", results_markdown(metrics, rows, done, families, notes).encode())
    return metrics
