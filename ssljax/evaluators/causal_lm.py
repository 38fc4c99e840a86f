"""What the evaluators of a causal language model (language_model, samples, few_shot) share: the
run's tokenizer (saved in its workdir, read once per run), the model's log-probs
(`objective.extras["log_probs"]`) and the checks of their options."""

from __future__ import annotations

import functools

import numpy as np

from ssljax.text import tokenizer as tokenizer_lib


def tokenizer(context) -> tokenizer_lib.Tokenizer:
  """The run's tokenizer, as training saved it in the workdir."""
  return context.lasting(("tokenizer",), functools.partial(tokenizer_lib.load, context.workdir))


def log_probs_fn(context, params, model_state):
  """numpy tokens (B, T) -> numpy (B, T) log-probs under the model with these parameters."""
  score = context.objective.extras["log_probs"]
  return lambda tokens: np.asarray(score(params, model_state, tokens))


def check_positive(evaluator: str, **options: int) -> None:
  """A ValueError naming the first of the evaluator's options that is below 1."""
  for name, value in options.items():
    if value < 1:
      raise ValueError(f"the {evaluator} evaluator's option {name} must be >= 1, got {value}")
