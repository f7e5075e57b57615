"""Clip ids that are safe to use as path components.

A clip's key ``<speaker_id>/<video_id>/<clip_id>`` becomes a path below ``data/`` in
every stage, and ids come from untrusted places (manifests, folder names, VoxCeleb2
metadata). An id is therefore restricted to ``[A-Za-z0-9_.-]{1,128}`` and may not be
``.`` or ``..``: no separator, no traversal, nothing a shell would interpret.
"""

from __future__ import annotations

import re

ID_PATTERN = r"^[A-Za-z0-9_.-]{1,128}$"
_ID_RE = re.compile(ID_PATTERN)
_UNSAFE_RE = re.compile(r"[^A-Za-z0-9_.-]+")
UNKNOWN_SPEAKER = "unknown"


def id_problem(value: str) -> str | None:
    """Why ``value`` is not a safe id, or ``None`` when it is."""
    if not _ID_RE.match(value):
        return f"must match {ID_PATTERN} (letters, digits, '_', '.', '-'; 1-128 characters)"
    if value in (".", ".."):
        return "must not be '.' or '..'"
    return None


def sanitize_id(name: str) -> str:
    """Turn a file or folder name into a safe id (unsafe runs become ``_``)."""
    safe = _UNSAFE_RE.sub("_", name).strip("_")[:128] or "_"
    return "_" if safe in (".", "..") else safe


def clip_key(speaker_id: str, video_id: str, clip_id: str) -> str:
    for value in (speaker_id, video_id, clip_id):
        if problem := id_problem(value):
            raise ValueError(f"unsafe id {value!r}: {problem}")
    return f"{speaker_id}/{video_id}/{clip_id}"
