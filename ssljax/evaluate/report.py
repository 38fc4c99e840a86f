"""`ssljax eval`: probe what an encoder learned, next to a random encoder and raw pixels.

For each representation: a linear probe with all training labels, a linear probe with
`labels_per_class` labels per class, and weighted kNN. Results go to stdout as a table and
to `eval.json` in the workdir.
"""

from __future__ import annotations

import json
import os
from typing import Callable

import jax
import ml_collections
import numpy as np

from ssljax import data
from ssljax.evaluate import features as features_lib
from ssljax.evaluate import knn, linear_probe

EVAL_FILE = "eval.json"
METRICS = ("linear_probe", "linear_probe_10_per_class", "knn")


def probe_features(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
    eval_config: ml_collections.ConfigDict, num_classes: int,
) -> dict[str, float]:
  """The three accuracies of one representation."""
  subset = linear_probe.labels_per_class_subset(train_y, eval_config.labels_per_class, seed=eval_config.seed)
  probe = dict(num_classes=num_classes, l2=eval_config.probe_l2, max_steps=eval_config.probe_steps)
  return {
      "linear_probe": linear_probe.accuracy(train_x, train_y, test_x, test_y, **probe),
      "linear_probe_10_per_class": linear_probe.accuracy(
          train_x, train_y, test_x, test_y, train_weights=np.isin(np.arange(len(train_x)), subset), **probe
      ),
      "knn": knn.knn_accuracy(
          train_x, train_y, test_x, test_y, num_classes=num_classes, k=eval_config.knn_k,
          temperature=eval_config.knn_temperature,
      ),
  }


def evaluate_encoders(
    encoders: dict[str, Callable[[jax.Array], jax.Array]], config: ml_collections.ConfigDict,
    include_raw_pixels: bool = True,
) -> dict[str, dict[str, float]]:
  """Probes every named encoder (images -> features) on the config's dataset."""
  d = config.data
  train_images, train_y = data.load_numpy(d.name, d.train_split, data_dir=d.data_dir)
  test_images, test_y = data.load_numpy(d.name, d.eval_split, data_dir=d.data_dir)
  num_classes = int(max(train_y.max(), test_y.max()) + 1)
  results = {}
  for name, encode in encoders.items():
    train_x = features_lib.extract(encode, train_images)
    test_x = features_lib.extract(encode, test_images)
    results[name] = probe_features(train_x, train_y, test_x, test_y, config.eval, num_classes)
  if include_raw_pixels:
    results["raw_pixels"] = probe_features(
        features_lib.raw_pixels(train_images), train_y, features_lib.raw_pixels(test_images), test_y,
        config.eval, num_classes,
    )
  return results


def format_table(results: dict[str, dict[str, float]]) -> str:
  columns = sorted({k for r in results.values() for k in r}, key=lambda k: (k not in METRICS, METRICS.index(k) if k in METRICS else k))
  width = max(len(name) for name in results) + 2
  lines = ["method".ljust(width) + "".join(c.rjust(28) for c in columns)]
  for name, row in results.items():
    lines.append(name.ljust(width) + "".join(
        (f"{row[c]:.4f}" if isinstance(row.get(c), float) else str(row.get(c, "-"))).rjust(28) for c in columns))
  return "\n".join(lines)


def evaluate_workdir(workdir: str, *, verbose: bool = True) -> dict[str, dict[str, float]]:
  """Evaluates the latest checkpoint of a training run; writes and returns eval.json's dict."""
  from ssljax.train.loop import load_config, restore_trained  # evaluation of a run needs its trainer

  config = load_config(workdir)
  objective, params, model_state = restore_trained(workdir, config)
  random_params, random_state = jax.jit(objective.init)(jax.random.key(config.eval.seed + 1), _example(config))
  encoders = {
      objective.name: lambda images: objective.features(params, model_state, images),
      "random_init": lambda images: objective.features(random_params, random_state, images),
  }
  results = evaluate_encoders(encoders, config)
  with open(os.path.join(workdir, EVAL_FILE), "w") as f:
    json.dump(results, f, indent=2)
  if verbose:
    print(f"\nEvaluation on {config.data.name} ({config.data.eval_split} split), top-1 accuracy:")
    print(format_table(results))
    print(f"written to {os.path.join(workdir, EVAL_FILE)}")
  return results


def _example(config) -> dict:
  images, labels = data.load_numpy(config.data.name, config.data.eval_split, data_dir=config.data.data_dir)
  return {"image": images[:2], "label": labels[:2]}
