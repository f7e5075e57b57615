"""Stage ``shards``: join the kept clips of the upstream stages into training shards.

Every clip that survived ``faces`` and ``audio`` becomes one Parquet row holding all a
model needs: the face crop as one JPEG per frame, the aligned 16 kHz audio as FLAC,
the per-frame landmarks and the speaker's ground-truth attributes. Training then
streams these rows (:mod:`components.data.dataset`) instead of opening thousands of
small mp4/wav/npz files, and computes its inputs on the fly
(:mod:`components.data.features`).

Modules, in the order the stage uses them:

* :mod:`.inputs` - the upstream indexes and ``speakers.parquet``, joined into clips;
* :mod:`.splits` - the open-set split of every clip, by speaker and video;
* :mod:`.schema` - the columns of a row and their Arrow types;
* :mod:`.encode` - one clip's media as a row stores them (JPEG frames, FLAC audio);
* :mod:`.write` - planning, writing and reusing the shards, ``index.json``;
* :mod:`.summary` - reading a shards folder back (``earshot data inspect``).
"""

from components.data.shards.encode import encode_clip
from components.data.shards.inputs import load_clips, load_speakers
from components.data.shards.schema import SCHEMA_VERSION, row_schema
from components.data.shards.splits import SPLITS, UNKNOWN_SPEAKER, assign_splits, split_group, unit_hash
from components.data.shards.summary import print_summary, shard_files, summarize
from components.data.shards.write import INDEX, SIDECARS, STAGE, ShardPlan, plan_shards, write_shards

__all__ = [
    "INDEX",
    "SCHEMA_VERSION",
    "SIDECARS",
    "SPLITS",
    "STAGE",
    "UNKNOWN_SPEAKER",
    "ShardPlan",
    "assign_splits",
    "encode_clip",
    "load_clips",
    "load_speakers",
    "plan_shards",
    "print_summary",
    "row_schema",
    "shard_files",
    "split_group",
    "summarize",
    "unit_hash",
    "write_shards",
]
