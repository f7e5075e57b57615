"""Source-filter speech synthesis: a speaker's :class:`Voice` saying a random utterance.

The classic source-filter model of speech (Fant 1960), rendered at 16 kHz:

* **Source.** A glottal pulse train (Rosenberg flow pulses; their derivative is the
  excitation) whose F0 follows an intonation contour: declination over each phrase,
  pitch accents on stressed vowels, slow drift and, in older voices, a 4-6 Hz tremor.
  Cycle-to-cycle jitter (period) and shimmer (amplitude) perturb every pulse, and
  aspiration noise gated by the glottal flow adds breathiness. Frication and plosive
  bursts come from a second, independent noise source.
* **Filter.** A cascade of five formant resonators (plus an antiformant for nasals)
  evaluated as a spectral envelope per 5 ms frame and applied in the STFT domain, which
  makes every parameter time-varying without IIR state problems. Formant targets come
  from :mod:`.phonemes`, scaled by the speaker's vocal-tract length
  (``formant_scale``) and individual ``formant_offsets``, and glide between phonemes
  (20 ms smoothing). A speaker-specific spectral tilt finishes the timbre.

Every random draw comes from the Generator passed in, so the same Generator state gives
bit-identical audio.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import ShortTimeFFT
from scipy.signal.windows import hann

from components.data.synth.phonemes import (
    PHONEMES,
    SILENCE,
    PhonemeEvent,
    plan_utterance,
    speech_segments,
    viseme_track,
)

CONTROL_RATE = 200  # Hz: control parameters (and STFT frames) every 5 ms
N_FFT = 512
BANDWIDTHS_HZ = np.array([70.0, 90.0, 130.0, 170.0, 250.0])
F5_HZ = 4500.0  # fixed fifth formant of the 17 cm reference tract
FRICATION_LEVEL = 4.0  # frication noise gain relative to the voiced excitation


@dataclass(frozen=True)
class Voice:
    """The voice parameters of one speaker (columns of ``speakers.parquet``)."""

    f0_hz: float  # mean fundamental frequency
    f0_range_st: float  # intonation range, semitones
    formant_scale: float  # formant frequencies relative to a 17 cm vocal tract
    formant_offsets: tuple[float, float, float, float]  # individual F1-F4 multipliers
    spectral_tilt_db: float  # individual extra tilt, dB per octave above 300 Hz
    speaking_rate: float  # syllables per second
    breathiness: float  # 0..1: aspiration noise, open quotient, bandwidths
    jitter: float  # relative period perturbation per cycle
    shimmer: float  # relative amplitude perturbation per cycle
    tremor: float  # relative F0 modulation depth at 4-6 Hz
    open_quotient: float  # fraction of the glottal cycle the folds are open

    @classmethod
    def from_attributes(cls, row: Mapping[str, Any]) -> Voice:
        values = {f.name: row[f.name] for f in fields(cls)}
        values["formant_offsets"] = tuple(float(v) for v in values["formant_offsets"])
        return cls(**values)


@dataclass(frozen=True)
class Speech:
    """A synthesized utterance and its ground truth."""

    audio: np.ndarray  # float32 mono in [-1, 1], exactly n_frames / fps seconds
    sample_rate: int
    fps: float
    events: list[PhonemeEvent]  # the timed phonemes, tiling the clip
    segments: list[tuple[float, float]]  # speech (phrase) spans in seconds
    visemes: np.ndarray  # (n_frames, 3) open, width, round per video frame

    @property
    def n_frames(self) -> int:
        return len(self.visemes)


@dataclass(frozen=True)
class _Controls:
    """Per-control-frame (5 ms) synthesis parameters."""

    formants: np.ndarray  # (n, 4) Hz, reference tract
    voicing: np.ndarray  # voiced excitation amplitude
    aspiration: np.ndarray  # noise through the formants (plosive release)
    frication: np.ndarray  # frication noise gain
    fric_centre: np.ndarray  # Hz, reference tract
    fric_width: np.ndarray  # octaves
    nasal: np.ndarray  # antiformant depth 0..1
    nasal_hz: np.ndarray  # antiformant frequency, reference tract


def _nearest(valid: np.ndarray, n: int) -> np.ndarray:
    """For each of ``range(n)``, the nearest index in the sorted non-empty ``valid``."""
    idx = np.arange(n)
    right = np.clip(np.searchsorted(valid, idx), 0, len(valid) - 1)
    left = np.clip(right - 1, 0, len(valid) - 1)
    return np.where(np.abs(valid[left] - idx) <= np.abs(valid[right] - idx), valid[left], valid[right])


def _controls(events: list[PhonemeEvent], n: int, dt: float) -> _Controls:
    formants = np.full((n, 4), np.nan)
    voicing, aspiration, frication, nasal = (np.zeros(n) for _ in range(4))
    fric_centre, fric_width, nasal_hz = np.full(n, 4000.0), np.ones(n), np.full(n, 1000.0)
    segments = speech_segments(events)
    for ev in events:
        ph = PHONEMES[ev.symbol]
        if ph.kind == "silence":
            continue
        i0, i1 = round(ev.start / dt), max(round(ev.end / dt), round(ev.start / dt) + 1)
        start, end = segments[ev.phrase]
        declination = 1.0 - 0.25 * (ev.start - start) / max(end - start, 1e-3)
        formants[i0:i1] = ph.formants
        fric_centre[i0:i1], fric_width[i0:i1] = ph.frication[:2]
        if ph.kind == "plosive":  # closure (silent or voice bar), 10 ms burst, release
            burst = i0 + max(1, round(0.55 * (i1 - i0)))
            release = min(i1, burst + 2)
            voicing[i0:burst] = 0.12 if ph.voiced else 0.0
            frication[burst:release] = ph.frication[2]
            if ph.voiced:
                voicing[release:i1] = 0.6 * declination
            else:
                aspiration[release:i1] = 0.35
            continue
        stress = 1.0 if ev.stressed or ph.kind != "vowel" else 0.8
        voicing[i0:i1] = ph.amplitude * stress * declination
        frication[i0:i1] = ph.frication[2]
        if ph.antiformant_hz:
            nasal[i0:i1], nasal_hz[i0:i1] = 1.0, ph.antiformant_hz
    # Pauses take the nearest phoneme's formants, so nothing glides in from nowhere.
    valid = ~np.isnan(formants[:, 0])
    if not valid.any():
        formants[:] = PHONEMES[SILENCE].formants
    else:
        formants = formants[_nearest(np.flatnonzero(valid), n)]
    return _Controls(
        formants=np.exp(gaussian_filter1d(np.log(formants), 4.0, axis=0, mode="nearest")),
        voicing=gaussian_filter1d(voicing, 1.0, mode="nearest"),
        aspiration=gaussian_filter1d(aspiration, 1.0, mode="nearest"),
        frication=gaussian_filter1d(frication, 0.6, mode="nearest"),
        fric_centre=fric_centre,
        fric_width=fric_width,
        nasal=gaussian_filter1d(nasal, 2.0, mode="nearest"),
        nasal_hz=nasal_hz,
    )


def _f0_contour(events: list[PhonemeEvent], n: int, dt: float, voice: Voice, rng: np.random.Generator) -> np.ndarray:
    """F0 (Hz) per control frame: declination, accents, drift, tremor."""
    t = np.arange(n) * dt
    span = voice.f0_range_st
    knots_t, knots_st = [], []
    for start, end in speech_segments(events):
        knots_t += [start, end]
        knots_st += [span * float(rng.uniform(0.3, 0.6)), -0.5 * span]
    st = np.interp(t, knots_t, knots_st) if knots_t else np.zeros(n)
    for ev in events:
        if ev.stressed and PHONEMES[ev.symbol].kind == "vowel":
            centre = (ev.start + ev.end) / 2
            st += span * float(rng.uniform(0.3, 0.7)) * np.exp(-0.5 * ((t - centre) / 0.07) ** 2)
    drift = rng.standard_normal(n // 40 + 2)
    st += 0.4 * np.interp(t, np.arange(len(drift)) * 40 * dt, drift)
    tremor = 1 + voice.tremor * np.sin(2 * np.pi * rng.uniform(4.0, 6.0) * t + rng.uniform(0, 2 * np.pi))
    return voice.f0_hz * 2 ** (st / 12) * tremor


def _rosenberg(frac: np.ndarray, open_quotient: float, speed_quotient: float = 2.0) -> np.ndarray:
    """Glottal flow over one cycle (``frac`` in [0, 1)): rise, faster fall, closed phase."""
    rise = open_quotient * speed_quotient / (1 + speed_quotient)
    fall = open_quotient / (1 + speed_quotient)
    return np.where(
        frac < rise,
        0.5 * (1 - np.cos(np.pi * frac / rise)),
        np.where(frac < rise + fall, np.cos(0.5 * np.pi * (frac - rise) / fall), 0.0),
    )


def _glottal_source(
    f0_ctrl: np.ndarray, dt: float, voice: Voice, rng: np.random.Generator, n: int, sample_rate: int
) -> tuple[np.ndarray, np.ndarray]:
    """Excitation (flow derivative per unit phase) and flow, with jitter and shimmer."""
    t = np.arange(n) / sample_rate
    f0 = np.interp(t, np.arange(len(f0_ctrl)) * dt, f0_ctrl)
    cycles = np.cumsum(f0 / sample_rate)
    f0 = f0 * (1 + voice.jitter * rng.standard_normal(int(cycles[-1]) + 2))[cycles.astype(np.int64)]
    phase = np.cumsum(f0 / sample_rate)
    cycle = phase.astype(np.int64)
    open_quotient = float(np.clip(voice.open_quotient + 0.3 * voice.breathiness, 0.3, 0.95))
    flow = _rosenberg(phase - cycle, open_quotient)
    flow *= (1 + voice.shimmer * rng.standard_normal(int(cycle[-1]) + 1))[cycle]
    excitation = np.diff(flow, prepend=0.0) * sample_rate / f0
    return excitation, flow


def _log_resonance(f: np.ndarray, centre: np.ndarray, bandwidth: float) -> np.ndarray:
    """log |H| of a two-pole resonator (unit gain at DC) at frequencies ``f``."""
    b2 = (bandwidth / 2) ** 2
    return np.log(centre**2 + b2) - 0.5 * np.log(((f - centre) ** 2 + b2) * ((f + centre) ** 2 + b2))


def _envelopes(ctrl: _Controls, idx: np.ndarray, f: np.ndarray, voice: Voice) -> tuple[np.ndarray, np.ndarray]:
    """Voiced (formant) and frication magnitude envelopes, ``(n_freq, n_slices)``."""
    f = f[:, None]
    scale = voice.formant_scale
    widen = 1 + 0.6 * voice.breathiness
    formants = ctrl.formants[idx] * scale * np.asarray(voice.formant_offsets)
    log_h = sum(_log_resonance(f, formants[None, :, k], BANDWIDTHS_HZ[k] * widen) for k in range(4))
    log_h = log_h + _log_resonance(f, np.array(F5_HZ * scale), BANDWIDTHS_HZ[4] * widen)
    log_h -= ctrl.nasal[idx] * _log_resonance(f, ctrl.nasal_hz[idx] * scale, 120.0)
    tilt_db = voice.spectral_tilt_db - 4.0 * voice.breathiness
    log_h += tilt_db * np.log(10) / 20 * np.log2(np.maximum(f, 300.0) / 300.0)
    octaves = np.log2(np.maximum(f, 50.0) / (ctrl.fric_centre[idx] * scale))
    fric = FRICATION_LEVEL * ctrl.frication[idx] * np.exp(-0.5 * (octaves / ctrl.fric_width[idx]) ** 2)
    return np.exp(log_h), fric


def synthesize_speech(
    voice: Voice, rng: np.random.Generator, duration_s: float, *, sample_rate: int = 16000, fps: float = 25.0
) -> Speech:
    """Synthesize a random utterance of ``voice`` lasting ``round(duration_s * fps)`` frames.

    The audio is normalized to a speech level of -24..-18 dBFS (drawn per utterance) over
    a faint room-noise floor, and returned with its phoneme timeline, phrase segments and
    per-frame visemes.
    """
    n_frames = max(1, round(duration_s * fps))
    n = round(n_frames * sample_rate / fps)
    events = plan_utterance(rng, n / sample_rate, voice.speaking_rate)
    hop = sample_rate // CONTROL_RATE
    dt = hop / sample_rate
    n_ctrl = n // hop + 2
    ctrl = _controls(events, n_ctrl, dt)
    f0 = _f0_contour(events, n_ctrl, dt, voice, rng)
    excitation, flow = _glottal_source(f0, dt, voice, rng, n, sample_rate)

    t_ctrl, t = np.arange(n_ctrl) * dt, np.arange(n) / sample_rate
    voicing = np.interp(t, t_ctrl, ctrl.voicing)
    breath = 2.5 * voice.breathiness * voicing * (0.3 + flow)
    aspiration = rng.standard_normal(n) * (np.interp(t, t_ctrl, ctrl.aspiration) + breath)
    frication_noise = rng.standard_normal(n)

    stft = ShortTimeFFT(hann(N_FFT, sym=False), hop=hop, fs=sample_rate)
    idx = np.clip(np.arange(stft.p_min, stft.p_max(n)), 0, n_ctrl - 1)
    voiced_env, fric_env = _envelopes(ctrl, idx, stft.f, voice)
    spectrum = stft.stft(excitation * voicing + aspiration) * voiced_env + stft.stft(frication_noise) * fric_env
    audio = stft.istft(spectrum, k1=n)

    segments = speech_segments(events)
    in_speech = np.zeros(n, dtype=bool)
    for start, end in segments:
        in_speech[round(start * sample_rate): round(end * sample_rate)] = True
    level = 10 ** (rng.uniform(-24.0, -18.0) / 20)
    rms = float(np.sqrt(np.mean(audio[in_speech] ** 2))) if in_speech.any() else 0.0
    audio = audio * (level / rms if rms > 0 else 0.0)
    audio += 10 ** (rng.uniform(-65.0, -52.0) / 20) * rng.standard_normal(n)
    audio /= max(1.0, float(np.abs(audio).max()) / 0.98)
    return Speech(
        audio=audio.astype(np.float32),
        sample_rate=sample_rate,
        fps=fps,
        events=events,
        segments=segments,
        visemes=viseme_track(events, n_frames, fps),
    )
