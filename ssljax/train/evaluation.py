"""`ssljax eval`: evaluate a finished run with the evaluators its config names (`config.evals`),
each beside its baselines.

The run's config and latest checkpoint are all it needs (`ssljax.objectives.restore_model`); what
is measured is the evaluators' (image runs: linear probe, few-label probe over several draws,
kNN, each also for a calibrated random-init encoder and raw pixels). The report, one entry per
evaluator, goes to stdout and to `eval.json` (or `eval_<split>.json` for another split than
test) in the workdir.
"""

from __future__ import annotations

import json
import os

import jax

from ssljax import evaluators, objectives
from ssljax import workdir as workdir_lib
from ssljax.errors import UserError

EVAL_FILE = "eval.json"


class NothingToEvaluate(UserError):
  """The run's config names no evaluator."""


def eval_file(split: str, test_split: str = "test") -> str:
  """eval.json for the test split (the figure a run reports once), eval_<split>.json else."""
  return EVAL_FILE if split == test_split else f"eval_{split.replace('/', '_')}.json"


def evaluate_workdir(workdir: str, *, split: str | None = None, verbose: bool = True) -> dict:
  """Evaluates the latest checkpoint of a run on `split` (default: the config's test split);
  writes and returns the report."""
  config = workdir_lib.load_config(workdir)
  split = split or config.data.test_split
  if not config.get("evals"):
    raise NothingToEvaluate(f"the run in {workdir} names no evaluator (config.evals in its config.json is empty): "
                            "nothing to evaluate. Name them in the config it trains with, e.g. "
                            "c.evals.knn = evaluators.options('knn') (configs/, ssljax/evaluators/)")
  objective, params, model_state = objectives.restore_model(workdir, config)
  evaluation = evaluators.from_config(objective, config, workdir)
  report = {"objective": objective.name, "dataset": config.data.name, "split": split,
            **evaluation.run(params, model_state, split)}
  path = os.path.join(workdir, eval_file(split, config.data.test_split))
  # With several processes each evaluates on one of its own devices (the same report); the
  # first writes and prints it.
  if jax.process_index() != 0:
    return report
  with open(path, "w") as f:
    json.dump(report, f, indent=2)
  if verbose:
    print()
    print(evaluation.format(report))
    print(f"written to {path}")
  return report
