"""Weighted k-nearest-neighbour classification of features (Wu et al. 2018, arXiv 1805.01978).

Each of the k nearest training features (by cosine similarity s) votes for its class with
weight exp(s / T); the class with the largest total wins. k = 20 and T = 0.07 follow the
InstDisc paper and the DINO evaluation protocol.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _normalise(x):
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def knn_predict(
    train_features, train_labels, test_features, *, num_classes: int, k: int = 20,
    temperature: float = 0.07, batch_size: int = 1000,
) -> np.ndarray:
  """Predicted class for every test feature."""
  train = _normalise(jnp.asarray(train_features, jnp.float32))
  labels = jnp.asarray(train_labels, jnp.int32)
  k = min(k, train.shape[0])

  @jax.jit
  def predict(queries):
    sims = _normalise(queries) @ train.T  # (b, D) . (D, N) -> (b, N)
    top_sims, top_idx = jax.lax.top_k(sims, k)  # (b, k)
    votes = jax.nn.one_hot(labels[top_idx], num_classes) * jnp.exp(top_sims / temperature)[..., None]
    return jnp.argmax(jnp.sum(votes, axis=1), axis=-1)  # (b, k, C) -> (b,)

  test = np.asarray(test_features, np.float32)
  return np.concatenate([np.asarray(predict(test[i : i + batch_size])) for i in range(0, len(test), batch_size)])


def knn_accuracy(train_features, train_labels, test_features, test_labels, **kwargs) -> float:
  predictions = knn_predict(train_features, train_labels, test_features, **kwargs)
  return float(np.mean(predictions == np.asarray(test_labels)))
