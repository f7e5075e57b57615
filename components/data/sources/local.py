"""A folder of videos already on disk.

Two layouts:

* ``voxceleb``: ``<speaker>/<video>/<clip>.<ext>``, the tree of VoxCeleb1/2 (``id00012/
  21Uxsk56VDQ/00001.mp4``) and of LRS3/HDTF re-packagings. The three folder levels are
  the three ids.
* ``flat``: speakers are unknown. Every file is one clip of its own video:
  ``speaker_id = "unknown"`` (the contract's folder for unknown speakers), ``video_id`` =
  the file's path below the folder without extension, ``/`` replaced by ``_`` (so
  ``a.mp4`` -> ``a``, ``talks/t1.mp4`` -> ``talks_t1``), ``clip_id = "00000"`` (VoxCeleb's
  5-digit clip numbering; a file is the first and only clip of its video). Files at any
  depth are accepted.

``auto`` picks ``voxceleb`` when every video is exactly three levels deep, ``flat`` when
every video is at the top level, and otherwise asks for an explicit layout rather than
guess. Names are made safe with :func:`~components.data.sources.ids.sanitize_id`;
when two files end up with the same key the later one (in sorted path order) gets a
``-2``, ``-3``... suffix on its clip id, so the mapping is deterministic. Hidden files
and folders (``.name``) are ignored. An entry with a video extension that is not a
regular file (a folder named ``x.mp4``, a broken symbolic link, a FIFO or device) is
listed like a video so that the stage quarantines it with :func:`not_a_video_file`'s
reason instead of skipping it unseen.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from components.data.sources.ids import UNKNOWN_SPEAKER, clip_key, sanitize_id
from components.errors import ConfigError

log = logging.getLogger(__name__)

FLAT_CLIP_ID = "00000"


@dataclass(frozen=True)
class SourceClip:
    """One video file of a local folder and the ids it gets in ``data/raw``."""

    speaker_id: str
    video_id: str
    clip_id: str
    path: Path  # the source file (root joined with its relative path)
    relpath: str  # its path below the root, for messages and provenance

    @property
    def key(self) -> str:
        return clip_key(self.speaker_id, self.video_id, self.clip_id)


def list_videos(root: str | Path, extensions: list[str]) -> list[Path]:
    """Paths (relative to ``root``, sorted) of the non-hidden files with a video extension."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"download.input {root}: not a folder")
    exts = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
    found = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if path.suffix.lower() in exts and not any(p.startswith(".") for p in rel.parts):
            found.append(rel)
    return sorted(found)


def not_a_video_file(path: str | Path) -> str | None:
    """Why ``path`` cannot be a video file (a folder, broken link, FIFO...), or ``None``.

    Checked before anything opens the path: opening a FIFO or a device would block or
    read forever.
    """
    path = Path(path)
    try:
        if path.is_file():
            return None
        if path.is_symlink() and not path.exists():
            return f"a broken symbolic link (to {os.readlink(path)})"
        if path.is_dir():
            return "a folder, not a video file"
        if not path.exists():
            return "missing"
    except OSError as exc:  # a symlink loop, a name too long, a permission denied on the way
        return f"not inspectable ({exc.strerror or exc})"
    return "not a regular file (a FIFO, socket or device)"


def detect_layout(relpaths: list[Path], root: str | Path = "") -> str:
    """``voxceleb`` when every file is ``a/b/c.ext``, ``flat`` when every file is at the top."""
    depths = Counter(len(p.parts) for p in relpaths)
    if set(depths) == {3}:
        return "voxceleb"
    if set(depths) == {1}:
        return "flat"
    shown = ", ".join(f"{n} file(s) at depth {d}" for d, n in sorted(depths.items()))
    raise ConfigError(
        f"download.input {root}: cannot tell the layout ({shown}); set download.layout to "
        "'voxceleb' (<speaker>/<video>/<clip>.<ext>) or 'flat' (every file is its own video)"
    )


def scan_folder(root: str | Path, layout: str, extensions: list[str]) -> list[SourceClip]:
    """Every video below ``root`` with its ids, for ``layout`` in auto/voxceleb/flat."""
    root = Path(root)
    relpaths = list_videos(root, extensions)
    if not relpaths:
        raise ConfigError(f"download.input {root}: no video files with extensions {extensions}")
    if layout == "auto":
        layout = detect_layout(relpaths, root)
        log.info("%s: detected layout %r (%d videos)", root, layout, len(relpaths))
    if layout == "voxceleb":
        deep = [p for p in relpaths if len(p.parts) == 3]
        if len(deep) < len(relpaths):
            log.warning("%s: %d file(s) not at <speaker>/<video>/<clip> depth ignored, e.g. %s",
                        root, len(relpaths) - len(deep), next(p for p in relpaths if len(p.parts) != 3))
        ids = [(sanitize_id(p.parts[0]), sanitize_id(p.parts[1]), sanitize_id(p.stem)) for p in deep]
        relpaths = deep
    elif layout == "flat":
        ids = [(UNKNOWN_SPEAKER, sanitize_id("_".join(p.with_suffix("").parts)), FLAT_CLIP_ID) for p in relpaths]
    else:
        raise ConfigError(f"download.layout {layout!r}: expected auto, voxceleb or flat")
    return _unique_clips(root, relpaths, ids)


def _unique_clips(root: Path, relpaths: list[Path], ids: list[tuple[str, str, str]]) -> list[SourceClip]:
    clips, used = [], set()
    for rel, (speaker, video, clip) in zip(relpaths, ids):
        unique, n = clip, 1
        while (speaker, video, unique) in used:
            n += 1
            unique = f"{clip[:120]}-{n}"
        if unique != clip:
            log.warning("%s: %s maps to an existing key; its clip id becomes %s", root, rel, unique)
        used.add((speaker, video, unique))
        clips.append(SourceClip(speaker, video, unique, root / rel, rel.as_posix()))
    return clips
