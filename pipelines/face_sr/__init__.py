"""DVC stages of "Face super-resolution with an ear": one module per stage family.

* ``python -m pipelines.face_sr.train STAGE``: the training stages ``train_g``,
  ``train_eh``, ``train_el``, ``train_ea``, ``train_fusion``;
* ``python -m pipelines.face_sr.judge_faces``: the judge's own rendered speakers (stage ``judge_faces``);
* ``python -m pipelines.face_sr.judge``: the judge (stage ``evaluators``);
* ``python -m pipelines.face_sr.evaluate``: the method comparison (stage ``evaluate``).

The stage name is the params section, as for every stage.
"""
