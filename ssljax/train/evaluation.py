"""`ssljax eval`: evaluate a finished run with its family's evaluation, beside its baselines.

The run's config and latest checkpoint are all it needs (`ssljax.objectives.restore_model`); what
is measured depends on the modality (image runs: linear probes, few-label probes over several
draws, kNN; for the trained encoder, a calibrated random-init encoder and raw pixels). The
report goes to stdout and to `eval.json` (or `eval_<split>.json` for another split than test)
in the workdir.
"""

from __future__ import annotations

import json
import os

import jax

from ssljax import evaluators, objectives
from ssljax import workdir as workdir_lib

EVAL_FILE = "eval.json"


def eval_file(split: str, test_split: str = "test") -> str:
  """eval.json for the test split (the figure a run reports once), eval_<split>.json else."""
  return EVAL_FILE if split == test_split else f"eval_{split.replace('/', '_')}.json"


def evaluate_workdir(workdir: str, *, split: str | None = None, verbose: bool = True) -> dict:
  """Evaluates the latest checkpoint of a run on `split` (default: the config's test split);
  writes and returns the report."""
  config = workdir_lib.load_config(workdir)
  split = split or config.data.test_split
  objective, params, model_state = objectives.restore_model(workdir, config)
  evaluation = evaluators.from_config(objective, config, workdir)
  if evaluation.evaluators:
    report = {"objective": objective.name, "dataset": config.data.name, "split": split,
              **evaluation.run(params, model_state, split)}
    format_report = evaluation.format
  else:
    report = objective.family.evaluate(objective, params, model_state, config, workdir, split)
    format_report = objective.family.format_results
  path = os.path.join(workdir, eval_file(split, config.data.test_split))
  # With several processes each evaluates on one of its own devices (the same report); the
  # first writes and prints it.
  if jax.process_index() != 0:
    return report
  with open(path, "w") as f:
    json.dump(report, f, indent=2)
  if verbose:
    print()
    print(format_report(report))
    print(f"written to {path}")
  return report
