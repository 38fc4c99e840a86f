"""MoCo v3's symmetrised contrastive loss, with negatives from every device."""

from __future__ import annotations

import jax
from jax import lax

from ssljax.losses import _common
from ssljax.losses._common import AxisName
from ssljax.losses.contrastive import info_nce

Array = jax.Array


def moco_v3_loss(q1: Array, q2: Array, k1: Array, k2: Array, *, temperature: float | Array = 0.2,
                 axis_name: AxisName | None = None, block_size: int | None = None) -> Array:
  """ctr(q1, k2) + ctr(q2, k1): each view's query against the momentum encoder's other view.

  Chen, Xie, He 2021, "An Empirical Study of Training Self-Supervised Vision Transformers",
  arXiv:2104.02057, Section 3 (eq. 1) and Algorithm 1:

      ctr(q, k) = 2 tau * ( -1/N sum_i log( exp(q_i . k_i / tau) / sum_j exp(q_i . k_j / tau) ) )

  with q and k L2-normalised, q from the base encoder and its predictor, k from the momentum
  encoder, the positive of query i the key of the same image (other view) and the N - 1 other
  keys of the batch its negatives. Keys are constants (`lax.stop_gradient`): the momentum
  encoder learns only through its moving average.

  Choices. `ctr` is `info_nce` (ssljax.losses.contrastive) times 2 tau, as in Algorithm 1; the
  factor cancels the 1/tau that the logits put into the gradient's scale. tau = 0.2 is the
  paper's value for ViT (the authors' code's default, used for ResNet-50, is 1.0). With
  `axis_name` the keys of every device are gathered, so the negatives are the global batch's
  and the positive sits at the example's global index, as in the authors' code
  (`concat_all_gather`, labels offset by the rank).

  Args:
    q1: (n, D) queries of the first views (bfloat16 is computed in float32).
    q2: (n, D) queries of the second views.
    k1: (n, D) momentum-encoder keys of the first views; row i pairs with q2's row i.
    k2: (n, D) momentum-encoder keys of the second views; row i pairs with q1's row i.
    temperature: tau > 0, a float or a shape-() array.
    axis_name: mesh axis (or tuple of axes) of a sharded batch: the loss is then the global
      one on every device; `lax.pmean` the per-device gradients.
    block_size: None for dense (n, N) logits; an int for `info_nce`'s blockwise log-sum-exp.

  Returns:
    Scalar float32 loss.
  """
  fn = "moco_v3_loss"
  names = ("q1", "q2", "k1", "k2")
  q1, q2, k1, k2 = (_common.check_features(fn, name, x)
                    for name, x in zip(names, (q1, q2, k1, k2)))
  _common.check_same_shape(fn, names, (q1, q2, k1, k2))
  tau = _common.check_scalar(fn, "temperature", temperature, positive=True)

  def ctr(queries: Array, keys: Array) -> Array:
    keys = lax.stop_gradient(keys)
    return 2.0 * tau * info_nce(queries, keys, temperature=tau, axis_name=axis_name,
                                block_size=block_size)

  return ctr(q1, k2) + ctr(q2, k1)
