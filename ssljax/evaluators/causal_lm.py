"""What the evaluators of a causal language model (language_model, samples, few_shot) share: the
model's log-probs (`objective.extras["log_probs"]`) and the checks of their options; the run's
tokenizer is `context.tokenizer()`."""

from __future__ import annotations

import numpy as np


def log_probs_fn(context, params, model_state):
  """numpy tokens (B, T) -> numpy (B, T) log-probs under the model with these parameters."""
  score = context.objective.extras["log_probs"]
  return lambda tokens: np.asarray(score(params, model_state, tokens))


def check_positive(evaluator: str, **options: int) -> None:
  """A ValueError naming the first of the evaluator's options that is below 1."""
  for name, value in options.items():
    if value < 1:
      raise ValueError(f"the {evaluator} evaluator's option {name} must be >= 1, got {value}")
