"""The data report: what every data stage kept, rejected and why, with pictures.

Reads only the stages' own outputs (``summary.json``, ``index.parquet``,
``quarantine.parquet``, shards), so it can be rebuilt at any time and shows exactly
what DVC tracked. Produces ``report.md``, ``metrics.json`` (for ``dvc metrics show``),
``contact_sheet.png`` (face crops from the shards) and ``sync.png`` (mouth motion vs
audio energy for a few clips, and the estimated audio-video offsets).
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from components.errors import EarshotError
from components.io import write_json_atomic

log = logging.getLogger(__name__)

STAGE_DIRS = {"download": "raw", "faces": "faces", "audio": "audio", "shards": "shards"}


def _read(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.exists() else pd.DataFrame()


def stage_counts(data_dir: Path) -> pd.DataFrame:
    """One row per stage: kept, rejected, resumed, seconds (from each summary.json)."""
    rows = []
    for stage, folder in STAGE_DIRS.items():
        path = data_dir / folder / "summary.json"
        if path.exists():
            s = json.loads(path.read_text())
            rows.append({"stage": stage, "kept": s.get("kept", 0), "rejected": s.get("rejected", 0),
                         "resumed": s.get("resumed", 0), "seconds": s.get("seconds", float("nan"))})
    return pd.DataFrame(rows, columns=["stage", "kept", "rejected", "resumed", "seconds"])


def rejections(data_dir: Path) -> pd.DataFrame:
    """Every quarantined item of every stage (stage, key, source, reason, detail)."""
    frames = [_read(data_dir / folder / "quarantine.parquet") for folder in STAGE_DIRS.values()]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=["stage", "key", "source", "reason", "detail"])
    return pd.concat(frames, ignore_index=True)


def durations(data_dir: Path) -> dict[str, float]:
    """Seconds of video at the input and after each stage."""
    out: dict[str, float] = {}
    raw = _read(data_dir / "raw" / "index.parquet")
    if "duration_s" in raw:
        out["raw_s"] = float(raw["duration_s"].sum())
    faces = _read(data_dir / "faces" / "index.parquet")
    if "duration_s" in faces:
        out["faces_s"] = float(faces["duration_s"].sum())
    audio = _read(data_dir / "audio" / "index.parquet")
    if len(audio) and len(faces):
        kept = faces[faces["key"].isin(audio["key"])]
        out["audio_s"] = float(kept["duration_s"].sum())
    if "speech_s" in audio:
        out["speech_s"] = float(audio["speech_s"].sum())
    shards = data_dir / "shards" / "index.json"
    if shards.exists():
        splits = json.loads(shards.read_text()).get("splits", {})
        out["shards_s"] = float(sum(s.get("seconds", 0) for s in splits.values()))
    return out


def contact_sheet(shards_dir: Path, path: Path, n: int = 24, columns: int = 8, tile: int = 128) -> int:
    """Middle frame of up to ``n`` clips (one per speaker first), labelled; returns the count."""
    import pyarrow.parquet as pq
    from PIL import Image, ImageDraw

    files = sorted(shards_dir.glob("*/shard-*.parquet"))
    picked: list[tuple[str, bytes]] = []
    seen: set[str] = set()
    for f in files:
        table = pq.read_table(f, columns=["key", "speaker_id", "frames"])
        for row in table.to_pylist():
            if row["speaker_id"] in seen and len(files) > 1:
                continue
            seen.add(row["speaker_id"])
            picked.append((row["key"], row["frames"][len(row["frames"]) // 2]))
            if len(picked) >= n:
                break
        if len(picked) >= n:
            break
    if not picked:
        return 0
    rows = (len(picked) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * tile, rows * (tile + 14)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (label, jpeg) in enumerate(picked):
        x, y = (i % columns) * tile, (i // columns) * (tile + 14)
        sheet.paste(Image.open(io.BytesIO(jpeg)).convert("RGB").resize((tile, tile)), (x, y))
        draw.text((x + 2, y + tile + 1), label[-24:], fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return len(picked)


def sync_plot(data_dir: Path, path: Path, n_clips: int = 3, fps: int = 25) -> bool:
    """Mouth motion vs audio energy for a few aligned clips, and the offsets histogram."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from components.data.audio import audio_envelope, load_audio, mouth_signal

    audio = _read(data_dir / "audio" / "index.parquet")
    faces = _read(data_dir / "faces" / "index.parquet")
    if not len(audio) or not len(faces):
        return False
    clips = audio.merge(faces[["key", "crop_path", "track_path"]], on="key").head(n_clips)
    fig, axes = plt.subplots(len(clips) + 1, 1, figsize=(9, 2.2 * (len(clips) + 1)), squeeze=False)
    for ax, clip in zip(axes[:, 0], clips.itertuples()):
        mouth = mouth_signal(data_dir / "faces" / clip.crop_path, data_dir / "faces" / clip.track_path)
        env = audio_envelope(load_audio(data_dir / "audio" / clip.wav_path), fps=fps)[: len(mouth)]
        t = np.arange(len(env)) / fps
        z = lambda x: (x - x.mean()) / (x.std() + 1e-9)  # noqa: E731
        ax.plot(t, z(mouth[: len(env)]), label="mouth motion")
        ax.plot(t, z(env), label="audio energy", alpha=0.8)
        ax.set_title(f"{clip.key} (shifted {clip.offset_frames:+d} frames)", fontsize=9)
        ax.legend(loc="upper right", fontsize=7)
    ax = axes[-1, 0]
    ax.hist(audio["offset_frames"], bins=np.arange(audio["offset_frames"].min() - 0.5,
                                                   audio["offset_frames"].max() + 1.5), color="gray")
    ax.set_xlabel("estimated audio-video offset (frames)")
    ax.set_ylabel("clips")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def _nothing_to_show(path: Path, text: str) -> None:
    """A small picture saying why there is no picture (a run that kept no clip)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (480, 60), "white")
    ImageDraw.Draw(img).text((10, 22), text, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def _markdown_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "_none_\n"
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _nothing_kept(counts: pd.DataFrame) -> str:
    """The report's first line when no item came through every stage (else nothing)."""
    last = counts[counts["stage"] == "shards"]
    if counts.empty or (len(last) and int(last["kept"].iloc[0]) > 0):  # no stage ran yet, or clips came through
        return ""
    first = counts[counts["stage"] == "download"]
    inputs = int(first["kept"].iloc[0] + first["rejected"].iloc[0]) if len(first) else 0
    if inputs == 0:
        return "\n**No clip was kept: the input had no items.** Every stage ran on zero items.\n\n"
    return (f"\n**No clip was kept: all {inputs} input items were rejected** "
            "(see the rejections below). Every later stage ran on zero items.\n\n")


def build_report(data_dir: str | Path, out_dir: str | Path, *, contact_sheet_clips: int = 24,
                 fps: int = 25) -> dict[str, Any]:
    """Write report.md, metrics.json, contact_sheet.png, sync.png; return the metrics."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = stage_counts(data_dir)
    rejected = rejections(data_dir)
    reasons = (rejected.groupby(["stage", "reason"]).size().rename("items").reset_index()
               if len(rejected) else pd.DataFrame(columns=["stage", "reason", "items"]))
    seconds = durations(data_dir)
    n_sheet = contact_sheet(data_dir / "shards", out_dir / "contact_sheet.png", n=contact_sheet_clips)
    if not n_sheet:
        _nothing_to_show(out_dir / "contact_sheet.png", "no clip reached the shards: see the rejections")
    has_sync = sync_plot(data_dir, out_dir / "sync.png", fps=fps)
    if not has_sync:
        _nothing_to_show(out_dir / "sync.png", "no clip passed the audio stage: see the rejections")

    metrics: dict[str, Any] = {f"{r.stage}.{k}": int(getattr(r, k)) for r in counts.itertuples()
                               for k in ("kept", "rejected")}
    metrics.update({f"duration.{k}": round(v, 2) for k, v in seconds.items()})
    vad = data_dir / "audio" / "vad_eval.json"
    if vad.exists():
        metrics.update({f"vad.{k}": v for k, v in json.loads(vad.read_text()).items()
                        if isinstance(v, (int, float))})
    write_json_atomic(out_dir / "metrics.json", metrics)

    md = ["# Data report\n", _nothing_kept(counts), "## Items per stage\n", _markdown_table(counts),
          "\n## Rejections by reason\n", _markdown_table(reasons),
          "\n## Duration kept (seconds of video)\n",
          _markdown_table(pd.DataFrame([{k: round(v, 1) for k, v in seconds.items()}])) if seconds else "_none_\n"]
    if n_sheet:
        md.append(f"\n## Face crops ({n_sheet} clips)\n\n![contact sheet](contact_sheet.png)\n")
    if has_sync:
        md.append("\n## Audio/mouth sync\n\n![sync](sync.png)\n")
    if len(rejected):
        md += ["\n## Quarantined items\n", _markdown_table(rejected[["stage", "key", "reason", "detail"]].head(200))]
    (out_dir / "report.md").write_text("".join(md))
    return metrics


def crop_track_video(data_dir: str | Path, key: str, out: str | Path) -> Path:
    """Write clip ``key``'s face-crop track (``faces/<key>.mkv``, Motion-JPEG) as an H.264
    MP4 at ``out``, with the aligned ``audio/<key>.wav`` muxed in when it exists: the crops
    as a browser or any player shows them (``earshot data crops KEY``)."""
    import soundfile as sf

    from components.media.jpeg_video import iter_crop_frames
    from components.media.write import write_video

    data_dir = Path(data_dir)
    index = data_dir / "faces" / "index.parquet"
    if not index.exists():
        raise EarshotError(f"{index} not found: run the faces stage first")
    rows = pd.read_parquet(index, columns=["key", "crop_path", "fps"]).set_index("key")
    if key not in rows.index:
        raise EarshotError(f"{key!r} is not a clip the faces stage kept (see {index}; e.g. {rows.index[0]!r})"
                           if len(rows) else f"{key!r}: the faces stage kept no clip ({index})")
    row = rows.loc[key]
    wav = data_dir / "audio" / f"{key}.wav"
    audio, sample_rate = sf.read(str(wav), dtype="float32") if wav.exists() else (None, 16000)
    return write_video(out, iter_crop_frames(data_dir / "faces" / row.crop_path), int(row.fps), audio, sample_rate)
