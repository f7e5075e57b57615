"""Super-resolve faces with the trained networks of "Face SR with an ear".

:class:`FaceSR` holds the four networks inference needs, G, El, Ea and F, loaded from
the ``model.pt`` of the last training stage, ``models/face_sr/train_fusion/``
(:func:`load_face_sr`), and runs the paper's methods on batches: image only
``G(El(x_l))``, audio only ``G(Ea(a))`` and fused ``G(F(El(x_l), Ea(a)))``. The
evaluation stage, the ``earshot face-sr`` command and the inference benchmark all go
through it.

The model's inputs, made of what :mod:`components.inference.inputs` reads (it also pairs
folders by stem and writes the PNGs) exactly as the training samples were made
(:mod:`components.data.dataset`):

* a face (:func:`face_input`): an image of ``lr_size`` (8x8) is used as it is. A larger
  one is brought to the model's resolution and then degraded to 8x8 by antialiased
  bicubic resampling, as the training inputs were made from the training crops. With
  ``detect`` the face is first found by RetinaFace and cut out with the faces stage's
  square crop (``faces.margin`` around the box); without it the image must already be
  a face crop framed like the training crops (a non-square image is cut to its
  centre square).
* a voice (:func:`voice_input`): any file ffmpeg decodes, resampled to 16 kHz mono;
  the first ``audio_seconds`` (4 s) are used, a shorter recording is repeated to fill
  them (as in training), and digital silence or an empty file is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from components.audio.spectrogram import SPEC_SAMPLE_RATE
from components.data.features import degrade, face_sr_spectrogram, resize
from components.errors import EarshotError
from components.figures.images import from_hwc, nearest_up
from components.inference.inputs import pair_by_stem, read_image, read_voice, save_png
from components.models.checkpoint import CheckpointError, load_model
from components.models.face_sr import FAMILY, ModelConfig, config_dict

if TYPE_CHECKING:  # onnxruntime and OpenCV load only when a face is to be detected
    from components.faces.detect import FaceDetector

FINAL_STAGE = "train_fusion"
"""The stage whose ``model.pt`` holds every network inference needs (G as fine-tuned
with Eh, El, Ea and F: the set F was trained with)."""
NETWORKS = ("G", "El", "Ea", "F")
ENCODER_STAGE = "train_eh"
"""The stage whose ``model.pt`` holds Eh, the encoder of high-resolution faces G was fine-tuned
with (frozen in every later stage, so it matches the final G): for the reconstruction
``G(Eh(x_h))``, the ceiling of what G can draw from a code."""


@dataclass
class FaceSR:
    """G, El, Ea and F of one trained model, in eval mode on ``device``."""

    networks: dict[str, nn.Module]
    config: ModelConfig
    device: torch.device

    def to(self, device: str | torch.device) -> FaceSR:
        device = torch.device(device)
        return FaceSR({k: v.to(device) for k, v in self.networks.items()}, self.config, device)

    @torch.inference_mode()
    def encode_image(self, lr: torch.Tensor) -> torch.Tensor:
        """(B, 3, 8, 8) in [-1, 1] -> El's code (B, n_latents, latent_dim)."""
        return self.networks["El"](lr.to(self.device, torch.float32))

    @torch.inference_mode()
    def encode_audio(self, spec: torch.Tensor) -> torch.Tensor:
        """(B, 1, 257, 257) spectrograms -> Ea's code."""
        return self.networks["Ea"](spec.to(self.device, torch.float32))

    @torch.inference_mode()
    def fuse(self, wl: torch.Tensor, wa: torch.Tensor) -> torch.Tensor:
        return self.networks["F"](wl, wa)

    @torch.inference_mode()
    def generate(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes -> faces (B, 3, R, R), clamped to [-1, 1] (they are final images here)."""
        return self.networks["G"](codes).clamp(-1.0, 1.0)

    def image_only(self, lr: torch.Tensor) -> torch.Tensor:
        return self.generate(self.encode_image(lr))

    def audio_only(self, spec: torch.Tensor) -> torch.Tensor:
        return self.generate(self.encode_audio(spec))

    def fused(self, lr: torch.Tensor, spec: torch.Tensor) -> torch.Tensor:
        return self.generate(self.fuse(self.encode_image(lr), self.encode_audio(spec)))

    @property
    def can_reconstruct(self) -> bool:
        return "Eh" in self.networks

    @torch.inference_mode()
    def reconstruct(self, hr: torch.Tensor) -> torch.Tensor:
        """G(Eh(x_h)): the high-resolution face (B, 3, R, R) in [-1, 1] through G's code
        space (needs Eh: ``load_face_sr(..., reconstruction=True)``)."""
        if not self.can_reconstruct:
            raise EarshotError("reconstruction needs Eh: load the model with reconstruction=True")
        return self.generate(self.networks["Eh"](hr.to(self.device, torch.float32)))


def load_face_sr(checkpoint_dir: str | Path, device: str | torch.device = "cpu", *,
                 expect_config: ModelConfig | None = None, reconstruction: bool = False) -> FaceSR:
    """The networks of the model trained into ``checkpoint_dir`` (``models/face_sr``).

    They are rebuilt from ``<checkpoint_dir>/train_fusion/model.pt`` with the
    architecture that file records, loaded with ``weights_only=True``. Raises
    :class:`~components.models.checkpoint.CheckpointError` naming the file when it is
    missing (train with ``dvc repro``), is not an earshot model file of family
    ``face_sr``, is of another format version or stage, or (with ``expect_config``) was
    made for another model than the params describe. With ``reconstruction`` Eh is loaded
    too, from ``<checkpoint_dir>/train_eh/model.pt`` (checked the same way), for
    :meth:`FaceSR.reconstruct`.
    """
    root = Path(checkpoint_dir)
    if not root.is_dir():
        raise CheckpointError(f"{root}: no trained face-SR model here: run `dvc repro` to train one "
                              f"(or pass the folder holding {FINAL_STAGE}/model.pt)")
    path = root / FINAL_STAGE / "model.pt"
    model = load_model(path, NETWORKS, expect_family=FAMILY, expect_stage=FINAL_STAGE,
                       expect_config=config_dict(expect_config) if expect_config is not None else None)
    networks = dict(model.networks)
    if reconstruction:
        encoder = load_model(root / ENCODER_STAGE / "model.pt", ("Eh",), expect_family=FAMILY,
                             expect_stage=ENCODER_STAGE, expect_config=model.config)
        networks["Eh"] = encoder.networks["Eh"]
    device = torch.device(device)
    return FaceSR({k: v.to(device) for k, v in networks.items()}, ModelConfig(**model.config), device)


# --------------------------------------------------------------------------- model inputs from files


def face_input(image: np.ndarray, config: ModelConfig, *, name: str = "image", detector: FaceDetector | None = None,
               margin: float = 0.35) -> torch.Tensor:
    """The (3, lr_size, lr_size) network input in [-1, 1] for an HxWx3 uint8 face image.

    ``detector``: a :class:`~components.faces.detect.FaceDetector`; when given (and the
    image is not already low-res), the best-scoring face is cropped as the faces stage
    crops it, and an image without a face is an error naming ``name``.
    """
    size = config.lr_size
    height, width = image.shape[:2]
    if (height, width) == (size, size):
        return from_hwc(image)
    if min(height, width) < size:
        raise EarshotError(f"{name}: {width}x{height} is smaller than the {size}x{size} model input")
    if detector is not None:
        from components.faces.crop import crop_face, crop_geometry

        found = detector(image)
        if len(found) == 0:
            raise EarshotError(f"{name}: no face found (RetinaFace, score >= {detector.score_threshold})")
        geom = crop_geometry(found.boxes[0], found.landmarks[0], margin=margin, size=config.resolution, align=False)
        face = crop_face(image, geom)
    else:
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        face = image[top:top + side, left:left + side]
    hr = resize(from_hwc(face), config.resolution)
    return degrade(hr, size)


def voice_input(path: str | Path, config: ModelConfig) -> torch.Tensor:
    """The (1, 257, 257) spectrogram of the first ``audio_seconds`` of an audio file.

    One-line errors naming ``path``: missing, not decodable, no audio stream, empty,
    digital silence.
    """
    audio = read_voice(path, SPEC_SAMPLE_RATE)
    return face_sr_spectrogram(audio, SPEC_SAMPLE_RATE, config.audio_seconds)[None]


# --------------------------------------------------------------------------- jobs


@dataclass(frozen=True)
class Job:
    """One super-resolution: a face, its voice, optionally a second voice to mix in."""

    image: Path
    audio: Path
    out: Path
    mix_audio: Path | None = None


def run_job(model: FaceSR, job: Job, *, detector: FaceDetector | None = None, margin: float = 0.35) -> Path:
    """Super-resolve one face with its voice and write ``job.out``.

    Without ``mix_audio`` the PNG is the output face. With it: three panels, the input
    (nearest-upscaled), the face with its own voice, and with the other voice.
    """
    cfg = model.config
    lr = face_input(read_image(job.image), cfg, name=str(job.image), detector=detector, margin=margin)
    specs = [voice_input(job.audio, cfg)]
    if job.mix_audio is not None:
        specs.append(voice_input(job.mix_audio, cfg))
    wl = model.encode_image(lr[None])
    wa = model.encode_audio(torch.stack(specs))
    faces = model.generate(model.fuse(wl.expand(len(specs), -1, -1), wa))
    if job.mix_audio is None:
        return save_png(job.out, [faces[0]])
    return save_png(job.out, [nearest_up(lr[None], cfg.resolution)[0], faces[0], faces[1]])


def plan_jobs(image: Path, audio: Path, out: Path, mix_audio: Path | None = None) -> tuple[list[Job], list[str]]:
    """One job for a file pair, or one per stem for folders (``out`` is then a folder);
    returns the jobs and the files left without a partner."""
    if image.is_dir() or audio.is_dir():
        if not (image.is_dir() and audio.is_dir()):
            raise EarshotError(f"{image if not image.is_dir() else audio}: batch mode needs --image DIR and "
                               "--audio DIR (paired by file stem)")
        if out.suffix:
            raise EarshotError(f"{out}: batch mode writes one PNG per pair: --out must be a folder")
        pairs, unpaired = pair_by_stem(image, audio)
        if not pairs:
            raise EarshotError(f"{image}, {audio}: no image and audio file share a stem")
        return [Job(i, a, out / f"{stem}.png", mix_audio) for stem, i, a in pairs], unpaired
    if out.suffix.lower() != ".png":
        raise EarshotError(f"{out}: the output is a PNG file (name it .png)")
    return [Job(image, audio, out, mix_audio)], []
