"""Running the pipeline: items inside a stage, stages in the graph, the local servers.

* :mod:`.items`, :mod:`.runner`: a stage's per-item work with resume sidecars and quarantine;
* :mod:`.executors`: where the items run (process or thread pool, Dask, Prefect task runs);
* :mod:`.graph`: the ``dvc.yaml`` graph as data (stage order, a target's upstream);
* :mod:`.repro`: what ``dvc repro`` printed (ran, skipped, a transient failure);
* :mod:`.experiments`: ablation variants as ``dvc exp run -S ...`` arguments;
* :mod:`.summaries`: stage results and the markdown the Prefect flows publish;
* :mod:`.servers`: the Prefect and MLflow servers on 127.0.0.1.
"""
