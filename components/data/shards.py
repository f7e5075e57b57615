"""Stage ``shards``: join the kept clips of the upstream stages into training shards.

Every clip that survived ``faces`` and ``audio`` becomes one Parquet row holding all a
model needs: the face crop as one JPEG per frame, the aligned 16 kHz audio as FLAC,
the per-frame landmarks and the speaker's ground-truth attributes. Training then
streams these rows (:mod:`components.data.dataset`) instead of opening thousands of
small mp4/wav/npz files, and computes its inputs on the fly
(:mod:`components.data.features`).

Splits (open set, after Meishvili et al.): a fraction of *speakers* is held out
entirely (``test_unseen``); of the remaining speakers a fraction of *videos* is held out
(``test_seen``: new recordings of speakers seen in training); the rest is ``train``.
Each decision compares a hash of (seed, speaker[, video]) to the fraction, so adding
speakers never moves another speaker's clips between splits (new videos of a speaker
can only move that speaker's); in exchange the realised fractions match the targets
only on average, loosely on small corpora.

Speakers of flat folders are unknown (``speaker_id == "unknown"``): each video is then
its own pseudo-speaker ``unknown/<video_id>``. Two such videos may in truth show the
same person, so for these clips the open-set guarantee is only as good as the folder.

Layout: ``<out>/<split>/shard-00000.parquet`` + ``<out>/index.json`` (schema version,
per-split counts, per-shard rows/bytes/sha256). Shards are planned before any decoding
(rows are ordered by a seeded hash of their key, so every shard mixes speakers), each is
written to a temporary file and renamed, and a rerun skips a shard whose inputs and
bytes are unchanged: a killed run resumes and never leaves a partial shard.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import hashlib
import io
import json
import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from components.config import Params
from components.errors import EarshotError, Rejected
from components.io import atomic_path, file_identity, fingerprint, sha256_file, write_json_atomic
from components.orchestration.runner import Outcome, fanout

log = logging.getLogger(__name__)

STAGE = "shards"
SCHEMA_VERSION = 1
SPLITS = ("train", "test_seen", "test_unseen")
UNKNOWN_SPEAKER = "unknown"
INDEX = "index.json"
SIDECARS = ".shards"  # per-shard entries written after each shard: what a rerun can reuse

# Columns whose bytes are already compressed (JPEG, FLAC): stored PLAIN, uncompressed,
# without statistics, so a reader gets them with a single memcpy.
MEDIA_COLUMNS = ("frames", "audio")
BASE_FIELDS = [
    pa.field("key", pa.string(), nullable=False),
    pa.field("speaker_id", pa.string(), nullable=False),
    pa.field("video_id", pa.string(), nullable=False),
    pa.field("clip_id", pa.string(), nullable=False),
    pa.field("split", pa.string(), nullable=False),
    pa.field("fps", pa.int16(), nullable=False),
    pa.field("n_frames", pa.int32(), nullable=False),
    pa.field("height", pa.int16(), nullable=False),
    pa.field("width", pa.int16(), nullable=False),
    pa.field("frames", pa.list_(pa.binary()), nullable=False),
    pa.field("sample_rate", pa.int32(), nullable=False),
    pa.field("n_samples", pa.int32(), nullable=False),
    pa.field("audio", pa.binary(), nullable=False),
    pa.field("landmarks", pa.list_(pa.float32()), nullable=False),
    pa.field("offset_frames", pa.int16(), nullable=False),
    pa.field("speech_ratio", pa.float32(), nullable=False),
]
# Attributes every schema has (null when unknown), with fixed types; other columns of
# speakers.parquet follow as ``attr_<name>`` with their own (float32 for floats) type.
FIXED_ATTRIBUTES = {"sex": pa.int8(), "age": pa.float32()}
SEX_CODES = {"f": 0, "female": 0, "w": 0, "woman": 0, "m": 1, "male": 1, "man": 1}  # 0 female, 1 male


# --------------------------------------------------------------------------- splits


def unit_hash(seed: int, *parts: str) -> float:
    """A uniform number in [0, 1) determined by (seed, parts) alone."""
    digest = hashlib.sha256("\0".join([str(seed), *parts]).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_group(speaker_id: str, video_id: str) -> str:
    """The identity a clip is split by: its speaker, or its video when the speaker is unknown."""
    return f"{UNKNOWN_SPEAKER}/{video_id}" if speaker_id == UNKNOWN_SPEAKER else speaker_id


def assign_splits(clips: pd.DataFrame, *, unseen_fraction: float, seen_test_fraction: float,
                  seed: int) -> pd.Series:
    """Split name of every clip (columns key, speaker_id, video_id), as a Series on its index.

    A speaker goes to ``test_unseen`` when hash(seed, speaker) < ``unseen_fraction``.
    For every other speaker the held-out units are its videos when it has several (so
    ``test_seen`` clips come from recordings never seen in training), else its clips;
    a unit is held out when hash(seed, speaker, unit) < ``seen_test_fraction``, but the
    unit with the largest hash always stays in ``train`` so every seen speaker has
    training clips.
    """
    split = pd.Series("train", index=clips.index, dtype=object)
    groups = [split_group(s, v) for s, v in zip(clips["speaker_id"], clips["video_id"])]
    for group, rows in clips.groupby(pd.Series(groups, index=clips.index), sort=True):
        if unit_hash(seed, "unseen", group) < unseen_fraction:
            split[rows.index] = "test_unseen"
            continue
        by_video = rows["video_id"].nunique() > 1
        units = rows["video_id"] if by_video else rows["key"]
        score = {u: unit_hash(seed, "seen_test", group, u) for u in sorted(set(units))}
        keep = max(score, key=score.__getitem__)
        held = {u for u, h in score.items() if h < seen_test_fraction and u != keep}
        split[rows.index[units.isin(held).to_numpy()]] = "test_seen"
    return split


# --------------------------------------------------------------------------- inputs


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
    missing = [c for c in columns if c not in pq.read_schema(path).names]
    if missing:
        raise EarshotError(f"{path}: missing columns {missing} (see the data layout contract)")
    return pd.read_parquet(path, columns=columns)


def row_schema(attributes: list[pa.Field]) -> pa.Schema:
    return pa.schema([*BASE_FIELDS, *attributes], metadata={"earshot.schema_version": str(SCHEMA_VERSION)})


# --------------------------------------------------------------------------- encoding


def encode_clip(clip: dict[str, Any], *, faces_dir: str, audio_dir: str, jpeg_quality: int,
                sample_rate: int) -> dict[str, Any]:
    """The media columns of one clip's row: JPEG frames, FLAC audio, flat landmarks.

    Raises :class:`Rejected` when a file is missing (``unreadable``) or does not match
    the index (``corrupt``: undecodable, wrong frame count, wrong audio length or rate).
    """
    crop = Path(faces_dir) / clip["crop_path"]
    track = Path(faces_dir) / clip["track_path"]
    wav = Path(audio_dir) / clip["wav_path"]
    for path in (crop, track, wav):
        if not path.is_file():
            raise Rejected("unreadable", f"missing {path}")
    n, fps = int(clip["n_frames"]), int(clip["fps"])
    frames, (height, width) = _jpeg_frames(crop, jpeg_quality)
    if len(frames) != n:
        raise Rejected("corrupt", f"{crop}: {len(frames)} frames decoded, index says {n}")
    landmarks = _landmarks(track, n)
    audio = _audio(wav, n, fps, sample_rate)
    return {"frames": frames, "height": height, "width": width, "audio": _flac(audio, sample_rate),
            "n_samples": len(audio), "sample_rate": sample_rate, "landmarks": landmarks}


def _jpeg_frames(path: Path, quality: int) -> tuple[list[bytes], tuple[int, int]]:
    """Decode every frame of a crop video and re-encode each as a JPEG."""
    import av

    frames: list[bytes] = []
    size = (0, 0)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise Rejected("corrupt", f"{path}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                image = frame.to_image()
                size = (image.height, image.width)
                buf = io.BytesIO()
                image.save(buf, format="JPEG", quality=quality)
                frames.append(buf.getvalue())
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise Rejected("corrupt", f"{path}: {exc}") from None
    return frames, size


def _landmarks(path: Path, n: int) -> np.ndarray:
    try:
        with np.load(path) as track:
            lm = np.asarray(track["landmarks"], dtype=np.float32)
    except (OSError, ValueError, KeyError) as exc:
        raise Rejected("corrupt", f"{path}: {exc}") from None
    if lm.shape != (n, 5, 2):
        raise Rejected("corrupt", f"{path}: landmarks {lm.shape}, expected ({n}, 5, 2)")
    return lm.reshape(-1)


def _audio(path: Path, n_frames: int, fps: int, sample_rate: int) -> np.ndarray:
    """The aligned wav as mono float32, cut or padded to exactly n_frames / fps seconds.

    The audio stage writes that length; more than one video frame off means the wav and
    the crop do not belong together.
    """
    import soundfile as sf

    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise Rejected("corrupt", f"{path}: {exc}") from None
    if sr != sample_rate:
        raise Rejected("corrupt", f"{path}: {sr} Hz, the pipeline rate is {sample_rate} Hz")
    audio = audio.mean(axis=1)
    want = int(round(n_frames / fps * sample_rate))
    if abs(len(audio) - want) > sample_rate / fps:
        raise Rejected("corrupt", f"{path}: {len(audio) / sr:.3f} s of audio for {n_frames / fps:.3f} s of video")
    return np.pad(audio[:want], (0, max(0, want - len(audio))))


def _flac(audio: np.ndarray, sample_rate: int) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(audio, -1.0, 1.0), sample_rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def _encode_or_reject(clip: dict[str, Any], **kwargs: Any) -> tuple[str, dict[str, Any]]:
    """:func:`encode_clip` as data (crosses process boundaries): ("ok", row) or ("rejected", why)."""
    try:
        return "ok", encode_clip(clip, **kwargs)
    except Rejected as exc:
        return "rejected", {"reason": exc.reason, "detail": exc.detail}
    except Exception as exc:  # noqa: BLE001 - one bad clip must not stop the stage
        return "rejected", {"reason": "error", "detail": f"{type(exc).__name__}: {exc}"}


def _ordered_map(fn: Callable[[Any], Any], items: Iterable[Any], pool: cf.Executor | None,
                 ahead: int) -> Iterator[Any]:
    """``map(fn, items)`` in order, at most ``ahead`` results in flight (bounded memory)."""
    if pool is None:
        yield from map(fn, items)
        return
    pending: deque[cf.Future] = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


# --------------------------------------------------------------------------- writing


@dataclass
class ShardPlan:
    split: str
    number: int
    clips: list[dict[str, Any]] = field(default_factory=list)

    @property
    def path(self) -> str:
        return f"{self.split}/shard-{self.number:05d}.parquet"


def plan_shards(clips: pd.DataFrame, rows_per_shard: int, seed: int) -> list[ShardPlan]:
    """Cut each split into shards of ``rows_per_shard`` clips, in a seeded hash order of keys.

    The order mixes speakers inside every shard (a streaming shuffle buffer only mixes
    nearby rows) and depends on nothing but the key, so shards are reproducible.
    """
    plans = []
    for split in SPLITS:
        rows = clips[clips["split"] == split]
        order = sorted(rows.to_dict("records"), key=lambda r: unit_hash(seed, "order", r["key"]))
        for number, start in enumerate(range(0, len(order), rows_per_shard)):
            plans.append(ShardPlan(split, number, order[start:start + rows_per_shard]))
    return plans


def shard_fingerprint(plan: ShardPlan, schema: pa.Schema, faces_dir: Path, audio_dir: Path,
                      config: dict[str, Any]) -> str:
    """What a shard's bytes depend on: its rows, their input files, the schema and the params."""
    inputs = [({k: _scalar(v) for k, v in clip.items()},
               [file_identity(p) for p in (faces_dir / clip["crop_path"], faces_dir / clip["track_path"],
                                           audio_dir / clip["wav_path"]) if p.exists()])
              for clip in plan.clips]
    return fingerprint(SCHEMA_VERSION, schema.to_string(), config, inputs)


def _scalar(value: Any) -> Any:
    """A plain Python scalar, None for any missing value (None, NaN, pd.NA)."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    return value


def _cast(value: Any, typ: pa.DataType) -> Any:
    """``value`` as the Python type Arrow expects for ``typ`` (pandas joins turn ints into floats)."""
    value = _scalar(value)
    if value is None:
        return None
    if pa.types.is_integer(typ):
        return int(value)
    if pa.types.is_floating(typ):
        return float(value)
    if pa.types.is_boolean(typ):
        return bool(value)
    if pa.types.is_string(typ):
        return str(value)
    return value


def _row(clip: dict[str, Any], media: dict[str, Any], attributes: list[pa.Field]) -> dict[str, Any]:
    row = {k: clip[k] for k in ("key", "speaker_id", "video_id", "clip_id", "split", "n_frames", "fps",
                                "offset_frames", "speech_ratio")}
    row.update(media)
    for f in attributes:
        row[f.name] = _cast(clip.get(f.name), f.type)
    return row


def _leaves(name: str, typ: pa.DataType) -> list[str]:
    """Parquet column paths of a field (``frames`` -> ``frames.list.element``)."""
    if pa.types.is_list(typ) or pa.types.is_large_list(typ):
        return _leaves(f"{name}.list.element", typ.value_type)
    if pa.types.is_struct(typ):
        return [leaf for child in typ for leaf in _leaves(f"{name}.{child.name}", child.type)]
    return [name]


def _writer(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    """Media leaves PLAIN and uncompressed, without statistics; the rest zstd."""
    media = {leaf for name in MEDIA_COLUMNS for leaf in _leaves(name, schema.field(name).type)}
    leaves = [leaf for f in schema for leaf in _leaves(f.name, f.type)]
    return pq.ParquetWriter(
        path, schema,
        compression={leaf: "none" if leaf in media else "zstd" for leaf in leaves},
        use_dictionary=["speaker_id", "video_id", "split"],
        write_statistics=[leaf for leaf in leaves if leaf not in media and not leaf.startswith("landmarks")],
    )


def write_shards(params: Params, raw_dir: str | Path, faces_dir: str | Path, audio_dir: str | Path,
                 out_dir: str | Path, progress: bool = True) -> Outcome:
    """Build ``out_dir`` from the upstream stages; returns the per-clip outcome.

    Clips whose media fail to decode are quarantined (their shard just has fewer rows)
    and the run goes on. Encoding runs in ``common.workers`` processes; the writer
    keeps one row group in memory.
    """
    from rich.progress import track

    cfg = params.shards
    raw_dir, faces_dir, audio_dir, out_dir = map(Path, (raw_dir, faces_dir, audio_dir, out_dir))
    clips, attributes = load_clips(raw_dir, faces_dir, audio_dir)
    clips["split"] = assign_splits(clips, unseen_fraction=cfg.unseen_speaker_fraction,
                                   seen_test_fraction=cfg.seen_test_fraction, seed=cfg.seed)
    schema = row_schema(attributes)
    plans = plan_shards(clips, cfg.rows_per_shard, cfg.seed)
    config = {**cfg.model_dump(mode="json"), "sample_rate": params.common.sample_rate}
    _remove_stale(out_dir, {p.path for p in plans})

    outcome = Outcome(STAGE)
    entries: list[dict[str, Any]] = []
    todo: list[tuple[ShardPlan, str]] = []
    for plan in plans:
        fp = shard_fingerprint(plan, schema, faces_dir, audio_dir, config)
        done = _read_sidecar(out_dir, plan.path)
        if done is not None and done["fingerprint"] == fp and _intact(out_dir / plan.path, done):
            entries.append(done)
            outcome.skipped += len(plan.clips)
        else:
            todo.append((plan, fp))

    encode = functools.partial(_encode_or_reject, faces_dir=str(faces_dir), audio_dir=str(audio_dir),
                               jpeg_quality=cfg.jpeg_quality, sample_rate=params.common.sample_rate)
    clips_todo = [clip for plan, _ in todo for clip in plan.clips]
    with fanout(params) as pool:
        results = track(_ordered_map(encode, clips_todo, pool, ahead=4 * params.common.workers),
                        total=len(clips_todo), description=STAGE, disable=not progress)
        try:
            for plan, fp in todo:
                entry = _write_shard(out_dir, plan, fp, schema, attributes, cfg.row_group_size, results)
                if not any(r["reason"] == "error" for r in entry["rejected"]):  # unexpected errors: retry next run
                    write_json_atomic(_sidecar(out_dir, plan.path), entry)
                entries.append(entry)
        finally:
            results.close()

    entries.sort(key=lambda e: e["path"])
    for entry in entries:
        for rej in entry["rejected"]:
            outcome.reject(rej["key"], rej["reason"], rej["detail"], source=rej["source"])
    outcome.records.extend(_kept_records(plans, entries))
    write_json_atomic(out_dir / INDEX, _index(entries, outcome.records, attributes, config))
    log.info("%s: %d clips in %d shards, %d quarantined, %d reused", STAGE, len(outcome.records), len(entries),
             len(outcome.quarantine), outcome.skipped)
    return outcome


def _write_shard(out_dir: Path, plan: ShardPlan, fp: str, schema: pa.Schema, attributes: list[pa.Field],
                 row_group_size: int, results: Iterator[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Write one shard atomically from the next ``len(plan.clips)`` encoding results."""
    path = out_dir / plan.path
    rows: list[dict[str, Any]] = []
    rejected: list[dict[str, str]] = []
    with atomic_path(path) as tmp:
        with _writer(tmp, schema) as writer:
            for clip in plan.clips:
                status, media = next(results)
                if status != "ok":
                    rejected.append({"key": clip["key"], "source": clip["crop_path"], **media})
                    continue
                rows.append(_row(clip, media, attributes))
                if len(rows) == row_group_size:
                    writer.write_table(pa.Table.from_pylist(rows, schema=schema))
                    rows = []
            if rows:
                writer.write_table(pa.Table.from_pylist(rows, schema=schema))
    return {"path": plan.path, "split": plan.split, "rows": len(plan.clips) - len(rejected),
            "bytes": path.stat().st_size, "sha256": sha256_file(path), "fingerprint": fp, "rejected": rejected}


def _kept_records(plans: list[ShardPlan], entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per clip written (the stage's index.parquet): ids, split, shard and length."""
    rejected = {r["key"] for e in entries for r in e["rejected"]}
    return [{"key": c["key"], "speaker_id": c["speaker_id"], "video_id": c["video_id"], "clip_id": c["clip_id"],
             "group": split_group(c["speaker_id"], c["video_id"]), "split": p.split, "shard": p.path,
             "n_frames": int(c["n_frames"]), "fps": int(c["fps"])}
            for p in plans for c in p.clips if c["key"] not in rejected]


def _index(entries: list[dict[str, Any]], kept: list[dict[str, Any]], attributes: list[pa.Field],
           config: dict[str, Any]) -> dict[str, Any]:
    """``index.json``: schema version, params, attribute columns, per-split counts and shards.

    ``speakers`` counts split groups: real speakers, plus one pseudo-speaker per video of
    unknown speakers.
    """
    frame = pd.DataFrame(kept, columns=["split", "group", "n_frames", "fps"])
    splits = {}
    for split in SPLITS:
        rows = frame[frame["split"] == split]
        shards = [{k: e[k] for k in ("path", "rows", "bytes", "sha256")} for e in entries if e["split"] == split]
        splits[split] = {"clips": len(rows), "speakers": int(rows["group"].nunique()),
                         "frames": int(rows["n_frames"].sum()),
                         "seconds": round(float((rows["n_frames"] / rows["fps"]).sum()), 3), "shards": shards}
    return {"schema_version": SCHEMA_VERSION, "params": config,
            "attributes": [f.name for f in attributes], "splits": splits}


def _sidecar(out_dir: Path, shard: str) -> Path:
    return out_dir / SIDECARS / f"{shard}.json"


def _read_sidecar(out_dir: Path, shard: str) -> dict[str, Any] | None:
    """A shard's entry as written after its file, or None (never written, or a killed run)."""
    try:
        return json.loads(_sidecar(out_dir, shard).read_text())
    except (FileNotFoundError, ValueError):
        return None


def _intact(path: Path, entry: dict[str, Any]) -> bool:
    return path.is_file() and path.stat().st_size == entry["bytes"] and sha256_file(path) == entry["sha256"]


def _remove_stale(out_dir: Path, keep: set[str]) -> None:
    """Delete shards (and their sidecars) no longer planned, and temporary files of a killed run."""
    for path in out_dir.glob("*/shard-*.parquet"):
        if str(path.relative_to(out_dir)) not in keep:
            path.unlink()
    for path in (out_dir / SIDECARS).glob("*/shard-*.parquet.json"):
        if str(path.relative_to(out_dir / SIDECARS))[: -len(".json")] not in keep:
            path.unlink()
    for tmp in out_dir.glob("**/.tmp-*"):
        tmp.unlink()


# --------------------------------------------------------------------------- inspection


def shard_files(shards_dir: str | Path, split: str) -> list[Path]:
    """The shard files of one split, in index order (falls back to a glob without an index)."""
    shards_dir = Path(shards_dir)
    try:
        index = json.loads((shards_dir / INDEX).read_text())
        return [shards_dir / e["path"] for e in index["splits"][split]["shards"]]
    except FileNotFoundError:
        return sorted((shards_dir / split).glob("shard-*.parquet"))


def summarize(shards_dir: str | Path, verify: bool = True) -> dict[str, Any]:
    """Counts per split, attribute coverage and shard sizes of a shards folder.

    With ``verify``, every shard's sha256 is recomputed and compared with the index;
    ``problems`` lists missing or altered files and ``ok`` is False if there are any.
    """
    shards_dir = Path(shards_dir)
    index_path = shards_dir / INDEX
    try:
        index = json.loads(index_path.read_text())
    except FileNotFoundError:
        raise EarshotError(f"{index_path}: not found (is {shards_dir} a shards folder?)") from None
    attrs = index["attributes"]
    problems: list[str] = []
    splits: dict[str, Any] = {}
    coverage: dict[str, dict[str, float]] = {a: {} for a in attrs}
    for split, info in index["splits"].items():
        sizes = [e["bytes"] for e in info["shards"]]
        known = dict.fromkeys(attrs, 0)
        for entry in info["shards"]:
            path = shards_dir / entry["path"]
            if not path.is_file():
                problems.append(f"{entry['path']}: missing")
                continue
            if verify and sha256_file(path) != entry["sha256"]:
                problems.append(f"{entry['path']}: sha256 differs from the index")
                continue
            if attrs:
                table = pq.read_table(path, columns=attrs)
                for a in attrs:
                    known[a] += len(table) - table[a].null_count
        for a in attrs:
            coverage[a][split] = known[a] / info["clips"] if info["clips"] else 0.0
        splits[split] = {"clips": info["clips"], "speakers": info["speakers"], "frames": info["frames"],
                         "hours": info["seconds"] / 3600, "shards": len(sizes), "bytes": sum(sizes),
                         "shard_mb_min": min(sizes, default=0) / 1e6, "shard_mb_max": max(sizes, default=0) / 1e6}
    return {"path": str(shards_dir), "schema_version": index["schema_version"], "splits": splits,
            "attributes": coverage, "verified": verify, "problems": problems, "ok": not problems}


def print_summary(summary: dict[str, Any], console: Any = None) -> None:
    """Render :func:`summarize`'s dict as rich tables (``earshot data inspect SHARDS``)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=f"{summary['path']} (schema v{summary['schema_version']})")
    for col in ("split", "clips", "speakers", "hours", "shards", "MB", "shard MB min-max"):
        table.add_column(col, justify="left" if col == "split" else "right")
    for split, s in summary["splits"].items():
        table.add_row(split, str(s["clips"]), str(s["speakers"]), f"{s['hours']:.3f}", str(s["shards"]),
                      f"{s['bytes'] / 1e6:.1f}", f"{s['shard_mb_min']:.1f}-{s['shard_mb_max']:.1f}")
    console.print(table)
    if summary["attributes"]:
        cov = Table(title="attribute coverage (fraction of clips with a value)")
        cov.add_column("attribute")
        splits = list(summary["splits"])
        for split in splits:
            cov.add_column(split, justify="right")
        for attr, by_split in summary["attributes"].items():
            cov.add_row(attr, *(f"{by_split.get(s, 0.0):.0%}" for s in splits))
        console.print(cov)
    if summary["problems"]:
        for problem in summary["problems"]:
            console.print(f"[red]{problem}")
    elif summary["verified"]:
        console.print("[green]every shard matches its sha256 in index.json")
