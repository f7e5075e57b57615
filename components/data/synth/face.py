"""Render one video frame of a speaking head.

Geometry lives in *head units*: origin at the head centre, x to the image right, y
down, z towards the camera, 1 = half the head height (skull top at y = -1, chin at
y = +1). Facial features are drawn as 2-D outlines on the front of the head, lifted
onto an ellipsoid (radii ``head_width``, 1, :data:`HEAD_DEPTH`) so that they turn with
the head: every point is rotated by yaw, pitch and roll and projected orthographically
(:class:`_Projection`). The silhouette, hair and ears use z = 0 (or behind), so they stay
put while the face turns inside them, as on a real head.

Drawing uses PIL polygons on a canvas :data:`SUPERSAMPLE` times larger than the output,
in painter's order (background, back hair, body, ears, head, skin marks, beard, eyes
and brows, nose, lips, front hair, glasses), then a box-filter reduction for
antialiasing. Light is applied last in numpy: a Lambertian term on the head ellipsoid
(inside a head mask drawn alongside), a soft gradient across the whole frame, both
following the light direction, and a partial auto-exposure on the head as a camera's.

:func:`render_frame` returns the image and its :class:`FaceGeometry` (landmarks, face
and mouth boxes in output pixels), the per-frame ground truth the corpus stores.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple

import numpy as np
from PIL import Image, ImageDraw

SUPERSAMPLE = 2
HEAD_DEPTH = 0.9
EYE_Y = -0.02
BROW_Y = -0.19
MOUTH_Y = 0.55
MAX_OPEN = 0.15  # lip gap at mouth_open = 1, head units
AMBIENT, DIFFUSE = 0.62, 0.5
SHADE_NORM = AMBIENT + 0.8 * DIFFUSE  # a head lit at 37 degrees off its normal keeps its colour
EXPOSURE_TARGET = 120.0  # mean head luma that auto-exposure aims for
EXPOSURE_STRENGTH = 0.5  # 0: fixed exposure, 1: every head exactly at the target
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

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


# ----------------------------------------------------------------------------- geometry


def _surface_z(x: np.ndarray, y: np.ndarray, head_width: float) -> np.ndarray:
    return HEAD_DEPTH * np.sqrt(np.maximum(1 - (x / head_width) ** 2 - y**2, 0.0))


@functools.cache
def _unit_circle(n: int) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.column_stack([np.cos(t), np.sin(t)])


def _ellipse(cx: float, cy: float, ax: float, ay: float, n: int = 20) -> np.ndarray:
    return _unit_circle(n) * [ax, ay] + [cx, cy]


def _jaw_weight(y: np.ndarray) -> np.ndarray:
    """How much a point at height ``y`` follows the jaw when the mouth opens."""
    return np.clip((y - 0.45) / 0.3, 0.0, 1.0)


class _Projection:
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
        return self._project(xy, _surface_z(xy[:, 0], xy[:, 1], self.head_width) + lift)

    def flat(self, xy: np.ndarray, z: float = 0.0) -> np.ndarray:
        """Points in a plane parallel to the image (silhouette, hair, ears)."""
        return xy @ self.rot_xy + z * self.rot_z + self.c

    def body(self, xy: np.ndarray) -> np.ndarray:
        """Points that translate with the head but do not rotate (neck, shoulders)."""
        return xy * self.k + self.c


def _head_outline(style: FaceStyle, jaw_drop: float, n: int = 72) -> np.ndarray:
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


class _Hair(NamedTuple):
    back: list[np.ndarray]  # flat polygons behind the head (z = -0.3)
    front: list[np.ndarray]  # (n, 3) polygons over the head


@functools.lru_cache(maxsize=16)
def _hair_shapes(style: FaceStyle) -> _Hair:
    """Hair polygons in head units for the speaker's style (cached: shared, never modified)."""
    rx, hs = style.head_width, style.hair_style
    if hs == "bald":  # a fringe of hair along the sides of the skull
        phi = np.linspace(-0.45, 0.08, 9)
        band = np.column_stack([np.sqrt(1 - phi**2) * rx, phi])
        inner = band * [0.95, 1.0] + [0.0, 0.0]
        inner[[0, -1], 0] = band[[0, -1], 0]  # taper the ends
        sides = [np.vstack([band * [s * 1.03, 1.0], (inner * [s, 1.0])[::-1]]) for s in (-1, 1)]
        return _Hair([], [np.column_stack([p, np.zeros(len(p))]) for p in sides])
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
    z = np.concatenate([np.zeros(len(outer)), _surface_z(inner[:, 0], inner[:, 1], rx) + 0.01])
    back = []
    if bottom is not None:
        width = volume * rx * (1.15 if hs == "long" else 1.0)
        sides = np.array([[width, bottom], [-width, bottom]])
        back.append(np.vstack([_arc(volume, rx, -0.2, bumps=bumps), sides]))
    return _Hair(back, [np.column_stack([front_xy, z])])


class _MouthShape(NamedTuple):
    """Lip outlines in head units (2-D, before lifting onto the face)."""

    lips: np.ndarray  # outer outline of both lips
    inner: np.ndarray  # the opening between them
    teeth: np.ndarray  # upper teeth, clipped to the opening
    line: np.ndarray  # where the lips meet (the lower edge of the upper lip)
    corners: np.ndarray  # (2, 2) left and right corner
    gap: float  # opening height at the centre


def _mouth(style: FaceStyle, state: FrameState, n: int = 17) -> _MouthShape:
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
    return _MouthShape(
        lips=np.vstack([np.column_stack([x, y_uo]), np.column_stack([x, y_lo])[::-1]]),
        inner=np.vstack([np.column_stack([x, y_ui]), np.column_stack([x, y_li])[::-1]]),
        teeth=np.vstack([np.column_stack([teeth_x, y_ui]),
                         np.column_stack([teeth_x, np.minimum(y_li, y_ui + 0.035)])[::-1]]),
        line=np.column_stack([x, y_ui]),
        corners=np.array([[-hw, MOUTH_Y], [hw, MOUTH_Y]]),
        gap=gap,
    )


# ----------------------------------------------------------------------------- drawing


def _mix(a: RGB, b: RGB, t: float) -> RGB:
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))  # type: ignore[return-value]


def _scale(c: RGB, f: float) -> RGB:
    return tuple(int(np.clip(v * f, 0, 255)) for v in c)  # type: ignore[return-value]


def _poly(draw: ImageDraw.ImageDraw, pts: np.ndarray, fill: RGB | RGBA) -> None:
    draw.polygon(pts.ravel().tolist(), fill=fill)


def _bbox(pts: np.ndarray) -> np.ndarray:
    return np.array([*pts.min(axis=0), *pts.max(axis=0)], dtype=np.float32)


def _line(draw: ImageDraw.ImageDraw, pts: np.ndarray, fill: RGB | RGBA, width: float) -> None:
    draw.line(pts.ravel().tolist(), fill=fill, width=max(1, int(round(width))), joint="curve")


class _Painter:
    """Draws one frame's head on the supersampled canvas (and its shading mask)."""

    def __init__(self, style: FaceStyle, scene: Scene, state: FrameState, canvas: Image.Image, mask: Image.Image):
        self.style, self.scene, self.state = style, scene, state
        self.p = _Projection(style, scene, state)
        self.draw = ImageDraw.Draw(canvas, "RGBA")
        self.mask = ImageDraw.Draw(mask)
        self.mouth = _mouth(style, state)
        self.jaw_drop = 0.75 * self.mouth.gap
        self.lip_lift = 0.03 + 0.04 * state.mouth_round  # rounded lips protrude
        self.outline = self.p.flat(_head_outline(style, self.jaw_drop))
        self.px = self.p.k / 100  # one hundredth of the head half-height, in canvas px
        skin = style.skin
        self.skin, self.shadow = skin, _scale(skin, 0.78)
        self.lip = _mix(skin, (176, 70, 82), 0.42)

    def paint(self) -> None:
        hair = _hair_shapes(self.style)
        for poly in hair.back:
            _poly(self.draw, self.p.flat(poly, z=-0.3), self.style.hair)
        self._body()
        self._ears()
        _poly(self.draw, self.outline, self.skin)
        _poly(self.mask, self.outline, 255)
        self._skin_marks()
        if self.style.beard_density > 0:
            self._beard()
        for side in (-1, 1):
            self._eye(side)
            self._brow(side)
        self._nose()
        self._lips()
        for poly in hair.front:
            pts = self.p.project(poly)
            _poly(self.draw, pts, self.style.hair)
            _poly(self.mask, pts, 255)
        if self.style.hair_style == "bald":
            _poly(self.draw, self.p.flat(_ellipse(-0.15, -0.7, 0.25, 0.12)), (255, 255, 255, 40))
        if self.style.glasses:
            self._glasses()

    def _body(self) -> None:
        rx, p = self.style.head_width, self.p
        neck = np.array([[-0.42 * rx, 0.3], [-0.46 * rx, 1.45], [0.46 * rx, 1.45], [0.42 * rx, 0.3]])
        _poly(self.draw, p.body(neck), _scale(self.skin, 0.88))
        _poly(self.draw, p.body(_ellipse(0, 0.92, 0.5 * rx, 0.2)), (*self.shadow, 200))
        shirt = np.array([[-0.4, 1.3], [-1.0, 1.42], [-1.7, 1.65], [-2.1, 2.0], [-2.3, 3.0], [2.3, 3.0],
                          [2.1, 2.0], [1.7, 1.65], [1.0, 1.42], [0.4, 1.3], [0.22, 1.5], [0, 1.56], [-0.22, 1.5]])
        _poly(self.draw, p.body(shirt), self.scene.shirt)
        collar = np.array([[-0.4, 1.3], [-0.22, 1.5], [0, 1.56], [0.22, 1.5], [0.4, 1.3], [0.48, 1.36],
                           [0.26, 1.6], [0, 1.66], [-0.26, 1.6], [-0.48, 1.36]])
        _poly(self.draw, p.body(collar), (0, 0, 0, 50))

    def _ears(self) -> None:
        rx = self.style.head_width
        for s in (-1, 1):
            outer = self.p.flat(_ellipse(s * (rx + 0.02), 0.08, 0.1, 0.19), z=-0.1)
            _poly(self.draw, outer, _scale(self.skin, 0.94))
            _poly(self.mask, outer, 255)
            _poly(self.draw, self.p.flat(_ellipse(s * (rx + 0.04), 0.09, 0.045, 0.12), z=-0.1), (*self.shadow, 150))

    def _skin_marks(self) -> None:
        """Cheek colour, nasolabial folds and age wrinkles (translucent)."""
        st, p, px = self.style, self.p, self.px
        for s in (-1, 1):
            _poly(self.draw, p.face(_ellipse(s * 0.4, 0.25, 0.12, 0.08)), (200, 80, 80, 22))
            fold = np.array([[s * 0.1 * st.nose_width + s * 0.03, 0.32], [s * 0.2, 0.42], [s * 0.23, 0.52],
                             [s * 0.22, 0.62]])
            _line(self.draw, p.face(fold), (0, 0, 0, int(18 + 50 * st.wrinkles)), 1.2 * px)
        if st.wrinkles > 0:
            alpha = int(70 * st.wrinkles)
            for y in (-0.44, -0.37, -0.3):
                xs = np.linspace(-0.28, 0.28, 9)
                _line(self.draw, p.face(np.column_stack([xs, y - 0.02 * np.cos(xs * 5)])), (0, 0, 0, alpha), 0.9 * px)
            for s in (-1, 1):
                x0 = s * (st.eye_spacing + 0.15)
                for dy in (-0.03, 0.0, 0.03):
                    _line(self.draw, p.face(np.array([[x0, EYE_Y + dy / 2], [x0 + s * 0.06, EYE_Y + dy]])),
                          (0, 0, 0, alpha), 0.8 * px)

    def _beard(self) -> None:
        st, p = self.style, self.p
        rx = st.head_width
        jaw = _head_outline(st, self.jaw_drop)
        jaw = jaw[jaw[:, 1] > 0.25]
        jaw = jaw[np.argsort(np.arctan2(jaw[:, 1], jaw[:, 0]))]  # right cheek -> chin -> left cheek
        top = np.array([[-0.84 * rx, 0.25], [-0.45, 0.5], [-0.25, 0.6], [0.25, 0.6], [0.45, 0.5], [0.84 * rx, 0.25]])
        beard = np.vstack([jaw * [1.02, 1.03], top])
        colour = _mix(st.hair, self.skin, 0.15)
        alpha = int(230 * st.beard_density)
        _poly(self.draw, p.face(beard, lift=0.01), (*colour, alpha))
        mh = self.mouth.corners[1, 0] + 0.03
        moustache = np.array([[-mh, MOUTH_Y + 0.01], [-0.12, MOUTH_Y - 0.11], [0.12, MOUTH_Y - 0.11],
                              [mh, MOUTH_Y + 0.01], [0, MOUTH_Y - 0.03]])
        _poly(self.draw, p.face(moustache, lift=0.02), (*colour, alpha))

    def _eye(self, side: int) -> None:
        st, state, p, px = self.style, self.state, self.p, self.px
        ex, w, h = side * st.eye_spacing, 0.12 * st.eye_size, 0.062 * st.eye_size
        t = np.linspace(-1, 1, 15)
        x = ex + w * t
        asym = 1 + 0.15 * t * side  # the upper lid peaks towards the nose
        lower = EYE_Y + 0.55 * h * (1 - t**2) ** 0.9
        upper = EYE_Y - h * (1 - t**2) ** 0.7 * asym
        upper = upper + state.blink * (lower - upper)
        lift = 0.01
        white = np.vstack([np.column_stack([x, upper]), np.column_stack([x, lower])[::-1]])
        _poly(self.draw, p.face(white, lift), (236, 232, 226))
        r = 0.046 * st.eye_size
        ix, iy = ex + state.gaze_x * 0.45 * w, EYE_Y - 0.1 * h + state.gaze_y * 0.25 * h
        _poly(self.draw, p.face(_ellipse(ix, iy, r, r), lift), st.eye)
        _poly(self.draw, p.face(_ellipse(ix, iy, 0.45 * r, 0.45 * r), lift), (16, 12, 12))
        light = -np.sin(state.light_azimuth)
        _poly(self.draw, p.face(_ellipse(ix - 0.35 * r * light, iy - 0.35 * r, 0.14 * r, 0.14 * r, 10), lift),
              (255, 255, 255, 220))
        edge = w + 0.03
        upper_cover = np.vstack([np.column_stack([x, upper]), [[ex + edge, EYE_Y - 0.14], [ex - edge, EYE_Y - 0.14]]])
        lower_cover = np.vstack([np.column_stack([x, lower]), [[ex + edge, EYE_Y + 0.1], [ex - edge, EYE_Y + 0.1]]])
        _poly(self.draw, p.face(upper_cover, lift), self.skin)
        _poly(self.draw, p.face(lower_cover, lift), self.skin)
        crease = np.column_stack([x[2:-2], EYE_Y - 1.3 * h * (1 - t[2:-2] ** 2) ** 0.7 * asym[2:-2]])
        _line(self.draw, p.face(crease, lift), (*self.shadow, 150), 0.8 * px)
        _line(self.draw, p.face(np.column_stack([x, upper]), lift), (28, 18, 18), 1.5 * px)
        _line(self.draw, p.face(np.column_stack([x[2:-2], lower[2:-2]]), lift), (60, 30, 30, 90), 0.7 * px)

    def _brow(self, side: int) -> None:
        st, p = self.style, self.p
        t = np.linspace(0, 1, 9)
        x = side * (st.eye_spacing - 0.15 + 0.32 * t)
        y = BROW_Y - 0.05 * np.sin(np.pi * (0.2 + 0.7 * t))
        half = 0.5 * 0.035 * st.brow_thickness * (1.15 - 0.6 * t)
        brow = np.vstack([np.column_stack([x, y - half]), np.column_stack([x, y + half])[::-1]])
        color = _mix(st.hair, (30, 22, 20), 0.45) if st.hair_style != "bald" else _scale(self.skin, 0.45)
        _poly(self.draw, p.face(brow, 0.015), (*color, 230))

    def _nose(self) -> None:
        st, state, p = self.style, self.state, self.p
        tip_y, nw = 0.3 * st.nose_length, 0.085 * st.nose_width

        def lift(y: np.ndarray) -> np.ndarray:
            return 0.17 * np.clip((y + 0.02) / (tip_y + 0.02), 0, 1) ** 0.9

        def nose(xy: np.ndarray) -> np.ndarray:
            return p.face(xy, lift(xy[:, 1]))

        s = -1 if np.sin(state.light_azimuth) > 0 else 1  # the side away from the light
        shadow = np.array([[s * 0.03, 0.0], [s * 0.05, tip_y - 0.06], [s * nw * 1.1, tip_y + 0.0],
                           [s * 0.03, tip_y + 0.045], [s * 0.015, tip_y - 0.05]])
        _poly(self.draw, nose(shadow), (*self.shadow, 110))
        ridge = np.array([[-s * 0.012, 0.04], [-s * 0.008, tip_y - 0.04]])  # highlight on the lit side
        _line(self.draw, nose(ridge), (255, 255, 255, 45), 2 * self.px)
        for k in (-1, 1):
            _poly(self.draw, nose(_ellipse(k * nw * 0.8, tip_y + 0.01, 0.045, 0.035)), (*self.shadow, 70))
        _poly(self.draw, nose(_ellipse(0, tip_y, 0.05, 0.042)), _scale(self.skin, 1.03))
        for k in (-1, 1):
            _poly(self.draw, nose(_ellipse(k * 0.038, tip_y + 0.038, 0.024, 0.012, 12)), (60, 28, 28, 200))
        _poly(self.draw, p.face(_ellipse(0, tip_y + 0.075, 0.09, 0.025), 0.05), (*self.shadow, 60))

    def _lips(self) -> None:
        m, p, px, lift = self.mouth, self.p, self.px, self.lip_lift
        _poly(self.draw, p.face(m.lips, lift), self.lip)
        if m.gap > 0.004:
            _poly(self.draw, p.face(m.inner, lift), (46, 14, 20))
            _poly(self.draw, p.face(m.teeth, lift), (232, 228, 214))
        _line(self.draw, p.face(m.line, lift), _scale(self.lip, 0.45), 1.0 * px)
        lower = m.lips[len(m.lips) // 2 + 5: -5].mean(axis=0)  # middle of the lower lip
        _poly(self.draw, p.face(_ellipse(lower[0], lower[1] - 0.01, 0.05, 0.012), lift + 0.005), (255, 255, 255, 45))

    def _glasses(self) -> None:
        st, p, px = self.style, self.p, self.px
        rx = st.head_width
        a, b = 0.16, 0.11
        t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        c, s = np.cos(t), np.sin(t)
        rim_shape = np.column_stack([a * np.sign(c) * np.abs(c) ** 0.6, b * np.sign(s) * np.abs(s) ** 0.6])
        frame = (25, 25, 28)
        for side in (-1, 1):
            rim = p.face(rim_shape + [side * st.eye_spacing, EYE_Y - 0.01], 0.08)
            _poly(self.draw, rim, (210, 225, 240, 40))
            _line(self.draw, np.vstack([rim, rim[:1]]), frame, 2.2 * px)
            arm = np.array([[side * (st.eye_spacing + a), EYE_Y - 0.04], [side * rx * 0.99, EYE_Y + 0.02]])
            _line(self.draw, p.project(np.column_stack([arm, [0.45, 0.0]])), frame, 2.0 * px)
        inner = st.eye_spacing - a
        bridge = np.array([[-inner, EYE_Y - 0.04], [0, EYE_Y - 0.06], [inner, EYE_Y - 0.04]])
        _line(self.draw, p.face(bridge, np.array([0.08, 0.11, 0.08])), frame, 2.0 * px)

    def geometry(self) -> FaceGeometry:
        st, p, m, lift = self.style, self.p, self.mouth, self.lip_lift
        eyes = p.face(np.array([[-st.eye_spacing, EYE_Y], [st.eye_spacing, EYE_Y]]), 0.01)
        nose = p.face(np.array([[0.0, 0.3 * st.nose_length]]), 0.17)
        corners = p.face(m.corners, lift)
        return FaceGeometry(
            landmarks=(np.vstack([eyes, nose, corners]) / SUPERSAMPLE).astype(np.float32),
            face_box=_bbox(self.outline / SUPERSAMPLE),
            mouth_box=_bbox(p.face(m.lips, lift) / SUPERSAMPLE),
        )


# ----------------------------------------------------------------------------- light


def _light_vector(azimuth: float, elevation: float) -> tuple[float, float, float]:
    """Unit vector towards the light (x right, y down, z to the camera)."""
    return (float(np.sin(azimuth) * np.cos(elevation)), float(-np.sin(elevation)),
            float(np.cos(azimuth) * np.cos(elevation)))


def _shade(image: np.ndarray, mask: np.ndarray, p: _Projection, scene: Scene, state: FrameState) -> np.ndarray:
    """Light the frame in place and return it as uint8.

    A soft gradient across the frame towards the light, Lambertian shading of the head
    ellipsoid inside ``mask`` (the head, ears and hair), then a partial auto-exposure
    that pulls the head's mean luma towards :data:`EXPOSURE_TARGET`, as a camera does.
    """
    size = image.shape[0]
    lx, ly, lz = _light_vector(state.light_azimuth, scene.light_elevation)
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    factor = state.light_gain * (1 + 0.25 * (coords[None, :] * lx + coords[:, None] * ly))
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows):
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        k = float(p.k / SUPERSAMPLE)
        u = ((np.arange(c0, c1, dtype=np.float32) + 0.5 - float(p.c[0] / SUPERSAMPLE)) / k)[None, :]
        v = ((np.arange(r0, r1, dtype=np.float32) + 0.5 - float(p.c[1] / SUPERSAMPLE)) / k)[:, None]
        cr, sr = float(np.cos(state.roll)), float(np.sin(state.roll))
        x, y = (cr * u + sr * v) / p.head_width, -sr * u + cr * v
        nz = np.sqrt(np.clip(1 - x**2 - y**2, 0.0, None))
        norm = np.sqrt(x**2 + y**2 + nz**2) + 1e-6
        lambert = np.clip((x * lx + y * ly + nz * lz) / norm, 0.0, None)
        m = mask[r0:r1, c0:c1]
        factor[r0:r1, c0:c1] *= 1 + m * ((AMBIENT + DIFFUSE * lambert) / SHADE_NORM - 1)
        head_luma = (image[r0:r1, c0:c1] @ LUMA) * factor[r0:r1, c0:c1]
        mean_luma = float((m * head_luma).sum() / max(float(m.sum()), 1.0))
        factor *= float(np.clip((EXPOSURE_TARGET / max(mean_luma, 1.0)) ** EXPOSURE_STRENGTH, 0.75, 1.4))
    image *= factor[..., None]
    return np.clip(image, 0, 255, out=image).astype(np.uint8)


def render_frame(style: FaceStyle, scene: Scene, state: FrameState) -> RenderedFrame:
    """Draw one frame: ``(size, size, 3)`` uint8 RGB plus its ground-truth geometry."""
    canvas = scene.background.copy()
    mask = Image.new("L", canvas.size, 0)
    painter = _Painter(style, scene, state, canvas, mask)
    painter.paint()
    image = np.array(canvas.reduce(SUPERSAMPLE), dtype=np.float32)
    head = np.asarray(mask.reduce(SUPERSAMPLE), dtype=np.float32) / 255
    return RenderedFrame(_shade(image, head, painter.p, scene, state), painter.geometry())
