"""The settings of the log spectrograms the networks read (a contract between layers).

The data layer computes them (:mod:`components.data.features`) and the networks size
their audio inputs from them (:mod:`components.models.face_sr.presets`): both import
these numbers from here, so neither layer imports the other.

* Face SR with an ear (Meishvili et al.): |STFT|^2 of 16 kHz speech, a 512-point FFT
  (257 bins) with a hop of 248 samples: 4 s give 257 x 257.
"""

SPEC_SAMPLE_RATE = 16000
SPEC_N_FFT = 512
SPEC_HOP = 248
SPEC_EPS = 1e-6
