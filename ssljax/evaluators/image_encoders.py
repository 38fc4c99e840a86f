"""What the image evaluators (linear_probe, few_label_probe, knn) share: the encoders they
compare (the run's, and the baselines `config.eval.baselines` names) and their features of a
split, extracted once per round for the run's encoder and once per run for a baseline. The
image-text attribute_probe builds its random-init tower with `random_init_encoder` too.

Baselines:
- "random_init": the same architecture with every block's last BatchNorm scale at 1 (zero-init
  would make each residual branch output zero, leaving a stem, the shortcuts and a pooling
  layer) and BatchNorm statistics calibrated on `eval.calibration_examples` training images in
  train mode (initial statistics, mean 0 and variance 1, match no layer's input);
- "raw_pixels": each image flattened and scaled to [0, 1].
"""

from __future__ import annotations

import copy
import functools
from typing import Callable

import jax
import ml_collections
import numpy as np

from ssljax import data
from ssljax.evaluate import features as features_lib
from ssljax.families import image
from ssljax.interface import build

Encoder = Callable[[dict], jax.Array]  # a batch {"image": ...} -> (b, D) features
BASELINES = ("random_init", "raw_pixels")


def calibration_batch(config: ml_collections.ConfigDict, record_fn=None) -> dict:
  """`eval.calibration_examples` training records drawn at random (the stored order is sorted
  by class on the bundled datasets), fixed by `eval.seed`, made into one batch by `record_fn`
  (default: the image family's)."""
  d = config.data
  source = data.open_split(d, d.train_split)
  count = min(config.eval.calibration_examples, len(source))
  indices = np.sort(np.random.default_rng(config.eval.seed).choice(len(source), count, replace=False))
  batch = next(data.eval_batches(source, count, record_fn or image.record_fn(config), indices=indices))
  return {k: v for k, v in batch.items() if k != "mask"}


def random_init_encoder(config: ml_collections.ConfigDict, batch: dict | None = None) -> Encoder:
  """The calibrated random-init baseline (module docstring) as a batch -> features function:
  the config's objective at initialisation, every residual block's last BatchNorm scale at 1,
  its BatchNorm statistics those of `batch` (inputs of the objective's init, images among them;
  default: `calibration_batch(config)`).

  The objective comes from the registry (`ssljax.interface.build`) because the baseline is
  another model than the run's: the same config with `model.zero_init_residual` off."""
  baseline_config = copy.deepcopy(config)
  with baseline_config.unlocked():
    baseline_config.model.zero_init_residual = False
  objective = build(baseline_config)
  batch = calibration_batch(config) if batch is None else batch
  params, model_state = jax.jit(objective.init)(jax.random.key(config.eval.seed + 1),
                                                 {k: v[:2] for k, v in batch.items()})
  if objective.calibrate is not None:
    model_state = jax.jit(objective.calibrate)(params, model_state, batch)
  return functools.partial(objective.features, params, model_state)


def baseline_encoder(config: ml_collections.ConfigDict, name: str) -> Encoder:
  if name == "random_init":
    return random_init_encoder(config)
  if name == "raw_pixels":
    return features_lib.raw_pixels
  raise ValueError(f"config.eval.baselines: unknown baseline {name!r}; choose among {BASELINES}")


def split_features(encode: Encoder, config: ml_collections.ConfigDict, split: str):
  """(features (N, D), labels (N,)) of every image of a split, streamed in batches."""
  source = data.open_split(config.data, split)
  return features_lib.extract(encode, source, image.record_fn(config), batch_size=config.eval.batch_size)


def encoder_features(context, params, model_state, split: str) -> dict[str, tuple]:
  """{encoder: ((train_x, train_y), (x, y))}: the training split's and `split`'s features of
  the run's encoder (under `params`) and of each baseline in `config.eval.baselines`."""
  config = context.config
  num_classes(context)  # a dataset without labels stops here, saying so
  train_split = config.data.train_split
  trained = functools.partial(context.objective.features, params, model_state)
  out = {context.objective.name: tuple(
      context.shared(("features", s), functools.partial(split_features, trained, config, s))
      for s in (train_split, split))}
  for name in config.eval.baselines:
    encode = context.lasting(("baseline", name), functools.partial(baseline_encoder, config, name))
    out[name] = tuple(context.lasting(("baseline features", name, s),
                                      functools.partial(split_features, encode, config, s))
                      for s in (train_split, split))
  return out


def score_encoders(context, params, model_state, split: str, key: str, score) -> dict:
  """{encoder: score(train_x, train_y, x, y)} for the run's encoder and each baseline; a
  baseline's score does not change with the parameters, so it is computed once per run and split."""
  out = {}
  for encoder, (train, evaluated) in encoder_features(context, params, model_state, split).items():
    compute = functools.partial(score, *train, *evaluated)
    out[encoder] = compute() if encoder == context.objective.name else context.lasting((key, encoder, split), compute)
  return out


def num_classes(context) -> int:
  config = context.config
  return image.require_labels(config, data.dataset_info(config.data), "the image evaluators (config.evals)")


def format_accuracies(title: str, accuracies: dict) -> str:
  """Lines "  encoder   0.9510" (or "0.8840 ± 0.0180" for a {"mean", "std"} entry)."""
  width = max(len(name) for name in accuracies) + 2
  lines = [title]
  for name, value in accuracies.items():
    cell = f"{value['mean']:.4f} ± {value['std']:.4f}" if isinstance(value, dict) else f"{value:.4f}"
    lines.append(f"  {name:<{width}}{cell}")
  return "\n".join(lines)
