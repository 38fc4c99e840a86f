"""The evaluator framework: config.evals names evaluators and their options, bad names and
options are refused with the fix, entries of one type coexist, the trainer runs the due ones on
validation and logs their scalars, and the image evaluators give what the probes give on the
same features."""

import functools
import types

import jax
import numpy as np
import pytest

from ssljax import data, evaluators, objectives
from ssljax.evaluate import features as features_lib
from ssljax.evaluate import knn, linear_probe
from ssljax.evaluators import image_encoders
from ssljax.evaluators.few_label_probe import labelled_subsets
from ssljax import workdir as workdir_lib
from ssljax.train import checks, defaults
from ssljax.train.evaluation import NothingToEvaluate, evaluate_workdir


def _smoke(data_dir):
  config = defaults.load_config("simclr:smoke")
  config.data.data_dir = data_dir
  return config


def test_options_hold_every_default_and_refuse_unknown_ones():
  options = evaluators.options("knn", every=5)
  assert options.to_dict() == {"type": "knn", "every": 5, "k": 20, "temperature": 0.07}
  with pytest.raises(ValueError, match="'kk' is not an option of the 'knn' evaluator.*did you mean 'k'"):
    evaluators.options("knn", kk=5)
  with pytest.raises(ValueError, match="unknown evaluator 'knnn'; registered evaluators: .*knn"):
    evaluators.options("knnn")


def test_the_config_check_names_a_bad_entry():
  config = defaults.load_config("simclr:smoke")
  with config.unlocked():
    config.evals.nearest = {"k": 3}  # no type: the entry's name is taken for it
  with pytest.raises(checks.ConfigError, match="config.evals.nearest: unknown evaluator 'nearest'"):
    checks.check(config, device_count=1)
  config = defaults.load_config("simclr:smoke")
  config.evals.knn.every = -1
  with pytest.raises(checks.ConfigError, match="config.evals.knn.every must be >= 0"):
    checks.check(config, device_count=1)
  config = defaults.load_config("simclr:smoke")
  with config.unlocked():  # fewer evaluators than the objective's config is a choice, not a missing key
    del config.evals["few_label_probe"]
  checks.check(config, device_count=1)


def test_two_entries_of_one_type_and_their_due_steps():
  config = defaults.load_config("simclr:smoke")
  with config.unlocked():
    config.evals.knn_5 = evaluators.options("knn", k=5, every=3)
  config.evals.knn.every = 2
  evaluation = evaluators.from_config(types.SimpleNamespace(name="simclr"), config, "unused")
  by_name = {e.name: e for e in evaluation.evaluators}
  assert set(by_name) == {"linear_probe", "few_label_probe", "knn", "knn_5"}
  assert by_name["knn_5"].every == 3 and by_name["linear_probe"].every == 0
  assert [e.name for e in evaluation.due(2, 10)] == ["knn"]
  assert [e.name for e in evaluation.due(6, 10)] == ["knn", "knn_5"]
  assert [e.name for e in evaluation.due(9, 10)] == ["knn_5"] and evaluation.due(5, 10) == []
  assert [e.name for e in evaluation.due(7, 7)] == ["knn", "knn_5"]  # the last step: each with every > 0


def test_few_label_probe_names_the_option_when_a_class_is_too_small():
  labels = np.array([0] * 5 + [1] * 3)
  with pytest.raises(ValueError, match=r"config.evals.few_label_probe.labels_per_class=4.*lower it"):
    labelled_subsets(labels, 4, draws=2, seed=0, where="evals.few_label_probe")
  subsets = labelled_subsets(labels, 3, draws=2, seed=0, where="evals.few_label_probe")
  assert [len(s) for s in subsets] == [6, 6]


class _Objective:
  """The smoke SimCLR objective's features at initialisation (what the evaluators call)."""

  def __init__(self, config):
    self._objective = objectives.build(config)
    self.name = self._objective.name
    batch = image_encoders.calibration_batch(config)
    self.params, self.model_state = jax.jit(self._objective.init)(jax.random.key(0),
                                                                   {k: v[:2] for k, v in batch.items()})
    self.features = self._objective.features


def test_image_evaluators_equal_the_probes_on_the_same_features(data_dir):
  """The reports are the probes' figures on features extracted by hand, one round shares one
  extraction, and the trainer's scalars are named val_<entry>_<scalar>."""
  config = _smoke(data_dir)
  config.eval.baselines = ("raw_pixels",)
  objective = _Objective(config)
  evaluation = evaluators.from_config(objective, config, "unused")
  reports = evaluation.run(objective.params, objective.model_state, "validation")

  encode = functools.partial(objective.features, objective.params, objective.model_state)
  for name, fn in {"simclr": encode, "raw_pixels": features_lib.raw_pixels}.items():
    train_x, train_y = features_lib.extract(fn, data.open_split(config.data, "train"))
    x, y = features_lib.extract(fn, data.open_split(config.data, "validation"))
    assert reports["knn"]["accuracy"][name] == knn.knn_accuracy(train_x, train_y, x, y, num_classes=10)
    lp = config.evals.linear_probe
    assert reports["linear_probe"]["accuracy"][name] == linear_probe.accuracy(
        train_x, train_y, x, y, num_classes=10, l2=lp.l2, max_steps=lp.max_steps)
    few = config.evals.few_label_probe
    draws = [linear_probe.accuracy(train_x[s], train_y[s], x, y, num_classes=10, l2=few.l2, max_steps=few.max_steps)
             for s in labelled_subsets(train_y, few.labels_per_class, few.draws, config.eval.seed, "x")]
    assert reports["few_label_probe"]["accuracy"][name]["draws"] == draws

  assert evaluation.scalars(reports) == {
      "val_linear_probe_accuracy": reports["linear_probe"]["accuracy"]["simclr"],
      "val_few_label_probe_accuracy": reports["few_label_probe"]["accuracy"]["simclr"]["mean"],
      "val_knn_accuracy": reports["knn"]["accuracy"]["simclr"]}
  text = evaluation.format({"objective": "simclr", "dataset": "mnist5k", "split": "validation", **reports})
  assert text.startswith("Evaluation of simclr on mnist5k (validation split)") and "Weighted kNN, k = 20" in text


def test_a_run_without_evaluators_has_nothing_to_evaluate_and_says_so(tmp_path):
  config = defaults.load_config("simclr:smoke")
  config.evals = {}
  workdir_lib.save_config(config, str(tmp_path))
  with pytest.raises(NothingToEvaluate, match=r"names no evaluator \(config.evals in its config.json is empty\)"):
    evaluate_workdir(str(tmp_path))
