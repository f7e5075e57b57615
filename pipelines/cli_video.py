"""``earshot video-sr``: a talking-face video upsampled with its audio and one photo.

Parses the arguments, loads the model and the ``faces`` / ``common`` params, and runs
:func:`components.inference.video_sr.run_job`, which does the work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from pipelines._common import exit_on_user_error, parse_overrides, setup_logging


@exit_on_user_error
def video_sr(
    video: Annotated[Path, typer.Option("--video", help="talking-face video: an 8x8 (small) face video, or with "
                                                        "--detect any talking video")],
    identity: Annotated[str, typer.Option("--identity", help="photo of the person (its face is detected), or "
                                                             "'first': the first face of the video (with --detect)")],
    out: Annotated[Path, typer.Option("--out", help="output MP4 (H.264 + AAC, 25 fps)")],
    model: Annotated[Optional[Path], typer.Option(
        "--model", help="trained model.pt (default: <talking.out_dir>/train_animate/model.pt, what "
                        "`dvc repro train_animate` makes)")] = None,
    detect: Annotated[bool, typer.Option("--detect", help="find, track and crop the face first (as the faces "
                                                          "stage does)")] = False,
    audio: Annotated[Optional[Path], typer.Option(
        "--audio", help="the voice to use instead of the video's own (any audio or video file)")] = None,
    side_by_side: Annotated[bool, typer.Option(
        "--side-by-side", help="write input | bicubic | stage 1 | ours side by side")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="show a progress bar")] = True,
    params: Annotated[Path, typer.Option("--params", help="params file")] = Path("params.yaml"),
    set_: Annotated[Optional[list[str]], typer.Option("--set", "-S", help="override: KEY=VALUE (YAML value)")] = None,
) -> None:
    """Upsample a talking-face video to 256x256 with its audio and one photo (Hegde et al.).

    Without --detect every frame is the face (degraded to the model's 8x8 input as the
    training faces were); with it the main face is tracked and cropped first, and the
    video must pass the faces stage's rules. The output keeps the input's duration, with
    the audio in sync.
    """
    from components.config import load_params
    from components.inference.inputs import resolve_device
    from components.inference.video_sr import Job, run_job
    from components.models.talking import MODEL_STAGE, load_video_sr

    setup_logging()
    cfg = load_params(params, parse_overrides(set_ or []))
    job = Job(video, identity, out, audio=audio, detect=detect, side_by_side=side_by_side)
    job.check()
    upsampler = load_video_sr(model or Path(cfg.talking.out_dir) / MODEL_STAGE / "model.pt", resolve_device(device))
    typer.echo(run_job(upsampler, job, faces=cfg.faces, fps=cfg.common.fps, progress=progress))
