"""Row-wise log-sum-exp of a similarity matrix, dense or in blocks.

Every softmax contrastive loss here (NT-Xent, InfoNCE, CLIP) is, per anchor row i,

    loss_i = logsumexp_j(q_i . k_j  over the allowed columns j) - q_i . k_pos(i)

so the only part that needs all N columns is the log-sum-exp. `row_logsumexp` computes it
either densely (one (n, M) matrix) or by walking over (block x block) tiles with a running
maximum and running sum (the online softmax of flash attention). The blockwise form has a
`jax.custom_vjp` whose backward pass recomputes each tile's softmax from the saved per-row
log-sum-exp instead of storing tiles, so forward and backward need O(block^2 + (n + M) D)
memory. Being a custom_vjp, it supports reverse-mode differentiation (grad, vjp), not jvp.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array

# Stands for -inf in masked logits: exp(_MASKED - m) stays finite (no -inf - (-inf) = NaN in a
# running maximum that has only seen masked columns), and jnp.where drops those terms anyway.
_MASKED = -1e30


def row_logsumexp(rows: Array, cols: Array, *, self_index: Array | None = None,
                  block_size: int | None = None) -> Array:
  """lse_i = log sum_{j != self_index[i]} exp(rows_i . cols_j).

  Args:
    rows: (n, D) float32 anchors, already scaled (by 1/temperature or logit_scale).
    cols: (M, D) float32 candidates.
    self_index: optional (n,) int, the column that is row i itself and must be left out
      (NT-Xent's k != i); a value outside [0, M) leaves nothing out.
    block_size: None for the dense (n, M) matrix; an int for tiles of at most
      (block_size x block_size). Neither n nor M needs to be a multiple of it: padding rows
      are dropped and padding columns are masked out.

  Returns:
    (n,) float32 log-sum-exp per row.
  """
  if block_size is None:
    return _dense(rows, cols, self_index)
  if self_index is None:
    self_index = jnp.full(rows.shape[:1], -1, jnp.int32)
  rows, cols, self_index = _vary_together(rows, cols, self_index.astype(jnp.int32))
  return _blockwise(rows, cols, self_index, block_size)


def _vary_together(*arrays: Array) -> tuple[Array, ...]:
  """Adds to each array a zero that varies over every mesh axis any of `arrays` varies over.

  Inside `jax.shard_map` a custom_vjp's backward must return, for each input, a cotangent of
  the same device-variance; when, say, device-varying rows meet replicated columns, the
  columns' cotangent varies. Adding the zero makes every input vary alike, and JAX's own
  transpose of that broadcast (a psum) then brings the cotangent back to the replicated input.
  Outside shard_map it is a no-op the compiler folds away.
  """
  zero = sum(jnp.zeros_like(a.reshape(-1)[:1], jnp.float32) for a in arrays)  # (1,)
  return tuple(a + zero.astype(a.dtype).reshape((1,) * a.ndim) for a in arrays)


def _dense(rows: Array, cols: Array, self_index: Array | None) -> Array:
  logits = rows @ cols.T  # (n, D) . (D, M) -> (n, M)
  if self_index is not None:
    is_self = jnp.arange(cols.shape[0])[None, :] == self_index[:, None]  # (n, M)
    logits = jnp.where(is_self, _MASKED, logits)
  return jax.nn.logsumexp(logits, axis=1)


def _pad_to_blocks(x: Array, block: int, fill=0) -> Array:
  """(L, ...) -> (ceil(L / block), block, ...), padded at the end with `fill`."""
  num_blocks = math.ceil(x.shape[0] / block)
  pad = num_blocks * block - x.shape[0]
  x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1), constant_values=fill)
  return x.reshape((num_blocks, block) + x.shape[1:])


def _tiles(rows: Array, cols: Array, self_index: Array, block: int):
  """Pads rows and columns to whole tiles: (R, br, D), (R, br), (C, bc, D), (C, bc)."""
  n, num_cols = rows.shape[0], cols.shape[0]
  # A block larger than the matrix would only add padding.
  row_block, col_block = min(block, n), min(block, num_cols)
  row_tiles = _pad_to_blocks(rows, row_block)  # (n, D) -> (R, br, D)
  self_tiles = _pad_to_blocks(self_index.astype(jnp.int32), row_block, fill=-1)  # (R, br)
  col_tiles = _pad_to_blocks(cols, col_block)  # (M, D) -> (C, bc, D)
  col_ids = jnp.arange(col_tiles.shape[0] * col_block, dtype=jnp.int32).reshape(
      -1, col_block)  # (C, bc); ids >= M are padding
  return row_tiles, self_tiles, col_tiles, col_ids


def _zeros(shape_like: Array, *inputs: Array) -> Array:
  """Zeros shaped like `shape_like` that vary over every mesh axis that any of `inputs` does.

  Under `jax.shard_map` a scan carry must keep its type, and a carry that starts as a constant
  but is updated from device-varying data would change type after one step.
  """
  zeros = jnp.zeros_like(shape_like)
  for x in inputs:
    zeros = zeros + jnp.zeros_like(x.reshape(-1)[:1]).reshape((1,) * zeros.ndim)
  return zeros


def _masked_logits(q, k, self_ids, col_ids, num_cols):
  """One tile of logits with padding and self columns at _MASKED, and the keep mask."""
  logits = q @ k.T  # (br, D) . (D, bc) -> (br, bc)
  keep = (col_ids[None, :] < num_cols) & (col_ids[None, :] != self_ids[:, None])  # (br, bc)
  return jnp.where(keep, logits, _MASKED), keep


def _blockwise_forward(rows, cols, self_index, block):
  """Online log-sum-exp: per row block, a running (max, sum) over the column tiles."""
  n, num_cols = rows.shape[0], cols.shape[0]
  row_tiles, self_tiles, col_tiles, col_ids = _tiles(rows, cols, self_index, block)

  def row_block(xs):
    q, self_ids = xs  # (br, D), (br,)

    def tile(carry, tile_xs):
      running_max, running_sum = carry
      k, ids = tile_xs  # (bc, D), (bc,)
      logits, keep = _masked_logits(q, k, self_ids, ids, num_cols)
      new_max = jnp.maximum(running_max, jnp.max(logits, axis=1))
      tile_sum = jnp.sum(jnp.where(keep, jnp.exp(logits - new_max[:, None]), 0.0), axis=1)
      return (new_max, running_sum * jnp.exp(running_max - new_max) + tile_sum), None

    zeros = _zeros(q[:, 0], q, col_tiles)  # (br,)
    start = (zeros + _MASKED, zeros)
    (row_max, row_sum), _ = lax.scan(tile, start, (col_tiles, col_ids))
    return row_max + jnp.log(row_sum)  # (br,)

  return lax.map(row_block, (row_tiles, self_tiles)).reshape(-1)[:n]  # (R, br) -> (n,)


def _blockwise_backward(rows, cols, self_index, lse, lse_grad, block):
  """d lse_i / d logits_ij = softmax_ij = exp(logits_ij - lse_i), recomputed tile by tile:

      d rows_i = sum_j g_i p_ij cols_j,     d cols_j = sum_i g_i p_ij rows_i.
  """
  n, num_cols = rows.shape[0], cols.shape[0]
  row_tiles, self_tiles, col_tiles, col_ids = _tiles(rows, cols, self_index, block)
  lse_tiles = _pad_to_blocks(lse, row_tiles.shape[1])  # (R, br)
  # Padding rows get a zero cotangent, so they add nothing to d cols.
  grad_tiles = _pad_to_blocks(lse_grad, row_tiles.shape[1])  # (R, br)

  def row_block(cols_grad, xs):
    q, self_ids, row_lse, row_grad = xs  # (br, D), (br,), (br,), (br,)

    def tile(q_grad, tile_xs):
      k, ids = tile_xs  # (bc, D), (bc,)
      logits, keep = _masked_logits(q, k, self_ids, ids, num_cols)
      weights = jnp.where(keep, jnp.exp(logits - row_lse[:, None]), 0.0) * row_grad[:, None]
      return q_grad + weights @ k, weights.T @ q  # (br, bc).(bc, D), (bc, br).(br, D)

    q_grad, k_grads = lax.scan(tile, _zeros(q, q, row_grad, col_tiles), (col_tiles, col_ids))
    return cols_grad + k_grads, q_grad  # (C, bc, D), (br, D)

  cols_grad, rows_grad = lax.scan(row_block, _zeros(col_tiles, col_tiles, row_tiles, grad_tiles),
                                  (row_tiles, self_tiles, lse_tiles, grad_tiles))
  return rows_grad.reshape(-1, rows.shape[1])[:n], cols_grad.reshape(-1, cols.shape[1])[:num_cols]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _blockwise(rows: Array, cols: Array, self_index: Array, block: int) -> Array:
  return _blockwise_forward(rows, cols, self_index, block)


def _blockwise_fwd(rows, cols, self_index, block):
  lse = _blockwise_forward(rows, cols, self_index, block)
  # Residuals are O((n + M) D): the tiles are recomputed in the backward pass.
  return lse, (rows, cols, self_index, lse)


def _blockwise_bwd(block, residuals, lse_grad):
  rows, cols, self_index, lse = residuals
  rows_grad, cols_grad = _blockwise_backward(rows, cols, self_index, lse, lse_grad, block)
  return rows_grad, cols_grad, None


_blockwise.defvjp(_blockwise_fwd, _blockwise_bwd)
