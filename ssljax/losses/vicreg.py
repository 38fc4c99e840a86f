"""VICReg: variance-invariance-covariance regularisation, with global-batch statistics."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ssljax.losses import _common
from ssljax.losses._common import AxisName

Array = jax.Array


def vicreg_terms(z1: Array, z2: Array, *, eps: float = 1e-4,
                 axis_name: AxisName | None = None) -> dict[str, Array]:
  """The three unweighted VICReg terms, for logging; `vicreg_loss` is their weighted sum.

  Bardes, Ponce, LeCun 2022, "VICReg", arXiv:2105.04906, Section 3.1 (eqs. 1-6). For a batch
  Z = [z_1..z_N] of d-dimensional embeddings, z^j the j-th dimension over the batch:

      invariance  s(Z, Z') = 1/(N d) sum_i ||z_i - z'_i||^2
      variance    v(Z) = 1/d sum_j max(0, gamma - S(z^j, eps)),  S(y, eps) = sqrt(Var(y) + eps),
                  gamma = 1
      covariance  c(Z) = 1/d sum_{i != j} C(Z)_ij^2,
                  C(Z) = 1/(N-1) sum_i (z_i - zbar)(z_i - zbar)^T
      returned:   {"invariance": s, "variance": v(Z) + v(Z'), "covariance": c(Z) + c(Z')}

  Choices, following the paper's eq. (6), l = lambda s + mu [v(Z) + v(Z')] + nu [c(Z) + c(Z')]:
  the two branches' variance and covariance terms are *summed*, not averaged (the authors'
  released code halves the variance sum; the paper's equation does not). Var is the unbiased
  (N - 1) variance, the diagonal of C(Z). The invariance term is the mean squared error over
  batch *and* dimensions, as in the paper's Algorithm 1 (`mse_loss`) and the weights 25/25/1
  that go with it; the paper's eq. (5) writes the sum over dimensions, which is d times this.

  Across devices (`axis_name` set) the means and covariances are over the global batch: the
  devices psum their partial sums (first the column sums for the mean, then the centred
  d x d products), so the terms equal the single-device terms on the concatenated batch and
  are the same on every device.

  Args:
    z1: (n, d) embeddings of the first views (bfloat16 is computed in float32).
    z2: (n, d) embeddings of the second views; row i pairs with z1's row i.
    eps: epsilon inside the square root of the variance.
    axis_name: mesh axis (or tuple of axes) of a sharded batch, or None.

  Returns:
    Dict of scalar float32 terms "invariance", "variance" and "covariance".
  """
  fn = "vicreg_terms"
  z1 = _common.check_features(fn, "z1", z1)
  z2 = _common.check_features(fn, "z2", z2)
  _common.check_same_shape(fn, ("z1", "z2"), (z1, z2))
  n, dim = z1.shape
  count = n * _common.axis_size(axis_name)
  if count < 2:
    raise ValueError(f"{fn}: the (global) batch needs at least 2 rows for a variance, got z1 "
                     f"of shape {tuple(z1.shape)}")

  def global_mean_over_batch(x: Array) -> Array:
    return _common.global_sum(jnp.sum(x, axis=0), axis_name) / count

  def covariance(z: Array) -> Array:
    centred = z - global_mean_over_batch(z)  # (n, d)
    return _common.global_sum(centred.T @ centred, axis_name) / (count - 1)  # (d, n).(n, d)

  def variance_term(cov: Array) -> Array:
    std = jnp.sqrt(jnp.diagonal(cov) + eps)
    return jnp.mean(jax.nn.relu(1.0 - std))

  def covariance_term(cov: Array) -> Array:
    off_diagonal = cov - jnp.diag(jnp.diagonal(cov))
    return jnp.sum(jnp.square(off_diagonal)) / dim

  cov1, cov2 = covariance(z1), covariance(z2)
  invariance = _common.global_sum(jnp.sum(jnp.square(z1 - z2)), axis_name) / (count * dim)
  return {
      "invariance": invariance,
      "variance": variance_term(cov1) + variance_term(cov2),
      "covariance": covariance_term(cov1) + covariance_term(cov2),
  }


def vicreg_loss(z1: Array, z2: Array, *, sim_weight: float = 25.0, var_weight: float = 25.0,
                cov_weight: float = 1.0, eps: float = 1e-4,
                axis_name: AxisName | None = None) -> Array:
  """VICReg loss, arXiv:2105.04906 eq. (6):

      l = sim_weight * s(Z, Z') + var_weight * [v(Z) + v(Z')] + cov_weight * [c(Z) + c(Z')]

  with the terms of `vicreg_terms` (see there for each definition and the choices made);
  defaults lambda = mu = 25, nu = 1 as in the paper. With `axis_name` the statistics are over
  the global batch and the loss is the same on every device; `lax.pmean` the per-device
  gradients.

  Returns:
    Scalar float32 loss.
  """
  terms = vicreg_terms(z1, z2, eps=eps, axis_name=axis_name)
  return (sim_weight * terms["invariance"] + var_weight * terms["variance"]
          + cov_weight * terms["covariance"])
