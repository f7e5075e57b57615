"""The params of the talking-face codec (issue 13; the video paper's model as the decoder):
``codec`` (what ``earshot codec encode`` sends: the default operating point) and
``evaluate_codec`` (the rate-distortion stage: earshot's operating points against H.264,
H.265 and AV1 on the test clips).

The paper's abstract says only that its model, used as a codec, needs 3.5x fewer bits per
pixel than the prior state of the art. What is sent and how (the stream codec, the mosaic
packing of the 8x8 frames, the photo's format and quality, the audio rate) is this
project's choice; docs/codec.md specifies the file.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from components.config.base import Section


class CodecParams(Section):
    """One operating point of the codec: how the three payloads are made."""

    video_codec: Literal["h264", "hevc"] = Field(description="the low-res face stream's codec")
    crf: int = Field(ge=0, le=51, description="its rate factor (lower: better, more bytes)")
    preset: str = Field(description="its speed preset (x264 / x265 names)")
    pix_fmt: Literal["yuv420p", "yuv444p"] = Field(description="yuv444p keeps an 8x8 face's colour at 8x8 "
                                                               "(4:2:0 keeps 4x4)")
    mosaic: int = Field(ge=1, le=16, description="frames packed mosaic x mosaic per coded picture: fewer "
                                                 "pictures, less header per frame, mosaic^2 frames of latency")
    photo_format: Literal["jpeg", "webp", "avif"] = Field(description="the identity still's format")
    photo_quality: int = Field(ge=1, le=100)
    photo_size: int = Field(ge=16, le=1024, description="the still is sent at this side and enlarged (bicubic) to "
                                                        "the decoder's out_size: fewer bytes, less detail")
    audio_kbps: int = Field(ge=6, le=256, description="Opus bitrate (0 audio is not a call)")


class BaselineParams(Section):
    """One baseline codec of the rate-distortion comparison, encoding the true face video."""

    codec: Literal["h264", "hevc", "av1"] = Field(description="libx264, libx265 or SVT-AV1")
    preset: str = Field(description="the encoder's slow, best preset (x264/x265 names, SVT-AV1 a number)")
    crfs: list[int] = Field(min_length=1, description="one curve point per rate factor")
    sizes: list[int] = Field(min_length=1, description="the face video encoded at these sides and enlarged "
                                                       "back bicubically (a resolution ladder, as calls do at low "
                                                       "bandwidth): the curve is the front over all of them")


class EvaluateCodecParams(Section):
    """The DVC stage ``evaluate_codec``."""

    clips_per_split: int = Field(ge=2, description="test clips per split, one per speaker first (seeded)")
    frames_per_clip: int = Field(ge=5, description="consecutive middle frames scored (PSNR, LSE-C); every frame "
                                                  "of the clip is encoded and counted in the bits")
    fid_frames_per_clip: int = Field(ge=1, description="of those, frames per clip in FID / KID")
    detail_frames_per_clip: int = Field(ge=1, description="of those, frames per clip for ST-LPIPS and SSIM")
    stlpips_size: int = Field(ge=32)
    max_offset: int = Field(ge=1, description="LSE-C over audio offsets -k..k frames")
    operating_points: dict[str, dict[str, Any]] = Field(
        description="earshot's points: name -> overrides of the codec section ({} is the default point)")
    default_point: str = Field(description="the operating point metrics.json's bpp ratios are read at")
    baselines: dict[str, BaselineParams] = Field(description="name (h264, h265, av1) -> codec, preset, rates")
    parallel_encodes: int = Field(ge=1, description="baseline encodes at once, one encoder thread each")
    kid_subsets: int = Field(ge=1)
    kid_subset_size: int = Field(ge=2)
    bootstrap_samples: int = Field(ge=100, description="speaker resamples of the bpp ratio's interval")
    seed: int
    out_dir: str = Field(description="metrics.json, curves.csv, results.md, plots (dvc.yaml outs)")

    @field_validator("operating_points")
    @classmethod
    def _points_are_codec_overrides(cls, points: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        fields = set(CodecParams.model_fields)
        for name, overrides in points.items():
            unknown = set(overrides) - fields
            if unknown:
                raise ValueError(f"operating point {name!r}: {', '.join(sorted(unknown))} not a codec param "
                                 f"(one of {', '.join(sorted(fields))})")
        return points

    @model_validator(mode="after")
    def _default_point_is_a_point(self) -> "EvaluateCodecParams":
        if self.default_point not in self.operating_points:
            raise ValueError(f"default_point {self.default_point!r} is not one of the operating points "
                             f"({', '.join(self.operating_points)})")
        return self


class CodecSections(Section):
    """The codec's sections of ``params.yaml``."""

    codec: CodecParams
    evaluate_codec: EvaluateCodecParams

    @model_validator(mode="after")
    def _points_are_valid_codecs(self) -> "CodecSections":
        """Each operating point (the codec section with its overrides) must be a valid codec: a bad
        value fails at load, naming the point, not after the stage has loaded its model."""
        for name, overrides in self.evaluate_codec.operating_points.items():
            try:
                CodecParams.model_validate(self.codec.model_dump() | overrides)
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                raise ValueError(f"evaluate_codec.operating_points: point {name!r}: {problems}") from None
        return self
