"""What the shards stage reads: the kept clips of the upstream stages (their
``index.parquet`` tables, joined) and the speakers' attributes (``speakers.parquet``).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from components.data.shards.schema import FIXED_ATTRIBUTES
from components.data.shards.splits import UNKNOWN_SPEAKER
from components.errors import EarshotError

SEX_CODES = {"f": 0, "female": 0, "w": 0, "woman": 0, "m": 1, "male": 1, "man": 1}  # 0 female, 1 male


def load_speakers(raw_dir: Path) -> tuple[pd.DataFrame, list[pa.Field]]:
    """``raw/speakers.parquet`` as ``attr_*`` columns indexed by speaker_id, and their Arrow fields.

    ``attr_sex`` (int8: 0 female, 1 male) and ``attr_age`` (float32) always exist, null
    when unknown, so models can rely on them; every other column of speakers.parquet
    follows with its own type (floats as float32). Types come from speakers.parquet, not
    from the clips, so a speaker missing from it cannot change the schema.
    """
    path = raw_dir / "speakers.parquet"
    table = pd.read_parquet(path) if path.exists() else pd.DataFrame({"speaker_id": []})
    if "speaker_id" not in table.columns:
        raise EarshotError(f"{path}: no speaker_id column")
    table = table.drop_duplicates("speaker_id").set_index("speaker_id")
    out = pd.DataFrame(index=table.index.astype(str))
    types = dict(FIXED_ATTRIBUTES)
    for name in table.columns:
        col = table[name]
        if name == "sex":
            col = col.map(functools.partial(_sex_code, path))
        elif name not in types:
            typ = pa.Array.from_pandas(col).type
            types[name] = (pa.float32() if pa.types.is_floating(typ) else
                           pa.string() if pa.types.is_null(typ) or pa.types.is_large_string(typ) else typ)
        out[f"attr_{name}"] = col.to_numpy()
    fields = [pa.field(f"attr_{name}", typ, nullable=True) for name, typ in types.items()]
    for f in fields:
        if f.name not in out.columns:
            out[f.name] = None
    return out, fields


def _sex_code(path: Path, value: Any) -> float:
    """0 female, 1 male, NaN unknown, from the codes a corpus may use (F/M, female/male, 0/1)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return np.nan
    if isinstance(value, str):
        code = SEX_CODES.get(value.strip().lower())
        if code is None:
            raise EarshotError(f"{path}: sex: unknown value {value!r} (expected one of {sorted(SEX_CODES)} or 0/1)")
        return float(code)
    if value in (0, 1):
        return float(value)
    raise EarshotError(f"{path}: sex: unknown value {value!r} (expected 0 female / 1 male)")


def load_clips(raw_dir: Path, faces_dir: Path, audio_dir: Path) -> tuple[pd.DataFrame, list[pa.Field]]:
    """The clips kept by every upstream stage, one row each, with their speaker's attributes
    (and the attributes' Arrow fields, see :func:`load_speakers`).

    Ids come from the raw index (the source of truth for names), media paths and frame
    counts from the faces index, alignment and speech figures from the audio index.
    """
    raw = _read_index(raw_dir, "download", ["key", "speaker_id", "video_id", "clip_id"])
    faces = _read_index(faces_dir, "faces", ["key", "crop_path", "track_path", "n_frames", "fps"])
    audio = _read_index(audio_dir, "audio", ["key", "wav_path", "offset_frames", "speech_ratio"])
    clips = raw.merge(faces, on="key", how="inner").merge(audio, on="key", how="inner")
    for col in ("speaker_id", "video_id", "clip_id"):
        clips[col] = clips[col].astype(str)
    clips["speaker_id"] = clips["speaker_id"].replace("", UNKNOWN_SPEAKER)
    speakers, fields = load_speakers(raw_dir)
    clips = clips.merge(speakers, left_on="speaker_id", right_index=True, how="left")
    return clips.sort_values("key", ignore_index=True), fields


def _read_index(folder: Path, stage: str, columns: list[str]) -> pd.DataFrame:
    path = folder / "index.parquet"
    if not path.exists():
        raise EarshotError(f"{path}: not found (run the {stage} stage first)")
    if pq.read_metadata(path).num_rows == 0:  # the stage kept nothing: its table may have no columns
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    missing = [c for c in columns if c not in pq.read_schema(path).names]
    if missing:
        raise EarshotError(f"{path}: missing columns {missing} (see the data layout contract)")
    return pd.read_parquet(path, columns=columns)
