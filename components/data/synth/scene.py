"""Per-video set and per-clip motion: everything on screen that is not the speaker.

* :func:`sample_scene` draws one video's set from its own Generator: a background
  (linear or radial gradient, blurred blotches, soft stripes or a blurred "room" of
  panels, plus fine grain), a shirt colour, the framing (head size and position) and
  the light's direction.
* :func:`animate` turns a clip's visemes into per-frame :class:`FrameState`: smooth head
  yaw/pitch/roll and translation (sums of slow sinusoids) with a small nod on stressed
  speech, Poisson blinks, gaze saccades that partly compensate the head turn, and a
  slowly wandering light direction and intensity.
"""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from components.data.synth.face import SUPERSAMPLE, FrameState, Scene

BACKGROUNDS = ("gradient", "radial", "blotches", "stripes", "room")
BLINK_PROFILE = np.array([0.55, 1.0, 0.85, 0.45, 0.15])  # eyelid closure over the frames of a blink


def _muted_colour(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float]) -> np.ndarray:
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(*sat), rng.uniform(*val))
    return np.array([r, g, b]) * 255


def _room(rng: np.random.Generator, side: int, wall: np.ndarray) -> np.ndarray:
    """A wall with a few out-of-focus panels (shelves, frames, doors)."""
    img = Image.new("RGB", (side, side), tuple(int(c) for c in wall))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 7))):
        x0, y0 = rng.uniform(-0.1, 0.9, 2) * side
        w, h = rng.uniform(0.1, 0.5, 2) * side
        draw.rectangle([x0, y0, x0 + w, y0 + h], fill=tuple(_muted_colour(rng, (0.05, 0.5), (0.2, 0.95)).astype(int)))
    return np.asarray(img.filter(ImageFilter.GaussianBlur(side * 0.012)), dtype=np.float32)


def make_background(rng: np.random.Generator, side: int, kind: str) -> np.ndarray:
    """A ``(side, side, 3)`` uint8 background of the given kind, with fine grain."""
    a, b = (_muted_colour(rng, (0.05, 0.45), (0.3, 0.9)) for _ in range(2))
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    if kind == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        t = (np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5)) / 0.71 * 0.5 + 0.5
    elif kind == "radial":
        cx, cy = rng.uniform(0.2, 0.8, 2)
        t = np.clip(np.hypot(xx - cx, yy - cy) / 0.8, 0, 1)
    elif kind == "blotches":
        cells = int(rng.integers(3, 8))
        noise = Image.fromarray((rng.random((cells, cells)) * 255).astype(np.uint8))
        t = np.asarray(noise.resize((side, side), Image.BICUBIC), dtype=np.float32) / 255
    elif kind == "stripes":
        angle, period = rng.uniform(0, np.pi), rng.uniform(0.08, 0.25)
        t = 0.5 + 0.175 * np.sin(2 * np.pi * (np.cos(angle) * xx + np.sin(angle) * yy) / period)
    elif kind != "room":
        raise ValueError(f"unknown background kind {kind!r}; known: {BACKGROUNDS}")
    base = _room(rng, side, a) if kind == "room" else a + t[..., None] * (b - a)
    grain = rng.normal(0, 3.0, (side, side, 1)).astype(np.float32)
    return np.clip(base + grain, 0, 255).astype(np.uint8)


def sample_scene(rng: np.random.Generator, size: int) -> tuple[Scene, str]:
    """One video's scene and the name of its background kind."""
    kind = str(rng.choice(BACKGROUNDS))
    background = Image.fromarray(make_background(rng, size * SUPERSAMPLE, kind))
    shirt = tuple(int(c) for c in _muted_colour(rng, (0.15, 0.75), (0.15, 0.85)))
    scene = Scene(
        size=size,
        background=background,
        shirt=shirt,  # type: ignore[arg-type]
        head_frac=float(rng.uniform(0.21, 0.25)),
        centre=(float(0.5 + rng.uniform(-0.05, 0.05)), float(0.44 + rng.uniform(-0.03, 0.03))),
        light_azimuth=float(rng.uniform(-0.8, 0.8)),
        light_elevation=float(rng.uniform(0.2, 0.7)),
    )
    return scene, kind


def _wander(rng: np.random.Generator, n: int, fps: float, f_lo: float, f_hi: float, k: int = 3) -> np.ndarray:
    """Smooth random motion in [-1, 1]: a mix of ``k`` sinusoids of f_lo..f_hi Hz."""
    t = np.arange(n) / fps
    freqs, phases, weights = rng.uniform(f_lo, f_hi, k), rng.uniform(0, 2 * np.pi, k), rng.uniform(0.3, 1.0, k)
    return (weights[:, None] * np.sin(2 * np.pi * freqs[:, None] * t + phases[:, None])).sum(0) / weights.sum()


def _blinks(rng: np.random.Generator, n: int, fps: float) -> np.ndarray:
    """Eyelid closure per frame: blinks as a Poisson process, 12-24 per minute."""
    closure = np.zeros(n)
    rate = rng.uniform(0.2, 0.4)
    t = rng.exponential(1 / rate) * 0.6
    while t * fps < n:
        i = int(t * fps)
        span = closure[i: i + len(BLINK_PROFILE)]
        span[:] = np.maximum(span, BLINK_PROFILE[: len(span)])
        t += len(BLINK_PROFILE) / fps + rng.exponential(1 / rate)
    return closure


def _saccades(rng: np.random.Generator, n: int, fps: float) -> np.ndarray:
    """Piecewise-constant gaze offsets ``(n, 2)``, a new fixation every 0.4-2 s."""
    gaze = np.zeros((n, 2))
    i = 0
    while i < n:
        j = i + int(rng.uniform(0.4, 2.0) * fps) + 1
        gaze[i:j] = rng.uniform(-0.3, 0.3, 2) * [1.0, 0.6]
        i = j
    return gaze


def animate(rng: np.random.Generator, visemes: np.ndarray, fps: float, scene: Scene) -> list[FrameState]:
    """Per-frame states for a clip whose mouth follows ``visemes`` ``(n_frames, 3)``."""
    n = len(visemes)
    deg = np.pi / 180
    speaking = np.convolve(visemes[:, 0], np.ones(7) / 7, mode="same")
    yaw = rng.uniform(5, 14) * deg * _wander(rng, n, fps, 0.05, 0.4)
    pitch = rng.uniform(2, 6) * deg * _wander(rng, n, fps, 0.1, 0.5) - 4 * deg * (speaking - speaking.mean())
    roll = rng.uniform(1.5, 5) * deg * _wander(rng, n, fps, 0.05, 0.3)
    dx = 0.02 * _wander(rng, n, fps, 0.03, 0.2)
    dy = 0.012 * _wander(rng, n, fps, 0.03, 0.2)
    blink = _blinks(rng, n, fps)
    gaze = _saccades(rng, n, fps)
    azimuth = scene.light_azimuth + 0.15 * _wander(rng, n, fps, 0.05, 0.2)
    gain = rng.uniform(0.85, 1.15) * (1 + 0.04 * _wander(rng, n, fps, 0.1, 0.5))
    return [
        FrameState(
            yaw=float(yaw[i]), pitch=float(pitch[i]), roll=float(roll[i]), dx=float(dx[i]), dy=float(dy[i]),
            mouth_open=float(visemes[i, 0]), mouth_width=float(visemes[i, 1]), mouth_round=float(visemes[i, 2]),
            blink=float(blink[i]), gaze_x=float(gaze[i, 0] - 1.5 * yaw[i]), gaze_y=float(gaze[i, 1] + pitch[i]),
            light_azimuth=float(azimuth[i]), light_gain=float(gain[i]),
        )
        for i in range(n)
    ]
