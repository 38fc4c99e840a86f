"""The image family: SimCLR, BYOL, VICReg, rotation, patch placement and the supervised baseline.

- Input: records become {"image": uint8 (H, W, C), "label": int32} on the host (resized when
  the dataset's images vary in size); augmentation happens on the device, inside the step.
What a run reports is the image evaluators' (`ssljax.evaluators`: linear_probe,
few_label_probe, knn), which `config.evals` names.
"""

from __future__ import annotations

import copy
import functools
from typing import Callable

import jax
import ml_collections
import numpy as np

from ssljax import data
from ssljax.interface import Family, TrainInput, build

Encoder = Callable[[dict], jax.Array]  # a batch {"image": ...} -> (b, D) features


def record_fn(config: ml_collections.ConfigDict):
  return functools.partial(data.image_example, image_size=config.data.image_size)


def require_labels(config: ml_collections.ConfigDict, info: data.DatasetInfo, needed_by: str) -> int:
  """The number of classes, or a NoLabelsError saying what needs them (an image folder without
  class folders has none)."""
  if info.num_classes is None:
    raise data.NoLabelsError(
        f"{needed_by} needs labelled images, but {config.data.name} at {config.data.get('path')!r} has none "
        "(no class folders). Put the images in class folders (PATH/<class>/...), or train without "
        "evaluation: --config.train.evaluate=False, and every=0 for the evaluators of config.evals "
        "(--config.evals.knn.every=0)")
  return info.num_classes


def evaluations(config: ml_collections.ConfigDict) -> list[str]:
  """What reads labels when the run trains: the end-of-training evaluation and the evaluators
  that run during training, as config keys."""
  evals = config.get("evals", {})
  needed = ["config.train.evaluate"] if config.train.evaluate and len(evals) else []
  return needed + [f"config.evals.{name}.every" for name, options in evals.items() if options.get("every")]


def train_input(config: ml_collections.ConfigDict, workdir: str) -> TrainInput:
  del workdir  # images need nothing besides the dataset
  d = config.data
  source = data.in_memory(data.open_split(d, d.train_split))
  info = data.dataset_info(d)
  # An unlabelled folder trains, but the evaluators would stop at their first call; say so
  # before any step is taken.
  needed = evaluations(config)
  if needed:
    require_labels(config, info, f"the evaluation ({', '.join(needed)})")
  return TrainInput(source=source, record_fn=record_fn(config), unit="images")


def few_label_options(eval_config: ml_collections.ConfigDict) -> dict:
  """The few-label probe's budget and draws from `config.eval`."""
  return dict(labels_per_class=eval_config.labels_per_class, draws=eval_config.label_draws, seed=eval_config.seed)


def calibration_batch(config: ml_collections.ConfigDict) -> dict:
  """`eval.calibration_examples` training images drawn at random (the stored order is sorted by
  class on the bundled datasets), fixed by `eval.seed`."""
  d = config.data
  source = data.open_split(d, d.train_split)
  count = min(config.eval.calibration_examples, len(source))
  indices = np.sort(np.random.default_rng(config.eval.seed).choice(len(source), count, replace=False))
  batch = next(data.eval_batches(source, count, record_fn(config), indices=indices))
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


FAMILY = Family(name="image", train_input=train_input)
