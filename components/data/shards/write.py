"""Writing the shards: plan them, encode their clips in parallel, write each atomically,
reuse the unchanged ones, and record the layout in ``index.json``.

Layout: ``<out>/<split>/shard-00000.parquet`` + ``<out>/index.json`` (schema version,
per-split counts, per-shard rows/bytes/sha256). Shards are planned before any decoding
(rows are ordered by a seeded hash of their key, so every shard mixes speakers), each is
written to a temporary file and renamed, and a rerun skips a shard whose inputs and
bytes are unchanged (``<out>/.shards/``: one entry per shard, written after it): a
killed run resumes and never leaves a partial shard.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from components.config import Params
from components.data.shards.encode import encode_or_reject
from components.data.shards.inputs import load_clips
from components.data.shards.schema import MEDIA_COLUMNS, SCHEMA_VERSION, row_schema
from components.data.shards.splits import SPLITS, assign_splits, split_group, unit_hash
from components.io import atomic_path, file_identity, fingerprint, sha256_file, write_json_atomic
from components.orchestration.executors import fanout, ordered_map
from components.orchestration.runner import Outcome

log = logging.getLogger(__name__)

STAGE = "shards"
INDEX = "index.json"
SIDECARS = ".shards"  # per-shard entries written after each shard: what a rerun can reuse


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
    config = {**cfg.model_dump(mode="json"), "sample_rate": params.common.sample_rate,
              "jpeg_quality": params.faces.jpeg_quality}  # re-encodes crops that are not Motion-JPEG
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

    encode = functools.partial(encode_or_reject, faces_dir=str(faces_dir), audio_dir=str(audio_dir),
                               jpeg_quality=params.faces.jpeg_quality, sample_rate=params.common.sample_rate)
    clips_todo = [clip for plan, _ in todo for clip in plan.clips]
    with fanout(params) as pool:
        results = track(ordered_map(encode, clips_todo, pool, ahead=4 * params.common.workers),
                        total=len(clips_todo), description=STAGE, disable=not progress)
        try:
            for plan, fp in todo:
                entry = _write_shard(out_dir, plan, fp, schema, attributes, cfg.row_group_size, results)
                for rej in entry["rejected"]:
                    if "traceback" in rej:  # a bug, not an input fault: logged, counted, retried next run
                        log.error("%s: clip %s failed with an unexpected error: %s\n%s", STAGE, rej["key"],
                                  rej["detail"], rej.pop("traceback"))
                        outcome.unexpected.append({"key": rej["key"], "detail": rej["detail"],
                                                   "where": rej.pop("where", "")})
                if not any(r["reason"] == "error" for r in entry["rejected"]):
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
