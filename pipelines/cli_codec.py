"""``earshot codec encode`` / ``earshot codec decode``: the talking-face codec (docs/codec.md).

Parses the arguments, loads the ``codec`` / ``faces`` / ``common`` params (``--set codec.crf=30``
changes the operating point) and runs :mod:`components.codec.call`, which does the work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from pipelines._common import exit_on_user_error, parse_overrides, setup_logging

codec_app = typer.Typer(help="The talking-face codec: an 8x8 face video + audio + one photo, decoded to 256x256 "
                             "by the video upsampling model", no_args_is_help=True)

ModelOpt = Annotated[Optional[Path], typer.Option(
    "--model", help="the decoder model.pt (default: <talking.out_dir>/train_animate/model.pt, what "
                    "`dvc repro train_animate` makes)")]
ParamsOpt = Annotated[Path, typer.Option("--params", help="params file")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-S", help="override: KEY=VALUE (YAML value), e.g. "
                                                                         "codec.crf=30")]


def _setup(params: Path, set_: Optional[list[str]], model: Optional[Path]):  # type: ignore[no-untyped-def]
    from components.config import load_params
    from components.models.talking import MODEL_STAGE

    setup_logging()
    cfg = load_params(params, parse_overrides(set_ or []))
    return cfg, model or Path(cfg.talking.out_dir) / MODEL_STAGE / "model.pt"


@codec_app.command("encode")
@exit_on_user_error
def encode(
    video: Annotated[Path, typer.Argument(help="a talking video (any size: --detect finds the face), or a face video")],
    out: Annotated[Path, typer.Option("--out", help="the call file to write (e.g. call.esc)")],
    detect: Annotated[bool, typer.Option("--detect/--no-detect", help="track and crop the face as the faces stage "
                                                                      "does (--no-detect: every frame is the face)")] = True,
    report: Annotated[bool, typer.Option("--report", help="print each payload's bytes and the bits per pixel")] = False,
    model: ModelOpt = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Encode a talking video: one photo of the face, the face at the model's 8x8 input, the audio."""
    from components.codec.call import encode_file, report_lines

    cfg, model_path = _setup(params, set_, model)
    call = encode_file(video, out, cfg.codec, model_path, faces=cfg.faces, fps=cfg.common.fps, detect=detect,
                       progress=progress)
    if report:
        typer.echo("\n".join(report_lines(call)))
    typer.echo(out)


@codec_app.command("decode")
@exit_on_user_error
def decode(
    call: Annotated[Path, typer.Argument(help="a call file written by `earshot codec encode`")],
    out: Annotated[Path, typer.Option("--out", help="output MP4 (256x256 H.264 + AAC)")],
    side_by_side: Annotated[bool, typer.Option("--side-by-side", help="8x8 | bicubic | stage 1 | decoded")] = False,
    model: ModelOpt = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Decode a call file into a 256x256 video with its audio (the model the file names must be --model)."""
    from components.codec.call import decode_file
    from components.inference.inputs import resolve_device
    from components.models.talking import load_video_sr

    _, model_path = _setup(params, set_, model)
    upsampler = load_video_sr(model_path, resolve_device(device))
    typer.echo(decode_file(call, out, upsampler, model_path, side_by_side=side_by_side, progress=progress))
