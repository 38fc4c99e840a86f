"""Feature extraction with a frozen encoder, in fixed-size jitted batches."""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np


def extract(feature_fn: Callable[[jax.Array], jax.Array], images: np.ndarray, batch_size: int = 500) -> np.ndarray:
  """Applies `feature_fn` (images (b, H, W, C) -> (b, D)) to all images, batch by batch.

  The last batch is padded to `batch_size` so the function compiles once.
  """
  fn = jax.jit(feature_fn)
  n = len(images)
  out = []
  for start in range(0, n, batch_size):
    chunk = images[start : start + batch_size]
    pad = batch_size - len(chunk)
    if pad:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
    out.append(np.asarray(fn(chunk))[: batch_size - pad])
  return np.concatenate(out).astype(np.float32)


def raw_pixels(images: np.ndarray) -> np.ndarray:
  """The raw-pixel baseline: each image flattened and scaled to [0, 1]."""
  return images.reshape(len(images), -1).astype(np.float32) / 255.0
