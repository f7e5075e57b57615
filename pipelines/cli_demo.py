"""``earshot demo``: serve the page that tries both papers' trained models (127.0.0.1 only).

Checks the models are there (a one-line refusal naming the missing one and the
``dvc repro`` command that makes it), loads them and serves
:func:`components.demo.app.serve`'s page until interrupted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from pipelines._common import exit_on_user_error, parse_overrides, setup_logging


@exit_on_user_error
def demo(
    models: Annotated[Optional[Path], typer.Option(
        "--models", help="folder with face_sr/ and talking/ as models/ (default: face_sr.out_dir and "
                         "talking.out_dir, what `dvc repro` trains)")] = None,
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="port of the page")] = 7860,
    host: Annotated[str, typer.Option("--host", help="address to bind: loopback only unless "
                                                     "orchestration.allow_remote")] = "127.0.0.1",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    params: Annotated[Path, typer.Option("--params", help="params file")] = Path("params.yaml"),
    set_: Annotated[Optional[list[str]], typer.Option("--set", "-S", help="override: KEY=VALUE (YAML value)")] = None,
) -> None:
    """Serve a local web page to try face SR with an ear, video upsampling and the codec."""
    from components.config import load_params
    from components.demo.handlers import check_host, load_models, missing_models
    from components.errors import EarshotError
    from components.inference.inputs import resolve_device
    from components.io import project_root

    setup_logging()
    cfg = load_params(params, parse_overrides(set_ or []))
    check_host(host, cfg.orchestration.allow_remote)
    root = project_root(params.resolve().parent)
    face_dir = models / "face_sr" if models else root / cfg.face_sr.out_dir
    talking_dir = models / "talking" if models else root / cfg.talking.out_dir
    if (refusal := missing_models(face_dir, talking_dir)) is not None:
        raise EarshotError(refusal)
    loaded = load_models(face_dir, talking_dir, cfg, root, resolve_device(device))
    from components.demo.app import serve

    typer.echo(f"earshot demo on http://{host}:{port} (Ctrl+C to stop)")
    serve(loaded, host=host, port=port, allow_remote=cfg.orchestration.allow_remote)
