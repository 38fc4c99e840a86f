"""ssljax.models.grad_routes: the same values and gradients as the plain expressions they
replace, on one device and under jit(shard_map) on 8 fake CPU devices (check_vma on, as the
trainer runs), where a replicated operand's gradient must come out summed over the devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssljax.models import grad_routes

P = jax.P
NUM_DEVICES = 8


def _weights(shape, seed):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def test_broadcast_over_batch_matches_broadcast_to():
  x = _weights((1, 3, 4, 5), 0)
  w = _weights((6, 3, 4, 5), 1)  # a different weight per row, so the rows' gradients differ
  np.testing.assert_array_equal(grad_routes.broadcast_over_batch(x, 6), jnp.broadcast_to(x, (6, 3, 4, 5)))

  def loss(f):
    return lambda x: jnp.sum(w * jnp.sin(f(x)))

  routed = jax.grad(loss(lambda x: grad_routes.broadcast_over_batch(x, 6)))(x)
  plain = jax.grad(loss(lambda x: jnp.broadcast_to(x, (6, 3, 4, 5))))(x)
  assert routed.shape == (1, 3, 4, 5)
  np.testing.assert_allclose(routed, plain, rtol=1e-5, atol=1e-6)
  # By hand: the sum over the batch of w * cos(x).
  np.testing.assert_allclose(routed[0], np.sum(np.asarray(w) * np.cos(np.asarray(x)), axis=0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("leading", [(7,), (2, 5)])
def test_tied_logits_matches_the_plain_product(leading, dtype):
  hidden = _weights(leading + (8,), 2).astype(dtype)
  embedding = _weights((11, 8), 3).astype(dtype)
  w = _weights(leading + (11,), 4)
  logits = grad_routes.tied_logits(hidden, embedding)
  assert logits.shape == leading + (11,) and logits.dtype == dtype
  np.testing.assert_array_equal(logits, hidden @ embedding.T)

  def loss(f):
    return lambda h, e: jnp.sum(w * jnp.tanh(f(h, e).astype(jnp.float32)))

  routed = jax.grad(loss(grad_routes.tied_logits), argnums=(0, 1))(hidden, embedding)
  plain = jax.grad(loss(lambda h, e: h @ e.T), argnums=(0, 1))(hidden, embedding)
  tol = 1e-5 if dtype == jnp.float32 else 3e-2
  for r, p in zip(routed, plain):
    assert r.dtype == dtype and r.shape == p.shape
    np.testing.assert_allclose(np.asarray(r, np.float32), np.asarray(p, np.float32), rtol=tol, atol=tol)
  # float64 by hand: dL/dlogits = w (1 - tanh^2), then dH = G E and dE = G^T H.
  h64, e64 = np.asarray(hidden, np.float64), np.asarray(embedding, np.float64)
  g = np.asarray(w, np.float64) * (1 - np.tanh(h64 @ e64.T) ** 2)
  if dtype == jnp.float32:
    np.testing.assert_allclose(routed[0], g @ e64, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(routed[1], g.reshape(-1, 11).T @ h64.reshape(-1, 8), rtol=1e-4, atol=1e-5)


def _sharded_grads(fn, replicated, rows, w):
  """Gradient w.r.t. `replicated` of psum_d sum(w_d * fn(replicated, rows_d)) under
  jit(shard_map, check_vma=True), with `rows` and `w` split over 8 devices."""
  mesh = jax.make_mesh((NUM_DEVICES,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))

  def per_device(replicated, rows, w):
    def loss(replicated):
      return jax.lax.psum(jnp.sum(w * fn(replicated, rows)), "data")
    return jax.grad(loss)(replicated)

  step = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P("data"), P("data")), out_specs=P(),
                               check_vma=True))
  split, whole = jax.sharding.NamedSharding(mesh, P("data")), jax.sharding.NamedSharding(mesh, P())
  return step(jax.device_put(replicated, whole), jax.device_put(rows, split), jax.device_put(w, split))


def test_sharded_tied_logits_gradient_is_the_global_one():
  embedding, hidden, w = _weights((11, 8), 5), _weights((16, 3, 8), 6), _weights((16, 3, 11), 7)
  routed = _sharded_grads(lambda e, h: grad_routes.tied_logits(h, e), embedding, hidden, w)
  single = jax.grad(lambda e: jnp.sum(w * (hidden @ e.T)))(embedding)
  np.testing.assert_allclose(routed, single, rtol=1e-5, atol=1e-5)


def test_sharded_broadcast_over_batch_gradient_is_the_global_one():
  # The bias of each device's 2 rows, broadcast like the attention bias: (1, 4) -> (2, 4).
  bias, activations, w = _weights((1, 4), 8), _weights((16, 4), 9), _weights((16, 4), 10)

  def routed_fn(b, x):
    return x * grad_routes.broadcast_over_batch(b, x.shape[0], like=x)

  routed = _sharded_grads(routed_fn, bias, activations, w)
  single = jax.grad(lambda b: jnp.sum(w * activations * b))(bias)
  np.testing.assert_allclose(routed, single, rtol=1e-5, atol=1e-5)
