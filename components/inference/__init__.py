"""Inference with the trained models (``earshot face-sr``, the evaluation stage, benchmarks)."""
