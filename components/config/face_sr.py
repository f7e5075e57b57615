"""The params of the face super-resolution paper (Meishvili et al. 2020): ``face_sr``
(shared by its training stages), ``train_g`` ... ``train_fusion``, ``judge_faces``,
``evaluators`` and ``evaluate``.

The values are in ``params.yaml``; these classes say what each key is and which values
it accepts. Fields without a default are required; a ``None`` default is a documented
"not given" (e.g. no ONNX face-recognition model).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from components.config.base import Section


class FaceSRParams(Section):
    """Shared by the five face-SR training stages (``train_g`` ... ``train_fusion``): which
    networks, where they train, how the training split is fed. Not a stage itself."""

    preset: Literal["small", "paper"] = Field(description="components.models.face_sr preset")
    overrides: dict[str, Any] = Field(description="ModelConfig fields changed from the preset, "
                                                  "e.g. {resolution: 32} (hr_size follows resolution)")
    seed: int = Field(description="network init, data order and sampling noise")
    device: Literal["auto", "cpu", "cuda"]
    amp: bool = Field(description="GPU only: bf16 autocast (fp16 + loss scaling where bf16 is missing)")
    channels_last: bool = Field(description="NHWC convolutions (GPU tensor cores; ~20% faster on CPU too)")
    threads: int = Field(ge=1, description="CPU torch threads per process")
    cache_frames_per_clip: int = Field(
        ge=0, description="frames per training clip decoded once into memory (with their spectrograms); "
                          "0 streams the shards instead (large data, GPU)")
    num_workers: int = Field(ge=0, description="DataLoader processes decoding the shards (cache or stream)")
    shuffle_buffer: int = Field(ge=1, description="samples mixed by the streaming dataset")
    out_dir: str = Field(description="stage folders <out_dir>/<stage>/ (dvc.yaml outs)")
    # The knobs the ablations turn. They are their own keys (not `overrides`) so that dvc.yaml
    # can make only the stages that use them depend on them: a sweep over the audio length
    # retrains Ea and F, not G.
    lr_size: int = Field(ge=2, description="El's input: the low-res face is lr_size x lr_size (8 in the paper)")
    audio_seconds: float = Field(gt=0, le=30, description="speech per sample fed to Ea (4 s in the paper)")
    audio: bool = Field(description="false: F gets a zero audio code (same network and training, no voice)")
    fusion: bool = Field(description="false: no F; the 'fused' code is El's (image only)")


class TrainStageParams(Section):
    """What every face-SR training stage has: optimisation length, Adam, and cadences."""

    steps: int = Field(ge=1, description="optimisation steps (raise it to continue a finished run)")
    batch_size: int = Field(ge=1, description="per process (DDP ranks each take a batch)")
    lr: float = Field(gt=0)
    betas: tuple[float, float]
    log_every: int = Field(ge=1, description="MLflow metrics and metrics.tsv rows (window means)")
    sample_every: int = Field(ge=1, description="PNG grids input | output | target")
    checkpoint_every: int = Field(ge=1, description="checkpoint.pt for resuming after a kill")


class TrainGParams(TrainStageParams):
    """G + D: non-saturating logistic GAN, lazy R1, optional path length, EMA of G."""

    steps: int = Field(ge=0, description="GAN steps; 0: no GAN, G is learnt as Eh's decoder from its "
                                         "initialisation in train_eh (an autoencoder from step 0)")

    r1_gamma: float = Field(ge=0, description="R1 weight (StyleGAN2: 2e-4 * resolution^2 / batch)")
    r1_every: int = Field(ge=1, description="lazy R1: every k D steps, scaled by k")
    pl_weight: float = Field(ge=0, description="path-length regulariser weight (0: off)")
    pl_every: int = Field(ge=1)
    ema_kimg: float = Field(gt=0, description="half-life of the G EMA, thousands of images")
    ema_rampup: float | None = Field(gt=0, description="half-life at most this fraction of images seen "
                                                       "(null: no ramp-up)")


class TrainEhParams(TrainStageParams):
    """Eh inverts G (reconstruction + perceptual, optional latent cycle); G fine-tuned slowly."""

    g_lr: float = Field(ge=0, description="lr of the G fine-tune (0 freezes G)")
    w_rec: float = Field(ge=0)
    w_perc: float = Field(ge=0, description="shift-tolerant LPIPS (see params.yaml)")
    w_latent: float = Field(ge=0, description="latent cycle |Eh(G(z)) - z|^2 on random codes")


class TrainElParams(TrainStageParams):
    """El: 8x8 face -> code; image loss through the frozen G + latent loss to Eh's code."""

    w_rec: float = Field(ge=0)
    w_perc: float = Field(ge=0)
    w_latent: float = Field(ge=0)


class TrainEaParams(TrainStageParams):
    """Ea: 4 s of speech -> the code of the speaker's face (latent regression)."""

    target: Literal["speaker", "frame"] = Field(description="speaker: the mean of Eh's codes over the speaker's "
                                                "training frames; frame: Eh's code of a frame of the clip")
    w_latent: float = Field(ge=0)
    w_rec: float = Field(ge=0, description="optional image loss through G (costs a G pass)")
    w_perc: float = Field(ge=0)


class TrainFusionParams(TrainStageParams):
    """F fuses El's and Ea's codes (both frozen) into a code G decodes into the high-res face."""

    audio_noise: float = Field(ge=0, description="Gaussian noise on Ea's code in training, relative to its RMS "
                                                 "(Ea is more accurate on its training clips than on new voices)")
    w_rec: float = Field(ge=0)
    w_perc: float = Field(ge=0)
    w_latent: float = Field(ge=0)


class JudgeFacesParams(Section):
    """The judge's own rendered speakers (stage ``judge_faces``, components/data/synth/judge_faces.py):
    people that appear nowhere else, drawn like the corpus's (``download.synth``'s frame size and
    glasses/beard probabilities), found and cropped as the ``faces`` stage does."""

    seed: int = Field(description="the speakers' attributes, scenes and motion; must differ from download.synth.seed")
    n_speakers: int = Field(ge=2)
    clips_per_speaker: int = Field(ge=1, description="short clips (each its own scene) per speaker")
    clip_seconds: float = Field(gt=0.5, le=60, description="length of each clip the frames are spread over")
    frames_per_speaker: int = Field(ge=1, description="frames rendered per speaker, spread evenly over its clips")


class EvaluatorsParams(Section):
    """The judge of face-SR outputs: a CNN trained on high-res true faces
    (components/evaluation/judge.py), at the face-SR model's resolution."""

    train_on: Literal["rendered", "corpus"] = Field(
        description="rendered: the judge_faces stage's speakers (identities disjoint from the corpus); "
                    "corpus: the training split's faces (real labelled data)")
    frames_per_clip: int = Field(ge=1, description="random frames drawn from each training clip (train_on: corpus)")
    steps: int = Field(ge=1)
    batch_size: int = Field(ge=2)
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    width: int = Field(ge=4, description="channels of the first conv (doubling per scale, up to 8x)")
    embedding_dim: int = Field(ge=8)
    age_weight: float = Field(ge=0)
    seed: int
    log_every: int = Field(ge=1, description="MLflow metrics and metrics.tsv rows (window means)")
    sample_every: int = Field(ge=1, description="PNG grids of the augmented training faces")
    checkpoint_every: int = Field(ge=1, description="checkpoint.pt for resuming after a kill")
    face_recognition_path: str | None = Field(
        None, description="ONNX face-recognition model (N, 3, 112, 112) RGB in [-1, 1] -> embedding "
                          "(e.g. ArcFace), used for the identity embedding instead of the trained one")


class EvaluateParams(Section):
    """Comparison of face-SR methods on the test splits (components/evaluation/face_sr.py)."""

    batch_size: int = Field(ge=1)
    frames_per_clip: int = Field(ge=1, description="evenly spaced test frames scored per clip (more samples, "
                                                   "less noise; they share the clip's speaker)")
    grid_samples: int = Field(ge=1, description="rows of grid_<split>.png")
    mix_faces: int = Field(ge=1, description="rows (low-res faces) of mixing_<split>.png")
    mix_voices: int = Field(ge=1, description="columns (voices of different speakers) of mixing_<split>.png")
    seed: int = Field(description="draws the mismatched voices, the figure samples and the bootstrap's resamples")
    bootstrap_samples: int = Field(ge=100, description="resamples of the test speakers (with replacement, all of a "
                                                       "speaker's samples together) for every 95 % interval")
    lpips_alexnet_path: str | None = Field(
        None, description="torchvision's alexnet-owt-7be5be79.pth for LPIPS; null: the torch hub cache, "
                          "else LPIPS is skipped")
    out_dir: str = Field(description="metrics.json, results.md and figures (dvc.yaml outs)")


class FaceSRSections(Section):
    """The face-SR paper's sections of ``Params``: its training stages and its evaluation."""

    face_sr: FaceSRParams
    train_g: TrainGParams
    train_eh: TrainEhParams
    train_el: TrainElParams
    train_ea: TrainEaParams
    train_fusion: TrainFusionParams
    judge_faces: JudgeFacesParams
    evaluators: EvaluatorsParams
    evaluate: EvaluateParams
