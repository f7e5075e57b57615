"""The head in *head units*, and their projection onto the canvas for one frame.

Head units: origin at the head centre, x to the image right, y down, z towards the
camera, 1 = half the head height (skull top at y = -1, chin at y = +1). Facial features
are 2-D outlines on the front of the head, lifted onto an ellipsoid (radii
``head_width``, 1, :data:`HEAD_DEPTH`) so that they turn with the head: every point is
rotated by yaw, pitch and roll and projected orthographically (:class:`Projection`). The
silhouette, hair and ears use z = 0 (or behind), so they stay put while the face turns
inside them, as on a real head. Here: the projection, the head outline, the hair
shapes of every style and the mouth of a viseme.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from components.data.synth.face.style import SUPERSAMPLE, FaceStyle, FrameState, Scene

HEAD_DEPTH = 0.9
EYE_Y = -0.02
BROW_Y = -0.19
MOUTH_Y = 0.55
MAX_OPEN = 0.15  # lip gap at mouth_open = 1, head units


def surface_z(x: np.ndarray, y: np.ndarray, head_width: float) -> np.ndarray:
    return HEAD_DEPTH * np.sqrt(np.maximum(1 - (x / head_width) ** 2 - y**2, 0.0))


@functools.cache
def _unit_circle(n: int) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.column_stack([np.cos(t), np.sin(t)])


def ellipse(cx: float, cy: float, ax: float, ay: float, n: int = 20) -> np.ndarray:
    return _unit_circle(n) * [ax, ay] + [cx, cy]


def _jaw_weight(y: np.ndarray) -> np.ndarray:
    """How much a point at height ``y`` follows the jaw when the mouth opens."""
    return np.clip((y - 0.45) / 0.3, 0.0, 1.0)


class Projection:
    """Head units -> supersampled canvas pixels for one frame."""

    def __init__(self, style: FaceStyle, scene: Scene, state: FrameState):
        side = scene.size * SUPERSAMPLE
        self.k = scene.head_frac * style.head_size * side
        self.c = np.array([scene.centre[0] + state.dx, scene.centre[1] + state.dy]) * side
        self.head_width = style.head_width
        cy, sy = np.cos(state.yaw), np.sin(state.yaw)
        cp, sp = np.cos(state.pitch), np.sin(state.pitch)
        cr, sr = np.cos(state.roll), np.sin(state.roll)
        r_yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        r_pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
        r_roll = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
        rot = (r_roll @ r_pitch @ r_yaw)[:2] * self.k  # image rows of the rotation, scaled to px
        self.rot_xy, self.rot_z = rot[:, :2].T.copy(), rot[:, 2].copy()

    def project(self, xyz: np.ndarray) -> np.ndarray:
        return self._project(xyz[:, :2], xyz[:, 2])

    def _project(self, xy: np.ndarray, z: np.ndarray | float) -> np.ndarray:
        return xy @ self.rot_xy + np.multiply.outer(z, self.rot_z) + self.c

    def face(self, xy: np.ndarray, lift: float | np.ndarray = 0.0) -> np.ndarray:
        """Points drawn on the face surface (raised by ``lift``)."""
        return self._project(xy, surface_z(xy[:, 0], xy[:, 1], self.head_width) + lift)

    def flat(self, xy: np.ndarray, z: float = 0.0) -> np.ndarray:
        """Points in a plane parallel to the image (silhouette, hair, ears)."""
        return xy @ self.rot_xy + z * self.rot_z + self.c

    def body(self, xy: np.ndarray) -> np.ndarray:
        """Points that translate with the head but do not rotate (neck, shoulders)."""
        return xy * self.k + self.c


def head_outline(style: FaceStyle, jaw_drop: float, n: int = 72) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x, y = style.head_width * np.cos(t), np.sin(t)
    x = x * (1 - style.jaw_taper * np.clip(y, 0, None) ** 2)
    return np.column_stack([x, y + jaw_drop * _jaw_weight(y)])


def _arc(v: float, rx: float, theta0: float, n: int = 25, bumps: float = 0.0) -> np.ndarray:
    """Outer hair boundary from the image left over the top to the right.

    ``theta0`` < 0 extends it below the horizontal through the head centre; ``bumps``
    modulates the radius (curls).
    """
    t = np.linspace(theta0, np.pi - theta0, n)
    r = v * (1 + bumps * np.abs(np.sin(7 * t)))
    return np.column_stack([-r * rx * np.cos(t), -r * np.sin(t)])


def _hairline(rx: float, top: float, temple: float, n: int = 15, jag: float = 0.0) -> np.ndarray:
    """Inner hair boundary from the right temple over the forehead to the left one."""
    phi = np.linspace(0, np.pi, n)
    y = temple + (top - temple) * np.sin(phi) ** 0.6
    y = y + jag * (np.arange(n) % 2) * np.sin(phi)
    return np.column_stack([0.9 * rx * np.cos(phi), y])


class Hair(NamedTuple):
    back: list[np.ndarray]  # flat polygons behind the head (z = -0.3)
    front: list[np.ndarray]  # (n, 3) polygons over the head


@functools.lru_cache(maxsize=16)
def hair_shapes(style: FaceStyle) -> Hair:
    """Hair polygons in head units for the speaker's style (cached: shared, never modified)."""
    rx, hs = style.head_width, style.hair_style
    if hs == "bald":  # a fringe of hair along the sides of the skull
        phi = np.linspace(-0.45, 0.08, 9)
        band = np.column_stack([np.sqrt(1 - phi**2) * rx, phi])
        inner = band * [0.95, 1.0] + [0.0, 0.0]
        inner[[0, -1], 0] = band[[0, -1], 0]  # taper the ends
        sides = [np.vstack([band * [s * 1.03, 1.0], (inner * [s, 1.0])[::-1]]) for s in (-1, 1)]
        return Hair([], [np.column_stack([p, np.zeros(len(p))]) for p in sides])
    params = {  # volume, lowest outer point, forehead hairline, temple height, curl bumps, back hair bottom
        "short": (1.05, -0.05, -0.56, -0.1, 0.0, None),
        "fringe": (1.07, -0.05, -0.36, -0.12, 0.0, None),
        "bob": (1.1, -0.55, -0.52, 0.42, 0.0, 0.62),
        "long": (1.09, -0.3, -0.55, 0.25, 0.0, 1.7),
        "curly": (1.16, -0.35, -0.5, 0.2, 0.05, 0.55),
    }[hs]
    volume, theta0, top, temple, bumps, bottom = params
    outer = _arc(volume, rx, theta0, bumps=bumps)
    inner = _hairline(rx, top, temple, jag=0.035 if hs == "fringe" else 0.0)
    inner[:, 0] *= np.where(inner[:, 1] > 0, 0.95, 1.0)  # hug the cheeks below the temples
    front_xy = np.vstack([outer, inner])
    z = np.concatenate([np.zeros(len(outer)), surface_z(inner[:, 0], inner[:, 1], rx) + 0.01])
    back = []
    if bottom is not None:
        width = volume * rx * (1.15 if hs == "long" else 1.0)
        sides = np.array([[width, bottom], [-width, bottom]])
        back.append(np.vstack([_arc(volume, rx, -0.2, bumps=bumps), sides]))
    return Hair(back, [np.column_stack([front_xy, z])])


class MouthShape(NamedTuple):
    """Lip outlines in head units (2-D, before lifting onto the face)."""

    lips: np.ndarray  # outer outline of both lips
    inner: np.ndarray  # the opening between them
    teeth: np.ndarray  # upper teeth, clipped to the opening
    line: np.ndarray  # where the lips meet (the lower edge of the upper lip)
    corners: np.ndarray  # (2, 2) left and right corner
    gap: float  # opening height at the centre


def mouth_shape(style: FaceStyle, state: FrameState, n: int = 17) -> MouthShape:
    """The mouth for a viseme: opening drops the lower lip, width spreads, rounding narrows."""
    rnd = state.mouth_round
    hw = 0.16 * style.mouth_width * (0.75 + 0.5 * state.mouth_width) * (1 - 0.3 * rnd)
    gap = MAX_OPEN * state.mouth_open
    upper_t = 0.035 * style.lip_fullness * (1 + 0.3 * rnd)
    lower_t = 0.05 * style.lip_fullness * (1 + 0.3 * rnd)
    u = np.linspace(-1, 1, n)
    x = hw * u
    bump = (1 - u**2) ** (0.6 + 0.4 * rnd)
    y_ui = MOUTH_Y - 0.25 * gap * bump
    y_li = MOUTH_Y + 0.75 * gap * bump
    shape = np.sqrt(1 - u**2)
    y_uo = y_ui - upper_t * shape + 0.012 * np.exp(-((x / 0.03) ** 2)) * shape  # with a Cupid's bow
    y_lo = y_li + lower_t * shape
    teeth_x = 0.85 * x
    return MouthShape(
        lips=np.vstack([np.column_stack([x, y_uo]), np.column_stack([x, y_lo])[::-1]]),
        inner=np.vstack([np.column_stack([x, y_ui]), np.column_stack([x, y_li])[::-1]]),
        teeth=np.vstack([np.column_stack([teeth_x, y_ui]),
                         np.column_stack([teeth_x, np.minimum(y_li, y_ui + 0.035)])[::-1]]),
        line=np.column_stack([x, y_ui]),
        corners=np.array([[-hw, MOUTH_Y], [hw, MOUTH_Y]]),
        gap=gap,
    )
