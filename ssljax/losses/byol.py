"""BYOL's regression loss between the online prediction and the target projection."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from ssljax.losses import _common
from ssljax.losses._common import AxisName

Array = jax.Array


def byol_loss(prediction: Array, target: Array, *, axis_name: AxisName | None = None) -> Array:
  """Normalised mean squared error of BYOL, 2 - 2 cos(p, t), averaged over the batch.

  Grill et al. 2020, "Bootstrap Your Own Latent", arXiv:2006.07733, eq. (2):

      L = 1/N sum_i || p_i/|p_i| - t_i/|t_i| ||^2 = 1/N sum_i (2 - 2 p_i.t_i / (|p_i| |t_i|))

  The target gets no gradient (`lax.stop_gradient`), as the target network is only updated by
  its moving average. Symmetrising over the two views (L + L~ in the paper) is the caller's
  business: call it twice with the views swapped. Norms use max(|x|, 1e-6), so zero vectors
  give finite values and gradients.

  Args:
    prediction: (n, D) online predictions q_theta(z_theta) (bfloat16 is computed in float32).
    target: (n, D) target projections z'_xi for the other view.
    axis_name: mesh axis (or tuple of axes) of a sharded batch: the mean is then over the
      global batch, the same on every device; `lax.pmean` the per-device gradients.

  Returns:
    Scalar float32 loss in [0, 4].
  """
  fn = "byol_loss"
  prediction = _common.check_features(fn, "prediction", prediction)
  target = _common.check_features(fn, "target", target)
  _common.check_same_shape(fn, ("prediction", "target"), (prediction, target))

  p = _common.l2_normalize(prediction)
  t = _common.l2_normalize(lax.stop_gradient(target))
  local_sum = jnp.sum(2.0 - 2.0 * jnp.sum(p * t, axis=1))
  count = prediction.shape[0] * _common.axis_size(axis_name)
  return _common.global_sum(local_sum, axis_name) / count
