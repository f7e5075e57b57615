"""The embedded procedural corpus (components.data.synth) and the media writer.

One tiny corpus (12 speakers x 1 video x 2 clips x ~2.5 s) is generated once per module
and checked end to end from the written files: layout and streams, determinism, lips
that follow the audio (ground truth *and* pixels), and RetinaFace detection. The
audio-only probes synthesize speech directly (no video) for enough speakers to train
and test a linear probe on held-out speakers. Every figure is computed, none assumed.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import av
import librosa
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from components.config import default_params
from components.data.synth import (
    PHONEMES,
    Voice,
    generate_corpus,
    plan_utterance,
    sample_speaker,
    sample_speakers,
    synthesize_speech,
    viseme_track,
)
from components.data.synth.phonemes import speech_segments
from components.data.synth.preview import contact_sheet
from components.media.write import write_video, write_wav

TINY = default_params({"download.synth.n_speakers": 12, "download.synth.videos_per_speaker": 1,
                       "download.synth.clips_per_video": 2, "download.synth.clip_seconds": 2.5,
                       "download.synth.clip_seconds_jitter": 0.2}).download.synth
FPS, SR = 25, 16000

SPEAKER_COLUMNS = {
    "speaker_id", "sex", "age", "head_size", "head_shape", "skin_tone", "skin_rgb", "hair_color", "hair_rgb",
    "hair_style", "eye_color", "eye_rgb", "glasses", "beard", "f0_hz", "f0_range_st", "formant_scale",
    "formant_offsets", "speaking_rate", "breathiness", "jitter", "shimmer", "spectral_tilt_db",
}
CLIP_COLUMNS = {
    "speaker_id", "video_id", "clip_id", "relpath", "duration_s", "n_frames", "n_samples",
    "mouth_open", "mouth_box", "face_box", "landmarks", "head_pose",
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate_corpus(TINY, out, workers=2, progress=False)
    return out


@pytest.fixture(scope="module")
def clips(corpus: Path) -> pd.DataFrame:
    return pd.read_parquet(corpus / "clips.parquet")


def _decode(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """All frames ``(n, H, W, 3)`` uint8 and the mono float audio of an MP4."""
    with av.open(str(path)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    with av.open(str(path)) as container:
        audio = np.concatenate([f.to_ndarray().ravel() for f in container.decode(audio=0)])
    return frames, audio


def _frame_rms(audio: np.ndarray, n_frames: int, n_samples: int) -> np.ndarray:
    """Audio RMS over each video frame's span of samples."""
    per_frame = n_samples // n_frames
    return np.sqrt((audio[: n_frames * per_frame].reshape(n_frames, per_frame) ** 2).mean(axis=1))


# ----------------------------------------------------------------------------- files


def test_layout_streams_and_tables(corpus: Path, clips: pd.DataFrame) -> None:
    speakers = pd.read_parquet(corpus / "speakers.parquet")
    assert SPEAKER_COLUMNS <= set(speakers.columns)
    assert CLIP_COLUMNS <= set(clips.columns)
    assert len(speakers) == TINY.n_speakers and speakers["speaker_id"].is_unique
    assert len(clips) == TINY.n_speakers * TINY.videos_per_speaker * TINY.clips_per_video
    assert set(clips["speaker_id"]) == set(speakers["speaker_id"])
    assert speakers["sex"].isin([0, 1]).all() and speakers["age"].between(18, 80).all()

    for row in clips.itertuples():
        assert re.fullmatch(r"id\d{5}/vid\d{3}/\d{5}\.mp4", row.relpath)
        assert row.relpath == f"{row.speaker_id}/{row.video_id}/{row.clip_id}.mp4"
        assert row.n_samples == row.n_frames * SR // FPS
        assert len(row.mouth_open) == len(row.mouth_box) == len(row.face_box) == row.n_frames
        with av.open(str(corpus / row.relpath)) as container:
            video, audio = container.streams.video[0], container.streams.audio[0]
            assert video.codec_context.name == "h264" and video.format.name == "yuv420p"
            assert video.average_rate == FPS and (video.width, video.height) == (TINY.frame_size,) * 2
            assert audio.codec_context.name == "aac" and audio.rate == SR and audio.channels == 1
        frames, samples = _decode(corpus / row.relpath)
        assert len(frames) == row.n_frames
        assert abs(len(samples) - row.n_samples) <= 1024  # one AAC frame of padding at most

    rttm = [line.split() for line in (corpus / "speech.rttm").read_text().splitlines()]
    assert rttm and all(f[0] == "SPEAKER" and len(f) == 10 for f in rttm)
    durations = dict(zip(clips["relpath"].str.removesuffix(".mp4"), clips["duration_s"]))
    for _, uri, _, start, dur, *_ in rttm:
        assert 0 <= float(start) and float(start) + float(dur) <= durations[uri] + 1e-6
    assert {f[1] for f in rttm} == set(durations)  # every clip has speech


def test_same_seed_same_corpus(corpus: Path, clips: pd.DataFrame, tmp_path: Path) -> None:
    """Same seed: identical tables and bytes; a smaller corpus is a prefix of a larger one."""
    small = TINY.model_copy(update={"n_speakers": 2})
    again = generate_corpus(small, tmp_path, workers=2, progress=False)
    speakers = pd.read_parquet(corpus / "speakers.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "speakers.parquet"), speakers.iloc[:2])
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "clips.parquet"), clips.iloc[: len(again)])
    for relpath in again["relpath"]:
        digest = [hashlib.sha256((root / relpath).read_bytes()).hexdigest() for root in (corpus, tmp_path)]
        assert digest[0] == digest[1], relpath

    other = sample_speakers(TINY.model_copy(update={"seed": TINY.seed + 1}))
    assert not np.allclose(other["f0_hz"], speakers["f0_hz"])


def test_speech_is_deterministic_in_the_generator() -> None:
    voice = Voice.from_attributes(sample_speaker(0, 3))
    a = synthesize_speech(voice, np.random.default_rng(5), 2.0)
    b = synthesize_speech(voice, np.random.default_rng(5), 2.0)
    c = synthesize_speech(voice, np.random.default_rng(6), 2.0)
    assert np.array_equal(a.audio, b.audio) and np.array_equal(a.visemes, b.visemes)
    assert a.events == b.events and not np.array_equal(a.audio, c.audio)
    assert a.audio.dtype == np.float32 and len(a.audio) == 2.0 * SR and a.n_frames == 2.0 * FPS
    assert np.abs(a.audio).max() <= 1.0


# ----------------------------------------------------------------------------- speech structure


def test_utterance_plan_and_visemes() -> None:
    rng = np.random.default_rng(0)
    events = plan_utterance(rng, 6.0, syllables_per_s=5.0)
    assert events[0].start == 0.0 and events[-1].end == pytest.approx(6.0)
    assert all(a.end == pytest.approx(b.start) for a, b in zip(events, events[1:]))
    assert events[0].symbol == "_" and events[-1].symbol == "_"  # silence at both ends
    segments = speech_segments(events)
    assert len(segments) >= 2 and all(b[0] - a[1] >= 0.25 for a, b in zip(segments, segments[1:]))
    kinds = {PHONEMES[e.symbol].kind for e in events}
    assert {"vowel", "plosive", "fricative"} <= kinds

    visemes = viseme_track(events, 150, FPS)
    t = (np.arange(150) + 0.5) / FPS
    in_speech = np.zeros(150, bool)
    for start, end in segments:
        in_speech |= (t >= start) & (t < end)
    far = np.array([min(abs(ti - s) for seg in segments for s in seg) > 0.15 for ti in t])
    assert visemes[~in_speech & far, 0].max() < 0.05  # closed lips in pauses
    assert visemes[in_speech, 0].mean() > 0.3
    for e in events:  # bilabials close the lips
        if e.symbol in ("p", "b", "m") and e.end - e.start > 1 / FPS:
            assert visemes[min(int((e.start + e.end) / 2 * FPS), 149), 0] < 0.25


# ----------------------------------------------------------------------------- audio carries identity


def _voice_features(audio: np.ndarray) -> np.ndarray:
    """Mean MFCC over voiced frames + log-F0 median and 10-90% range."""
    power = np.abs(librosa.stft(audio, n_fft=512, hop_length=160)) ** 2
    energy = np.log(power.sum(axis=0) + 1e-10)
    low_band = power[:33].sum(axis=0)  # below 1 kHz
    voiced = (energy > energy.max() - 7) & (low_band > power[33:].sum(axis=0))
    mel = librosa.feature.melspectrogram(S=power[:, voiced], sr=SR, n_mels=40)
    mfcc = librosa.feature.mfcc(S=librosa.power_to_db(mel), n_mfcc=20)
    f0 = librosa.yin(audio, fmin=60, fmax=400, sr=SR, frame_length=1024, hop_length=160)
    log_f0 = np.log(f0[: power.shape[1]][voiced])
    return np.r_[mfcc.mean(axis=1), np.median(log_f0), np.percentile(log_f0, 90) - np.percentile(log_f0, 10)]


@pytest.fixture(scope="module")
def voice_probe_data() -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """80 speakers x 2 utterances of 2.5 s (audio only): features, speaker index, speakers."""
    speakers = pd.DataFrame([sample_speaker(99, i) for i in range(80)])
    features, owner = [], []
    for i, row in speakers.iterrows():
        voice = Voice.from_attributes(row)
        for utterance in range(2):
            speech = synthesize_speech(voice, np.random.default_rng([99, i, utterance]), 2.5)
            features.append(_voice_features(speech.audio))
            owner.append(i)
    return np.array(features), np.array(owner), speakers


def test_sex_and_age_are_predictable_from_audio(voice_probe_data: tuple) -> None:
    x, owner, speakers = voice_probe_data
    sex, age = speakers["sex"].to_numpy()[owner], speakers["age"].to_numpy()[owner]
    train, test = owner < 50, owner >= 50  # held-out speakers
    assert 0.2 < sex[test].mean() < 0.8

    probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=5000)).fit(x[train], sex[train])
    accuracy = (probe.predict(x[test]) == sex[test]).mean()
    assert accuracy >= 0.9, f"sex from audio: {accuracy:.3f}"

    regression = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 3, 12))).fit(x[train], age[train])
    r = np.corrcoef(regression.predict(x[test]), age[test])[0, 1]
    assert r > 0.5, f"age from audio: r = {r:.3f}"


def test_speaker_identity_is_recoverable_from_audio(voice_probe_data: tuple) -> None:
    """Nearest neighbour between two utterances of 80 speakers (chance 1/80, 1/40 knowing sex)."""
    x, owner, _ = voice_probe_data
    z = StandardScaler().fit_transform(x)
    first, second = z[0::2], z[1::2]
    nearest = ((first[:, None] - second[None]) ** 2).sum(-1).argmin(axis=1)
    accuracy = (nearest == np.arange(len(first))).mean()
    assert accuracy >= 0.15, f"speaker 1-NN across utterances: {accuracy:.3f}"


# ----------------------------------------------------------------------------- lips follow audio


def _mouth_darkness(frames: np.ndarray, mouth_box: np.ndarray) -> np.ndarray:
    """Pixels in a fixed-size box that follows the mouth, much darker than the face around it.

    The box is the clip's median lip width by its tallest lip height, centred on each
    frame's lips; the reference is the median luma of a box twice as large.
    """
    luma = frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    cx, cy = (mouth_box[:, 0] + mouth_box[:, 2]) / 2, (mouth_box[:, 1] + mouth_box[:, 3]) / 2
    w, h = np.median(mouth_box[:, 2] - mouth_box[:, 0]), (mouth_box[:, 3] - mouth_box[:, 1]).max()

    def box(i: int, scale: float) -> np.ndarray:
        x0, y0 = int(round(cx[i] - scale * w / 2)), int(round(cy[i] - scale * h / 2))
        return luma[i, y0: int(round(cy[i] + scale * h / 2)) + 1, x0: int(round(cx[i] + scale * w / 2)) + 1]

    return np.array([(box(i, 1.1) < 0.45 * np.median(box(i, 2.0))).sum() for i in range(len(frames))], float)


def test_lips_follow_the_audio(corpus: Path, clips: pd.DataFrame) -> None:
    """Mouth opening (ground truth and measured in pixels) vs audio RMS per video frame."""

    def z(v: np.ndarray) -> np.ndarray:
        return (v - v.mean()) / (v.std() + 1e-9)

    truth, pixels, energy = [], [], []
    for row in clips.itertuples():
        frames, audio = _decode(corpus / row.relpath)
        truth.append(z(np.asarray(row.mouth_open)))
        pixels.append(z(_mouth_darkness(frames, np.stack(row.mouth_box))))
        energy.append(z(_frame_rms(audio, row.n_frames, row.n_samples)))
    t, p, e = (np.concatenate(v) for v in (truth, pixels, energy))
    r_truth, r_pixels, r_agree = np.corrcoef(t, e)[0, 1], np.corrcoef(p, e)[0, 1], np.corrcoef(p, t)[0, 1]
    assert r_truth > 0.6, f"ground-truth mouth vs RMS: r = {r_truth:.3f}"
    assert r_agree > 0.7, f"pixel mouth vs ground truth: r = {r_agree:.3f}"
    assert r_pixels > 0.45, f"pixel mouth vs RMS: r = {r_pixels:.3f}"

    def lagged(lag: int) -> float:  # pixels lagging the audio by ``lag`` frames, within each clip
        pairs = [(pv[lag:] if lag >= 0 else pv[:lag], ev[: len(ev) - lag] if lag >= 0 else ev[-lag:])
                 for pv, ev in zip(pixels, energy)]
        return np.corrcoef(np.concatenate([a for a, _ in pairs]), np.concatenate([b for _, b in pairs]))[0, 1]

    lags = range(-4, 5)
    assert max(lags, key=lagged) == 0, "lips and audio are out of sync"


# ----------------------------------------------------------------------------- faces


def test_retinaface_finds_the_face(corpus: Path, clips: pd.DataFrame) -> None:
    from retinaface import detect_faces

    found = total = 0
    ious = []
    for row in clips.itertuples():
        frames, _ = _decode(corpus / row.relpath)
        for frame, truth in zip(frames, row.face_box):
            faces = detect_faces(frame)  # default score threshold 0.9
            total += 1
            if not faces:
                continue
            found += 1
            f = max(faces, key=lambda face: face.score)
            x0, y0, x1, y1 = truth
            inter = max(0, min(f.x + f.width, x1) - max(f.x, x0)) * max(0, min(f.y + f.height, y1) - max(f.y, y0))
            ious.append(inter / (f.width * f.height + (x1 - x0) * (y1 - y0) - inter))
    assert found / total >= 0.99, f"faces found in {found}/{total} frames"
    assert np.percentile(ious, 1) > 0.4, "detections do not sit on the drawn head"


def test_contact_sheet(corpus: Path, tmp_path: Path) -> None:
    from PIL import Image

    path = contact_sheet(corpus, tmp_path / "sheet.png", n=4, columns=2, thumb=64)
    with Image.open(path) as im:
        assert im.size == (2 * 2 * 64, 2 * 64)


# ----------------------------------------------------------------------------- media writer


def test_write_video_and_wav_roundtrip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frames = [np.full((48, 64, 3), 10 * i, np.uint8) for i in range(10)]
    audio = (0.3 * np.sin(np.arange(6400) / 5)).astype(np.float32)
    path = write_video(tmp_path / "a" / "clip.mp4", iter(frames), 25, audio, 16000)
    decoded, samples = _decode(path)
    assert decoded.shape == (10, 48, 64, 3) and abs(int(decoded[5].mean()) - 50) <= 2
    assert abs(len(samples) - 6400) <= 1024 and [p.name for p in path.parent.iterdir()] == ["clip.mp4"]

    silent = write_video(tmp_path / "silent.mp4", frames, 25)
    with av.open(str(silent)) as container:
        assert not container.streams.audio

    wav = write_wav(tmp_path / "x.wav", rng.uniform(-1, 1, 1600).astype(np.float32), 16000)
    data, rate = sf.read(wav, dtype="float32")
    assert rate == 16000 and len(data) == 1600


def test_write_video_rejects_bad_frames_without_leaving_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd.mp4", [np.zeros((15, 16, 3), np.uint8)], 25)
    frames = [np.zeros((16, 16, 3), np.uint8), np.zeros((16, 18, 3), np.uint8)]
    with pytest.raises(ValueError, match="shape changed"):
        write_video(tmp_path / "changed.mp4", frames, 25)
    assert list(tmp_path.iterdir()) == []
