"""The ``earshot demo`` page: a Gradio Blocks app over :mod:`components.demo.handlers`.

Three tabs, one per thing to try: face SR with an ear (paper A), talking-face video
upsampling (Hegde et al.), and the talking-face codec against H.264 / H.265. Each
button calls one handler; an :class:`~components.errors.EarshotError` (a bad upload,
a limit, no face) is shown as a Gradio error message, never a traceback. The page is
served by :func:`serve` on a loopback address only (unless ``orchestration.allow_remote``).
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from components.demo import handlers
from components.demo.handlers import Models
from components.errors import EarshotError

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # nothing here talks to the internet

TITLE = "earshot: face SR with an ear, talking-face video upsampling, the talking-face codec"


def shown_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the handlers' one-line :class:`EarshotError` into a message on the page."""
    import gradio as gr

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EarshotError as exc:
            raise gr.Error(str(exc), print_exception=False) from None

    return wrapper


def uploaded(path: str | None) -> str | None:
    """An upload's path, refused unless it lies in Gradio's upload folder: whatever a request names,
    only files Gradio itself stored reach the handlers (defence in depth: Gradio refuses other paths)."""
    if not path:
        return None
    from gradio.utils import get_upload_folder

    folder = Path(get_upload_folder()).resolve()
    if not Path(path).resolve().is_relative_to(folder):
        raise EarshotError(f"{Path(path).name}: not an upload of this page")
    return path


def _progress_of(progress: Any) -> handlers.Progress:
    return lambda fraction, text: progress(fraction, desc=text)


def build_app(models: Models, work_dir: Path) -> Any:
    """The page's ``gr.Blocks`` for ``models``; results are written under ``work_dir``."""
    import gradio as gr

    def job_dir() -> Path:
        return Path(tempfile.mkdtemp(prefix="job-", dir=work_dir))

    @shown_errors
    def run_face(image: str | None, voice: str | None, voice_pick: str | None, second: str | None,
                 second_pick: str | None, mix: float, detect: bool) -> tuple[list, str]:
        image, voice, second = uploaded(image), uploaded(voice), uploaded(second)
        if not image:
            raise EarshotError("image: upload a face image")
        own = handlers.chosen_file(voice, voice_pick, models.voices, "voice")
        if own is None:
            raise EarshotError("voice: upload a voice or pick a test clip's")
        other = handlers.chosen_file(second, second_pick, models.voices, "second voice")
        result = handlers.face_panels(models, handlers.read_upload_image(image), own, other, mix, detect=detect)
        return result.panels, models.lines[handlers.FACE_STAGE]

    @shown_errors
    def run_video(video: str | None, clip_pick: str | None, photo: str | None, detect: bool,
                  progress: Any = gr.Progress()) -> tuple[str, str, str]:
        video, photo = uploaded(video), uploaded(photo)
        chosen = handlers.chosen_file(video, clip_pick, models.clips, "video")
        if chosen is None:
            raise EarshotError("video: upload a talking video or pick a test clip")
        result = handlers.upsample_video(models, chosen, Path(photo) if photo else None, job_dir(), detect=detect,
                                         progress=_progress_of(progress))
        return str(result.result), str(result.side_by_side), models.lines[handlers.VIDEO_STAGE]

    @shown_errors
    def run_codec(video: str | None, clip_pick: str | None, detect: bool,
                  progress: Any = gr.Progress()) -> tuple[str, list, str, str, str]:
        video = uploaded(video)
        chosen = handlers.chosen_file(video, clip_pick, models.clips, "video")
        if chosen is None:
            raise EarshotError("video: upload a talking video or pick a test clip")
        result = handlers.codec_comparison(models, chosen, job_dir(), detect=detect, progress=_progress_of(progress))
        return (result.report, result.payloads, handlers.baseline_lines(result), str(result.side_by_side),
                models.lines[handlers.VIDEO_STAGE])

    voices, clips = sorted(models.voices), sorted(models.clips)
    limits = (f"Uploads: at most {handlers.MAX_UPLOAD_BYTES // 2**20} MiB, images up to "
              f"{handlers.MAX_IMAGE_PIXELS:,} pixels, videos up to {handlers.MAX_VIDEO_SECONDS:g} s.")
    with gr.Blocks(title="earshot demo") as page:
        gr.Markdown(f"## {TITLE}\n{limits}")
        with gr.Tab("Face SR with an ear", id="face"):
            with gr.Row():
                image = gr.Image(label="face image (any size)", type="filepath", sources=["upload"], height=280,
                                 elem_id="face-image")
                with gr.Column():
                    voice = gr.Audio(label="voice", type="filepath", sources=["upload"], elem_id="face-voice")
                    voice_pick = gr.Dropdown(voices, value=None, label="or a test clip's voice",
                                             visible=bool(voices))
                with gr.Column():
                    second = gr.Audio(label="a second voice to mix (optional)", type="filepath", sources=["upload"],
                                      elem_id="face-second")
                    second_pick = gr.Dropdown(voices, value=None, label="or a test clip's voice",
                                              visible=bool(voices))
                    mix = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="mix: own voice 0 ... 1 second voice")
            detect = gr.Checkbox(True, label="find the face (RetinaFace); untick for a face crop")
            face_button = gr.Button("Super-resolve", variant="primary", elem_id="face-run")
            panels = gr.Gallery(label="face | 8x8 | bicubic | image only | with the voice [| second voice | mixed]",
                                columns=7, height=300, object_fit="contain", elem_id="face-panels")
            face_line = gr.Markdown(elem_id="face-line")
            face_inputs = [image, voice, voice_pick, second, second_pick, mix, detect]
            face_button.click(run_face, face_inputs, [panels, face_line])
            mix.release(run_face, face_inputs, [panels, face_line])
        with gr.Tab("Video upsampling", id="video"):
            with gr.Row():
                video = gr.Video(label="a short talking video", sources=["upload"], height=280, elem_id="video-in")
                with gr.Column():
                    clip_pick = gr.Dropdown(clips, value=None, label="or a test clip", visible=bool(clips))
                    photo = gr.Image(label="photo of the person (optional: else the track's first face)",
                                     type="filepath", sources=["upload"], height=200,
                                     elem_id="video-photo")
                    video_detect = gr.Checkbox(True, label="find and track the face (as the faces stage)")
            video_button = gr.Button("Upsample", variant="primary", elem_id="video-run")
            with gr.Row():
                result = gr.Video(label="256x256 result", height=300, elem_id="video-result")
                side = gr.Video(label="input | bicubic | stage 1 | ours", height=300, elem_id="video-side")
            video_line = gr.Markdown(elem_id="video-line")
            video_button.click(run_video, [video, clip_pick, photo, video_detect], [result, side, video_line])
        with gr.Tab("Codec", id="codec"):
            with gr.Row():
                codec_video = gr.Video(label="a short talking video", sources=["upload"], height=280,
                                       elem_id="codec-in")
                with gr.Column():
                    codec_pick = gr.Dropdown(clips, value=None, label="or a test clip", visible=bool(clips))
                    codec_detect = gr.Checkbox(True, label="find and track the face (as the faces stage)")
            codec_button = gr.Button("Encode, decode, compare", variant="primary", elem_id="codec-run")
            with gr.Row():
                report = gr.Textbox(label="earshot codec encode --report", lines=8, elem_id="codec-report")
                payloads = gr.Dataframe(headers=["payload", "bytes"], label="bytes per payload",
                                        elem_id="codec-payloads")
            baselines = gr.Markdown(elem_id="codec-baselines")
            decoded = gr.Video(label="earshot (decoded) | H.264 | H.265 at the call's bytes", height=300,
                               elem_id="codec-side")
            codec_line = gr.Markdown(elem_id="codec-line")
            codec_button.click(run_codec, [codec_video, codec_pick, codec_detect],
                               [report, payloads, baselines, decoded, codec_line])
    return page


def serve(models: Models, *, host: str, port: int, allow_remote: bool, block: bool = True) -> Any:
    """Build the page and serve it on ``host:port`` (refused off loopback without ``allow_remote``)."""
    handlers.check_host(host, allow_remote)
    work_dir = Path(tempfile.mkdtemp(prefix="earshot-demo-"))
    page = build_app(models, work_dir)
    page.queue(default_concurrency_limit=1)  # one model run at a time: the CPU is shared
    page.launch(server_name=host, server_port=port, share=False, inbrowser=False, show_error=True,
                max_file_size=handlers.MAX_UPLOAD_BYTES, allowed_paths=[str(work_dir)],
                prevent_thread_lock=not block, quiet=True)
    return page
