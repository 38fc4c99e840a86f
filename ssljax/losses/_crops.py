"""Multi-crop pairing shared by DINO and SwAV: each target crop against every other crop."""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def sum_over_other_crops(log_probs: Array, num_targets: int) -> Array:
  """For each of the first `num_targets` crops a, the sum of log_probs over the crops v != a.

  (V, n, K) -> (A, n, K). Summed on either side of crop a rather than as the sum over all V
  crops less crop a, which in float32 would lose the small terms to the cancellation.
  """
  return jnp.stack([jnp.sum(log_probs[:a], axis=0) + jnp.sum(log_probs[a + 1:], axis=0)
                    for a in range(num_targets)])
