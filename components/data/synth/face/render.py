"""One frame of a speaking head: paint it supersampled, reduce it, light it."""

from __future__ import annotations

import numpy as np
from PIL import Image

from components.data.synth.face.lighting import shade
from components.data.synth.face.painter import Painter
from components.data.synth.face.style import SUPERSAMPLE, FaceStyle, FrameState, RenderedFrame, Scene


def render_frame(style: FaceStyle, scene: Scene, state: FrameState) -> RenderedFrame:
    """Draw one frame: ``(size, size, 3)`` uint8 RGB plus its ground-truth geometry."""
    canvas = scene.background.copy()
    mask = Image.new("L", canvas.size, 0)
    painter = Painter(style, scene, state, canvas, mask)
    painter.paint()
    image = np.array(canvas.reduce(SUPERSAMPLE), dtype=np.float32)
    head = np.asarray(mask.reduce(SUPERSAMPLE), dtype=np.float32) / 255
    return RenderedFrame(shade(image, head, painter.p, scene, state), painter.geometry())
