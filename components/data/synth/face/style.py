"""What one frame of a speaking head is drawn from, and the ground truth it gives back.

* :class:`FaceStyle`: a speaker's appearance (from a ``speakers.parquet`` row);
* :class:`Scene`: a video's camera and set (background, clothing, framing, light);
* :class:`FrameState`: what changes from frame to frame (pose, viseme, blink, gaze, light);
* :class:`FaceGeometry`, :class:`RenderedFrame`: the image and its landmarks and boxes.

Drawing happens on a canvas :data:`SUPERSAMPLE` times larger than the output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple

import numpy as np
from PIL import Image

SUPERSAMPLE = 2

RGB = tuple[int, int, int]
RGBA = tuple[int, int, int, int]


@dataclass(frozen=True)
class FaceStyle:
    """Per-speaker appearance (derived from a ``speakers.parquet`` row)."""

    skin: RGB
    hair: RGB
    hair_style: str  # one of attributes.HAIR_STYLES
    eye: RGB
    head_size: float  # relative head height (1 = average)
    head_width: float  # head half-width / half-height
    jaw_taper: float
    eye_spacing: float
    eye_size: float
    nose_length: float
    nose_width: float
    mouth_width: float
    lip_fullness: float
    brow_thickness: float
    wrinkles: float  # 0..1
    glasses: bool
    beard_density: float  # 0: none

    @classmethod
    def from_attributes(cls, row: Mapping[str, Any]) -> FaceStyle:
        def rgb(value: Any) -> RGB:
            return tuple(int(v) for v in value)  # type: ignore[return-value]

        return cls(
            skin=rgb(row["skin_rgb"]), hair=rgb(row["hair_rgb"]), hair_style=str(row["hair_style"]),
            eye=rgb(row["eye_rgb"]), head_size=float(row["head_size"]), head_width=float(row["head_shape"]),
            jaw_taper=float(row["jaw_taper"]),
            eye_spacing=float(row["eye_spacing"]), eye_size=float(row["eye_size"]),
            nose_length=float(row["nose_length"]), nose_width=float(row["nose_width"]),
            mouth_width=float(row["mouth_width"]), lip_fullness=float(row["lip_fullness"]),
            brow_thickness=float(row["brow_thickness"]), wrinkles=float(row["wrinkles"]),
            glasses=bool(row["glasses"]), beard_density=float(row["beard_density"]),
        )


@dataclass(frozen=True)
class Scene:
    """Per-video camera and set: background, clothing, framing, light direction."""

    size: int  # output frame side, px
    background: Image.Image  # RGB, size * SUPERSAMPLE square; copied for every frame
    shirt: RGB
    head_frac: float  # half-height of an average head (head_size 1) / frame side: camera distance
    centre: tuple[float, float]  # head centre / frame side
    light_azimuth: float  # radians, + light from the image right (frames wander around it)
    light_elevation: float  # radians above the horizon


@dataclass(frozen=True)
class FrameState:
    """Everything that changes from frame to frame."""

    yaw: float = 0.0  # radians, + turns the face to the image right
    pitch: float = 0.0  # radians, + tilts the face up
    roll: float = 0.0  # radians, + rotates clockwise in the image
    dx: float = 0.0  # head translation / frame side
    dy: float = 0.0
    mouth_open: float = 0.0  # viseme parameters, 0..1
    mouth_width: float = 0.5
    mouth_round: float = 0.0
    blink: float = 0.0  # 0 open .. 1 closed
    gaze_x: float = 0.0  # -1..1
    gaze_y: float = 0.0
    light_azimuth: float = 0.0  # radians, + light from the image right
    light_gain: float = 1.0


@dataclass(frozen=True)
class FaceGeometry:
    """Ground truth of one frame in output pixels."""

    landmarks: np.ndarray  # (5, 2): image-left eye, image-right eye, nose tip, left/right mouth corner
    face_box: np.ndarray  # (4,) x0, y0, x1, y1 of the head outline (skull top to chin, no ears/hair)
    mouth_box: np.ndarray  # (4,) x0, y0, x1, y1 of the lips


class RenderedFrame(NamedTuple):
    image: np.ndarray  # (size, size, 3) uint8 RGB
    geometry: FaceGeometry
