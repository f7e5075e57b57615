"""Which split every clip of the shards belongs to: ``train``, ``test_seen`` or ``test_unseen``.

Open set, after Meishvili et al.: a fraction of *speakers* is held out entirely
(``test_unseen``); of the remaining speakers a fraction of *videos* is held out
(``test_seen``: new recordings of speakers seen in training); the rest is ``train``.
Each decision compares a hash of (seed, speaker[, video]) to the fraction, so adding
speakers never moves another speaker's clips between splits (new videos of a speaker
can only move that speaker's); in exchange the realised fractions match the targets
only on average, loosely on small corpora.

Speakers of flat folders are unknown (``speaker_id == "unknown"``): each video is then
its own pseudo-speaker ``unknown/<video_id>``. Two such videos may in truth show the
same person, so for these clips the open-set guarantee is only as good as the folder.
"""

from __future__ import annotations

import hashlib

import pandas as pd

from components.data.sources.ids import UNKNOWN_SPEAKER

SPLITS = ("train", "test_seen", "test_unseen")


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
