"""Light on a drawn frame, applied in numpy after the box-filter reduction of the canvas.

A soft gradient across the whole frame towards the light, a Lambertian term on the head
ellipsoid (inside the head mask the painter drew), and a partial auto-exposure on the
head as a camera's.
"""

from __future__ import annotations

import numpy as np

from components.data.synth.face.head import Projection
from components.data.synth.face.style import SUPERSAMPLE, FrameState, Scene

AMBIENT, DIFFUSE = 0.62, 0.5
SHADE_NORM = AMBIENT + 0.8 * DIFFUSE  # a head lit at 37 degrees off its normal keeps its colour
EXPOSURE_TARGET = 120.0  # mean head luma that auto-exposure aims for
EXPOSURE_STRENGTH = 0.5  # 0: fixed exposure, 1: every head exactly at the target
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _light_vector(azimuth: float, elevation: float) -> tuple[float, float, float]:
    """Unit vector towards the light (x right, y down, z to the camera)."""
    return (float(np.sin(azimuth) * np.cos(elevation)), float(-np.sin(elevation)),
            float(np.cos(azimuth) * np.cos(elevation)))


def shade(image: np.ndarray, mask: np.ndarray, p: Projection, scene: Scene, state: FrameState) -> np.ndarray:
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
