"""The ``audio`` stage: the aligned speech track of every face clip, and which to keep.

Inputs are the clips that survived ``faces`` (``data/faces/index.parquet``, crops at
``common.fps``) and whose source video is in ``data/raw/index.parquet``. Per clip
(:func:`process_clip`, run by :func:`components.orchestration.runner.run_items` in worker processes):

1. extract the audio of the raw video at ``common.sample_rate``, in the video's time
   base (:func:`components.audio.extract.load_audio`); reject ``no_audio_stream``, and
   ``silence`` for digital silence;
2. find speech (silero-vad or pyannote, ``audio.vad``); reject ``silence`` when the
   clip has less than ``audio.min_speech_seconds`` of it;
3. estimate the audio-video offset from the mouth in the face crop against the audio
   energy (:mod:`components.audio.sync`). An estimate beyond
   ``audio.offset_tolerance_frames`` is rejected (``offset_too_large``) only when its
   confidence reaches ``audio.min_reject_confidence`` (losing a clip needs a clear peak);
   within tolerance the audio is shifted when the confidence reaches
   ``audio.min_sync_confidence``; anything less certain shifts nothing;
4. write ``<key>.wav``: the aligned audio, exactly ``n_frames / fps`` seconds, in step
   with ``data/faces/<key>.mp4``; embed its voice (resemblyzer).

Then, over all clips at once (:func:`components.audio.speaker.speaker_consistency`),
clips whose voice does not match the other clips of their speaker are rejected
(``voice_over``). ``speaker_threshold`` only affects this second pass, so changing it
re-runs no per-clip work. :func:`evaluate_vad` scores the detector against the
synthetic corpus's ground truth (``data/raw/speech.rttm``) when there is one.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import av
import pandas as pd

from components.audio.extract import check_not_silent, load_audio, window
from components.audio.speaker import UNKNOWN_SPEAKERS, speaker_consistency, voice_embedding
from components.audio.sync import align_audio, audio_envelope, estimate_offset, mouth_signal
from components.audio.vad import (
    Segment,
    check_vad_config,
    detection_metrics,
    make_vad,
    read_rttm,
    shift_segments,
    speech_seconds,
)
from components.config import AudioParams, Params
from components.errors import EarshotError, Rejected
from components.io import file_identity
from components.media.write import write_wav
from components.orchestration.executors import fanout
from components.orchestration.runner import Item, Outcome, run_items

__all__ = ["audio_envelope", "clip_items", "evaluate_vad", "load_audio", "mouth_signal", "process_clip",
           "run_stage"]

log = logging.getLogger(__name__)

STAGE = "audio"
SECOND_PASS_KEYS = {"speaker_threshold"}  # used after run_items only: not in the per-clip fingerprint


def _read_index(path: Path, stage: str) -> pd.DataFrame:
    if not path.exists():
        raise EarshotError(f"{path} not found: run the {stage} stage first")
    return pd.read_parquet(path)


def clip_items(raw_dir: str | Path, faces_dir: str | Path) -> list[Item]:
    """One item per clip kept by ``faces`` whose source video is indexed in ``raw``."""
    raw_dir, faces_dir = Path(raw_dir), Path(faces_dir)
    raw = _read_index(raw_dir / "index.parquet", "download")
    faces = _read_index(faces_dir / "index.parquet", "faces")
    if raw.empty or faces.empty:  # an upstream stage kept nothing (its index has no columns then)
        return []
    clips = faces.merge(raw[["key", "path"]], on="key", how="inner").sort_values("key")
    items = []
    for clip in clips.itertuples(index=False):
        raw_path, crop, track = raw_dir / clip.path, faces_dir / clip.crop_path, faces_dir / clip.track_path
        payload = {"raw_path": str(raw_path), "crop_path": str(crop), "track_path": str(track),
                   "n_frames": int(clip.n_frames), "fps": float(clip.fps), "speaker_id": str(clip.speaker_id),
                   "video_id": str(clip.video_id), "clip_id": str(clip.clip_id)}
        identity = {name: file_identity(p) if p.exists() else str(p)
                    for name, p in (("raw", raw_path), ("crop", crop), ("track", track))}
        items.append(Item(clip.key, payload, identity, source=str(raw_path)))
    return items


def clip_config(params: Params) -> dict[str, Any]:
    """What the per-clip work depends on (the runner's resume fingerprint)."""
    cfg = params.audio
    config: dict[str, Any] = {"audio": cfg.model_dump(mode="json", exclude=SECOND_PASS_KEYS),
                              "sample_rate": params.common.sample_rate}
    if cfg.vad == "pyannote" and cfg.pyannote_checkpoint and Path(cfg.pyannote_checkpoint).exists():
        config["vad_model"] = file_identity(cfg.pyannote_checkpoint)  # a retrained model redoes the clips
    return config


def _require_speech(segments: list[Segment], cfg: AudioParams, key: str, duration: float) -> float:
    speech = speech_seconds(segments)
    if speech < cfg.min_speech_seconds:
        raise Rejected("silence", f"{key}: {speech:.2f} s of speech in {duration:.2f} s "
                                  f"< audio.min_speech_seconds={cfg.min_speech_seconds:g} ({cfg.vad} VAD)")
    return speech


def process_clip(item: Item, *, cfg: AudioParams, sample_rate: int, out_dir: str) -> dict[str, Any]:
    """Extract, check, align and write the audio of one clip; return its index record."""
    p, key, sr = item.payload, item.key, sample_rate
    fps, n_frames = p["fps"], p["n_frames"]
    duration = n_frames / fps
    audio = load_audio(p["raw_path"], sr)
    check_not_silent(window(audio, 0, round(duration * sr)), key)

    segments = make_vad(cfg.vad, cfg.pyannote_checkpoint, cfg.vad_threshold)(audio, sr)
    _require_speech(shift_segments(segments, 0.0, duration), cfg, key, duration)

    try:
        visual = mouth_signal(p["crop_path"], p["track_path"])
    except (OSError, KeyError, ValueError, av.error.FFmpegError) as exc:
        raise Rejected("corrupt", f"{key}: face crop or track unreadable ({type(exc).__name__}: {exc})") from None
    sync = estimate_offset(visual, audio_envelope(audio, sr, fps), cfg.max_offset_frames, fps)
    reliable = sync.confidence >= cfg.min_sync_confidence
    offset = sync.offset_frames if reliable else 0
    if abs(offset) > cfg.offset_tolerance_frames and sync.confidence < cfg.min_reject_confidence:
        # Beyond tolerance but not certain enough to lose the clip: keep it as it is.
        reliable, offset = False, 0
    if abs(offset) > cfg.offset_tolerance_frames:
        side = "late" if offset > 0 else "early"
        raise Rejected("offset_too_large", f"{key}: audio {side} by {abs(offset)} frames "
                                           f"({abs(offset) / fps * 1000:.0f} ms, confidence {sync.confidence:.2f}) "
                                           f"> audio.offset_tolerance_frames={cfg.offset_tolerance_frames}")

    aligned = align_audio(audio, offset, n_frames, fps, sr)
    speech_segments = shift_segments(segments, -offset / fps, duration)
    speech_s = _require_speech(speech_segments, cfg, key, duration)
    embedding = None
    if cfg.speaker_check and p["speaker_id"] not in UNKNOWN_SPEAKERS:
        embedding = voice_embedding(aligned, sr)

    wav_rel = f"{key}.wav"
    write_wav(Path(out_dir) / wav_rel, aligned, sr)
    return {
        "speaker_id": p["speaker_id"], "video_id": p["video_id"], "clip_id": p["clip_id"],
        "wav_path": wav_rel, "sample_rate": sr, "n_samples": len(aligned), "n_frames": n_frames, "fps": fps,
        "duration_s": round(len(aligned) / sr, 4),
        "offset_frames": int(offset), "sync_offset_frames": sync.offset_frames,
        "sync_confidence": round(sync.confidence, 4), "sync_reliable": bool(reliable),
        "speech_s": round(speech_s, 3), "speech_ratio": round(speech_s / duration, 4) if duration else 0.0,
        "speech_segments": [[s, e] for s, e in speech_segments],
        "voice_embedding": None if embedding is None else [round(float(x), 6) for x in embedding],
        "speaker_cos": None,
        "outputs": [wav_rel],
    }


def run_stage(params: Params, raw_dir: str | Path, faces_dir: str | Path, out_dir: str | Path,
              progress: bool = True) -> Outcome:
    """Run the audio stage (per-clip work, then the per-speaker voice check)."""
    cfg = params.audio
    # a missing pyannote checkpoint fails here, before any clip
    check_vad_config(cfg.vad, cfg.pyannote_checkpoint, cfg.vad_threshold)
    items = clip_items(raw_dir, faces_dir)
    work = functools.partial(process_clip, cfg=cfg, sample_rate=params.common.sample_rate, out_dir=str(out_dir))
    with fanout(params) as pool:
        outcome = run_items(STAGE, items, work, out_dir, config=clip_config(params), executor=pool, progress=progress)
    if cfg.speaker_check:
        sources = {it.key: it.source for it in items}
        outcome.records, rejected = speaker_consistency(outcome.records, cfg.speaker_threshold)
        for rej in rejected:
            outcome.reject(rej["key"], rej["reason"], rej["detail"], sources.get(rej["key"], ""))
        if rejected:
            log.info("audio: %d voice-over clip(s) rejected", len(rejected))
    return outcome


def evaluate_vad(records: list[dict[str, Any]], rttm: str | Path, cfg: AudioParams) -> dict[str, Any]:
    """VAD quality on the kept clips that have ground truth in ``rttm`` (uri = key).

    The stored speech segments are in the aligned (shifted) time of each wav; they are
    moved back by the applied offset to the raw video's time, where the reference is.
    Without a reference file, only the detector's identity is returned (``n_files`` 0).
    """
    result: dict[str, Any] = {"vad": cfg.vad, "threshold": cfg.vad_threshold, "collar": 0.0,
                              "reference": str(rttm) if Path(rttm).exists() else None, "n_files": 0}
    if result["reference"] is None:
        return result
    reference = read_rttm(rttm)
    scored = [r for r in records if r["key"] in reference]
    hypothesis = {r["key"]: shift_segments(r["speech_segments"], r["offset_frames"] / r["fps"], r["duration_s"])
                  for r in scored}
    durations = {r["key"]: float(r["duration_s"]) for r in scored}
    if durations:
        result |= detection_metrics(reference, hypothesis, durations)
    log.info("audio: VAD on %d clip(s) with ground truth: %s", len(durations),
             {k: round(v, 4) for k, v in result.items() if isinstance(v, float)})
    return result

