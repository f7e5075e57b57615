"""The talking-face codec's speed: encode and decode frames/s against H.264 in the same run.

``pytest -m benchmark -s tests/benchmarks/bench_codec.py``

The input is a rendered talking video (a drawn face RetinaFace finds, drifting across a
320x256 frame, speech-like audio) of ``EARSHOT_BENCH_CODEC_SECONDS`` (default 4) at 25 fps,
on ``THREADS`` torch threads. Measured, each once, in this process:

* ``earshot encode``: :func:`components.codec.call.encode_file` with face detection and
  tracking (the faces stage's rules), the 8x8 stream, the photo and the Opus audio;
* ``h264 encode``: libx264 at CRF 23 (``medium``, its default preset, its own threads) of
  the same 256 px face crops, already tracked (:func:`components.codec.streams.encode_video`);
* ``earshot decode``: :func:`~components.codec.call.decode_file` into a 256x256 H.264 + AAC
  MP4 on CPU, with an untrained model of the ``small`` preset's sizes, narrower (its speed
  is the floor of the real decoder's), and with the trained model
  ``models/talking/train_animate/model.pt`` where it exists; on a GPU the decoder again on cuda;
* ``h264 decode``: that H.264 stream decoded to RGB frames.

Nothing is asserted about speed; every output must hold the input's frames.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from components.codec import streams
from components.codec.call import decode_file, encode_file
from components.config import load_params
from components.inference.video_sr import centre_square, face_frames
from components.media.probe import probe
from components.media.write import write_video
from components.models.talking import load_video_sr
from tests._fixtures import speech_like
from tests.benchmarks.bench_video_sr import ROOT
from tests.data.test_faces import render
from tests.inference.test_video_sr import save_video_model

pytestmark = pytest.mark.benchmark

SECONDS = int(os.environ.get("EARSHOT_BENCH_CODEC_SECONDS", "4"))
FPS, SR, THREADS = 25, 16000, 2
TRAINED = ROOT / "models" / "talking" / "train_animate" / "model.pt"


def talking_video(path: Path, seconds: int) -> Path:
    """A drawn face drifting left and right (a 160 px face in a 320x256 frame), with a voice."""
    rng = np.random.default_rng(0)
    n = seconds * FPS
    frames = (render(320, 256, [(160 + round(12 * math.sin(i / 6)), 128, 160)]) for i in range(n))
    return write_video(path, frames, FPS, audio=speech_like(n * SR // FPS, SR, 3, rng), crf=16, preset="ultrafast")


def timed(work: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    out = work()
    return out, time.perf_counter() - start


def face_crops(video: Path, params) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    """The video's 256 px face crops, tracked as the encoder tracks them."""
    with tempfile.TemporaryDirectory(prefix="bench-codec-") as workdir:
        _, frames = face_frames(video, True, params.faces, FPS, Path(workdir))
        return [np.ascontiguousarray(centre_square(f, 256)) for f in frames()]


def test_codec_speed_against_h264(tmp_path: Path):
    torch.set_num_threads(THREADS)
    params = load_params(ROOT / "params.yaml")
    video = talking_video(tmp_path / "talk.mp4", SECONDS)
    tiny = save_video_model(tmp_path / "tiny" / "model.pt")
    models = {"untrained (narrow)": tiny} | ({"trained": TRAINED} if TRAINED.is_file() else {})
    rows: list[tuple[str, int, float]] = []

    crops = face_crops(video, params)
    (h264, _), seconds = timed(lambda: streams.encode_video(crops, "h264", crf=23, preset="medium", fps=FPS))
    rows.append(("h264 encode, CRF 23 (crops given)", len(crops), seconds))
    decoded, seconds = timed(lambda: streams.decode_video(h264, "h264"))
    assert len(decoded) == len(crops)
    rows.append(("h264 decode", len(decoded), seconds))

    for label, model_path in models.items():
        call_path = tmp_path / f"{label}.esht"
        call, seconds = timed(lambda: encode_file(video, call_path, params.codec, model_path, faces=params.faces,
                                                  fps=FPS, detect=True, progress=False))
        assert call.header.n_frames == len(crops)
        if label == "untrained (narrow)":  # the encoder reads the model for its sizes and id only
            rows.append(("earshot encode (detect)", call.header.n_frames, seconds))
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        for device in devices:
            model = load_video_sr(model_path, device)
            out = tmp_path / f"{label}-{device}.mp4"
            if device == "cuda":  # a warm-up decode first (cuDNN's algorithm search, the allocator)
                decode_file(call_path, out, model, model_path, progress=False)
            _, seconds = timed(lambda: decode_file(call_path, out, model, model_path, progress=False))
            assert probe(out).n_frames == call.header.n_frames
            rows.append((f"earshot decode, {label} model, {device}", call.header.n_frames, seconds))

    print(f"\n== the codec, {SECONDS} s input ({len(crops)} frames, 256 px faces), {THREADS} torch threads ==")
    for name, frames, seconds in rows:
        print(f"{name:48s} {frames / seconds:8.1f} frames/s  {seconds:7.2f} s")
    print(f"sizes: the call file {(tmp_path / 'untrained (narrow).esht').stat().st_size:,d} bytes (with audio), "
          f"h264 CRF 23 {len(h264):,d} bytes (video only)")
