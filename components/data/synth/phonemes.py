"""Phoneme inventory, utterance planning and the viseme (mouth-shape) track.

The inventory is deliberately small but covers every articulation class a VAD, a lip
reader or a voice encoder has to cope with: six vowels, nasals (/m n/), voiced and
unvoiced plosives (/b d g p t k/), voiced and unvoiced fricatives (/v z f s sh/) and
approximants (/l w/). Each :class:`Phoneme` carries

* acoustics for :mod:`.voice`: formant targets F1-F4 for a 17 cm vocal tract (adult
  male averages; consonants give their place-of-articulation loci), an intrinsic
  duration, a voicing amplitude, a frication spectrum and, for nasals, an antiformant;
* a :class:`Viseme` (lip opening, width, rounding) and a *dominance*: how strongly the
  phoneme imposes its mouth shape on its neighbours. Bilabials (/p b m/) must close the
  lips and dominate; velars (/k g/) barely constrain the lips and take the shape of the
  surrounding vowels.

:func:`plan_utterance` strings syllables (CV, CVC, V, CCV) into words (one stressed
syllable each) and words into phrases separated by real pauses. :func:`viseme_track`
turns the timed phonemes into per-video-frame mouth parameters with Cohen-Massaro style
dominance blending, which is the co-articulation smoothing: the lips start moving
towards a phoneme before it sounds and linger after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np

Kind = Literal["vowel", "nasal", "plosive", "fricative", "approximant", "silence"]

SILENCE = "_"  # the pause symbol
REFERENCE_RATE = 5.0
"""Syllables per second at which :attr:`Phoneme.duration_ms` holds."""


@dataclass(frozen=True)
class Viseme:
    """A mouth-shape target, each value in [0, 1]."""

    open: float  # lip/jaw opening
    width: float  # lip-corner spread
    round: float  # lip rounding/protrusion


@dataclass(frozen=True)
class Phoneme:
    symbol: str
    kind: Kind
    voiced: bool
    duration_ms: float
    formants: tuple[float, float, float, float]  # Hz, 17 cm tract
    amplitude: float  # voicing amplitude relative to /a/
    viseme: Viseme
    dominance: float
    frication: tuple[float, float, float] = (4000.0, 1.0, 0.0)  # centre Hz, width in octaves, gain
    antiformant_hz: float = 0.0  # nasal zero (0: none)


# Columns: symbol, kind, voiced, duration (ms), F1-F4 (Hz, 17 cm tract), voicing amplitude,
# viseme (open, width, round), dominance, frication (centre Hz, width octaves, gain).
_NO_NOISE = (4000.0, 1.0, 0.0)
_TABLE = [
    ("_", "silence", False, 0, (500, 1500, 2500, 3400), 0.0, (0.0, 0.5, 0.1), 0.8, _NO_NOISE),
    ("a", "vowel", True, 120, (730, 1090, 2440, 3400), 1.0, (0.95, 0.55, 0.1), 1.0, _NO_NOISE),
    ("e", "vowel", True, 105, (530, 1840, 2480, 3500), 0.9, (0.6, 0.8, 0.05), 1.0, _NO_NOISE),
    ("i", "vowel", True, 95, (280, 2250, 2900, 3500), 0.75, (0.22, 1.0, 0.0), 1.0, _NO_NOISE),
    ("o", "vowel", True, 120, (570, 840, 2410, 3300), 0.95, (0.7, 0.3, 0.8), 1.0, _NO_NOISE),
    ("u", "vowel", True, 100, (310, 870, 2240, 3300), 0.75, (0.22, 0.15, 1.0), 1.0, _NO_NOISE),
    ("@", "vowel", True, 75, (600, 1200, 2400, 3400), 0.85, (0.45, 0.55, 0.15), 1.0, _NO_NOISE),
    ("m", "nasal", True, 70, (280, 1000, 2200, 3300), 0.3, (0.0, 0.5, 0.15), 4.0, _NO_NOISE),
    ("n", "nasal", True, 65, (280, 1600, 2600, 3300), 0.3, (0.22, 0.6, 0.1), 0.7, _NO_NOISE),
    ("l", "approximant", True, 60, (360, 1250, 2700, 3400), 0.55, (0.3, 0.6, 0.1), 0.6, _NO_NOISE),
    ("w", "approximant", True, 60, (300, 650, 2200, 3300), 0.5, (0.12, 0.1, 1.0), 2.0, _NO_NOISE),
    ("p", "plosive", False, 90, (400, 800, 2200, 3300), 0.0, (0.0, 0.5, 0.1), 4.0, (900, 2.0, 0.5)),
    ("b", "plosive", True, 80, (400, 800, 2200, 3300), 0.0, (0.0, 0.5, 0.1), 4.0, (900, 2.0, 0.3)),
    ("t", "plosive", False, 85, (400, 1750, 2600, 3400), 0.0, (0.2, 0.6, 0.05), 0.7, (4500, 1.0, 0.7)),
    ("d", "plosive", True, 75, (400, 1750, 2600, 3400), 0.0, (0.2, 0.6, 0.05), 0.7, (4500, 1.0, 0.45)),
    ("k", "plosive", False, 90, (400, 1900, 2400, 3300), 0.0, (0.32, 0.55, 0.1), 0.3, (2200, 0.8, 0.6)),
    ("g", "plosive", True, 80, (400, 1900, 2400, 3300), 0.0, (0.32, 0.55, 0.1), 0.3, (2200, 0.8, 0.4)),
    ("f", "fricative", False, 100, (400, 1100, 2300, 3300), 0.0, (0.08, 0.55, 0.05), 2.5, (4500, 2.5, 0.15)),
    ("v", "fricative", True, 85, (400, 1100, 2300, 3300), 0.4, (0.08, 0.55, 0.05), 2.5, (4500, 2.5, 0.1)),
    ("s", "fricative", False, 110, (400, 1700, 2600, 3400), 0.0, (0.14, 0.75, 0.0), 1.2, (6000, 0.7, 0.5)),
    ("z", "fricative", True, 95, (400, 1700, 2600, 3400), 0.4, (0.14, 0.75, 0.0), 1.2, (6000, 0.7, 0.35)),
    ("sh", "fricative", False, 110, (400, 1800, 2400, 3300), 0.0, (0.18, 0.4, 0.7), 1.5, (3300, 0.8, 0.45)),
]
_ANTIFORMANTS_HZ = {"m": 1000.0, "n": 1800.0}

PHONEMES: dict[str, Phoneme] = {
    symbol: Phoneme(symbol, kind, voiced, dur, formants, amp, Viseme(*vis), dom, noise,  # type: ignore[arg-type]
                    _ANTIFORMANTS_HZ.get(symbol, 0.0))
    for symbol, kind, voiced, dur, formants, amp, vis, dom, noise in _TABLE
}
VOWELS = ("a", "e", "i", "o", "u", "@")
ONSETS = ("p", "b", "t", "d", "k", "g", "m", "n", "f", "v", "s", "z", "sh", "l", "w")
CODAS = ("m", "n", "s", "t", "k", "l")
CLUSTERS = (("s", "t"), ("s", "p"), ("s", "k"), ("p", "l"), ("k", "l"), ("b", "l"), ("f", "l"))


class PhonemeEvent(NamedTuple):
    """One timed phoneme. ``phrase`` is -1 for pauses; ``word`` counts words in the clip."""

    symbol: str
    start: float
    end: float
    phrase: int
    word: int
    stressed: bool


# ----------------------------------------------------------------------------- planning


def _syllable(rng: np.random.Generator) -> list[str]:
    shape = rng.choice(4, p=[0.55, 0.25, 0.08, 0.12])  # CV, CVC, V, CCV
    vowel = str(rng.choice(VOWELS))
    if shape == 2:
        return [vowel]
    if shape == 3:
        return [*CLUSTERS[rng.integers(len(CLUSTERS))], vowel]
    onset = str(rng.choice(ONSETS))
    return [onset, vowel, str(rng.choice(CODAS))] if shape == 1 else [onset, vowel]


def _word(rng: np.random.Generator) -> list[tuple[str, bool]]:
    """A word as (symbol, stressed) pairs; exactly one syllable carries the stress."""
    n = int(rng.choice([1, 2, 3], p=[0.4, 0.4, 0.2]))
    stress = 0 if rng.random() < 0.6 else int(rng.integers(n))
    return [(s, i == stress) for i in range(n) for s in _syllable(rng)]


def _duration(rng: np.random.Generator, symbol: str, stressed: bool, rate_scale: float) -> float:
    ph = PHONEMES[symbol]
    factor = (1.35 if stressed else 0.85) if ph.kind == "vowel" else 1.0
    return ph.duration_ms / 1000 * factor * rate_scale * float(np.exp(0.15 * rng.standard_normal()))


def _phrase(rng: np.random.Generator, rate_scale: float) -> list[list[tuple[str, bool, float]]]:
    """2-5 words, each a list of (symbol, stressed, duration)."""
    return [[(s, st, _duration(rng, s, st, rate_scale)) for s, st in _word(rng)]
            for _ in range(int(rng.integers(2, 6)))]


FINAL_LENGTHENING = 1.3


def _phrase_length(words: list[list[tuple[str, bool, float]]], gaps: list[float]) -> float:
    """Duration of ``words`` once the last one is lengthened, with the in-phrase gaps."""
    body = sum(d for word in words[:-1] for *_, d in word)
    return body + FINAL_LENGTHENING * sum(d for *_, d in words[-1]) + sum(gaps[: len(words) - 1])


def plan_utterance(rng: np.random.Generator, duration_s: float, syllables_per_s: float) -> list[PhonemeEvent]:
    """Phrases of random words filling ``duration_s``, with silence at both ends.

    The events tile [0, duration_s] exactly; pauses (``symbol == "_"``, ``phrase == -1``)
    are 0.25-0.7 s between phrases and 0.08-0.15 s inside a phrase at some word
    boundaries. The last syllable of each phrase is lengthened (phrase-final lengthening).
    """
    rate_scale = REFERENCE_RATE / syllables_per_s
    t = float(rng.uniform(0.15, 0.45))
    end_limit = duration_s - float(rng.uniform(0.2, 0.4))
    events = [PhonemeEvent(SILENCE, 0.0, t, -1, -1, False)]
    phrase = word_index = 0
    while True:
        words = _phrase(rng, rate_scale)
        gaps = [float(rng.uniform(0.08, 0.15)) if rng.random() < 0.12 else 0.0 for _ in words]
        # Drop words until the phrase (with its lengthened last word) fits; stop when none fits.
        while words and t + _phrase_length(words, gaps) > end_limit:
            words.pop()
        if not words:
            break
        words[-1] = [(s, st, d * FINAL_LENGTHENING) for s, st, d in words[-1]]
        for w, word in enumerate(words):
            if w and gaps[w - 1]:
                events.append(PhonemeEvent(SILENCE, t, t + gaps[w - 1], -1, -1, False))
                t += gaps[w - 1]
            for symbol, stressed, d in word:
                events.append(PhonemeEvent(symbol, t, t + d, phrase, word_index, stressed))
                t += d
            word_index += 1
        pause = float(rng.uniform(0.25, 0.7))
        if t + pause >= end_limit:
            break
        events.append(PhonemeEvent(SILENCE, t, t + pause, -1, -1, False))
        t += pause
        phrase += 1
    if events[-1].symbol == SILENCE:
        events[-1] = events[-1]._replace(end=duration_s)
    else:
        events.append(PhonemeEvent(SILENCE, t, duration_s, -1, -1, False))
    return events


def speech_segments(events: list[PhonemeEvent]) -> list[tuple[float, float]]:
    """(start, end) of every phrase: the ground truth a VAD should find."""
    spans: dict[int, tuple[float, float]] = {}
    for ev in events:
        if ev.phrase >= 0:
            start, _ = spans.get(ev.phrase, (ev.start, ev.end))
            spans[ev.phrase] = (start, ev.end)
    return [spans[p] for p in sorted(spans)]


def transcript(events: list[PhonemeEvent]) -> str:
    """Words as concatenated phoneme symbols, phrases separated by ``|``."""
    phrases: dict[int, dict[int, list[str]]] = {}
    for ev in events:
        if ev.phrase >= 0:
            phrases.setdefault(ev.phrase, {}).setdefault(ev.word, []).append(ev.symbol)
    return " | ".join(" ".join("".join(w) for w in words.values()) for words in phrases.values())


# ----------------------------------------------------------------------------- visemes

COARTICULATION_S = 0.035
"""Spread (s) of each phoneme's dominance beyond its plateau."""


def viseme_track(events: list[PhonemeEvent], n_frames: int, fps: float) -> np.ndarray:
    """Per-frame mouth parameters ``(n_frames, 3)`` = (open, width, round), in [0, 1].

    Each phoneme's dominance is flat over the middle 70% of its duration and decays as a
    Gaussian (sigma :data:`COARTICULATION_S`) outside it; a frame's shape is the
    dominance-weighted mean of the phonemes' viseme targets at the frame centre.
    """
    t = (np.arange(n_frames) + 0.5) / fps
    start = np.array([e.start for e in events])
    end = np.array([e.end for e in events])
    centre, half = (start + end) / 2, 0.35 * (end - start)
    phs = [PHONEMES[e.symbol] for e in events]
    alpha = np.array([p.dominance for p in phs])
    targets = np.array([(p.viseme.open, p.viseme.width, p.viseme.round) for p in phs])
    dist = np.maximum(np.abs(t[:, None] - centre[None, :]) - half[None, :], 0.0)
    dom = alpha[None, :] * np.exp(-0.5 * (dist / COARTICULATION_S) ** 2) + 1e-12
    return (dom @ targets / dom.sum(axis=1, keepdims=True)).astype(np.float32)
