"""SigLIP's pairwise sigmoid loss, with the text features passed around a ring of devices."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from ssljax.losses import _common
from ssljax.losses._common import AxisName

Array = jax.Array


def siglip_loss(image_features: Array, text_features: Array, logit_scale: float | Array,
                logit_bias: float | Array, *, axis_name: AxisName | None = None) -> Array:
  """Sigmoid loss for language-image pre-training (SigLIP).

  Zhai et al. 2023, "Sigmoid Loss for Language Image Pre-Training", arXiv:2303.15343, eq. (1)
  and Algorithm 1. With L2-normalised features x_i, y_j (normalised here), scale t (already
  exponentiated) and bias b, every image-text pair is an independent binary problem:

      loss = -1/N sum_i sum_j log sigmoid( z_ij * (t * x_i . y_j + b) ),
      z_ij = 1 if i == j else -1,

  summed over all N^2 pairs and divided by the number of images N, as in the paper.

  Across devices (`axis_name` set) the text features travel around the ring with
  `lax.ppermute` (the paper's "chunked" implementation, Section 3.3): at each of the
  axis_size steps a device scores its n images against one device's n texts, so no device
  ever holds more than an (n, n) block of logits, and the backward pass recomputes each block
  (`jax.checkpoint`). The result is the global loss, sum over all global pairs / global N, the
  same number on every device; take gradients per device and `lax.pmean` them, as for the
  softmax losses (see `ssljax.losses.contrastive`).

  Args:
    image_features: (n, D) image embeddings (bfloat16 is computed in float32).
    text_features: (n, D) text embeddings; row i describes image i.
    logit_scale: t, a float or a shape-() array (the paper learns t' with t = exp(t')).
    logit_bias: b, a float or a shape-() array (the paper starts it at -10).
    axis_name: mesh axis (or tuple of axes) of a sharded batch, or None.

  Returns:
    Scalar float32 loss.
  """
  fn = "siglip_loss"
  images = _common.check_features(fn, "image_features", image_features)
  texts = _common.check_features(fn, "text_features", text_features)
  _common.check_same_shape(fn, ("image_features", "text_features"), (images, texts))
  scale = _common.check_scalar(fn, "logit_scale", logit_scale)
  bias = _common.check_scalar(fn, "logit_bias", logit_bias)

  images, texts = _common.l2_normalize(images), _common.l2_normalize(texts)
  n = images.shape[0]

  @jax.checkpoint  # keep only the (n, D) text block per step, never the (n, n) logits
  def block_loss(text_block: Array, labels: Array) -> Array:
    logits = scale * (images @ text_block.T) + bias  # (n, D) . (D, n) -> (n, n)
    return -jnp.sum(jax.nn.log_sigmoid(labels * logits))

  # Only the device's own texts hold its positives (the diagonal); every other block is all
  # negatives.
  local_sum = block_loss(texts, 2.0 * jnp.eye(n) - 1.0)
  num_devices = _common.axis_size(axis_name)
  if num_devices > 1:
    ring = [(i, (i + 1) % num_devices) for i in range(num_devices)]
    negatives = -jnp.ones((n, n))

    def step(text_block, _):
      text_block = lax.ppermute(text_block, axis_name, ring)  # the left neighbour's texts
      return text_block, block_loss(text_block, negatives)

    _, sums = lax.scan(step, texts, length=num_devices - 1)
    local_sum = local_sum + jnp.sum(sums)
  return _common.global_sum(local_sum, axis_name) / (n * num_devices)
