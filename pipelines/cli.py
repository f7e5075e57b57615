"""The ``earshot`` command line.

``dvc repro`` is the main way to run the pipeline; these commands are for working with
data outside DVC and for the things DVC does not do (inspecting shards, making the
synthetic corpus on its own). Heavy imports happen inside each command.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

# Prefect's servers (the temporary one a flow starts without `earshot server up`, too) would
# report usage to prefect.io: off, as nothing here talks to the internet (and with no network
# it only logs "Failed to send telemetry").
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from pipelines._common import exit_on_user_error, parse_overrides, setup_logging  # noqa: E402
from pipelines.cli_codec import codec_app  # noqa: E402
from pipelines.cli_compare import compare  # noqa: E402
from pipelines.cli_demo import demo  # noqa: E402
from pipelines.cli_flow import flow_app, serve  # noqa: E402
from pipelines.cli_server import server_app  # noqa: E402
from pipelines.cli_video import video_sr  # noqa: E402

app = typer.Typer(help="earshot: audio-visual face super-resolution pipeline", no_args_is_help=True,
                  pretty_exceptions_enable=False)
data_app = typer.Typer(help="Data: synthesize, prepare your own videos, inspect shards", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.command("compare")(compare)
app.add_typer(server_app, name="server")
app.add_typer(flow_app, name="flow")
app.command("serve")(serve)
app.command("video-sr")(video_sr)
app.command("demo")(demo)
app.add_typer(codec_app, name="codec")

ParamsOpt = Annotated[Path, typer.Option("--params", help="params file")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-S", help="override: KEY=VALUE (YAML value)")]


def _params(path: Path, overrides: list[str] | None, **extra: object):  # type: ignore[no-untyped-def]
    from components.config import load_params

    return load_params(path, {**parse_overrides(overrides or []), **extra})


@data_app.command("synth")
@exit_on_user_error
def data_synth(
    out: Annotated[Path, typer.Option(help="output folder (VoxCeleb2-like layout)")] = Path("data/synth"),
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Generate the procedural talking-face corpus (download.synth params)."""
    from components.data.synth import generate_corpus

    setup_logging()
    cfg = _params(params, set_)
    clips = generate_corpus(cfg.download.synth, out, workers=cfg.common.workers)
    typer.echo(f"{len(clips)} clips of {clips['speaker_id'].nunique()} speakers in {out}")


@data_app.command("prepare")
@exit_on_user_error
def data_prepare(
    input: Annotated[str, typer.Option("--input", help="folder of videos, or a CSV/Parquet manifest")],
    out: Annotated[Path, typer.Option("--out", help="output data folder")],
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Run every data stage (download, faces, audio, shards, report) outside DVC."""
    from pipelines.flows import run_data_stages

    setup_logging()
    source = "local" if Path(input).is_dir() else "manifest"
    cfg = _params(params, set_, **{"common.data_dir": str(out), "download.source": source, "download.input": input})
    summaries = run_data_stages(cfg)
    for summary in summaries:
        typer.echo(summary)


@data_app.command("inspect")
@exit_on_user_error
def data_inspect(shards: Annotated[Path, typer.Argument(help="shards folder (with index.json)")] = Path("data/shards")) -> None:
    """Summarise shards: counts per split, speakers, hours, attributes; verify checksums."""
    from components.data.shards import print_summary, summarize

    print_summary(summarize(shards))


@data_app.command("crops")
@exit_on_user_error
def data_crops(
    key: Annotated[str, typer.Argument(help="clip key, e.g. id00000/vid000/00000 (data/faces/<key>.mkv)")],
    out: Annotated[Optional[Path], typer.Option(help="MP4 to write (default: <key with _>.mp4 here)")] = None,
    data_dir: Annotated[Path, typer.Option(help="data folder with faces/ (and audio/)")] = Path("data"),
) -> None:
    """A face-crop track as an H.264 MP4 a browser plays, with its aligned audio when the audio stage made it."""
    from components.data.report import crop_track_video

    out = out or Path(f"{key.replace('/', '_')}.mp4")
    typer.echo(crop_track_video(data_dir, key, out))


@app.command("stage")
@exit_on_user_error
def stage(
    name: Annotated[str, typer.Argument(help="stage name (of dvc.yaml)")],
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Run one stage by name outside DVC (its dvc.yaml cmd, ``python -m MODULE [ARGS]``, in this process)."""
    import importlib
    import shlex

    from components.orchestration.graph import dvc_stage_order, read_dvc_stages

    stages = dvc_stage_order()
    if name not in stages:
        raise typer.BadParameter(f"unknown stage {name!r}; stages of dvc.yaml: {', '.join(stages)}")
    _python, _m, module_name, *stage_args = shlex.split(read_dvc_stages()[name]["cmd"])
    argv = [*stage_args, "--params", str(params)] + [a for kv in (set_ or []) for a in ("--set", kv)]
    importlib.import_module(module_name).main(argv)


@app.command("face-sr")
@exit_on_user_error
def face_sr(
    image: Annotated[Path, typer.Option("--image", help="face image (8x8, or larger: downscaled), or a folder")],
    audio: Annotated[Path, typer.Option("--audio", help="voice (any audio/video ffmpeg reads), or a folder")],
    out: Annotated[Path, typer.Option("--out", help="output PNG, or a folder in batch mode")],
    checkpoint: Annotated[Optional[Path], typer.Option(
        "--checkpoint", help="trained model folder (default: face_sr.out_dir, what `dvc repro` trains)")] = None,
    detect: Annotated[bool, typer.Option("--detect", help="find the face with RetinaFace and crop it first")] = False,
    mix_audio: Annotated[Optional[Path], typer.Option(
        "--mix-audio", help="a second voice: output input | own voice | this voice side by side")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Super-resolve an 8x8 face with its speaker's voice ("Face SR with an ear").

    A larger image is downscaled to 8x8 as the training faces were; without --detect it
    must already be a face crop (a non-square image is cut to its centre square). The
    first 4 s of the audio are used, repeated when shorter. Batch mode: --image DIR
    --audio DIR --out DIR pairs files by stem (both may be the same folder).
    """
    import logging

    from components.errors import EarshotError
    from components.inference.face_sr import load_face_sr, plan_jobs, run_job
    from components.inference.inputs import resolve_device

    setup_logging()
    cfg = _params(params, set_)
    jobs, unpaired = plan_jobs(image, audio, out, mix_audio)
    for path in unpaired:
        logging.getLogger("face-sr").warning("%s: no file with the same stem to pair with: skipped", path)
    model = load_face_sr(checkpoint or Path(cfg.face_sr.out_dir), resolve_device(device))
    detector = None
    if detect:
        from components.faces.detect import FaceDetector

        detector = FaceDetector(cfg.faces.score_threshold, max_side=640, threads=cfg.face_sr.threads)
    failed = []
    for job in jobs:
        try:
            typer.echo(run_job(model, job, detector=detector, margin=cfg.faces.margin))
        except EarshotError as exc:
            if len(jobs) == 1:
                raise
            logging.getLogger("face-sr").error("%s", exc)
            failed.append(f"{job.out.stem} ({exc})")
    if failed:
        more = f"; and {len(failed) - 5} more above" if len(failed) > 5 else ""
        raise EarshotError(f"{len(failed)} of {len(jobs)} pairs failed: {'; '.join(failed[:5])}{more}")


if __name__ == "__main__":
    app()
