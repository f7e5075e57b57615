"""The embedded default corpus: procedural talking-face videos with known ground truth.

The whole pipeline runs on it with no download. It is built to make both papers'
claims testable: every speaker has latent attributes (sex, age, head size and shape,
skin tone, hair, eyes, glasses, beard) from which both the face and the voice are
derived, so audio carries identity information as real voices do; and the lips are
driven by the same phoneme timeline that drives the audio, so they move with it.

Modules, from the bottom up:

* :mod:`.attributes` - sample a speaker's attributes (``speakers.parquet``);
* :mod:`.phonemes` - phoneme inventory, utterance planning, viseme track;
* :mod:`.voice` - source-filter speech synthesis of one utterance;
* :mod:`.face` - render one frame of a head (PIL, 2x supersampled);
* :mod:`.scene` - per-video background/framing/light and per-clip head motion;
* :mod:`.corpus` - generate the MP4s and ground-truth tables in parallel;
* :mod:`.preview` - a contact sheet of sample frames.

Nothing here does I/O at import time.
"""

from components.data.synth.attributes import sample_speaker, sample_speakers
from components.data.synth.corpus import ClipPlan, generate_corpus, plan_clip, render_clip
from components.data.synth.face import FaceGeometry, FaceStyle, FrameState, RenderedFrame, Scene, render_frame
from components.data.synth.phonemes import PHONEMES, PhonemeEvent, plan_utterance, viseme_track
from components.data.synth.scene import animate, sample_scene
from components.data.synth.voice import Speech, Voice, synthesize_speech

__all__ = [
    "PHONEMES",
    "ClipPlan",
    "FaceGeometry",
    "FaceStyle",
    "FrameState",
    "PhonemeEvent",
    "RenderedFrame",
    "Scene",
    "Speech",
    "Voice",
    "animate",
    "generate_corpus",
    "plan_clip",
    "plan_utterance",
    "render_clip",
    "render_frame",
    "sample_scene",
    "sample_speaker",
    "sample_speakers",
    "synthesize_speech",
    "viseme_track",
]
