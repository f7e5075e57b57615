"""DVC stages of the talking-face video upsampling paper (Hegde et al., ACM MM 2022).

* ``python -m pipelines.talking.train STAGE``: the training stages ``train_sync`` (the
  lip-sync expert), ``train_coarse`` (stage 1) and ``train_animate`` (stage 2);
* ``python -m pipelines.talking.evaluate``: the method comparison (stage ``evaluate_video``).

The stage name is the params section, as for every stage.
"""
