"""The columns of a shard row: ids, media (JPEG frames, FLAC audio), landmarks,
alignment, and the speaker's attributes (``attr_*``), with their Arrow types.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 1

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


def row_schema(attributes: list[pa.Field]) -> pa.Schema:
    """The schema of a shard: the base fields, then the attribute fields of
    :func:`~components.data.shards.inputs.load_speakers`."""
    return pa.schema([*BASE_FIELDS, *attributes], metadata={"earshot.schema_version": str(SCHEMA_VERSION)})
