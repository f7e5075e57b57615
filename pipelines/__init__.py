"""Thin entry points: one module per DVC stage (``python -m pipelines.<stage>``), the
``earshot`` CLI and the Prefect flows. The work itself lives in ``components``."""
