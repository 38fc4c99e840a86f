"""SwAV: codes from Sinkhorn-Knopp over the global batch, and the swapped prediction loss."""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
from jax import lax

from ssljax.losses import _common
from ssljax.losses._common import AxisName
from ssljax.losses._crops import sum_over_other_crops

Array = jax.Array

# Sums are floored here before dividing: a prototype (or an example) whose every exp()
# underflowed to 0 keeps codes of 0 instead of becoming 0 / 0 = NaN.
_TINY = float(jnp.finfo(jnp.float32).tiny)


def _global_max(x: Array, axis_name: AxisName | None) -> Array:
  if axis_name is None:
    return x
  return lax.pmax(x, axis_name)


def _check_count(fn: str, name: str, value, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
    raise ValueError(f"{fn}: {name} must be an int >= {minimum}, got {value!r}")
  return int(value)


def sinkhorn(scores: Array, *, epsilon: float | Array = 0.05, iterations: int = 3,
             axis_name: AxisName | None = None) -> Array:
  """SwAV's codes: the scores' soft assignment to prototypes, equipartitioned over the batch.

  Caron et al. 2020, "Unsupervised Learning of Visual Features by Contrasting Cluster
  Assignments", arXiv:2006.09882, Section 3.1 (the transportation polytope and its solution
  Q* = Diag(u) exp(C^T Z / eps) Diag(v)) and the Sinkhorn-Knopp pseudo-code of Appendix A.1
  (`distributed_sinkhorn` in the authors' code). With B the global batch and K prototypes:

      Q = exp(scores / eps)^T                         (K, B)
      Q = Q / sum(Q)
      repeat `iterations` times:
        Q = Q / (K * row sums)      each prototype gets 1/K of the mass, over the global batch
        Q = Q / (B * column sums)   each example gets 1/B of the mass
      codes = B * Q^T                                 (B, K), each example's codes sum to 1

  Across devices (`axis_name` set) the total and the row sums are psum-ed over the devices,
  so the codes equal the codes of one device holding the whole batch; the column sums are an
  example's own and stay local. The paper's eps = 0.05 and 3 iterations are the defaults.

  Numerics. exp(scores / eps) overflows float32 once a score exceeds 88 eps (4.4 at eps
  0.05), so the scores are first shifted by their global maximum (a pmax over the devices):
  that multiplies Q by one constant, which the first division by sum(Q) removes exactly, and
  makes the largest entry exp(0) = 1. Row and column sums are floored at the smallest normal
  float32, so a prototype or an example whose every entry underflowed (scores more than
  about 87 eps below the maximum) gets codes of 0 rather than NaN; with cosine scores, as
  SwAV's normalised prototypes give, the spread is at most 2 and nothing underflows.

  No gradient flows through the codes (`lax.stop_gradient`), as in the paper.

  Args:
    scores: (n, K) scores of one crop's embeddings against the prototypes (bfloat16 is
      computed in float32).
    epsilon: eps > 0, the entropic regularisation.
    iterations: number of Sinkhorn-Knopp iterations, >= 1.
    axis_name: mesh axis (or tuple of axes) of a sharded batch, or None.

  Returns:
    (n, K) float32 codes, each row summing to 1.
  """
  fn = "sinkhorn"
  scores = lax.stop_gradient(_common.check_features(fn, "scores", scores))
  inv_epsilon = 1.0 / _common.check_scalar(fn, "epsilon", epsilon, positive=True)
  iterations = _check_count(fn, "iterations", iterations, 1)
  n, num_prototypes = scores.shape
  batch = n * _common.axis_size(axis_name)

  shifted = scores - _global_max(jnp.max(scores), axis_name)
  codes = jnp.exp(shifted * inv_epsilon).T  # (n, K) -> (K, n)
  codes = codes / _common.global_sum(jnp.sum(codes), axis_name)

  def iteration(_, codes):
    row_sums = _common.global_sum(jnp.sum(codes, axis=1, keepdims=True), axis_name)  # (K, 1)
    codes = codes / (num_prototypes * jnp.maximum(row_sums, _TINY))
    column_sums = jnp.sum(codes, axis=0, keepdims=True)  # (1, n)
    return codes / (batch * jnp.maximum(column_sums, _TINY))

  codes = lax.fori_loop(0, iterations, iteration, codes)
  return lax.stop_gradient(batch * codes.T)  # (K, n) -> (n, K)


def swav_loss(scores: Array, *, num_assigned: int = 2, temperature: float | Array = 0.1,
              epsilon: float | Array = 0.05, iterations: int = 3,
              axis_name: AxisName | None = None) -> Array:
  """SwAV's swapped prediction: every crop predicts the codes of the other crops' views.

  Caron et al. 2020, arXiv:2006.09882, Section 3.1 (eqs. 1-2) and multi-crop, Section 3.2:

      p_v = softmax(scores_v / tau)                       the prediction of crop v
      q_a = sinkhorn(scores_a)                            the codes of an assigned crop a
      l_a = mean over crops v != a and the batch of -sum_k q_a,k log p_v,k
      loss = mean over the assigned crops a of l_a

  Choices, following the authors' code (`crops_for_assign`, `nmb_crops`): codes are computed
  only for the first `num_assigned` crops (the two global crops); the loss of an assigned
  crop is the mean over the V - 1 other crops and the batch; the assigned crops' losses are
  averaged. Codes get no gradient. tau = 0.1, eps = 0.05 and 3 iterations are the paper's.
  The paper's queue of embeddings from earlier batches (which enlarges the batch Sinkhorn
  sees when it is small) is left out: the codes are over the current global batch only.

  Args:
    scores: (V, n, K) scores of every crop against the prototypes, the first `num_assigned`
      crops those whose codes are computed (bfloat16 is computed in float32); crops of
      different sizes come from separate forward passes, stacked here.
    num_assigned: how many of the first crops get codes, 1 <= num_assigned <= V.
    temperature: tau > 0 of the predictions' softmax.
    epsilon: eps > 0 of `sinkhorn`.
    iterations: Sinkhorn-Knopp iterations, >= 1.
    axis_name: mesh axis (or tuple of axes) of a sharded batch: the codes and the mean are
      over the global batch, the loss the same on every device; `lax.pmean` the per-device
      gradients.

  Returns:
    Scalar float32 loss.
  """
  fn = "swav_loss"
  scores = _common.check_features(fn, "scores", scores, ndim=3)
  num_crops, n, _ = scores.shape
  if num_crops < 2:
    raise ValueError(f"{fn}: scores needs at least 2 crops (V, n, K), got {tuple(scores.shape)}")
  num_assigned = _check_count(fn, "num_assigned", num_assigned, 1)
  if num_assigned > num_crops:
    raise ValueError(f"{fn}: num_assigned must be <= the V = {num_crops} crops of scores, got "
                     f"{num_assigned}")
  inv_tau = 1.0 / _common.check_scalar(fn, "temperature", temperature, positive=True)

  codes = jnp.stack([
      sinkhorn(scores[a], epsilon=epsilon, iterations=iterations, axis_name=axis_name)
      for a in range(num_assigned)])  # (A, n, K)
  log_probs = jax.nn.log_softmax(scores * inv_tau, axis=-1)  # (V, n, K)
  other_crops = sum_over_other_crops(log_probs, num_assigned)  # (A, n, K)
  local_sum = -jnp.sum(codes * other_crops)
  count = num_assigned * (num_crops - 1) * n * _common.axis_size(axis_name)
  return _common.global_sum(local_sum, axis_name) / count
