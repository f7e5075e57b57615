"""Evaluation of face super-resolution: metrics, evaluator networks, the method comparison, figures."""
