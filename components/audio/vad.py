"""Voice activity detection: where in a clip someone speaks, and how well we find it.

Two detectors share one interface, ``vad(audio, sr) -> [(start_s, end_s), ...]``:

* :class:`SileroVAD` (default): silero-vad's ONNX model, shipped inside the
  ``silero_vad`` wheel, so it works offline and needs nothing downloaded;
* :class:`PyannoteVAD`: pyannote.audio's ``VoiceActivityDetection`` pipeline around a
  segmentation model checkpoint that the user provides (``audio.pyannote_checkpoint``;
  pyannote's hub models are gated, so nothing is fetched). pyannote.audio is imported
  only on this path, offline (``HF_HUB_OFFLINE=1``) and with its telemetry off.

Both use the same post-processing (minimum speech and silence durations, padding), so
switching detectors changes only the model. :func:`detection_metrics` scores a detector
against reference segments (RTTM) with ``pyannote.metrics``.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from components.errors import ConfigError
from components.weights import load_weights

log = logging.getLogger(__name__)

Segment = tuple[float, float]
VAD = Callable[[np.ndarray, int], list[Segment]]

MIN_SPEECH_S = 0.25  # shorter bursts are clicks, not words
MIN_SILENCE_S = 0.10  # shorter pauses are inside a phrase
SPEECH_PAD_S = 0.03  # silero's default padding: keeps plosive onsets and word endings
HYSTERESIS = 0.15  # speech ends when the probability drops this far below the threshold


class SileroVAD:
    """silero-vad (ONNX, 16 kHz) with a speech-probability ``threshold``.

    silero runs at 8 or 16 kHz (or multiples of 16 kHz); other rates are resampled to
    16 kHz for detection only, the returned times are in seconds either way.
    """

    def __init__(self, threshold: float = 0.5):
        from silero_vad import load_silero_vad

        self.threshold = threshold
        # The ONNX build, not the TorchScript one: an ONNX file is a protobuf graph of
        # standard operators, data only, so loading it cannot run code (no custom-op
        # library is registered); a TorchScript archive is a pickle.
        self.model = load_silero_vad(onnx=True)

    def __call__(self, audio: np.ndarray, sr: int) -> list[Segment]:
        import torch
        from silero_vad import get_speech_timestamps

        audio, sr = _silero_rate(np.asarray(audio, dtype=np.float32), sr)
        if not len(audio):
            return []
        stamps = get_speech_timestamps(
            torch.from_numpy(audio), self.model, threshold=self.threshold, sampling_rate=sr,
            min_speech_duration_ms=int(MIN_SPEECH_S * 1000), min_silence_duration_ms=int(MIN_SILENCE_S * 1000),
            speech_pad_ms=int(SPEECH_PAD_S * 1000), neg_threshold=max(self.threshold - HYSTERESIS, 0.01))
        return [(s["start"] / sr, s["end"] / sr) for s in stamps]


def _silero_rate(audio: np.ndarray, sr: int) -> tuple[np.ndarray, int]:
    if sr in (8000, 16000) or sr % 16000 == 0:
        return audio, sr
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(16000, sr)
    return resample_poly(audio, 16000 // g, sr // g).astype(np.float32), 16000


def _import_pyannote() -> Any:
    """Import pyannote.audio offline, telemetry off; a ConfigError says why it cannot."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")  # it reports usage to a server by default
    try:
        import pyannote.audio
        import pyannote.audio.pipelines
    except Exception as exc:  # noqa: BLE001 - any import failure means the same to the user
        raise ConfigError(f"audio.vad: 'pyannote' needs pyannote.audio, which fails to import here: "
                          f"{type(exc).__name__}: {exc}") from None
    return pyannote.audio


def _load_pyannote_model(path: Path, model_base: type) -> Any:
    """A pyannote segmentation model rebuilt from the Lightning checkpoint at ``path``,
    which is read with ``torch.load(weights_only=True)`` so that a crafted file cannot run
    code (pyannote's own ``Model.from_pretrained`` unpickles with ``weights_only=False``).

    The only classes allowed besides tensors are pyannote's task specifications; the
    model class named in the file must be a pyannote ``Model`` from ``pyannote.audio.models``.
    It is built the way Lightning builds it: ``Klass(**hyper_parameters)``, then
    ``on_load_checkpoint`` (specifications and task layers), then the state dict.
    """
    import importlib

    from pyannote.audio.core.task import Problem, Resolution, Specifications

    key = "audio.pyannote_checkpoint"
    ckpt = load_weights(path, f"{key}: {path} is not a loadable pyannote model", error=ConfigError,
                        allowed=[Specifications, Problem, Resolution],
                        hint="a checkpoint may hold tensors and pyannote specifications only")
    try:
        architecture = ckpt["pyannote.audio"]["architecture"]
        module_name, class_name = str(architecture["module"]), str(architecture["class"])
        state, hyper = ckpt["state_dict"], dict(ckpt.get("hyper_parameters", {}))
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{key}: {path} is not a loadable pyannote model: no {exc} entry") from None
    if not module_name.startswith("pyannote.audio.models."):
        raise ConfigError(f"{key}: {path} is not a loadable pyannote model: class {module_name}.{class_name} "
                          "is not one of pyannote.audio.models")
    klass = getattr(importlib.import_module(module_name), class_name, None)
    if not (isinstance(klass, type) and issubclass(klass, model_base)):
        raise ConfigError(f"{key}: {path} is not a loadable pyannote model: {module_name}.{class_name} "
                          "is not a pyannote Model")
    model = klass(**hyper)
    model.on_load_checkpoint(ckpt)
    model.load_state_dict(state, strict=True)
    return model.eval()


class PyannoteVAD:
    """pyannote.audio's voice activity pipeline on a local segmentation checkpoint.

    ``threshold`` is the onset threshold on the speech score (the offset threshold is
    ``HYSTERESIS`` lower, as for silero); powerset models (segmentation-3.x) decide by
    argmax and ignore it.
    """

    def __init__(self, checkpoint: str | Path, threshold: float = 0.5):
        pyannote_audio = _import_pyannote()
        from pyannote.audio.pipelines import VoiceActivityDetection

        model = _load_pyannote_model(Path(checkpoint), pyannote_audio.Model)
        self.pipeline = VoiceActivityDetection(segmentation=model)
        hyper: dict[str, float] = {"min_duration_on": MIN_SPEECH_S, "min_duration_off": MIN_SILENCE_S}
        if not model.specifications.powerset:
            hyper |= {"onset": threshold, "offset": max(threshold - HYSTERESIS, 0.01)}
        self.pipeline.instantiate(hyper)

    def __call__(self, audio: np.ndarray, sr: int) -> list[Segment]:
        import torch

        waveform = torch.from_numpy(np.asarray(audio, dtype=np.float32))[None]
        speech = self.pipeline({"waveform": waveform, "sample_rate": sr})
        return [(float(s.start), float(s.end)) for s in speech.get_timeline().support()]


def check_vad_config(kind: str, checkpoint: str | None, threshold: float) -> None:
    """Fail fast, before any clip is processed, when the detector ``kind`` (``audio.vad``)
    cannot run.

    For ``pyannote`` the ``checkpoint`` (``audio.pyannote_checkpoint``) must be given,
    exist and load; the error names the path. (silero ships in its wheel: nothing to check.)
    """
    if kind != "pyannote":
        return
    if not checkpoint:
        raise ConfigError("audio.pyannote_checkpoint: required when audio.vad is 'pyannote' "
                          "(path to a pyannote segmentation model checkpoint)")
    path = Path(checkpoint)
    if not path.exists():
        raise ConfigError(f"audio.pyannote_checkpoint: {path} does not exist (audio.vad is 'pyannote')")
    try:
        make_vad(kind, str(path), threshold)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - a bad checkpoint fails in many ways inside torch/lightning
        raise ConfigError(f"audio.pyannote_checkpoint: {path} is not a loadable pyannote model: "
                          f"{type(exc).__name__}: {exc}") from None


@functools.cache
def make_vad(kind: str, checkpoint: str | None, threshold: float) -> VAD:
    """The detector ``kind`` (``audio.vad``) at ``threshold``, on ``checkpoint`` for pyannote
    (built once per process: model loading is the slow part)."""
    if kind == "silero":
        return SileroVAD(threshold)
    if kind == "pyannote":
        if not checkpoint:
            raise ConfigError("audio.pyannote_checkpoint: required when audio.vad is 'pyannote'")
        return PyannoteVAD(checkpoint, threshold)
    raise ConfigError(f"audio.vad: unknown detector {kind!r}")


def speech_seconds(segments: Iterable[Segment]) -> float:
    return float(sum(end - start for start, end in segments))


def shift_segments(segments: Iterable[Segment], shift_s: float, duration_s: float) -> list[Segment]:
    """Segments moved by ``shift_s`` seconds and clipped to ``[0, duration_s]``.

    When the audio is advanced by ``d`` seconds (sample ``t`` becomes ``t - d``), its
    speech segments move by ``shift_s = -d``; what falls outside the clip is dropped.
    """
    out = []
    for start, end in segments:
        start, end = max(start + shift_s, 0.0), min(end + shift_s, duration_s)
        if end > start:
            out.append((round(start, 3), round(end, 3)))
    return out


def read_rttm(path: str | Path) -> dict[str, list[Segment]]:
    """Speech segments per uri from an RTTM file (``SPEAKER uri 1 start dur ...`` lines).

    Every speaker turn counts as speech; overlapping turns are merged later by the metric.
    """
    out: dict[str, list[Segment]] = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        fields = line.split()
        if not fields or fields[0] != "SPEAKER":
            continue
        try:
            start, dur = float(fields[3]), float(fields[4])
        except (IndexError, ValueError):
            raise ValueError(f"{path}:{n}: not an RTTM SPEAKER line: {line!r}") from None
        out.setdefault(fields[1], []).append((start, start + dur))
    return out


def detection_metrics(reference: Mapping[str, list[Segment]], hypothesis: Mapping[str, list[Segment]],
                      durations: Mapping[str, float], collar: float = 0.0) -> dict[str, float]:
    """Detection error rate, false alarm, miss, precision, recall, F1 over the given uris.

    Each uri is scored on ``[0, durations[uri]]`` (its UEM), so silence at the end of a
    clip counts. DER = (false alarm + missed speech) / reference speech, accumulated
    over all uris (pyannote.metrics). Only uris present in ``durations`` are scored.
    """
    from pyannote.core import Annotation, Segment as PSegment, Timeline
    from pyannote.metrics.detection import DetectionErrorRate, DetectionPrecisionRecallFMeasure

    def annotation(segments: Iterable[Segment], uri: str) -> Annotation:
        ann = Annotation(uri=uri)
        for i, (start, end) in enumerate(segments):
            if end > start:
                ann[PSegment(start, end), i] = "speech"
        return ann

    der, prf = DetectionErrorRate(collar=collar), DetectionPrecisionRecallFMeasure(collar=collar)
    for uri, duration in durations.items():
        ref, hyp = annotation(reference.get(uri, []), uri), annotation(hypothesis.get(uri, []), uri)
        uem = Timeline([PSegment(0.0, float(duration))], uri=uri)
        der(ref, hyp, uem=uem)
        prf(ref, hyp, uem=uem)
    precision, recall, f1 = prf.compute_metrics()
    total = der["total"]
    return {"n_files": len(durations), "reference_speech_s": round(total, 3),
            "der": abs(der) if total else float("nan"),
            "false_alarm": der["false alarm"] / total if total else float("nan"),
            "miss": der["miss"] / total if total else float("nan"),
            "precision": precision, "recall": recall, "f1": f1}
