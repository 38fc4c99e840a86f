"""The image family: SimCLR, BYOL, VICReg, rotation, patch placement and the supervised baseline.

- Input: records become {"image": uint8 (H, W, C), "label": int32} on the host (resized when
  the dataset's images vary in size); augmentation happens on the device, inside the step.
- Monitor: weighted kNN accuracy on the validation split every `config.train.knn_every` steps.
- Evaluation (`ssljax eval`, and the end of `ssljax train`) on one split, test by default:
  a linear probe with every training label, a linear probe with `labels_per_class` labels per
  class averaged over `label_draws` draws of the labelled subset (mean and std), and weighted
  kNN; for the trained encoder, a random-init encoder and raw pixels.

The random-init encoder is the same architecture with every block's last BatchNorm scale at 1
(zero-init would make each residual branch output zero, leaving a stem, the shortcuts and a
pooling layer) and BatchNorm statistics calibrated on `eval.calibration_examples` training
images in train mode (initial statistics, mean 0 and variance 1, match no layer's input).
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
from ssljax.evaluate import knn, linear_probe
from ssljax.interface import Family, Monitor, TrainInput, build

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
  return TrainInput(source=source, record_fn=record_fn(config), num_classes=info.num_classes,
                    unit="images")


def few_label_options(eval_config: ml_collections.ConfigDict) -> dict:
  """The few-label probe's budget and draws from `config.eval`."""
  return dict(labels_per_class=eval_config.labels_per_class, draws=eval_config.label_draws, seed=eval_config.seed)


def probe_features(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                   eval_config: ml_collections.ConfigDict, num_classes: int) -> dict[str, float]:
  """The accuracies of one representation: probe with all labels, probe with a few labels per
  class (mean and std over draws of the labelled subset), weighted kNN."""
  probe = dict(num_classes=num_classes, l2=eval_config.probe_l2, max_steps=eval_config.probe_steps)
  few = linear_probe.few_label_accuracies(train_x, train_y, test_x, test_y, **few_label_options(eval_config),
                                          **probe)
  key = f"linear_probe_{eval_config.labels_per_class}_per_class"
  return {
      "linear_probe": linear_probe.accuracy(train_x, train_y, test_x, test_y, **probe),
      key: float(np.mean(few)),
      key + "_std": float(np.std(few)),
      "knn": knn.knn_accuracy(train_x, train_y, test_x, test_y, num_classes=num_classes,
                              k=eval_config.knn_k, temperature=eval_config.knn_temperature),
  }


def _split_features(encode: Encoder, config: ml_collections.ConfigDict, split: str):
  d = config.data
  source = data.open_split(d, split)
  return features_lib.extract(encode, source, record_fn(config), batch_size=config.eval.batch_size)


def evaluate_encoders(encoders: dict[str, Encoder], config: ml_collections.ConfigDict, split: str,
                      *, include_raw_pixels: bool | None = None) -> dict[str, dict[str, float]]:
  """Probes every named encoder (batch -> features), fit on the training split and scored on
  `split`, streaming both splits in batches."""
  include_raw_pixels = config.eval.raw_pixels if include_raw_pixels is None else include_raw_pixels
  if include_raw_pixels:
    encoders = {**encoders, "raw_pixels": features_lib.raw_pixels}
  num_classes = require_labels(config, data.dataset_info(config.data), "the linear probes and kNN")
  results = {}
  for name, encode in encoders.items():
    train_x, train_y = _split_features(encode, config, config.data.train_split)
    test_x, test_y = _split_features(encode, config, split)
    results[name] = probe_features(train_x, train_y, test_x, test_y, config.eval, num_classes)
  return results


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


def evaluate(objective, params, model_state, config: ml_collections.ConfigDict, workdir: str,
             split: str) -> dict:
  del workdir
  require_labels(config, data.dataset_info(config.data), "`ssljax eval` (linear probes and kNN)")
  encoders = {
      objective.name: functools.partial(objective.features, params, model_state),
      "random_init": random_init_encoder(config),
  }
  return {"dataset": config.data.name, "split": split,
          "results": evaluate_encoders(encoders, config, split)}


def format_results(report: dict) -> str:
  """A table of top-1 accuracies; the few-label probe as mean ± std over draws."""
  results = report["results"]
  columns = [c for c in next(iter(results.values())) if not c.endswith("_std")]
  width = max(len(name) for name in results) + 2
  lines = [f"Evaluation on {report['dataset']} ({report['split']} split), top-1 accuracy:",
           "method".ljust(width) + "".join(c.rjust(30) for c in columns)]
  for name, row in results.items():
    cells = []
    for c in columns:
      cell = f"{row[c]:.4f}" if isinstance(row.get(c), float) else str(row.get(c, "-"))
      if c + "_std" in row:
        cell += f" ± {row[c + '_std']:.4f}"
      cells.append(cell.rjust(30))
    lines.append(name.ljust(width) + "".join(cells))
  return "\n".join(lines)


def knn_monitor(objective, config: ml_collections.ConfigDict) -> Monitor:
  """kNN accuracy of the current encoder on the validation split (never the test split)."""

  def fn(params, model_state):
    encode = functools.partial(objective.features, params, model_state)
    train_x, train_y = _split_features(encode, config, config.data.train_split)
    val_x, val_y = _split_features(encode, config, config.data.eval_split)
    num_classes = int(max(train_y.max(), val_y.max()) + 1)
    e = config.eval
    return {"knn_accuracy": knn.knn_accuracy(train_x, train_y, val_x, val_y, num_classes=num_classes,
                                             k=e.knn_k, temperature=e.knn_temperature)}

  return Monitor(every=config.train.knn_every, fn=fn)


def monitors(objective, config: ml_collections.ConfigDict, workdir: str) -> list[Monitor]:
  del workdir
  return [knn_monitor(objective, config)] if config.train.knn_every else []


FAMILY = Family(name="image", train_input=train_input, monitors=monitors, evaluate=evaluate,
                format_results=format_results)
