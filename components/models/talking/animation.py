"""Stage 2 as one call: animate a source face with a driving face's motion.

The three networks live by role in :mod:`.keypoints` (``kp``), :mod:`.motion`
(``motion``) and :mod:`.generator` (``generator``); :func:`animate` chains them the way
training and inference both use them: keypoints of the source (``out_size``) and of the
driving frame (any size, e.g. the coarse ``coarse_size`` face: the detector resizes to
``kp_size``), the dense motion on the source shrunk to ``kp_size``, then the generator.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from components.models.talking.blocks import resize
from components.models.talking.generator import AnimationGenerator
from components.models.talking.keypoints import KeypointDetector
from components.models.talking.motion import DenseMotion


def animate(nets: Mapping[str, nn.Module], source: torch.Tensor, driving: torch.Tensor) -> dict[str, torch.Tensor]:
    """Render ``source`` (B x 3 x out_size^2) with the pose and mouth of ``driving`` (B x 3 x H x W).

    Returns ``prediction`` (B x 3 x out_size^2, tanh), ``kp_source``, ``kp_driving``
    (keypoint dicts), ``deformation`` and ``occlusion`` (at ``kp_size``).
    """
    kp_net = nets["kp"]
    kp_source = kp_net(source)
    kp_driving = kp_net(driving)
    motion = nets["motion"](resize(source, kp_net.size), kp_driving, kp_source)
    prediction = nets["generator"](source, motion["deformation"], motion["occlusion"])
    return {"prediction": prediction, "kp_source": kp_source, "kp_driving": kp_driving,
            "deformation": motion["deformation"], "occlusion": motion["occlusion"]}


__all__ = ["AnimationGenerator", "DenseMotion", "KeypointDetector", "animate"]
