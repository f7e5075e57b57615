"""Upsample a talking-face video with the trained models of Hegde et al. (ACM MM 2022).

``earshot video-sr`` (and the video benchmark) go through :func:`run_job`: from a small
talking-face video, its audio and one photo of the person, it writes an H.264 + AAC MP4
at ``common.fps`` (25), ``out_size`` x ``out_size`` (256), with the audio muxed in and
the input's duration. The model is the ``model.pt`` of the last training stage,
``<talking.out_dir>/train_animate/``, read by
:func:`~components.models.talking.load_video_sr` (which names the stage that makes a
missing file, and the family of a file of the other paper): stage 1 turns a window of
``window`` low-res frames and the mel window of the centre frame into a coarse frame,
stage 2 animates the identity photo with it.

The model's inputs are made as the training samples were made:

* faces: without ``detect`` every frame of the video is the face (an ``lr_size`` frame
  as it is; a larger one is cut to its centre square and degraded to ``lr_size`` by
  :func:`components.data.features.degrade`). With ``detect`` the faces stage's own
  :func:`components.data.faces.extract_faces` finds the main face track, smooths it and
  writes its ``faces.crop_size`` crops (to a temporary Motion-JPEG file, streamed), which
  are then degraded the same way; its rules apply (``no_face``, ``too_short``, ...).
* the identity: ``first`` is the first crop of the track (with ``detect``), resized to
  ``out_size``; a photo is detected with RetinaFace and cropped as the faces stage crops.
* audio: the video's own (16 kHz mono, in video time: :mod:`components.audio.extract`),
  or another file's; cut or zero-padded to the video's length; one mel window per frame
  (:func:`components.data.features.mel_windows`).

Frames stream: decoded, windowed (the first and last frames repeated so that every frame
has a full window), run through the model ``batch`` frames at a time and encoded as they
come, so memory does not grow with the video's length (the whole audio and its mel
windows are held: 5 KB a frame, 77 MB for 10 minutes; with ``detect`` the crops wait in
a temporary file, ~30 KB a frame). With ``side_by_side`` each output
frame is the input (nearest-neighbour up) | bicubic | stage 1 (bicubic up) | ours.
"""

from __future__ import annotations

import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from components.audio.extract import window
from components.audio.spectrogram import SPEC_SAMPLE_RATE
from components.config import FacesParams
from components.data.features import degrade, mel_windows, resize
from components.errors import EarshotError, Rejected
from components.io import iter_chunks
from components.figures.images import from_hwc, nearest_up, to_hwc
from components.inference.inputs import read_image, read_voice
from components.models.talking import VideoUpsampler
from components.models.talking.upsampler import enlarge

BATCH_FRAMES = 8
"""Frames through the model at once: small enough that memory stays flat at 256 px."""

T = TypeVar("T")


# --------------------------------------------------------------------------- pure pieces


def sliding_windows(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """For each item in order, the ``size`` items around it, the item at ``size // 2``.

    The first and last items are repeated where the window runs past either end, so a
    sequence of n items gives n windows; at most ``size`` items are held.
    """
    before, after = size // 2, size - 1 - size // 2
    held: deque[T] = deque(maxlen=size)
    last = None
    for item in items:
        if not held:
            held.extend([item] * before)
        held.append(item)
        last = item
        if len(held) == size:
            yield list(held)
    if not held:
        return
    for _ in range(after):
        held.append(last)
        if len(held) == size:
            yield list(held)


def centre_square(frame: np.ndarray, size: int, *, name: str = "video") -> np.ndarray:
    """The centre square of an HxWx3 face frame, refused when it is smaller than ``size``."""
    height, width = frame.shape[:2]
    if min(height, width) < size:
        raise EarshotError(f"{name}: {width}x{height} frames are smaller than the {size}x{size} model input")
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return frame[top:top + side, left:left + side]


def low_res(frame: np.ndarray, size: int, *, name: str = "video") -> torch.Tensor:
    """The (3, size, size) model input in [-1, 1] for an HxWx3 uint8 face frame: its
    centre square degraded to ``size`` as training degrades (a ``size`` frame as it is)."""
    return degrade(from_hwc(centre_square(frame, size, name=name)), size)


def comparison(lr: torch.Tensor, coarse: torch.Tensor, ours: torch.Tensor,
               truth: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 3, S, 4 S) panels: input (nearest up) | bicubic | stage 1 (bicubic up) | ours [| truth];
    the evaluation's side-by-side videos add the true frames."""
    size = ours.shape[-1]
    panels = [nearest_up(lr, size), enlarge(lr, size), enlarge(coarse, size), ours]
    return torch.cat(panels + ([truth] if truth is not None else []), dim=-1)


def soundtrack(audio: np.ndarray, n_frames: int, fps: int, sr: int = SPEC_SAMPLE_RATE) -> np.ndarray:
    """``audio`` cut (or zero-padded) to ``n_frames`` frames' duration."""
    return window(audio, 0, round(n_frames / fps * sr))


def upsample(model: VideoUpsampler, faces: Iterable[torch.Tensor], mels: np.ndarray, identity: torch.Tensor, *,
             side_by_side: bool = False, batch: int = BATCH_FRAMES) -> Iterator[np.ndarray]:
    """Output frames (HxWx3 uint8) for the low-res ``faces`` ((3, l, l) each, in order).

    ``mels``: (n_frames, n_mels, mel_steps), one window per frame; ``identity``: the
    (3, out, out) photo in [-1, 1]. Frames are consumed and produced ``batch`` at a time.
    """
    cfg = model.cfg
    device = model.device
    state = model.prepare_identity(identity[None].to(device))
    done = 0
    with torch.inference_mode():
        for windows in iter_chunks(sliding_windows(faces, cfg.window), batch):
            lr = torch.stack([torch.stack(w) for w in windows]).to(device)
            mel = torch.from_numpy(mels[done:done + len(windows)])[:, None].to(device)
            if len(mel) != len(lr):
                raise EarshotError(f"the video has more frames than its {len(mels)} mel windows")
            coarse = model.coarse(lr, mel)
            ours = model.animate(state, coarse).clamp(-1.0, 1.0)
            shown = comparison(lr[:, cfg.window // 2], coarse, ours) if side_by_side else ours
            yield from to_hwc(shown)
            done += len(windows)


# --------------------------------------------------------------------------- inputs from files


def count_frames(video: Path, fps: int) -> int:
    """How many frames :func:`~components.media.read.iter_frames` gives ``video`` at ``fps``
    (a decode, converted to a few pixels: cheap next to the model)."""
    from components.media.read import iter_frames

    return sum(1 for _ in iter_frames(video, fps, size=(16, 16)))


def video_audio(video: Path, audio: Path | None) -> np.ndarray:
    """The 16 kHz mono voice: ``audio``'s when given, else the video's own (in video time)."""
    try:
        return read_voice(audio or video, SPEC_SAMPLE_RATE)
    except Rejected as exc:
        if exc.reason == "no_audio_stream" and audio is None:
            raise EarshotError(f"{video}: the video has no audio stream: pass --audio with the voice") from None
        raise


def photo_face(path: Path, faces: FacesParams, size: int) -> torch.Tensor:
    """The (3, size, size) identity in [-1, 1] from a photo: its best-scoring face, cropped
    as the faces stage crops (``faces.margin``), resized to ``size``."""
    from components.data.faces import geometry
    from components.faces.crop import crop_face
    from components.faces.detect import FaceDetector

    image = read_image(path)
    found = FaceDetector(faces.score_threshold, faces.detect_size, threads=1)(image)
    if len(found) == 0:
        raise EarshotError(f"{path}: no face found in the identity photo (RetinaFace, score >= "
                           f"{faces.score_threshold})")
    return resize(from_hwc(crop_face(image, geometry(found.boxes[0], found.landmarks[0], faces))), size)


@dataclass(frozen=True)
class Job:
    """One upsampling: a video, the identity (``first`` or a photo), where to write it."""

    video: Path
    identity: str
    out: Path
    audio: Path | None = None
    detect: bool = False
    side_by_side: bool = False

    def check(self) -> None:
        """One-line errors for arguments that cannot go together, before any work."""
        if self.out.suffix.lower() != ".mp4":
            raise EarshotError(f"{self.out}: the output is an MP4 file (name it .mp4)")
        if self.identity == "first" and not self.detect:
            raise EarshotError("--identity first takes the first face of the video's track: it needs --detect")
        if not self.video.is_file():
            raise EarshotError(f"{self.video}: no such video file")


def _named(video: Path, exc: Rejected) -> EarshotError:
    """A rejection by the faces stage's rules as an error naming the video."""
    return EarshotError(str(exc) if str(video) in str(exc) else f"{video}: {exc}")


def face_frames(video: Path, detect: bool, faces: FacesParams, fps: int,
                workdir: Path) -> tuple[int, Callable[[], Iterator[np.ndarray]]]:
    """How many frames the output has, and a function streaming the video's face frames
    (HxWx3 uint8): the frames themselves, or with ``detect`` the face track's crops,
    written to ``workdir`` by the faces stage's :func:`~components.data.faces.extract_faces`
    (the video-sr job's and the codec encoder's one way to the face)."""
    from components.media.jpeg_video import iter_crop_frames
    from components.media.read import iter_frames

    if not detect:
        return count_frames(video, fps), lambda: (frame for _, frame in iter_frames(video, fps))
    from components.data.faces import extract_faces

    crops = workdir / "crops.mkv"
    try:
        n = extract_faces(video, crops, faces, fps).n_frames
    except Rejected as exc:
        raise _named(video, exc) from None
    return n, lambda: iter_crop_frames(crops)


def run_job(model: VideoUpsampler, job: Job, *, faces: FacesParams, fps: int, batch: int = BATCH_FRAMES,
            progress: bool = True) -> Path:
    """Upsample ``job.video`` into ``job.out`` (written atomically) and return its path;
    ``progress``: rich progress bars (tracking the face, then the output frames)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from components.media.write import write_video

    job.check()
    cfg = model.cfg
    audio = video_audio(job.video, job.audio)
    identity = None if job.identity == "first" else photo_face(Path(job.identity), faces, cfg.out_size)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with tempfile.TemporaryDirectory(prefix="earshot-video-sr-") as workdir, \
            Progress(*columns, disable=not progress) as bar:
        tracking = bar.add_task(f"face track {job.video.name}", total=None, visible=job.detect)
        n, frames = face_frames(job.video, job.detect, faces, fps, Path(workdir))
        bar.update(tracking, total=n, completed=n)
        if identity is None:  # --identity first: the track's first crop
            crops = frames()
            identity = resize(from_hwc(next(crops)), cfg.out_size)
            crops.close()
        sound = soundtrack(audio, n, fps)
        mels = mel_windows(sound, SPEC_SAMPLE_RATE, fps, n_frames=n)  # its defaults: the training data's
        faces_lr = (low_res(frame, cfg.lr_size, name=str(job.video)) for frame in frames())
        out = upsample(model, faces_lr, mels, identity, side_by_side=job.side_by_side, batch=batch)
        task = bar.add_task(f"video-sr {job.video.name}", total=n)
        return write_video(job.out, _counted(out, lambda: bar.advance(task)), fps, audio=sound,
                           sample_rate=SPEC_SAMPLE_RATE)


def _counted(frames: Iterable[T], advance: Callable[[], None]) -> Iterator[T]:
    for frame in frames:
        yield frame
        advance()
