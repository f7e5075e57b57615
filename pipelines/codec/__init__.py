"""DVC stage of the talking-face codec (issue 13; the video paper's model as the decoder).

* ``python -m pipelines.codec.evaluate``: the rate-distortion comparison against H.264,
  H.265 and AV1 (stage ``evaluate_codec``).

``earshot codec encode`` / ``decode`` are in :mod:`pipelines.cli_codec`.
"""
