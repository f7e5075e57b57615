"""Render one video frame of a speaking head (PIL, 2x supersampled, lit in numpy).

Geometry lives in *head units* and is projected for each frame's pose
(:mod:`.head`); the head is drawn as polygons in painter's order on a supersampled
canvas (:mod:`.painter`), reduced by a box filter for antialiasing, then lit
(:mod:`.lighting`). :func:`render_frame` (:mod:`.render`) returns the image and its
:class:`FaceGeometry` (landmarks, face and mouth boxes in output pixels), the per-frame
ground truth the corpus stores; what a frame is drawn from is in :mod:`.style`.
"""

from components.data.synth.face.render import render_frame
from components.data.synth.face.style import SUPERSAMPLE, FaceGeometry, FaceStyle, FrameState, RenderedFrame, Scene

__all__ = ["SUPERSAMPLE", "FaceGeometry", "FaceStyle", "FrameState", "RenderedFrame", "Scene", "render_frame"]
