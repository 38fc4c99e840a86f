"""Feature extraction with a frozen encoder, streamed in fixed-size jitted batches."""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import numpy as np

from ssljax.data import pipeline


def extract(feature_fn: Callable[[dict], jax.Array], source: Sequence[Any],
            record_fn: Callable[[dict], dict] | None = pipeline.image_example, *,
            batch_size: int = 500, indices: Sequence[int] | None = None,
            label_key: str = "label") -> tuple[np.ndarray, np.ndarray | None]:
  """Features (N, D) float32 of every record (or of `indices`), and their labels (N,) if any.

  Records are read, transformed and encoded one batch at a time (`data.eval_batches`), so host
  memory holds one batch of inputs plus the (N, D) features, whatever the split's size. The
  last batch is padded, so `feature_fn` (a batch dict -> (b, D)) compiles once.
  """
  fn = _compiled(feature_fn)
  features, labels = [], []
  for batch in pipeline.eval_batches(source, batch_size, record_fn, indices=indices):
    real = int(batch["mask"].sum())
    features.append(np.asarray(fn({k: v for k, v in batch.items() if k != "mask"}))[:real])
    if label_key in batch:
      labels.append(batch[label_key][:real])
  if not features:
    raise ValueError("no records to extract features from")
  return np.concatenate(features).astype(np.float32), (np.concatenate(labels) if labels else None)


@functools.cache
def _jit(fn: Callable) -> Callable:
  return jax.jit(fn)


def _compiled(feature_fn: Callable) -> Callable:
  """A jitted `feature_fn`. A `functools.partial(features, params, model_state)` (how encoders
  are passed around) is jitted as `features` with the bound arrays as arguments, so evaluators
  that run every N steps with new parameters reuse one compilation."""
  if isinstance(feature_fn, functools.partial) and not feature_fn.keywords:
    jitted, args = _jit(feature_fn.func), feature_fn.args
    return lambda batch: jitted(*args, batch)
  return _jit(feature_fn)


def raw_pixels(batch: dict) -> jax.Array:
  """The raw-pixel baseline's features: each image flattened and scaled to [0, 1]."""
  images = batch["image"]
  return images.reshape(images.shape[0], -1).astype(np.float32) / 255.0
