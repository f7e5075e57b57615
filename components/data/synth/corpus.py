"""Generate the embedded corpus: talking-head MP4s plus ground-truth tables.

Layout (VoxCeleb2-like)::

    <out>/speakers.parquet                    one row per speaker: every latent attribute
    <out>/clips.parquet                       one row per clip, with per-frame ground truth
    <out>/speech.rttm                         one SPEAKER line per spoken phrase (VAD truth)
    <out>/<speaker_id>/<video_id>/<clip_id>.mp4   e.g. id00007/vid000/00001.mp4

Each MP4 is H.264 (yuv420p, ``fps``) with 16 kHz mono AAC, exactly ``n_frames / fps``
seconds long. Per-frame ground truth in ``clips.parquet`` (lists, one entry per frame):
``mouth_open`` (0..1), ``mouth_box`` and ``face_box`` ([x0, y0, x1, y1] px),
``landmarks`` (5 points in RetinaFace order, flattened x, y) and ``head_pose``
([yaw, pitch, roll] degrees).

Determinism: a speaker is ``default_rng([seed, speaker])``, a video's set
``default_rng([seed, speaker, video])``, and a clip draws its speech and its motion from
two separate streams ``default_rng([seed, speaker, video, clip, stream])``. So the same
seed gives the same tables and the same audio whatever the number of workers, and
a smaller corpus is a prefix of a larger one with the same seed. Existing files in
``out`` are overwritten, never deleted.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from components.config import SynthParams
from components.data.synth.attributes import sample_speakers
from components.data.synth.face import FaceStyle, FrameState, RenderedFrame, Scene, render_frame
from components.data.synth.phonemes import transcript
from components.data.synth.scene import animate, sample_scene
from components.data.synth.voice import Speech, Voice, synthesize_speech
from components.io import atomic_path
from components.media.write import write_video
from components.orchestration.executors import default_executor

log = logging.getLogger(__name__)

SPEECH_STREAM, MOTION_STREAM = 0, 1
MIN_CLIP_SECONDS = 0.6


@dataclass(frozen=True)
class ClipPlan:
    """Everything about one clip except its pixels."""

    speaker_id: str
    video_id: str
    clip_id: str
    style: FaceStyle
    scene: Scene
    background: str  # background kind
    speech: Speech
    states: list[FrameState]

    @property
    def uri(self) -> str:
        return f"{self.speaker_id}/{self.video_id}/{self.clip_id}"

    @property
    def relpath(self) -> str:
        return f"{self.uri}.mp4"


def video_id(video_index: int) -> str:
    return f"vid{video_index:03d}"


def clip_id(clip_index: int) -> str:
    return f"{clip_index + 1:05d}"


def plan_clip(
    cfg: SynthParams,
    speaker: Mapping[str, Any],
    video_index: int,
    clip_index: int,
    *,
    fps: float = 25.0,
    sample_rate: int = 16000,
) -> ClipPlan:
    """Plan clip ``clip_index`` of video ``video_index`` of ``speaker`` (a speakers row)."""
    spk = int(speaker["speaker_index"])
    scene, background = sample_scene(np.random.default_rng([cfg.seed, spk, video_index]), cfg.frame_size)
    speech_rng = np.random.default_rng([cfg.seed, spk, video_index, clip_index, SPEECH_STREAM])
    duration = cfg.clip_seconds + speech_rng.uniform(-cfg.clip_seconds_jitter, cfg.clip_seconds_jitter)
    speech = synthesize_speech(Voice.from_attributes(speaker), speech_rng, max(duration, MIN_CLIP_SECONDS),
                               sample_rate=sample_rate, fps=fps)
    motion_rng = np.random.default_rng([cfg.seed, spk, video_index, clip_index, MOTION_STREAM])
    return ClipPlan(
        speaker_id=str(speaker["speaker_id"]),
        video_id=video_id(video_index),
        clip_id=clip_id(clip_index),
        style=FaceStyle.from_attributes(speaker),
        scene=scene,
        background=background,
        speech=speech,
        states=animate(motion_rng, speech.visemes, fps, scene),
    )


def render_clip(plan: ClipPlan) -> Iterator[RenderedFrame]:
    """The clip's frames, one at a time."""
    for state in plan.states:
        yield render_frame(plan.style, plan.scene, state)


@dataclass(frozen=True)
class _ClipJob:
    cfg: SynthParams
    speaker: dict[str, Any]
    video_index: int
    clip_index: int
    out_dir: str
    fps: float
    sample_rate: int
    threads: int


def _rttm_lines(plan: ClipPlan) -> list[str]:
    return [f"SPEAKER {plan.uri} 1 {start:.3f} {end - start:.3f} <NA> <NA> {plan.speaker_id} <NA> <NA>"
            for start, end in plan.speech.segments]


def _make_clip(job: _ClipJob) -> tuple[dict[str, Any], list[str]]:
    """Worker: plan, render and encode one clip; return its table row and RTTM lines."""
    plan = plan_clip(job.cfg, job.speaker, job.video_index, job.clip_index, fps=job.fps, sample_rate=job.sample_rate)
    geometry = []

    def frames() -> Iterator[np.ndarray]:
        for frame in render_clip(plan):
            geometry.append(frame.geometry)
            yield frame.image

    write_video(Path(job.out_dir) / plan.relpath, frames(), job.fps, plan.speech.audio, job.sample_rate,
                crf=job.cfg.crf, threads=job.threads, keyframe_every=round(job.cfg.keyframe_seconds * job.fps))
    speech = plan.speech
    deg = 180 / np.pi

    def per_frame(values: list[np.ndarray]) -> list[list[float]]:
        return np.round(np.asarray(values, dtype=np.float64), 2).tolist()

    row = {
        "speaker_id": plan.speaker_id,
        "video_id": plan.video_id,
        "clip_id": plan.clip_id,
        "relpath": plan.relpath,
        "duration_s": len(speech.audio) / speech.sample_rate,
        "n_frames": speech.n_frames,
        "n_samples": len(speech.audio),
        "fps": job.fps,
        "sample_rate": speech.sample_rate,
        "speech_s": round(sum(end - start for start, end in speech.segments), 3),
        "n_phrases": len(speech.segments),
        "transcript": transcript(speech.events),
        "background": plan.background,
        "mouth_open": np.round(speech.visemes[:, 0].astype(np.float64), 3).tolist(),
        "mouth_box": per_frame([g.mouth_box for g in geometry]),
        "face_box": per_frame([g.face_box for g in geometry]),
        "landmarks": per_frame([g.landmarks.ravel() for g in geometry]),
        "head_pose": per_frame([[s.yaw * deg, s.pitch * deg, s.roll * deg] for s in plan.states]),
    }
    return row, _rttm_lines(plan)


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def _run(jobs: list[_ClipJob], workers: int, progress: bool) -> list[tuple[dict[str, Any], list[str]]]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("[bold]synth"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    results = []
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("clips", total=len(jobs))
        executor = default_executor(workers)
        if executor is None:
            for job in jobs:
                results.append(_make_clip(job))
                bar.advance(task)
            return results
        with executor:
            futures = [executor.submit(_make_clip, job) for job in jobs]
            for future in cf.as_completed(futures):
                results.append(future.result())
                bar.advance(task)
    return results


def generate_corpus(
    cfg: SynthParams,
    out_dir: Path,
    *,
    workers: int = 2,
    progress: bool = True,
    fps: float = 25.0,
    sample_rate: int = 16000,
) -> pd.DataFrame:
    """Generate the corpus described by ``cfg`` into ``out_dir``; return the clips table.

    Writes the MP4s, ``speakers.parquet``, ``clips.parquet`` and ``speech.rttm`` (the
    tables last, so they only ever describe finished clips). ``workers`` processes
    render and encode clips in parallel (forked where the platform allows; a script
    calling this with ``workers > 1`` on macOS or Windows, where they are spawned,
    needs the usual ``if __name__ == "__main__":`` guard).
    """
    if cfg.frame_size % 2:
        raise ValueError(f"download.synth.frame_size must be even (yuv420p), got {cfg.frame_size}")
    out_dir = Path(out_dir)
    started = time.perf_counter()
    speakers = sample_speakers(cfg)
    jobs = [
        _ClipJob(cfg, speaker, v, c, str(out_dir), fps, sample_rate, threads=1 if workers > 1 else 0)
        for speaker in speakers.to_dict("records")
        for v in range(cfg.videos_per_speaker)
        for c in range(cfg.clips_per_video)
    ]
    results = _run(jobs, workers, progress)
    clips = pd.DataFrame([row for row, _ in results]).sort_values("relpath", ignore_index=True)
    rttm = sorted((line for _, lines in results for line in lines),
                  key=lambda line: (line.split()[1], float(line.split()[3])))
    _write_parquet(speakers, out_dir / "speakers.parquet")
    _write_parquet(clips, out_dir / "clips.parquet")
    with atomic_path(out_dir / "speech.rttm") as tmp:
        tmp.write_text("".join(f"{line}\n" for line in rttm))
    log.info("synth: %d clips of %d speakers (%.0f s of video) in %s, %.1f s",
             len(clips), len(speakers), clips["duration_s"].sum(), out_dir, time.perf_counter() - started)
    return clips
