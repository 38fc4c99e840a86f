"""Evaluation of learned representations: linear probe, kNN, and the `ssljax eval` report."""

from ssljax.evaluate import features, knn, linear_probe
from ssljax.evaluate.report import evaluate_encoders, evaluate_workdir, format_table, probe_features

__all__ = ["features", "knn", "linear_probe", "evaluate_encoders", "evaluate_workdir", "format_table", "probe_features"]
