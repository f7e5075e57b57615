"""Drawing one frame's head with PIL polygons on the supersampled canvas.

Painter's order: background, back hair, body, ears, head, skin marks, beard, eyes and
brows, nose, lips, front hair, glasses; the head, ears and hair also go into a mask, on
which :mod:`.lighting` shades the head afterwards. :meth:`Painter.geometry` gives the
frame's ground truth (landmarks, face and mouth boxes) in output pixels.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from components.data.synth.face.head import (
    BROW_Y,
    EYE_Y,
    MOUTH_Y,
    Projection,
    ellipse,
    hair_shapes,
    head_outline,
    mouth_shape,
)
from components.data.synth.face.style import RGB, RGBA, SUPERSAMPLE, FaceGeometry, FaceStyle, FrameState, Scene


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


class Painter:
    """Draws one frame's head on the supersampled canvas (and its shading mask)."""

    def __init__(self, style: FaceStyle, scene: Scene, state: FrameState, canvas: Image.Image, mask: Image.Image):
        self.style, self.scene, self.state = style, scene, state
        self.p = Projection(style, scene, state)
        self.draw = ImageDraw.Draw(canvas, "RGBA")
        self.mask = ImageDraw.Draw(mask)
        self.mouth = mouth_shape(style, state)
        self.jaw_drop = 0.75 * self.mouth.gap
        self.lip_lift = 0.03 + 0.04 * state.mouth_round  # rounded lips protrude
        self.outline = self.p.flat(head_outline(style, self.jaw_drop))
        self.px = self.p.k / 100  # one hundredth of the head half-height, in canvas px
        skin = style.skin
        self.skin, self.shadow = skin, _scale(skin, 0.78)
        self.lip = _mix(skin, (176, 70, 82), 0.42)

    def paint(self) -> None:
        hair = hair_shapes(self.style)
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
            _poly(self.draw, self.p.flat(ellipse(-0.15, -0.7, 0.25, 0.12)), (255, 255, 255, 40))
        if self.style.glasses:
            self._glasses()

    def _body(self) -> None:
        rx, p = self.style.head_width, self.p
        neck = np.array([[-0.42 * rx, 0.3], [-0.46 * rx, 1.45], [0.46 * rx, 1.45], [0.42 * rx, 0.3]])
        _poly(self.draw, p.body(neck), _scale(self.skin, 0.88))
        _poly(self.draw, p.body(ellipse(0, 0.92, 0.5 * rx, 0.2)), (*self.shadow, 200))
        shirt = np.array([[-0.4, 1.3], [-1.0, 1.42], [-1.7, 1.65], [-2.1, 2.0], [-2.3, 3.0], [2.3, 3.0],
                          [2.1, 2.0], [1.7, 1.65], [1.0, 1.42], [0.4, 1.3], [0.22, 1.5], [0, 1.56], [-0.22, 1.5]])
        _poly(self.draw, p.body(shirt), self.scene.shirt)
        collar = np.array([[-0.4, 1.3], [-0.22, 1.5], [0, 1.56], [0.22, 1.5], [0.4, 1.3], [0.48, 1.36],
                           [0.26, 1.6], [0, 1.66], [-0.26, 1.6], [-0.48, 1.36]])
        _poly(self.draw, p.body(collar), (0, 0, 0, 50))

    def _ears(self) -> None:
        rx = self.style.head_width
        for s in (-1, 1):
            outer = self.p.flat(ellipse(s * (rx + 0.02), 0.08, 0.1, 0.19), z=-0.1)
            _poly(self.draw, outer, _scale(self.skin, 0.94))
            _poly(self.mask, outer, 255)
            _poly(self.draw, self.p.flat(ellipse(s * (rx + 0.04), 0.09, 0.045, 0.12), z=-0.1), (*self.shadow, 150))

    def _skin_marks(self) -> None:
        """Cheek colour, nasolabial folds and age wrinkles (translucent)."""
        st, p, px = self.style, self.p, self.px
        for s in (-1, 1):
            _poly(self.draw, p.face(ellipse(s * 0.4, 0.25, 0.12, 0.08)), (200, 80, 80, 22))
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
        jaw = head_outline(st, self.jaw_drop)
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
        _poly(self.draw, p.face(ellipse(ix, iy, r, r), lift), st.eye)
        _poly(self.draw, p.face(ellipse(ix, iy, 0.45 * r, 0.45 * r), lift), (16, 12, 12))
        light = -np.sin(state.light_azimuth)
        _poly(self.draw, p.face(ellipse(ix - 0.35 * r * light, iy - 0.35 * r, 0.14 * r, 0.14 * r, 10), lift),
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
            _poly(self.draw, nose(ellipse(k * nw * 0.8, tip_y + 0.01, 0.045, 0.035)), (*self.shadow, 70))
        _poly(self.draw, nose(ellipse(0, tip_y, 0.05, 0.042)), _scale(self.skin, 1.03))
        for k in (-1, 1):
            _poly(self.draw, nose(ellipse(k * 0.038, tip_y + 0.038, 0.024, 0.012, 12)), (60, 28, 28, 200))
        _poly(self.draw, p.face(ellipse(0, tip_y + 0.075, 0.09, 0.025), 0.05), (*self.shadow, 60))

    def _lips(self) -> None:
        m, p, px, lift = self.mouth, self.p, self.px, self.lip_lift
        _poly(self.draw, p.face(m.lips, lift), self.lip)
        if m.gap > 0.004:
            _poly(self.draw, p.face(m.inner, lift), (46, 14, 20))
            _poly(self.draw, p.face(m.teeth, lift), (232, 228, 214))
        _line(self.draw, p.face(m.line, lift), _scale(self.lip, 0.45), 1.0 * px)
        lower = m.lips[len(m.lips) // 2 + 5: -5].mean(axis=0)  # middle of the lower lip
        _poly(self.draw, p.face(ellipse(lower[0], lower[1] - 0.01, 0.05, 0.012), lift + 0.005), (255, 255, 255, 45))

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
