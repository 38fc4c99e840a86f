"""Evaluation of learned representations: linear probe, kNN, streamed feature extraction,
zero-shot classification from prompts, image-text retrieval, language-model scoring, n-gram
baselines, few-shot prompting and word overlap. These are pure evaluators of features or scores;
restoring a finished run to evaluate it is `ssljax.commands.evaluate_workdir`."""

from ssljax.evaluate import features, knn, linear_probe

__all__ = ["features", "knn", "linear_probe"]
