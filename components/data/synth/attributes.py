"""Speaker attributes: the latent identity that every face and voice is derived from.

Each speaker is drawn from a small generative story, one numpy Generator per speaker
(``default_rng([seed, speaker_index])``), so speaker *i* is the same person whatever the
corpus size. The story couples appearance and voice the way real people do, which is
what lets a model recover facial attributes from audio:

* **sex** (0 = female-like, 1 = male-like) sets the mean head size, the vocal tract
  length (hence formant frequencies), F0 and its intonation range, jaw shape, hair
  style and beard probabilities;
* **age** (18-80 years) lowers the speaking rate, raises breathiness, jitter, shimmer
  and tremor, moves F0 (down for women, down then up for men), greys the hair and adds
  wrinkles, glasses and baldness;
* **head size** scales the vocal tract within each sex: bigger heads, lower formants;
* a per-speaker **fingerprint** (formant offsets, spectral tilt, glottal open quotient,
  F0 offset; eye spacing, nose and mouth proportions) makes each individual recoverable,
  not only the group they belong to.

:func:`sample_speakers` returns the table written as ``speakers.parquet``; every column
is ground truth, and :class:`~components.data.synth.voice.Voice` and
:class:`~components.data.synth.face.FaceStyle` are pure functions of one row.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from components.config import SynthParams

AGE_RANGE = (18.0, 80.0)
REFERENCE_TRACT_CM = 17.0
"""Vocal tract length of the reference formant table in :mod:`.phonemes`."""

# Skin tones from light to dark; ``skin_tone`` in [0, 1] interpolates along them.
SKIN_ANCHORS = np.array(
    [(250, 220, 195), (236, 192, 158), (205, 152, 112), (168, 112, 76), (124, 80, 52), (92, 60, 42)],
    dtype=np.float64,
)
HAIR_COLORS: dict[str, tuple[int, int, int]] = {
    "black": (28, 24, 24),
    "dark_brown": (66, 42, 28),
    "brown": (112, 74, 46),
    "auburn": (140, 62, 34),
    "blonde": (212, 178, 112),
    "grey": (150, 148, 146),
    "white": (222, 220, 214),
}
EYE_COLORS: dict[str, tuple[int, int, int]] = {
    "dark_brown": (58, 34, 20),
    "brown": (100, 62, 32),
    "hazel": (132, 104, 58),
    "green": (78, 122, 74),
    "blue": (70, 116, 180),
    "grey": (116, 128, 138),
}
HAIR_STYLES = ("short", "fringe", "bob", "long", "curly", "bald")


def _age01(age: float) -> float:
    """Age mapped to [0, 1] over :data:`AGE_RANGE`."""
    return (age - AGE_RANGE[0]) / (AGE_RANGE[1] - AGE_RANGE[0])


def skin_rgb(skin_tone: float) -> tuple[int, int, int]:
    """Colour of a skin tone in [0, 1] (light to dark)."""
    pos = np.clip(skin_tone, 0.0, 1.0) * (len(SKIN_ANCHORS) - 1)
    i = min(int(pos), len(SKIN_ANCHORS) - 2)
    rgb = SKIN_ANCHORS[i] + (pos - i) * (SKIN_ANCHORS[i + 1] - SKIN_ANCHORS[i])
    return tuple(int(round(c)) for c in rgb)  # type: ignore[return-value]


def _choice(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = list(weights)
    p = np.array([weights[n] for n in names], dtype=np.float64)
    return names[rng.choice(len(names), p=p / p.sum())]


def _hair(rng: np.random.Generator, sex: int, a: float, skin_tone: float) -> tuple[str, str]:
    """Hair colour and style, given sex, age in [0, 1] and skin tone."""
    if rng.random() < np.clip(1.4 * a - 0.35, 0.0, 0.9):
        color = "white" if rng.random() < a - 0.3 else "grey"
    else:
        dark = skin_tone
        color = _choice(rng, {"black": 0.2 + dark, "dark_brown": 0.35 + 0.4 * dark, "brown": 0.35,
                              "auburn": 0.12 * (1 - dark), "blonde": 0.35 * (1 - dark) ** 2})
    if sex == 1:
        style = _choice(rng, {"short": 0.5, "fringe": 0.12, "curly": 0.15, "long": 0.05, "bob": 0.02,
                              "bald": 0.03 + 0.6 * a})
    else:
        style = _choice(rng, {"long": 0.38, "bob": 0.25, "curly": 0.15, "fringe": 0.14, "short": 0.08})
    return color, style


def _eye_color(rng: np.random.Generator, skin_tone: float) -> str:
    light = (1 - skin_tone) ** 2
    return _choice(rng, {"dark_brown": 0.2 + skin_tone, "brown": 0.35, "hazel": 0.15,
                         "green": 0.12 * light, "blue": 0.3 * light, "grey": 0.08 * light})


def _voice(rng: np.random.Generator, sex: int, a: float, age: float, head_size: float) -> dict[str, Any]:
    """Voice parameters from sex, age and head size, plus an individual fingerprint."""
    # Vocal tract length: longer in male-like speakers, grows with head size and slightly with age.
    mean_head = 1.04 if sex else 0.96
    vtl = (16.9 if sex else 14.7) * (head_size / mean_head) * (1 + 0.02 * rng.standard_normal()) + 0.4 * a
    # F0: women's falls with age; men's falls to ~50 then rises.
    if sex:
        f0 = 124.0 - 0.4 * (min(age, 50.0) - 18.0) + 1.0 * max(age - 50.0, 0.0)
    else:
        f0 = 214.0 - 0.6 * (age - 18.0)
    f0 *= float(np.exp(0.1 * rng.standard_normal()))
    return {
        "vtl_cm": float(vtl),
        "formant_scale": float(REFERENCE_TRACT_CM / vtl),
        "formant_offsets": (1 + 0.045 * rng.standard_normal(4)).round(4).tolist(),
        "f0_hz": float(f0),
        "f0_range_st": float(np.clip((4.5 if not sex else 3.2) * (1 - 0.25 * a) + 0.4 * rng.standard_normal(), 1.5, 7)),
        "speaking_rate": float(np.clip(5.4 - 1.3 * a + 0.3 * rng.standard_normal(), 3.0, 6.8)),
        "breathiness": float(np.clip(0.08 + 0.6 * a + 0.08 * (1 - sex) + 0.06 * rng.standard_normal(), 0.0, 1.0)),
        "jitter": float(np.clip(0.004 + 0.014 * a + 0.002 * rng.standard_normal(), 0.001, 0.04)),
        "shimmer": float(np.clip(0.025 + 0.07 * a + 0.01 * rng.standard_normal(), 0.005, 0.2)),
        "tremor": float(np.clip(0.03 * (age - 55.0) / 25.0, 0.0, 0.03) * rng.uniform(0.5, 1.0)),
        "spectral_tilt_db": float(1.2 * rng.standard_normal()),
        "open_quotient": float(np.clip(0.55 + 0.06 * (1 - sex) + 0.05 * rng.standard_normal(), 0.4, 0.8)),
    }


def _face(rng: np.random.Generator, sex: int, a: float) -> dict[str, Any]:
    """Facial proportions: sex-dependent means plus an individual fingerprint."""
    return {
        "head_shape": float(np.clip(0.77 + 0.025 * sex + 0.03 * rng.standard_normal(), 0.68, 0.88)),
        "jaw_taper": float(np.clip(0.36 - 0.1 * sex + 0.05 * rng.standard_normal(), 0.12, 0.5)),
        "eye_spacing": float(0.30 + 0.015 * rng.standard_normal()),
        "eye_size": float(np.clip(1.0 + 0.06 * (1 - sex) - 0.05 * a + 0.06 * rng.standard_normal(), 0.8, 1.2)),
        "nose_length": float(np.clip(1.0 + 0.05 * sex + 0.06 * a + 0.06 * rng.standard_normal(), 0.8, 1.25)),
        "nose_width": float(np.clip(1.0 + 0.05 * sex + 0.08 * rng.standard_normal(), 0.75, 1.3)),
        "mouth_width": float(np.clip(1.0 + 0.07 * rng.standard_normal(), 0.8, 1.2)),
        "lip_fullness": float(np.clip(1.0 + 0.12 * (1 - sex) - 0.15 * a + 0.1 * rng.standard_normal(), 0.6, 1.4)),
        "brow_thickness": float(np.clip(1.0 + 0.25 * sex + 0.12 * rng.standard_normal(), 0.6, 1.6)),
        "wrinkles": float(np.clip((a - 0.3) / 0.7, 0.0, 1.0)),
    }


def sample_speaker(seed: int, index: int, *, glasses_prob: float = 0.25, beard_prob: float = 0.3) -> dict[str, Any]:
    """One speaker's ground-truth attributes (deterministic in ``seed`` and ``index``).

    ``glasses_prob`` is the expected fraction of speakers with glasses (more likely with
    age); ``beard_prob`` the expected fraction with a beard, all of them male-like.
    """
    rng = np.random.default_rng([seed, index])
    sex = int(rng.random() < 0.5)
    age = float(rng.uniform(*AGE_RANGE))
    a = _age01(age)
    head_size = float((1.04 if sex else 0.96) * (1 + 0.035 * rng.standard_normal()))
    skin_tone = float(rng.beta(1.3, 1.6))
    hair_color, hair_style = _hair(rng, sex, a, skin_tone)
    eye_color = _eye_color(rng, skin_tone)
    glasses = bool(rng.random() < glasses_prob * (0.5 + a))
    beard = bool(sex == 1 and rng.random() < min(1.0, 2 * beard_prob))
    beard_density = float(rng.uniform(0.35, 1.0)) if beard else 0.0
    return {
        "speaker_id": f"id{index:05d}",
        "speaker_index": index,
        "sex": sex,
        "age": round(age, 2),
        "head_size": head_size,
        "skin_tone": skin_tone,
        "skin_rgb": list(skin_rgb(skin_tone)),
        "hair_color": hair_color,
        "hair_rgb": list(HAIR_COLORS[hair_color]),
        "hair_style": hair_style,
        "eye_color": eye_color,
        "eye_rgb": list(EYE_COLORS[eye_color]),
        "glasses": glasses,
        "beard": beard,
        "beard_density": beard_density,
        **_face(rng, sex, a),
        **_voice(rng, sex, a, age, head_size),
    }


def sample_speakers(cfg: SynthParams) -> pd.DataFrame:
    """The speakers table (one row per speaker, ``speaker_id`` = ``id00000``, ...)."""
    rows = [sample_speaker(cfg.seed, i, glasses_prob=cfg.glasses_prob, beard_prob=cfg.beard_prob)
            for i in range(cfg.n_speakers)]
    return pd.DataFrame(rows)
