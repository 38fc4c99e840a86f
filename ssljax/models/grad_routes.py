"""Two array operations whose gradients take a faster route than the one autodiff picks.

Both compute exactly the same values as the plain expressions (tests/test_grad_routes.py checks
values and gradients against them); only the backward pass is written out, because XLA:CPU runs
autodiff's version of it several times slower. Measured on 2 CPU cores with jax 0.10.2, in the
train step of `configs/bert.py` (48 pairs of 128 tokens; docs/performance.md):

* `broadcast_over_batch`: the gradient of a (1, ...) array broadcast to (B, ...) is a sum over
  the leading axis. XLA:CPU hands that reduction to a library fusion that took 25 ms per
  attention layer for the relative-position bias, (48, 4, 128, 128) -> (4, 128, 128); the same
  sum as a matrix-vector product with a vector of ones took under 1 ms.
* `tied_logits`: the gradient of hidden @ embedding.T with respect to the embedding is
  g.T @ hidden, for which XLA transposed the whole (positions, V) logit gradient in memory
  first (56 ms of a 680 ms step at V = 8,192). Written as (hidden.T @ g).T, only the small (D, V)
  result is transposed.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

Array = jax.Array


def broadcast_over_batch(x: Array, batch: int, like: Array | None = None) -> Array:
  """(1, ...) -> (batch, ...), the same rows repeated; the gradient sums over the batch.

  Inside `shard_map`, pass as `like` an array that differs between devices (the activations):
  `x` is first marked as differing along the same mesh axes, so that its custom gradient may
  differ there too and autodiff adds up the devices' gradients as it would for the plain
  broadcast."""
  return _broadcast_over_batch(_vary_like(x, like), batch)


def tied_logits(hidden: Array, embedding: Array) -> Array:
  """hidden @ embedding.T: (..., D) x (V, D) -> (..., V), in the operands' common dtype.
  Inside `shard_map` the embedding's gradient is summed over the devices, as for the plain
  product."""
  return _tied_logits(hidden, _vary_like(embedding, hidden))


def _vary_like(x: Array, like: Array | None) -> Array:
  """`x` marked as varying along the mesh axes that `like` varies along and it does not (a
  no-op outside shard_map). The mark's transpose is the psum over those axes."""
  if like is None:
    return x
  missing = tuple(sorted(set(_varying_axes(like)) - set(_varying_axes(x))))
  if not missing:
    return x
  if hasattr(jax.lax, "pcast"):
    return jax.lax.pcast(x, missing, to="varying")
  return jax.lax.pvary(x, missing)  # its name before JAX 0.10


def _varying_axes(x: Array) -> tuple:
  """The mesh axes along which `x` differs between devices, from its type (JAX 0.10 and later:
  `manual_axis_type.varying`; earlier: `vma`)."""
  aval = jax.typeof(x)
  manual = getattr(aval, "manual_axis_type", None)
  return tuple(manual.varying) if manual is not None else tuple(getattr(aval, "vma", ()))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _broadcast_over_batch(x: Array, batch: int) -> Array:
  return jnp.broadcast_to(x, (batch,) + x.shape[1:])


def _broadcast_forward(x, batch):
  return _broadcast_over_batch(x, batch), None


def _broadcast_backward(batch, _, g):
  # (B, ...) -> (1, ...): the sum over B as ones (B,) @ g (B, rest), a matrix-vector product.
  total = jnp.ones((batch,), g.dtype) @ g.reshape(batch, -1)
  return (total.reshape((1,) + g.shape[1:]),)


_broadcast_over_batch.defvjp(_broadcast_forward, _broadcast_backward)


@jax.custom_vjp
def _tied_logits(hidden: Array, embedding: Array) -> Array:
  return jnp.einsum("...d,vd->...v", hidden, embedding)


def _tied_forward(hidden, embedding):
  return _tied_logits(hidden, embedding), (hidden, embedding)


def _tied_backward(residuals, g):
  hidden, embedding = residuals
  d_hidden = jnp.einsum("...v,vd->...d", g, embedding).astype(hidden.dtype)  # (..., V) -> (..., D)
  rows = hidden.reshape(-1, hidden.shape[-1])  # (P, D), P = every leading position
  # (D, P) @ (P, V) -> (D, V), then transposed: the large (P, V) gradient stays in place.
  d_embedding = (rows.T @ g.reshape(-1, g.shape[-1])).T.astype(embedding.dtype)
  return d_hidden, d_embedding


_tied_logits.defvjp(_tied_forward, _tied_backward)
