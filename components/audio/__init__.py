"""Audio of a talking-face clip: extraction, voice activity, audio-visual sync, voice identity.

The modules are independent building blocks of the ``audio`` stage
(:mod:`components.data.audio`):

* :mod:`~components.audio.extract`: 16 kHz mono float audio of any video, in the
  video's time base (sample 0 = the instant of frame 0);
* :mod:`~components.audio.vad`: speech segments (silero-vad, or a pyannote model) and
  their evaluation against reference RTTM with ``pyannote.metrics``;
* :mod:`~components.audio.sync`: the audio-video offset, from the mouth opening in the face
  crops against the audio energy, and the shift that removes it;
* :mod:`~components.audio.speaker`: resemblyzer voice embeddings and the check that all
  clips of a speaker have the same voice.
"""
