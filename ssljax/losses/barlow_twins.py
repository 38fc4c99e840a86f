"""Barlow Twins: the cross-correlation of two views' embeddings over the global batch."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ssljax.losses import _common
from ssljax.losses._common import AxisName

Array = jax.Array

# BatchNorm1d's epsilon, which the authors' code standardises with.
DEFAULT_EPS = 1e-5


def barlow_twins_correlation(z1: Array, z2: Array, *, eps: float = DEFAULT_EPS,
                             axis_name: AxisName | None = None) -> Array:
  """The (D, D) cross-correlation matrix C of the two views' standardised embeddings.

  Zbontar et al. 2021, "Barlow Twins: Self-Supervised Learning via Redundancy Reduction",
  arXiv:2103.03230, eq. (2):

      C_ij = sum_b z1_bi z2_bj / ( sqrt(sum_b z1_bi^2) sqrt(sum_b z2_bj^2) )

  over the batch b of mean-centred embeddings. Computed as the authors' code does,
  C = BN(z1)^T BN(z2) / N with a BatchNorm without affine parameters:

      zn_bi = (z_bi - mean_b z_bi) / sqrt(var_b z_bi + eps),   var the biased (1/N) variance

  which is eq. (2) exactly when eps = 0. (The paper's Algorithm 1 divides by torch's unbiased
  `std`, which scales C by (N - 1)/N; eq. (2) and the code do not.) eps = 1e-5 is BatchNorm1d's.

  Across devices (`axis_name` set) N is the global batch: the devices psum the column sums for
  the means, then the centred squares for the variances, then the (D, D) products, as the
  authors' SyncBatchNorm and their all-reduce of C do; C is the same on every device.

  Args:
    z1: (n, D) embeddings of the first views (bfloat16 is computed in float32).
    z2: (n, D) embeddings of the second views; row b pairs with z1's row b.
    eps: epsilon >= 0 added to the variance inside the square root.
    axis_name: mesh axis (or tuple of axes) of a sharded batch, or None.

  Returns:
    (D, D) float32 cross-correlation matrix.
  """
  fn = "barlow_twins_correlation"
  z1 = _common.check_features(fn, "z1", z1)
  z2 = _common.check_features(fn, "z2", z2)
  _common.check_same_shape(fn, ("z1", "z2"), (z1, z2))
  if not eps >= 0:
    raise ValueError(f"{fn}: eps must be >= 0, got {eps!r}")
  count = z1.shape[0] * _common.axis_size(axis_name)
  if count < 2:
    raise ValueError(f"{fn}: the (global) batch needs at least 2 rows to standardise over, got "
                     f"z1 of shape {tuple(z1.shape)}")

  def global_mean_over_batch(x: Array) -> Array:
    return _common.global_sum(jnp.sum(x, axis=0), axis_name) / count  # (n, D) -> (D,)

  def standardise(z: Array) -> Array:
    centred = z - global_mean_over_batch(z)
    return centred / jnp.sqrt(global_mean_over_batch(jnp.square(centred)) + eps)

  z1n, z2n = standardise(z1), standardise(z2)
  return _common.global_sum(z1n.T @ z2n, axis_name) / count  # (D, n) . (n, D) -> (D, D)


def barlow_twins_terms(z1: Array, z2: Array, *, eps: float = DEFAULT_EPS,
                       axis_name: AxisName | None = None) -> dict[str, Array]:
  """The two unweighted terms of eq. (1), for logging; `barlow_twins_loss` is their weighted sum.

      on_diagonal  = sum_i (1 - C_ii)^2          invariance: each dimension agrees across views
      off_diagonal = sum_i sum_{j != i} C_ij^2   redundancy reduction: dimensions decorrelated

  with C of `barlow_twins_correlation` (see there for the standardisation and eps).

  Returns:
    Dict of scalar float32 terms "on_diagonal" and "off_diagonal".
  """
  correlation = barlow_twins_correlation(z1, z2, eps=eps, axis_name=axis_name)
  # Masked rather than sum(C^2) - sum(diag^2), which would lose the small off-diagonal terms
  # to the cancellation of D terms near 1 in float32.
  is_diagonal = jnp.eye(correlation.shape[0], dtype=bool)
  return {
      "on_diagonal": jnp.sum(jnp.square(1.0 - jnp.diagonal(correlation))),
      "off_diagonal": jnp.sum(jnp.where(is_diagonal, 0.0, jnp.square(correlation))),
  }


def barlow_twins_loss(z1: Array, z2: Array, *, lambda_offdiag: float | Array = 5e-3,
                      eps: float = DEFAULT_EPS, axis_name: AxisName | None = None) -> Array:
  """Barlow Twins loss, arXiv:2103.03230 eq. (1):

      L_BT = sum_i (1 - C_ii)^2 + lambda * sum_i sum_{j != i} C_ij^2

  with C of `barlow_twins_correlation`. lambda = 5e-3 as in the paper's implementation
  details (the authors' code uses 0.0051). The sums are over the D x D entries, not means, as
  in eq. (1) and the code. With `axis_name` C is over the global batch and the loss is the
  same on every device; `lax.pmean` the per-device gradients.

  Args:
    z1: (n, D) embeddings of the first views (bfloat16 is computed in float32).
    z2: (n, D) embeddings of the second views.
    lambda_offdiag: lambda, the weight of the off-diagonal term.
    eps: epsilon of the standardisation (see `barlow_twins_correlation`).
    axis_name: mesh axis (or tuple of axes) of a sharded batch, or None.

  Returns:
    Scalar float32 loss.
  """
  weight = _common.check_scalar("barlow_twins_loss", "lambda_offdiag", lambda_offdiag)
  terms = barlow_twins_terms(z1, z2, eps=eps, axis_name=axis_name)
  return terms["on_diagonal"] + weight * terms["off_diagonal"]
