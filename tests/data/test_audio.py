"""The audio stage: extraction, VAD (+ its evaluation), mouth/audio sync, voice check.

Inputs are made here: speech from the synthetic corpus's source-filter synthesizer
(``components.data.synth.voice``), a drawn face whose mouth opens with that speech's
visemes, muxed into videos with ffmpeg; plus pyannote.audio's shipped real recording
(``sample.wav`` + its RTTM) and, with ``EARSHOT_REAL_DATA``, the shared real clips.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from components.audio.extract import check_not_silent, load_audio, window
from components.audio.speaker import leave_one_out_cosines, speaker_consistency, voice_embedding
from components.audio.sync import align_audio, audio_envelope, estimate_offset, mouth_activity, mouth_signal
from components.audio.vad import (
    SileroVAD,
    check_vad_config,
    detection_metrics,
    make_vad,
    read_rttm,
    shift_segments,
    speech_seconds,
)
from components.config import default_params
from components.data.audio import clip_config, run_stage
from components.data.synth.attributes import sample_speaker
from components.data.synth.voice import Speech, Voice, synthesize_speech
from components.errors import ConfigError, Rejected
from components.media.ffmpeg import run_ffmpeg
from components.media.write import write_video
from tests.conftest import tiny_params

FPS, SR = 25, 16000
SPF = SR // FPS  # audio samples per video frame
SEED = 1234
# pyannote.audio ships a real recording with its reference speech turns (found without importing it)
PYANNOTE_SAMPLE = Path(importlib.util.find_spec("pyannote.audio").submodule_search_locations[0]) / "sample"


def speech(speaker: int, clip: int, seconds: float = 4.6) -> Speech:
    """A synthetic utterance of synthetic speaker ``speaker`` (speaker 0 female, 1 male)."""
    voice = Voice.from_attributes(sample_speaker(SEED, speaker))
    return synthesize_speech(voice, np.random.default_rng([speaker, clip]), seconds, sample_rate=SR, fps=FPS)


def face_frames(opening: np.ndarray, size: int = 96) -> tuple[list[np.ndarray], np.ndarray]:
    """A drawn face per frame whose mouth opens by ``opening`` (0..1), swaying sideways.

    Returns RGB frames and RetinaFace-order landmarks ``(n, 5, 2)`` in frame pixels; the
    sway makes the mouth box follow the landmarks, as on a real tracked crop.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    frames, landmarks = [], []
    for i, o in enumerate(opening):
        cx, cy = size / 2 + 3 * np.sin(i / 9), size / 2
        img = np.empty((size, size, 3), np.uint8)
        img[:] = (70, 90, 110)
        img[((xx - cx) / (0.32 * size)) ** 2 + ((yy - cy) / (0.42 * size)) ** 2 <= 1] = (205, 160, 135)
        eyes = [(cx - 0.13 * size, cy - 0.1 * size), (cx + 0.13 * size, cy - 0.1 * size)]
        for ex, ey in eyes:
            img[(xx - ex) ** 2 + (yy - ey) ** 2 <= (0.04 * size) ** 2] = (40, 30, 30)
        nose = (cx, cy + 0.05 * size)
        mouth_y, half_w = cy + 0.22 * size, 0.12 * size
        half_h = 0.012 * size + float(o) * 0.08 * size
        img[((xx - cx) / half_w) ** 2 + ((yy - mouth_y) / half_h) ** 2 <= 1] = (60, 15, 25)
        frames.append(img)
        landmarks.append([*eyes, nose, (cx - half_w, mouth_y), (cx + half_w, mouth_y)])
    return frames, np.asarray(landmarks, np.float32)


def delayed(audio: np.ndarray, frames: int) -> np.ndarray:
    """``audio`` made late by ``frames`` video frames (early when negative), same length."""
    return window(audio, -frames * SPF, len(audio))


class Corpus:
    """A fake ``data/raw`` + ``data/faces`` (the contract's files and index tables)."""

    def __init__(self, data: Path):
        self.raw, self.faces = data / "raw", data / "faces"
        self.raw_rows: list[dict] = []
        self.face_rows: list[dict] = []
        self.rttm: list[str] = []

    def add(self, key: str, opening: np.ndarray, audio: np.ndarray | None,
            segments: list[tuple[float, float]] = ()) -> None:
        """A clip whose face moves with ``opening``; ``audio`` None -> a video without sound."""
        speaker_id, video_id, clip_id = key.split("/")
        frames, landmarks = face_frames(opening)
        raw, crop, track = self.raw / f"{key}.mp4", self.faces / f"{key}.mp4", self.faces / f"{key}.npz"
        write_video(raw, frames, FPS, audio=audio, sample_rate=SR, threads=1)
        write_video(crop, frames, FPS, threads=1)
        n, size = len(frames), frames[0].shape[0]
        box = np.tile(np.float32([0, 0, size, size]), (n, 1))
        np.savez(track, boxes=box, scores=np.ones(n, np.float32), detected=np.ones(n, bool),
                 landmarks=landmarks, crop_boxes=box)
        ids = {"key": key, "speaker_id": speaker_id, "video_id": video_id, "clip_id": clip_id}
        self.raw_rows.append({**ids, "path": f"{key}.mp4", "has_audio": audio is not None})
        self.face_rows.append({**ids, "crop_path": f"{key}.mp4", "track_path": f"{key}.npz", "n_frames": n,
                               "fps": FPS, "duration_s": n / FPS})
        self.rttm += [f"SPEAKER {key} 1 {s:.3f} {e - s:.3f} <NA> <NA> {speaker_id} <NA> <NA>" for s, e in segments]

    def write_indexes(self) -> None:
        pd.DataFrame(self.raw_rows).to_parquet(self.raw / "index.parquet", index=False)
        pd.DataFrame(self.face_rows).to_parquet(self.faces / "index.parquet", index=False)
        (self.raw / "speech.rttm").write_text("\n".join(self.rttm) + "\n")


# ---------------------------------------------------------------------------- extraction


def test_load_audio_resamples_and_downmixes_any_codec(tmp_path):
    """44.1 kHz stereo MP2 in an MPEG-1 program stream (as GRID's .mpg) -> 16 kHz mono."""
    path = tmp_path / "clip.mpg"
    run_ffmpeg(["-f", "lavfi", "-i", "testsrc=size=64x64:rate=25:duration=2",
                "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=2",
                "-ac", "2", "-c:v", "mpeg1video", "-c:a", "mp2", "-f", "mpeg", "-shortest", path])
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) / SR - 2.0) < 0.1
    spectrum = np.abs(np.fft.rfft(audio[SR // 2: SR // 2 + SR]))
    assert abs(np.argmax(spectrum) - 440) <= 2  # 1 s window: bins are 1 Hz


@pytest.mark.parametrize("video_offset, audio_offset, ext, codec", [
    (0.0, 0.2, "mp4", "aac"),  # the audio stream starts 0.2 s after the video
    (0.4, 0.0, "mkv", "pcm_s16le"),  # the video starts 0.4 s (10 frames) after the audio
])
def test_load_audio_puts_sample_zero_at_the_first_video_frame(tmp_path, video_offset, audio_offset, ext, codec):
    """A click 0.5 s into the audio stream lands at 0.5 + audio_offset - video_offset in video time."""
    path = tmp_path / f"clip.{ext}"
    run_ffmpeg(["-itsoffset", video_offset, "-f", "lavfi", "-i", "testsrc=size=64x64:rate=25:duration=2",
                "-itsoffset", audio_offset, "-f", "lavfi", "-i", "aevalsrc='0.8*between(t,0.5,0.52)':s=16000:d=2",
                "-c:v", "libx264", "-bf", "0", "-c:a", codec, "-map", "0:v", "-map", "1:a", path])
    audio = load_audio(path)
    click = np.argmax(np.abs(audio) > 0.2) / SR
    assert click == pytest.approx(0.5 + audio_offset - video_offset, abs=0.01)


def test_load_audio_rejects_missing_and_silent_tracks(tmp_path):
    mute = tmp_path / "mute.mp4"
    run_ffmpeg(["-f", "lavfi", "-i", "testsrc=size=64x64:rate=25:duration=1", "-c:v", "libx264", mute])
    with pytest.raises(Rejected) as exc:
        load_audio(mute)
    assert exc.value.reason == "no_audio_stream" and "mute.mp4" in exc.value.detail
    with pytest.raises(Rejected) as exc:
        load_audio(tmp_path / "missing.mp4")
    assert exc.value.reason == "unreadable"
    with pytest.raises(Rejected) as exc:
        check_not_silent(np.zeros(SR, np.float32), "clip")
    assert exc.value.reason == "silence" and "digital silence" in exc.value.detail
    check_not_silent(speech(0, 0, 1.0).audio)


def test_window_pads_and_cuts_to_an_exact_length():
    x = np.arange(1, 11, dtype=np.float32)
    assert window(x, -2, 5).tolist() == [0, 0, 1, 2, 3]
    assert window(x, 8, 5).tolist() == [9, 10, 0, 0, 0]
    assert window(x, 20, 3).tolist() == [0, 0, 0]


# ---------------------------------------------------------------------------- VAD


def test_silero_on_pyannote_sample_recording():
    """A real 30 s two-speaker recording with reference turns: detection error rate."""
    audio = load_audio(PYANNOTE_SAMPLE / "sample.wav")
    reference = read_rttm(PYANNOTE_SAMPLE / "sample.rttm")
    hypothesis = SileroVAD(0.5)(audio, SR)
    metrics = detection_metrics(reference, {"sample": hypothesis}, {"sample": len(audio) / SR})
    print(f"\nsilero on pyannote sample.wav: {json.dumps({k: round(v, 4) for k, v in metrics.items()})}")
    assert metrics["der"] < 0.08  # measured 0.016
    assert metrics["precision"] > 0.95 and metrics["recall"] > 0.95


def test_silero_finds_the_phrases_of_synthetic_speech():
    der = []
    for spk in (0, 1):
        utt = speech(spk, 7)
        found = SileroVAD(0.5)(utt.audio, SR)
        der.append(detection_metrics({"u": utt.segments}, {"u": found}, {"u": len(utt.audio) / SR})["der"])
    print(f"\nsilero DER on synthetic speech: {np.round(der, 3).tolist()}")
    assert max(der) < 0.35  # the synthesizer's phrases include short pauses silero merges


def test_detection_metrics_and_segment_helpers():
    ref = {"a": [(0.0, 1.0), (2.0, 3.0)]}
    assert detection_metrics(ref, ref, {"a": 4.0})["der"] == 0
    missed = detection_metrics(ref, {"a": []}, {"a": 4.0})
    assert missed["der"] == pytest.approx(1.0) and missed["miss"] == pytest.approx(1.0)
    fa = detection_metrics(ref, {"a": [(0.0, 4.0)]}, {"a": 4.0})
    assert fa["false_alarm"] == pytest.approx(1.0) and fa["recall"] == pytest.approx(1.0)
    assert shift_segments([(0.1, 0.5), (1.0, 2.0)], -0.2, 1.5) == [(0.0, 0.3), (0.8, 1.5)]
    assert speech_seconds([(0.0, 0.5), (1.0, 1.25)]) == pytest.approx(0.75)


def test_read_rttm(tmp_path):
    rttm = tmp_path / "x.rttm"
    rttm.write_text("SPEAKER id1/v/c 1 0.50 1.25 <NA> <NA> id1 <NA> <NA>\n"
                    "SPEAKER id1/v/c 1 2.00 0.50 <NA> <NA> id1 <NA> <NA>\n\n")
    assert read_rttm(rttm) == {"id1/v/c": [(0.5, 1.75), (2.0, 2.5)]}


def test_pyannote_vad_needs_an_existing_checkpoint_before_any_work(tmp_path):
    for checkpoint in (None, str(tmp_path / "nowhere" / "pytorch_model.bin")):
        params = tiny_params(tmp_path, **{"audio.vad": "pyannote", "audio.pyannote_checkpoint": checkpoint})
        out = tmp_path / "audio"
        with pytest.raises(ConfigError) as exc:
            run_stage(params, tmp_path / "raw", tmp_path / "faces", out, progress=False)  # inputs absent too
        assert "audio.pyannote_checkpoint" in str(exc.value)
        if checkpoint:
            assert checkpoint in str(exc.value)
        assert not out.exists()


def _pyannote_checkpoint(path: Path, speech_bias: float) -> Path:
    """A tiny from-scratch PyanNet saved as pyannote's ``Model.from_pretrained`` loads it.

    ``from_pretrained`` reads a Lightning checkpoint: ``state_dict``, ``hyper_parameters``
    (the constructor's arguments) and a ``pyannote.audio`` entry (version, class and
    task specifications) that the model's ``on_save_checkpoint`` fills in. The final
    classifier outputs a constant ``speech_bias`` logit, so the expected output is known.
    """
    import lightning
    import torch
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from pyannote.audio.models.segmentation import PyanNet

    model = PyanNet(lstm={"hidden_size": 8, "num_layers": 1}, linear={"hidden_size": 8, "num_layers": 1})
    model.specifications = Specifications(problem=Problem.BINARY_CLASSIFICATION, resolution=Resolution.FRAME,
                                          duration=2.0, classes=["speech"])
    model.build()
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.fill_(speech_bias)
    checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                  "pytorch-lightning_version": lightning.__version__}
    model.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    return path


def test_pyannote_vad_on_a_from_scratch_checkpoint(tmp_path):
    from components.audio.vad import _import_pyannote

    try:
        _import_pyannote()
    except ConfigError as exc:
        pytest.skip(str(exc))
    audio = speech(0, 1, 3.0).audio
    always = str(_pyannote_checkpoint(tmp_path / "on.ckpt", 8.0))
    check_vad_config("pyannote", always, 0.5)
    assert speech_seconds(make_vad("pyannote", always, 0.5)(audio, SR)) == pytest.approx(3.0, abs=0.1)
    never = str(_pyannote_checkpoint(tmp_path / "off.ckpt", -8.0))
    assert make_vad("pyannote", never, 0.5)(audio, SR) == []
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="junk.ckpt is not a loadable pyannote model"):
        check_vad_config("pyannote", str(junk), 0.5)


# ---------------------------------------------------------------------------- sync


@pytest.mark.parametrize("clip", [0, 1, 2])
def test_offset_estimate_recovers_known_shifts(clip):
    """Mouth activity of a drawn face driven by the visemes vs the shifted audio."""
    utt = speech(clip % 2, 10 + clip)
    frames, landmarks = face_frames(utt.visemes[:, 0])
    gray = [f.mean(axis=2).astype(np.uint8) for f in frames]
    visual = mouth_activity(gray, landmarks)
    found = {}
    for k in (-5, -3, 0, 3, 5):
        est = estimate_offset(visual, audio_envelope(delayed(utt.audio, k), SR, FPS), 15, FPS)
        found[k] = (est.offset_frames, round(est.confidence, 2))
    print(f"\nclip {clip}: applied shift -> (estimate, confidence) {found}")
    assert all(abs(est - k) <= 1 for k, (est, _) in found.items())
    assert min(conf for _, conf in found.values()) > default_params().audio.min_sync_confidence


def test_a_still_mouth_gives_no_confident_offset():
    utt = speech(0, 20)
    est = estimate_offset(np.full(utt.n_frames, 0.3), audio_envelope(utt.audio, SR, FPS), 15, FPS)
    assert est.confidence < 0.05


def test_a_peak_on_the_edge_of_the_search_range_is_not_trusted():
    """A maximum at the last searched lag is no peak: confidence 0 (no shift, no rejection)."""
    rng = np.random.default_rng(0)
    visual = rng.normal(size=50)
    audio = np.roll(visual, 15) + 0.1 * rng.normal(size=50)  # "late by 15": at the range's edge
    est = estimate_offset(visual, audio, 15, FPS)
    assert est.offset_frames == 15 and est.confidence == 0.0
    inside = estimate_offset(visual, np.roll(visual, 4) + 0.1 * rng.normal(size=50), 15, FPS)
    assert inside.offset_frames == 4 and inside.confidence > 0.3


def test_align_audio_advances_late_audio_and_fixes_the_length():
    audio = np.arange(SR, dtype=np.float32)  # 1 s = 25 frames
    out = align_audio(audio, 2, n_frames=30, fps=FPS, sr=SR)  # audio late by 2 frames
    assert len(out) == 30 * SPF
    assert out[0] == 2 * SPF and out[(25 - 2) * SPF - 1] == SR - 1 and not out[(25 - 2) * SPF:].any()
    early = align_audio(audio, -1, n_frames=25, fps=FPS, sr=SR)
    assert not early[:SPF].any() and early[SPF] == 0 and early[-1] == SR - 1 - SPF


# ---------------------------------------------------------------------------- voice


def _unit(v):
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


def test_speaker_consistency_rejects_the_odd_voice_out():
    a, b = _unit([1, 0.1, 0]), _unit([0, 1, 0.2])
    records = [
        {"key": "s1/v/0", "speaker_id": "s1", "voice_embedding": a},
        {"key": "s1/v/1", "speaker_id": "s1", "voice_embedding": _unit(a + [0, 0, 0.1])},
        {"key": "s1/v/2", "speaker_id": "s1", "voice_embedding": _unit(a + [0, 0.1, 0])},
        {"key": "s1/v/3", "speaker_id": "s1", "voice_embedding": b},  # someone else's voice
        {"key": "s2/v/0", "speaker_id": "s2", "voice_embedding": b},  # one clip: nothing to compare
        {"key": "unknown/x/0", "speaker_id": "unknown", "voice_embedding": a},
        {"key": "unknown/y/0", "speaker_id": "unknown", "voice_embedding": b},
        {"key": "s3/v/0", "speaker_id": "s3", "voice_embedding": None},
    ]
    kept, rejected = speaker_consistency(records, threshold=0.6)
    assert [r["key"] for r in rejected] == ["s1/v/3"]
    assert rejected[0]["reason"] == "voice_over" and "3 other clip(s)" in rejected[0]["detail"]
    cos = {r["key"]: r["speaker_cos"] for r in kept}
    assert all(cos[f"s1/v/{i}"] > 0.6 for i in range(3))
    assert cos["s2/v/0"] is None and cos["unknown/x/0"] is None and cos["s3/v/0"] is None
    two = [{"key": k, "speaker_id": "s", "voice_embedding": e} for k, e in (("0", a), ("1", b))]
    assert len(speaker_consistency(two, 0.6)[1]) == 2  # two disagreeing clips: both are suspect


def test_a_dub_does_not_drag_the_genuine_clips_down():
    """Two genuine clips (cosine 0.8) and a dub orthogonal to both: scored in one pass, each
    genuine clip would get (0.8 + 0) / sqrt(2) = 0.57 < 0.6 from the mean of the other two."""
    a1, a2, dub = np.array([1.0, 0, 0]), np.array([0.8, 0.6, 0]), np.array([0, 0, 1.0])
    records = [{"key": k, "speaker_id": "s", "voice_embedding": e} for k, e in (("a1", a1), ("a2", a2), ("d", dub))]
    kept, rejected = speaker_consistency(records, 0.6)
    assert [r["key"] for r in rejected] == ["d"]
    assert [r["speaker_cos"] for r in kept] == [pytest.approx(0.8), pytest.approx(0.8)]


def test_leave_one_out_cosines():
    e = np.eye(3)
    assert np.allclose(leave_one_out_cosines(e), 0.0)
    assert np.allclose(leave_one_out_cosines(np.array([[1.0, 0], [1, 0]])), 1.0)


def test_synthetic_voices_of_opposite_sexes_are_told_apart_by_resemblyzer():
    """Clips of one synthetic speaker are closer to each other than to a voice of the other sex.

    (Same-sex synthetic voices overlap: see ``components.audio.speaker``.)"""
    emb = {(s, c): voice_embedding(speech(s, c).audio, SR) for s in (0, 1) for c in (0, 1, 2)}
    same = [emb[s, i] @ emb[s, j] for s in (0, 1) for i in range(3) for j in range(i + 1, 3)]
    other = [emb[0, i] @ emb[1, j] for i in range(3) for j in range(3)]
    print(f"\nresemblyzer cosine, same synthetic speaker {[round(float(c), 3) for c in same]}, "
          f"female vs male speaker {[round(float(c), 3) for c in other]}")
    assert min(same) > max(other)


# ---------------------------------------------------------------------------- stage


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Two synthetic speakers with clean, shifted, voiced-over and broken clips."""
    data = tmp_path_factory.mktemp("audio_stage") / "data"
    c = Corpus(data)
    for clip, shift in ((0, 0), (1, 3), (2, -4), (3, 2)):  # speaker 0: in sync, late, early, late
        utt = speech(0, clip)
        c.add(f"id00000/vid0/{clip:05d}", utt.visemes[:, 0], delayed(utt.audio, shift),
              shift_segments(utt.segments, shift / FPS, len(utt.audio) / SR))
    dub = speech(1, 9)  # speaker 0's face, speaker 1's voice: a voice-over
    c.add("id00000/vid1/00000", dub.visemes[:, 0], dub.audio, dub.segments)
    for clip, shift in ((0, 0), (1, 10), (2, 0)):  # speaker 1; clip 1 is 10 frames late
        utt = speech(1, clip)
        c.add(f"id00001/vid0/{clip:05d}", utt.visemes[:, 0], delayed(utt.audio, shift),
              shift_segments(utt.segments, shift / FPS, len(utt.audio) / SR))
    utt = speech(0, 5, 3.0)
    c.add("unknown/flat/00000", utt.visemes[:, 0], utt.audio, utt.segments)
    still = np.zeros(50)
    c.add("id00002/vid0/00000", still, np.zeros(2 * SR, np.float32))  # muted track
    c.add("id00002/vid0/00001", still, None)  # no audio stream
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(2 * SR) / SR).astype(np.float32)
    c.add("id00002/vid0/00002", still, tone)  # sound, but no speech
    c.write_indexes()
    return c


def _stage_params(tmp_path: Path, data: Path, **overrides):
    # 0.8: between the synthetic voices' same-speaker and other-sex cosines (0.6 is for real voices)
    return tiny_params(tmp_path, **{"common.data_dir": str(data), "tracking.enabled": False,
                                    "audio.speaker_threshold": 0.8, **overrides})


def test_stage_end_to_end(corpus, tmp_path):
    from pipelines.audio import run

    data = corpus.raw.parent
    params = _stage_params(tmp_path, data)
    summary = run(params, progress=False)
    out = data / "audio"
    index = pd.read_parquet(out / "index.parquet").set_index("key")
    quarantine = pd.read_parquet(out / "quarantine.parquet").set_index("key")
    print("\n" + index[["offset_frames", "sync_offset_frames", "sync_confidence", "speech_s", "speaker_cos"]]
          .to_string())
    print(quarantine[["reason", "detail"]].to_string())

    assert dict(quarantine["reason"]) == {
        "id00000/vid1/00000": "voice_over", "id00001/vid0/00001": "offset_too_large",
        "id00002/vid0/00000": "silence", "id00002/vid0/00001": "no_audio_stream", "id00002/vid0/00002": "silence"}
    assert sorted(index.index) == ["id00000/vid0/00000", "id00000/vid0/00001", "id00000/vid0/00002",
                                   "id00000/vid0/00003", "id00001/vid0/00000", "id00001/vid0/00002",
                                   "unknown/flat/00000"]
    for col in ("wav_path", "offset_frames", "speech_s", "speech_ratio", "speech_segments", "speaker_cos"):
        assert col in index.columns
    true_shift = {"id00000/vid0/00000": 0, "id00000/vid0/00001": 3, "id00000/vid0/00002": -4,
                  "id00000/vid0/00003": 2, "id00001/vid0/00000": 0, "id00001/vid0/00002": 0,
                  "unknown/flat/00000": 0}
    faces = pd.read_parquet(corpus.faces / "index.parquet").set_index("key")
    for key, row in index.iterrows():
        assert abs(row.offset_frames - true_shift[key]) <= 1, key
        wav, sr = sf.read(out / row.wav_path, dtype="float32")
        assert sr == SR and len(wav) == faces.loc[key, "n_frames"] * SPF  # exactly n_frames / fps
        assert row.speech_s > 1.0 and 0 < row.speech_ratio <= 1
        assert all(0 <= s < e <= len(wav) / SR for s, e in row.speech_segments)
    # the stored wav is the aligned audio: the original utterance at lag 0 (+- the 1-frame estimate error)
    utt, wav = speech(0, 1), sf.read(out / "id00000/vid0/00001.wav", dtype="float32")[0]
    lags = np.arange(-2 * SPF, 2 * SPF + 1, 8)
    residual = lags[np.argmax([np.dot(window(wav, lag, SR * 3), utt.audio[:SR * 3]) for lag in lags])]
    assert abs(residual) <= SPF
    assert pd.isna(index.loc["unknown/flat/00000", "speaker_cos"])
    assert (index.drop("unknown/flat/00000")["speaker_cos"] > 0.8).all()

    vad_eval = json.loads((out / "vad_eval.json").read_text())
    print(f"VAD on the synthetic clips: {vad_eval}")
    assert vad_eval["n_files"] == 7 and vad_eval["der"] < 0.35  # the kept clips with ground truth
    assert summary["kept"] == 7 and summary["rejected.voice_over"] == 1 and "vad.der" in summary

    # a rerun resumes every clip; the voice threshold only re-runs the cheap second pass
    again = run_stage(_stage_params(tmp_path, data, **{"audio.speaker_threshold": 0.99}), corpus.raw, corpus.faces,
                      out, progress=False)
    assert again.skipped == 12
    assert len(again.records) < 7  # at 0.99 even genuine clips fail the voice check


def test_speaker_threshold_is_not_part_of_the_clip_fingerprint(tmp_path):
    a, b = (clip_config(tiny_params(tmp_path, **{"audio.speaker_threshold": t})) for t in (0.5, 0.7))
    assert a == b
    c = clip_config(tiny_params(tmp_path, **{"audio.vad_threshold": 0.7}))
    assert c != a


# ---------------------------------------------------------------------------- real data


def _real_clips(real_data: Path) -> list[Path]:
    return sorted(p for p in (real_data / "clips").iterdir() if p.suffix in (".mp4", ".mpg"))


@pytest.mark.realdata
def test_real_clips_have_16k_audio_and_speech(real_data):
    manifest = pd.read_csv(real_data / "clips" / "manifest.csv").set_index("file")
    vad = SileroVAD(0.5)
    for path in _real_clips(real_data):
        audio = load_audio(path)
        assert audio.dtype == np.float32
        assert abs(len(audio) / SR - manifest.loc[path.name, "duration_s"]) < 0.15, path.name
        speech_s = speech_seconds(vad(audio, SR))
        print(f"{path.name}: {len(audio) / SR:.2f} s audio, {speech_s:.2f} s speech")
        assert speech_s > 1.0, path.name


@pytest.fixture(scope="module")
def real_upstream(real_data, tmp_path_factory):
    """The real clips through the download (local folder, flat) and faces stages."""
    from components.data import download, faces
    from components.orchestration.runner import write_outcome

    root = tmp_path_factory.mktemp("real_audio")
    params = tiny_params(root, **{"download.source": "local", "download.input": str(real_data / "clips"),
                                  "download.layout": "flat", "tracking.enabled": False, "common.workers": 2})
    raw, crops = params.data_path("raw"), params.data_path("faces")
    write_outcome(download.run_stage(params, raw, progress=False), raw)
    write_outcome(faces.run_stage(params, raw, crops, progress=False), crops)
    return params


@pytest.mark.realdata
def test_real_clips_offset_estimate(real_upstream):
    """Real face crops and their audio, shifted by known amounts.

    The published clips are in sync. Shifted by 0, +-3, +-5 frames, the estimate is
    within 1 frame of the shift for all but a few (measured 28 of 30), and every estimate
    confident enough to be applied (>= audio.min_sync_confidence) is right.
    """
    raw, crops = real_upstream.data_path("raw"), real_upstream.data_path("faces")
    clips = pd.read_parquet(crops / "index.parquet").merge(pd.read_parquet(raw / "index.parquet")[["key", "path"]])
    min_conf = real_upstream.audio.min_sync_confidence
    assert len(clips) == 6
    right, applied = 0, []
    for clip in clips.itertuples():
        visual = mouth_signal(crops / clip.crop_path, crops / clip.track_path)
        audio = load_audio(raw / clip.path)
        found = {k: estimate_offset(visual, audio_envelope(delayed(audio, k), SR, FPS), 15, FPS)
                 for k in (0, -5, -3, 3, 5)}
        print(f"{clip.key}: " + ", ".join(f"{k:+d}->{e.offset_frames:+d} ({e.confidence:.2f})"
                                          for k, e in found.items()))
        right += sum(abs(e.offset_frames - k) <= 1 for k, e in found.items())
        applied += [abs(e.offset_frames - k) for k, e in found.items() if e.confidence >= min_conf]
    print(f"within 1 frame: {right}/30; applied (confident) estimates: {len(applied)}, errors {applied}")
    assert right >= 26
    assert applied and max(applied) <= 1


@pytest.mark.realdata
def test_real_voice_over_is_rejected_at_the_default_threshold(real_data):
    """Three real VoxCeleb2 voices, each cut in two "clips"; one speaker gets a third
    clip in someone else's voice."""
    embeddings = {}
    for wav in sorted((real_data / "stills").glob("*.wav")):
        audio = load_audio(wav)
        half = len(audio) // 2
        for part, piece in enumerate((audio[:half], audio[half:])):
            embeddings[wav.stem, part] = voice_embedding(piece, SR)
    names = sorted({name for name, _ in embeddings})
    records = [{"key": f"{n}/v/{p}", "speaker_id": n, "voice_embedding": embeddings[n, p]}
               for n in names for p in (0, 1)]
    records.append({"key": f"{names[0]}/dub/0", "speaker_id": names[0], "voice_embedding": embeddings[names[1], 0]})
    kept, rejected = speaker_consistency(records, default_params().audio.speaker_threshold)
    print("\nreal voices, cosine to the speaker's other clips: "
          + ", ".join(f"{r['key']}={r['speaker_cos']}" for r in kept + rejected))
    assert [r["key"] for r in rejected] == [f"{names[0]}/dub/0"]


@pytest.mark.realdata
def test_stage_on_real_clips(real_upstream):
    """The audio stage on the real clips' face crops: every clip kept, in sync."""
    params = real_upstream
    raw, crops, out = params.data_path("raw"), params.data_path("faces"), params.data_path("audio")
    outcome = run_stage(params, raw, crops, out, progress=False)
    assert not outcome.quarantine and len(outcome.records) == 6
    n_frames = pd.read_parquet(crops / "index.parquet").set_index("key")["n_frames"]
    for rec in outcome.records:
        print(f"{rec['key']}: offset {rec['offset_frames']:+d} (estimate {rec['sync_offset_frames']:+d}, "
              f"confidence {rec['sync_confidence']:.2f}), speech {rec['speech_s']:.2f} s")
        wav, sr = sf.read(out / rec["wav_path"], dtype="float32")
        assert sr == SR and len(wav) == n_frames[rec["key"]] * SPF
        assert rec["speech_s"] > 1.0 and rec["speaker_cos"] is None  # flat folder: speakers unknown
        assert abs(rec["offset_frames"]) <= 1  # published clips are in sync
