"""Softmax contrastive losses: SimCLR's NT-Xent, InfoNCE and CLIP's symmetric loss.

All three share one shape of computation. Each device holds n local rows; with `axis_name` set
it gathers the N = n * devices columns with `lax.all_gather(..., tiled=True)`, scores its local
rows against the global columns (memory O(n x N), or O(block^2) with `block_size`), finds each
row's positive among its own local rows, and sums its anchors' losses. The returned loss is

    psum over devices of (sum of local anchors' losses) / (global number of anchors),

the global mean, the same number on every device.

Gradients across devices. Take gradients per device as usual and `lax.pmean` them over
`axis_name`; for replicated parameters the result equals the single-device gradient on the
global batch (tests/test_losses_sharded.py proves it under `jax.shard_map` and `jax.pmap`).
Under `jax.shard_map` (check_vma=True, the default) the gradient with respect to a device's own
embeddings is already exactly its slice of the global gradient, and the gradient with respect to
replicated parameters is already the global one, so the pmean leaves it unchanged. Under
`jax.pmap` (or shard_map with check_vma=False) every per-device gradient comes out
`axis_size` times its share, which the pmean divides back. No hand-written backward is needed:
the transpose of all_gather is a reduce-scatter that brings every device's contribution to the
owner of each embedding.

Matrix products use JAX's default matmul precision; set `jax_default_matmul_precision` to
"highest" for float32-exact similarities on TPU and on GPUs with TF32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ssljax.losses import _common
from ssljax.losses._common import AxisName
from ssljax.losses._logsumexp import row_logsumexp

Array = jax.Array


def nt_xent(z1: Array, z2: Array, *, temperature: float | Array,
            axis_name: AxisName | None = None, block_size: int | None = None) -> Array:
  """SimCLR's normalised temperature-scaled cross-entropy (NT-Xent).

  Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations",
  arXiv:2002.05709, eq. (1). The 2N views are [z1; z2]; view i's positive is its pair
  (z1_k <-> z2_k) and the other 2N - 2 views are its negatives:

      l(i, j) = -log( exp(sim(z_i, z_j) / tau) / sum_{k != i} exp(sim(z_i, z_k) / tau) )
      loss    = 1 / (2N) * sum_k [ l(2k-1, 2k) + l(2k, 2k-1) ]

  with sim(u, v) = u.v / (|u| |v|). The inputs are L2-normalised here (x / max(|x|, 1e-6), so
  zero vectors give finite values and gradients); pass raw projections.

  Args:
    z1: (n, D) projections of the first views (bfloat16 is computed in float32).
    z2: (n, D) projections of the second views; row k pairs with z1's row k.
    temperature: tau > 0, a float or a shape-() array.
    axis_name: mesh axis (or tuple of axes) the batch is sharded over, inside `jax.shard_map`
      or `jax.pmap`; N is then the global batch and every device returns the same global loss.
      See the module docstring for what to do with gradients.
    block_size: None builds the (2n, 2N) similarity matrix; an int walks over tiles of at most
      block_size x block_size with a running log-sum-exp, recomputing them in the backward
      pass, so memory is O(block_size^2) beyond the embeddings themselves. Same value and
      gradient as dense; differentiable in reverse mode (grad, vjp), not forward mode (jvp).

  Returns:
    Scalar float32 loss, the mean over the 2N anchors.
  """
  fn = "nt_xent"
  z1 = _common.check_features(fn, "z1", z1)
  z2 = _common.check_features(fn, "z2", z2)
  _common.check_same_shape(fn, ("z1", "z2"), (z1, z2))
  inv_tau = 1.0 / _common.check_scalar(fn, "temperature", temperature, positive=True)
  block_size = _common.check_block_size(fn, block_size)

  n = z1.shape[0]
  z1, z2 = _common.l2_normalize(z1), _common.l2_normalize(z2)
  all1 = _common.gather_rows(z1, axis_name)  # (n, D) -> (N, D)
  all2 = _common.gather_rows(z2, axis_name)
  num_pairs = all1.shape[0]  # N
  # Global view order is [z1 of every device; z2 of every device]; a local row's own column
  # (left out of its denominator) is found from the device's offset.
  local_ids = _common.row_offset(n, axis_name) + jnp.arange(n)
  self_index = jnp.concatenate([local_ids, num_pairs + local_ids])  # (2n,)
  anchors = jnp.concatenate([z1, z2]) * inv_tau  # (2n, D)
  views = jnp.concatenate([all1, all2])  # (2N, D)
  lse = row_logsumexp(anchors, views, self_index=self_index, block_size=block_size)  # (2n,)
  # Both directions of a pair share one positive similarity; pairs never straddle devices.
  positives = jnp.sum(z1 * z2, axis=1) * inv_tau  # (n,)
  local_sum = jnp.sum(lse) - 2.0 * jnp.sum(positives)
  return _common.global_sum(local_sum, axis_name) / (2 * num_pairs)


def info_nce(queries: Array, keys: Array, *, temperature: float | Array,
             axis_name: AxisName | None = None, block_size: int | None = None) -> Array:
  """One-directional InfoNCE: key i is query i's positive, every other key a negative.

  van den Oord et al. 2018, "Representation Learning with Contrastive Predictive Coding",
  arXiv:1807.03748, eq. (4), with cosine similarity over a temperature as the critic:

      loss = -1/N sum_i log( exp(q_i . k_i / tau) / sum_j exp(q_i . k_j / tau) )

  The denominator runs over all N keys, the positive included. Queries and keys are
  L2-normalised here, like `nt_xent` (x / max(|x|, 1e-6)), so the logits are always cosines
  over tau, as in MoCo and CPC-style image models; pass raw projections.

  Args:
    queries: (n, D) anchors (bfloat16 is computed in float32).
    keys: (n, D) candidates; row i is the positive of query i.
    temperature: tau > 0, a float or a shape-() array.
    axis_name: mesh axis (or tuple of axes) of a sharded batch; keys are gathered from every
      device and the loss is the global mean on every device (see the module docstring).
    block_size: None for the dense (n, N) logits; an int for a blockwise log-sum-exp with
      O(block_size^2) working memory.

  Returns:
    Scalar float32 loss, the mean over the N queries.
  """
  fn = "info_nce"
  queries = _common.check_features(fn, "queries", queries)
  keys = _common.check_features(fn, "keys", keys)
  _common.check_same_shape(fn, ("queries", "keys"), (queries, keys))
  inv_tau = 1.0 / _common.check_scalar(fn, "temperature", temperature, positive=True)
  block_size = _common.check_block_size(fn, block_size)

  queries, keys = _common.l2_normalize(queries), _common.l2_normalize(keys)
  all_keys = _common.gather_rows(keys, axis_name)  # (n, D) -> (N, D)
  lse = row_logsumexp(queries * inv_tau, all_keys, block_size=block_size)  # (n,)
  positives = jnp.sum(queries * keys, axis=1) * inv_tau  # (n,)
  local_sum = jnp.sum(lse - positives)
  return _common.global_sum(local_sum, axis_name) / all_keys.shape[0]


def clip_loss(image_features: Array, text_features: Array, logit_scale: float | Array, *,
              axis_name: AxisName | None = None, block_size: int | None = None) -> Array:
  """CLIP's symmetric cross-entropy over image-text similarities.

  Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
  Supervision", arXiv:2103.00020, Figure 3. With L2-normalised features I, T (normalised here)
  and s = logit_scale (already exponentiated: pass exp(t) of a learnable t),

      logits = s * I T^T                      (N, N), pair i is the diagonal
      loss   = ( CE(logits, rows -> i) + CE(logits^T, rows -> i) ) / 2

  where each CE is the mean softmax cross-entropy over N rows: the image-to-text term
  classifies each image among all texts, the text-to-image term each text among all images.

  Args:
    image_features: (n, D) image embeddings (bfloat16 is computed in float32).
    text_features: (n, D) text embeddings; row i describes image i.
    logit_scale: the multiplier s > 0 of the cosines, a float or a shape-() array; it gets a
      gradient when it is an array you differentiate.
    axis_name: mesh axis (or tuple of axes) of a sharded batch; both modalities are gathered
      and each device scores its own images against all texts and its own texts against all
      images. The loss is the global one on every device (see the module docstring).
    block_size: None for dense (n, N) logits; an int for a blockwise log-sum-exp with
      O(block_size^2) working memory.

  Returns:
    Scalar float32 loss.
  """
  fn = "clip_loss"
  images = _common.check_features(fn, "image_features", image_features)
  texts = _common.check_features(fn, "text_features", text_features)
  _common.check_same_shape(fn, ("image_features", "text_features"), (images, texts))
  scale = _common.check_scalar(fn, "logit_scale", logit_scale)
  block_size = _common.check_block_size(fn, block_size)

  images, texts = _common.l2_normalize(images), _common.l2_normalize(texts)
  all_images = _common.gather_rows(images, axis_name)  # (n, D) -> (N, D)
  all_texts = _common.gather_rows(texts, axis_name)
  image_to_text = row_logsumexp(scale * images, all_texts, block_size=block_size)  # (n,)
  text_to_image = row_logsumexp(scale * texts, all_images, block_size=block_size)  # (n,)
  positives = scale * jnp.sum(images * texts, axis=1)  # (n,)
  local_sum = jnp.sum(image_to_text) + jnp.sum(text_to_image) - 2.0 * jnp.sum(positives)
  return _common.global_sum(local_sum, axis_name) / (2 * all_images.shape[0])
