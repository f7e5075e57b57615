"""Training, shared by every network of the project, and each paper's stages on top of it.

* :mod:`.runtime`: device, precision, process group (``torchrun``), seeding and RNG state;
* :mod:`.loop`: the one training loop (a :class:`~.loop.Stage` recipe in, checkpoints,
  metrics, samples and ``model.pt`` out; resume, AMP and DDP for every stage);
* :mod:`.stage`: the run policy (fingerprint, resume, up to date, MLflow run);
* :mod:`.feeds`: batches in memory, streamed, or drawn; :mod:`.ema`: weight averages;
  :mod:`.metrics_table`: ``metrics.tsv``; :mod:`.losses`: losses both papers use;
* :mod:`.face_sr`: the stages of "Face super-resolution with an ear" and its judge.
"""
