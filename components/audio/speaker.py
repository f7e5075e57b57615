"""Voice identity: is the voice of a clip the voice of its speaker?

Talking-face corpora scraped from the web contain voice-overs (an interviewer, a
translator, a narrator over the face). For "face super-resolution with an ear" that is
poison: the model is asked to infer a face from the voice of someone else. Each clip
gets a resemblyzer d-vector (GE2E speaker encoder, pretrained weights inside the
``resemblyzer`` wheel) computed on its voiced parts; then :func:`speaker_consistency`
compares every clip with the mean voice of the *other* clips of the same speaker, and
rejects the ones that do not match, the most dissimilar first.

Measured cosines: real VoxCeleb2 voices (2 s pieces) 0.77-0.82 for the same speaker,
at most 0.52 between speakers, hence the default threshold 0.6. The synthetic corpus's
source-filter voices are less distinct to resemblyzer: same speaker 0.83-0.97, other
speakers of the same sex up to 0.94, of the other sex up to 0.85. On it the check
rejects no genuine clip at 0.6, but it would only catch a dub by the other sex, and
only with a threshold near 0.8.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from components.weights import load_weights

UNKNOWN_SPEAKERS = frozenset({"", "unknown"})
MIN_EMBED_S = 0.3  # less voiced audio than this gives no usable voice embedding


@functools.cache
def _encoder() -> Any:
    """The resemblyzer encoder on CPU with its shipped weights, loaded once per process (~1 s)."""
    import resemblyzer

    return load_voice_encoder(Path(resemblyzer.__file__).parent / "pretrained.pt")


def load_voice_encoder(weights: Path) -> Any:
    """A resemblyzer ``VoiceEncoder`` on the weights file ``weights``, which must pass
    ``torch.load(weights_only=True)`` first (resemblyzer's own ``torch.load`` uses torch's
    default, which is a full unpickler before torch 2.6): a crafted file is refused, with
    an error naming it, before anything else reads it."""
    from resemblyzer import VoiceEncoder

    load_weights(weights, f"{weights}: not a loadable voice-encoder weights file")
    return VoiceEncoder("cpu", verbose=False, weights_fpath=weights)


def voice_embedding(audio: np.ndarray, sr: int) -> np.ndarray | None:
    """Unit-norm 256-d voice embedding of a clip (None when it has too little voice).

    resemblyzer's own preprocessing normalises the volume and cuts every silence longer
    than ~0.2 s (webrtcvad), so the encoder sees the voiced parts only. Cutting the clip
    to the stage's silero segments first was measured to be worse: on the shared real
    VoxCeleb2 voices (2 s halves of one recording) the same-speaker cosines drop from
    0.77/0.82/0.82 to 0.58/0.76/0.82, because silero's segments miss speech at phrase
    edges that carries voice identity; different-speaker cosines stay <= 0.52 either way.
    """
    from resemblyzer import preprocess_wav

    wav = preprocess_wav(np.asarray(audio, dtype=np.float32), source_sr=sr)  # -> 16 kHz, voiced parts
    if len(wav) < MIN_EMBED_S * 16000:
        return None
    emb = np.asarray(_encoder().embed_utterance(wav), dtype=np.float32)
    return emb / (np.linalg.norm(emb) + 1e-12)


def leave_one_out_cosines(embeddings: np.ndarray) -> np.ndarray:
    """Cosine of each row with the mean of the other rows (rows are unit vectors, n >= 2)."""
    e = embeddings / (np.linalg.norm(embeddings, axis=1, keepdims=True) + 1e-12)
    others = e.sum(axis=0, keepdims=True) - e
    return np.sum(e * others, axis=1) / (np.linalg.norm(others, axis=1) + 1e-12)


def speaker_consistency(records: Sequence[dict[str, Any]], threshold: float,
                        ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split clip records into those whose voice matches their speaker and voice-overs.

    Each record needs ``key``, ``speaker_id`` and ``voice_embedding`` (a vector or
    None). For every known speaker with at least two embedded clips, a clip's
    ``speaker_cos`` is its cosine to the mean embedding of the speaker's other clips.
    While the lowest cosine is below ``threshold``, that clip is rejected and the rest
    are scored again without it: a voice-over must not drag the mean away from the
    genuine clips (with two genuine clips and one dub, the dub alone would push the
    genuine clips' leave-one-out cosines below a threshold their own pair clears).
    Two clips that disagree are both rejected: which one is the impostor is undecidable.

    Clips of unknown speakers (``unknown``, flat folders), of speakers with one clip, or
    without an embedding are kept with ``speaker_cos = None``: there is nothing to
    compare them with. Returns ``(kept, rejected)``: kept records gain ``speaker_cos``;
    rejected ones are ``{"key", "reason": "voice_over", "detail", "speaker_cos"}``.
    """
    groups: dict[str, list[int]] = defaultdict(list)
    for i, rec in enumerate(records):
        if rec.get("speaker_id") not in UNKNOWN_SPEAKERS and rec.get("voice_embedding") is not None:
            groups[rec["speaker_id"]].append(i)
    cosines: dict[int, float] = {}
    dropped: dict[int, tuple[float, int]] = {}  # record index -> (cosine, clips it was compared with)
    for members in groups.values():
        while len(members) >= 2:
            emb = np.asarray([records[i]["voice_embedding"] for i in members], dtype=np.float64)
            cos = leave_one_out_cosines(emb)
            worst = int(np.argmin(cos))
            if cos[worst] >= threshold:
                cosines.update({i: float(c) for i, c in zip(members, cos)})
                break
            out = members if len(members) == 2 else [members[worst]]
            dropped.update({i: (float(cos[members.index(i)]), len(members) - 1) for i in out})
            members = [i for i in members if i not in out]
    kept, rejected = [], []
    for i, rec in enumerate(records):
        if i in dropped:
            cos, others = dropped[i]
            rejected.append({"key": rec["key"], "reason": "voice_over", "speaker_cos": round(cos, 4),
                             "detail": f"voice cosine {cos:.2f} to the mean of speaker {rec['speaker_id']}'s "
                                       f"{others} other clip(s) < {threshold:.2f}"})
        else:
            cos = cosines.get(i)
            kept.append({**rec, "speaker_cos": None if cos is None else round(cos, 4)})
    return kept, rejected
