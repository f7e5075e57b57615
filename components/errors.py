"""Errors shared by every stage.

A :class:`Rejected` is the normal way for per-item work (one video, one clip, one
manifest row) to say "this input is bad, here is why": the stage runner records it in
the stage's quarantine table and goes on with the other items.
"""

from __future__ import annotations

# Reason codes used across stages. A reason is a short machine-readable code;
# the human-readable explanation goes in ``detail``.
REASONS = {
    # input files
    "unreadable": "the path cannot be opened or read",
    "empty_file": "zero-length file",
    "corrupt": "the container or a stream cannot be decoded",
    "truncated": "the file is cut short: its frames end before the end its container records",
    "no_video_stream": "the file has no video stream",
    "no_audio_stream": "the file has no audio stream",
    "unsupported_codec": "no decoder for the codec",
    "too_short": "shorter than the minimum duration",
    # download / manifest
    "bad_manifest_row": "a manifest row failed validation",
    "download_failed": "the source could not be fetched",
    "download_timeout": "the source did not arrive within the deadline or at the minimum rate",
    "checksum_mismatch": "the downloaded bytes do not match the expected checksum",
    # faces
    "no_face": "no face detected",
    "face_too_small": "the face is smaller than the minimum size",
    "multiple_faces": "several competing faces",
    "track_lost": "the face track was lost for too long",
    "extreme_pose": "the head pose is beyond the allowed range",
    # audio
    "silence": "no speech found",
    "offset_too_large": "audio-video offset beyond tolerance",
    "voice_over": "the voice does not match the speaker's other clips",
    # anything unexpected
    "error": "unexpected error while processing the item",
}


class EarshotError(Exception):
    """Base class for user-facing errors: the message names the offending input."""


class ConfigError(EarshotError):
    """params.yaml (or an override) is invalid."""


class StageFailed(EarshotError):
    """A stage's items failed with unexpected errors (a bug, not bad input) past the limit."""


class Rejected(EarshotError):
    """An input item is unusable; it goes to the quarantine table with ``reason``."""

    def __init__(self, reason: str, detail: str = "", *, item: str | None = None):
        if reason not in REASONS:
            raise ValueError(f"unknown rejection reason {reason!r}; known: {sorted(REASONS)}")
        self.reason = reason
        self.detail = detail or REASONS[reason]
        self.item = item
        where = f"{item}: " if item else ""
        super().__init__(f"{where}{reason}: {self.detail}")
