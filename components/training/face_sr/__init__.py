"""The training stages of "Face super-resolution with an ear" (Meishvili et al., CVPR 2020).

The paper trains its networks one after the other, each on top of the frozen result of
the previous ones, and so does this package, one DVC stage each:

1. ``train_g``: a StyleGAN-style generator G on the high-res training faces, against a
   discriminator D (non-saturating logistic loss, lazy R1, optional path-length
   regulariser), keeping an exponential moving average ``G_ema`` that later stages use.
2. ``train_eh``: the high-res encoder Eh learns to invert G: G(Eh(x)) = x (L1 +
   shift-tolerant LPIPS, optionally a latent cycle Eh(G(z)) = z), while G is fine-tuned
   at a low learning rate so that it can reproduce the real faces, not only its samples.
3. ``train_el``: the low-res encoder El maps the 8x8 face to a code G turns into the
   high-res face; its loss is on the image and on the code, to Eh's code of the
   high-res face (Eh and G frozen).
4. ``train_ea``: the audio encoder Ea regresses, from 4 s of speech, Eh's code of the
   same person's face (optionally with an image loss through G).
5. ``train_fusion``: F combines El's and Ea's codes (both frozen) into the code of the
   high-res face.

and the judge of the evaluation, ``evaluators`` (:mod:`.judge`), a face classifier of
the high-res training faces. Codes are per-layer z vectors that G's mapping network
normalises (pixel norm) before use, so only their direction matters to G; latent losses
compare codes after that same normalisation, which keeps their scale meaningful
whatever the encoders' output norm.

:mod:`.plan` says which stage needs what (and is all the evaluation needs of this
package: the model config of the params), :mod:`.recipes` what each stage trains and
how, :mod:`.data` how the training split is fed, :mod:`.stages` runs one stage (on
the shared loop, under the shared run policy of :mod:`components.training.stage`).
Each stage's folder ``<face_sr.out_dir>/<stage>/`` holds ``checkpoint.pt`` (resume), ``model.pt`` (the
networks for the next stages and inference, family ``face_sr``), ``metrics.tsv``,
``summary.json`` and ``samples/``. A rerun with the same settings and inputs after the
stage finished is a no-op; after a kill it resumes; with other settings or inputs (a
new G, new shards) it starts over.

This file holds no code, so that importing :mod:`.plan` alone (as the evaluation does)
loads no training code.
"""
