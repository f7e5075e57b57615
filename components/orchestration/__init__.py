"""Running the pipeline: items inside a stage, stages in the graph, the local servers.

* :mod:`.runner`: a stage's per-item work with resume sidecars and quarantine;
* :mod:`.dvc`: the ``dvc.yaml`` graph as data, ``dvc repro``/``exp run`` arguments and outcomes;
* :mod:`.servers`: the Prefect and MLflow servers on 127.0.0.1.
"""
