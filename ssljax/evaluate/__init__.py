"""Evaluation of learned representations: linear probe, kNN, streamed feature extraction, and
`evaluate_workdir` (the `ssljax eval` report of a finished run)."""

from ssljax.evaluate import features, knn, linear_probe


def evaluate_workdir(*args, **kwargs):
  """`ssljax.evaluate.report.evaluate_workdir` (imported on use: it builds objectives, whose
  families import the evaluators above)."""
  from ssljax.evaluate.report import evaluate_workdir as evaluate

  return evaluate(*args, **kwargs)


__all__ = ["features", "knn", "linear_probe", "evaluate_workdir"]
