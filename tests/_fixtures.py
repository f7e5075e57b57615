"""A tiny fake upstream (stages download, faces, audio) for the shards/dataset tests.

It writes exactly the layout contract the real stages produce: ``raw/index.parquet``
and ``raw/speakers.parquet``; per clip ``faces/<key>.mkv`` (Motion-JPEG square crops),
``faces/<key>.npz`` (track) and ``audio/<key>.wav`` (16 kHz, n_frames / fps seconds);
and the kept-clip index tables of faces and audio.

The drawn frames carry their own ground truth so tests can check what a reader decoded:
the top-left 8 x 8 block's grey level is ``FRAME_STEP * frame_index`` (flat blocks
survive H.264 + JPEG within a few levels), and the background colour is the speaker's.
:func:`upstream_from_videos` makes the same layout from real talking-face videos (a
centre square crop stands in for the face tracker), with H.264 crops (``.mp4``): crops of
another tool, which the shards stage decodes and JPEG-encodes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from components.media.ffmpeg import run_ffmpeg
from components.media.jpeg_video import write_jpeg_video

CANONICAL_LANDMARKS = np.array([[0.38, 0.42], [0.62, 0.42], [0.5, 0.55], [0.42, 0.7], [0.58, 0.7]], np.float32)

FRAME_STEP = 6  # grey level per frame index in the top-left stamp (up to 42 frames)
STAMP = 8


@dataclass
class Upstream:
    data_dir: Path
    raw: Path
    faces: Path
    audio: Path
    keys: list[str]
    speakers: pd.DataFrame


def draw_face(size: int, frame: int, speaker: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One RGB frame of a drawn face and its 5 landmarks (RetinaFace order) in crop px."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    hue = np.array([(37 * speaker) % 200 + 30, (91 * speaker) % 200 + 30, (53 * speaker) % 200 + 30], np.float32)
    img = np.broadcast_to(hue, (size, size, 3)).copy()
    face = ((xx - 0.5) / 0.3) ** 2 + ((yy - 0.52) / 0.38) ** 2 < 1
    img[face] = (224, 172, 140)
    opening = 0.02 + 0.04 * (0.5 + 0.5 * np.sin(frame / 2.0))
    for ex, ey in CANONICAL_LANDMARKS[:2]:
        img[((xx - ex) / 0.05) ** 2 + ((yy - ey) / 0.03) ** 2 < 1] = (40, 30, 30)
    img[(np.abs(xx - 0.5) < 0.08) & (np.abs(yy - 0.7) < opening)] = (120, 20, 30)
    img += rng.normal(0, 4, img.shape).astype(np.float32)  # sensor noise: realistic JPEG sizes
    img[:STAMP, :STAMP] = FRAME_STEP * frame
    return np.clip(img, 0, 255).astype(np.uint8), CANONICAL_LANDMARKS * size


def write_crop(path: Path, frames: np.ndarray, fps: int) -> None:
    """(n, S, S, 3) uint8 -> Motion-JPEG ``.mkv`` at ``fps``, as the faces stage writes crops."""
    write_jpeg_video(path, frames, fps, quality=95)


def write_h264_crop(path: Path, frames: np.ndarray, fps: int) -> None:
    """(n, S, S, 3) uint8 -> H.264 mp4 at ``fps`` (a crop made by another tool)."""
    n, h, w, _ = frames.shape
    path.parent.mkdir(parents=True, exist_ok=True)
    run_ffmpeg(["-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(fps), "-i", "-",
                "-c:v", "libx264", "-preset", "ultrafast", "-crf", "12", "-pix_fmt", "yuv420p", str(path)],
               input=frames.tobytes())


def speech_like(n: int, sr: int, speaker: int, rng: np.random.Generator) -> np.ndarray:
    """A harmonic tone at a speaker-specific pitch, amplitude-modulated like syllables."""
    t = np.arange(n) / sr
    f0 = 100 + 15 * speaker
    voice = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
    return (0.2 * voice * envelope + 0.01 * rng.normal(size=n)).astype(np.float32)


def make_upstream(
    root: Path,
    *,
    n_speakers: int = 4,
    videos_per_speaker: int = 2,
    clips_per_video: int = 2,
    unknown_videos: int = 2,
    n_frames: int = 30,
    crop_size: int = 64,
    fps: int = 25,
    sample_rate: int = 16000,
    corrupt: tuple[str, ...] = (),
    seed: int = 0,
) -> Upstream:
    """Write a fake data/{raw,faces,audio} under ``root``; keys listed in ``corrupt`` get
    garbage bytes instead of a crop video. Speakers ``spk0..`` have attributes
    (sex F/M alternating, age, glasses); ``unknown_videos`` flat-folder clips are added."""
    rng = np.random.default_rng(seed)
    data = root / "data"
    faces, audio = data / "faces", data / "audio"
    clips = [(f"spk{s}", f"vid{v}", f"{c:05d}", s) for s in range(n_speakers)
             for v in range(videos_per_speaker) for c in range(clips_per_video)]
    clips += [("unknown", f"flat{v}", "00000", n_speakers + v) for v in range(unknown_videos)]
    rows = []
    for i, (speaker, video, clip, look) in enumerate(clips):
        key = f"{speaker}/{video}/{clip}"
        n = n_frames + i % 3  # clips of slightly different lengths
        drawn = [draw_face(crop_size, f, look, rng) for f in range(n)]
        frames = np.stack([d[0] for d in drawn])
        landmarks = np.stack([d[1] for d in drawn])
        crop = faces / f"{key}.mkv"
        if key in corrupt:
            crop.parent.mkdir(parents=True, exist_ok=True)
            crop.write_bytes(rng.bytes(2000))
        else:
            write_crop(crop, frames, fps)
        write_track(faces / f"{key}.npz", landmarks)
        wav = audio / f"{key}.wav"
        wav.parent.mkdir(parents=True, exist_ok=True)
        sf.write(wav, speech_like(n * sample_rate // fps, sample_rate, look, rng), sample_rate, subtype="PCM_16")
        rows.append(index_rows(key, n, fps, offset_frames=i % 3 - 1))
    speakers = pd.DataFrame({"speaker_id": [f"spk{s}" for s in range(n_speakers)],
                             "sex": ["F" if s % 2 == 0 else "M" for s in range(n_speakers)],
                             "age": [20.0 + 7 * s for s in range(n_speakers)],
                             "glasses": [s % 3 == 0 for s in range(n_speakers)],
                             "hair_color": [("black", "brown", "grey")[s % 3] for s in range(n_speakers)],
                             "skin_rgb": [[200 - 10 * s, 160, 120] for s in range(n_speakers)]})
    return write_indexes(data, rows, speakers)


def index_rows(key: str, n: int, fps: int, offset_frames: int = 0, crop_ext: str = ".mkv") -> tuple[dict, dict, dict]:
    """The rows of one clip in raw/, faces/ and audio/ index.parquet (contract columns)."""
    speaker, video, clip = key.split("/")
    ids = {"key": key, "speaker_id": speaker, "video_id": video, "clip_id": clip}
    raw = {**ids, "path": f"{key}.mp4", "source": "fixture", "sha256": "", "bytes": 0, "duration_s": n / fps,
           "width": 128, "height": 128, "fps": float(fps), "vcodec": "h264", "acodec": "aac", "has_audio": True}
    faces = {**ids, "crop_path": f"{key}{crop_ext}", "track_path": f"{key}.npz", "n_frames": n, "fps": fps,
             "src_fps": float(fps), "src_width": 128, "src_height": 128, "face_px": 100.0, "duration_s": n / fps,
             "outputs": [f"{key}{crop_ext}", f"{key}.npz"]}
    audio = {"key": key, "wav_path": f"{key}.wav", "offset_frames": offset_frames, "speech_s": n / fps,
             "speech_ratio": 0.9, "speech_segments": [[0.0, n / fps]],
             "speaker_cos": None if speaker == "unknown" else 0.9}
    return raw, faces, audio


def write_indexes(data: Path, rows: list[tuple[dict, dict, dict]], speakers: pd.DataFrame) -> Upstream:
    raw, faces, audio = data / "raw", data / "faces", data / "audio"
    for folder in (raw, faces, audio):
        folder.mkdir(parents=True, exist_ok=True)
    speakers.to_parquet(raw / "speakers.parquet", index=False)
    for folder, table in zip((raw, faces, audio), zip(*rows)):
        pd.DataFrame(list(table)).to_parquet(folder / "index.parquet", index=False)
    return Upstream(data, raw, faces, audio, [r[0]["key"] for r in rows], speakers)


def write_track(path: Path, landmarks: np.ndarray) -> None:
    """A faces-stage track file with a fixed box (only the landmarks matter downstream)."""
    n = len(landmarks)
    boxes = np.tile(np.array([10, 10, 110, 110], np.float32), (n, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, boxes=boxes, scores=np.full(n, 0.99, np.float32), detected=np.ones(n, bool),
             landmarks=landmarks, crop_boxes=boxes)


def upstream_from_videos(root: Path, videos: list[Path], *, crop_size: int = 256, fps: int = 25,
                         sample_rate: int = 16000) -> Upstream:
    """The upstream layout from real videos: each becomes speaker ``real<i>``'s only clip,
    its centre square resampled to ``fps`` as the crop, its audio as the aligned wav."""
    import av

    data = root / "data"
    rows = []
    for i, video in enumerate(videos):
        key = f"real{i}/{video.stem}/00000"
        crop, wav = data / "faces" / f"{key}.mp4", data / "audio" / f"{key}.wav"
        crop.parent.mkdir(parents=True, exist_ok=True)
        wav.parent.mkdir(parents=True, exist_ok=True)
        run_ffmpeg(["-y", "-i", str(video), "-an", "-vf",
                    f"crop=min(iw\\,ih):min(iw\\,ih),scale={crop_size}:{crop_size},fps={fps}",
                    "-c:v", "libx264", "-preset", "ultrafast", "-crf", "14", "-pix_fmt", "yuv420p", str(crop)])
        with av.open(str(crop)) as container:
            n = sum(1 for _ in container.decode(video=0))
        pcm = run_ffmpeg(["-i", str(video), "-vn", "-ac", "1", "-ar", str(sample_rate), "-f", "f32le", "-"])
        audio = np.frombuffer(pcm, np.float32)
        want = n * sample_rate // fps
        sf.write(wav, np.pad(audio[:want], (0, max(0, want - len(audio)))), sample_rate, subtype="PCM_16")
        write_track(data / "faces" / f"{key}.npz", np.tile(CANONICAL_LANDMARKS * crop_size, (n, 1, 1)))
        rows.append(index_rows(key, n, fps, crop_ext=".mp4"))
    return write_indexes(data, rows, pd.DataFrame({"speaker_id": [f"real{i}" for i in range(len(videos))]}))


def decode_jpeg(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def stamp_frame(img: np.ndarray) -> int:
    """The frame index drawn into an HxWx3 uint8 frame (see :func:`draw_face`)."""
    return int(round(float(img[1:STAMP - 1, 1:STAMP - 1].mean()) / FRAME_STEP))
