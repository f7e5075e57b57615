"""Locate and run the ffmpeg binary.

The system ffmpeg (Debian's, installed by scripts/setup.sh) is preferred; the static
binary shipped inside the ``imageio-ffmpeg`` wheel is the fallback. Arguments are always
passed as a list, never through a shell.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from collections.abc import Sequence


class FFmpegNotFound(RuntimeError):
    pass


@functools.cache
def ffmpeg_exe() -> str:
    """Path of an ffmpeg binary with libx264 and aac."""
    exe = shutil.which("ffmpeg")
    if exe:
        return exe
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as exc:  # pragma: no cover - depends on the machine
        raise FFmpegNotFound(
            "ffmpeg not found: install it (apt-get install ffmpeg) or `pip install imageio-ffmpeg`"
        ) from exc


def run_ffmpeg(args: Sequence[str], *, input: bytes | None = None, timeout: float | None = None) -> bytes:
    """Run ``ffmpeg -nostdin -hide_banner -loglevel error *args`` and return stdout.

    Raises ``subprocess.CalledProcessError`` with ffmpeg's stderr on failure.
    """
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", *map(str, args)]
    proc = subprocess.run(cmd, input=input, capture_output=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, cmd, proc.stdout, proc.stderr)
    return proc.stdout
