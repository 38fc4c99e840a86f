"""ssljax.losses across 8 fake CPU devices: sharded == single device on the global batch.

The invariant is the trainer's: per device, `jax.grad` of the loss w.r.t. replicated parameters
(a tiny linear encoder W), then `lax.pmean(grads, "data")`, must equal the single-device gradient
on the concatenated batch. The tests also check the loss value on every device, and the gradient
w.r.t. each device's own inputs:
  * under `jax.shard_map` it is exactly that device's slice of the single-device gradient;
  * under legacy `jax.pmap` it is `axis_size` times that slice (pmap transposes the loss's psum
    into a psum), which is why gradients are pmean-ed, not used raw.
Blockwise cases are compared with the *dense* single-device loss, so they also prove that the
blockwise loss across devices equals the dense one.
"""

import dataclasses
import functools
from typing import Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from ssljax import losses

NUM_DEVICES = 8
GLOBAL_BATCH = 16  # 2 rows per device
P = jax.P


@dataclasses.dataclass(frozen=True)
class Case:
  """losses(params, floats, ints, axis_name, block_size) -> (k,) loss values.

  `floats` and `ints` are tuples of arrays sharded over their first axis; the gradient is
  taken of the sum of the values w.r.t. params and floats.
  """
  losses: Callable
  params: dict
  floats: tuple
  ints: tuple = ()
  block_size: int | None = None
  # The case whose dense single-device result is the reference (itself if None).
  reference: str | None = None


def _encode(params, x):
  return x @ params["w"]  # (n, 4) . (4, 8) -> (n, 8)


def _softmax_losses(params, floats, ints, axis_name, block_size):
  del ints
  e1, e2 = (_encode(params, x) for x in floats)
  return jnp.stack([
      losses.nt_xent(e1, e2, temperature=0.2, axis_name=axis_name, block_size=block_size),
      losses.info_nce(e1, e2, temperature=0.3, axis_name=axis_name, block_size=block_size),
      losses.clip_loss(e1, e2, jnp.exp(params["log_scale"]), axis_name=axis_name,
                       block_size=block_size),
  ])


def _siglip_byol_vicreg(params, floats, ints, axis_name, block_size):
  del ints, block_size
  e1, e2 = (_encode(params, x) for x in floats)
  return jnp.stack([
      losses.siglip_loss(e1, e2, jnp.exp(params["log_scale"]), params["bias"],
                         axis_name=axis_name),
      losses.byol_loss(e1, e2, axis_name=axis_name),
      # Small weights keep the sum's gradient from being all VICReg.
      losses.vicreg_loss(e1, e2, sim_weight=0.5, var_weight=0.5, cov_weight=0.1,
                         axis_name=axis_name),
  ])


def _token_losses(params, floats, ints, axis_name, block_size):
  del block_size
  inputs, mask = floats  # (n, T, 4), (n, T)
  tokens, labels = ints  # (n, T), (n,)
  logits = inputs @ params["w"]  # (n, T, 4) . (4, V) -> (n, T, V)
  pooled = jnp.mean(logits, axis=1)  # (n, V): a sequence-level classifier
  return jnp.stack([
      losses.masked_lm_loss(logits, tokens, mask, axis_name=axis_name),
      losses.next_token_loss(logits, tokens, mask, axis_name=axis_name),
      losses.classification_loss(pooled, labels, axis_name=axis_name),
      losses.accuracy(pooled, labels, axis_name=axis_name),
  ])


def _cases():
  rng = np.random.default_rng(0)

  def normal(*shape):
    return jnp.asarray(rng.normal(size=shape), jnp.float32)

  x1 = normal(GLOBAL_BATCH, 4)
  x2 = x1 + 0.5 * normal(GLOBAL_BATCH, 4)
  w = normal(4, 8)
  # Uneven numbers of counted tokens per device: a global weighted mean is not a mean of
  # per-device means.
  mask = jnp.asarray(rng.random((GLOBAL_BATCH, 5)) < np.linspace(0.1, 0.9, GLOBAL_BATCH)[:, None],
                     jnp.float32)
  tokens = jnp.asarray(rng.integers(0, 6, (GLOBAL_BATCH, 5)), jnp.int32)
  labels = jnp.asarray(rng.integers(0, 6, (GLOBAL_BATCH,)), jnp.int32)
  softmax_params = {"w": w, "log_scale": jnp.float32(1.5)}
  return {
      "nt_xent+info_nce+clip": Case(_softmax_losses, softmax_params, (x1, x2)),
      # 3 divides neither the 4 local anchors of NT-Xent nor the 32 global views.
      "nt_xent+info_nce+clip_blockwise": Case(_softmax_losses, softmax_params, (x1, x2),
                                              block_size=3, reference="nt_xent+info_nce+clip"),
      "siglip+byol+vicreg": Case(
          _siglip_byol_vicreg, {"w": w, "log_scale": jnp.float32(1.5), "bias": jnp.float32(-1.0)},
          (x1, x2)),
      "masked_lm+next_token+classification": Case(
          _token_losses, {"w": normal(4, 6)}, (normal(GLOBAL_BATCH, 5, 4), mask),
          (tokens, labels)),
  }


CASES = _cases()


def _per_device_fn(case: Case, axis_name, block_size):
  """(params, floats, ints) -> (values, param grads, input grads); param grads pmean-ed."""

  def per_device(params, floats, ints):

    def total(params, floats):
      values = case.losses(params, floats, ints, axis_name, block_size)
      return jnp.sum(values), values

    (_, values), (param_grads, input_grads) = jax.value_and_grad(
        total, argnums=(0, 1), has_aux=True)(params, floats)
    if axis_name is not None:
      param_grads = lax.pmean(param_grads, axis_name)
    return values, param_grads, input_grads

  return per_device


@functools.cache
def _single_device(name: str):
  """The reference: the dense loss on the whole batch, on one device."""
  if CASES[name].reference is not None:
    return _single_device(CASES[name].reference)
  case = CASES[name]
  return jax.jit(_per_device_fn(case, None, None))(case.params, case.floats, case.ints)


@pytest.fixture(scope="module")
def mesh():
  assert jax.device_count() >= NUM_DEVICES, "tests/conftest.py sets 8 fake CPU devices"
  # Explicit axis types: the inputs' shardings are stated with device_put below instead of
  # being left to the compiler, as the trainer does with its global arrays.
  return jax.make_mesh((NUM_DEVICES,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))


def _assert_matches(got_values, got_param_grads, got_input_grads, want):
  want_values, want_param_grads, want_input_grads = want
  chex.assert_trees_all_close(got_values, want_values, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(got_param_grads, want_param_grads, rtol=1e-5, atol=1e-5)
  chex.assert_trees_all_close(got_input_grads, want_input_grads, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(CASES))
def test_shard_map_equals_single_device(name, mesh):
  case = CASES[name]
  want = _single_device(name)
  assert all(float(jnp.abs(g).max()) > 1e-4 for g in jax.tree.leaves(want[1])), \
      "every parameter must get a gradient for the comparison to mean something"
  sharded = jax.sharding.NamedSharding(mesh, P("data"))
  replicated = jax.sharding.NamedSharding(mesh, P())
  step = jax.jit(jax.shard_map(
      _per_device_fn(case, "data", case.block_size), mesh=mesh,
      in_specs=(P(), P("data"), P("data")),
      # Values and pmean-ed gradients are the same on every device; input grads are per shard.
      out_specs=(P(), P(), P("data"))))
  values, param_grads, input_grads = step(
      jax.device_put(case.params, replicated), jax.device_put(case.floats, sharded),
      jax.device_put(case.ints, sharded))
  _assert_matches(values, param_grads, input_grads, want)


@pytest.mark.parametrize("name", list(CASES))
def test_pmap_equals_single_device(name):
  case = CASES[name]
  want = _single_device(name)

  def split(x):  # (N, ...) -> (devices, N / devices, ...)
    return x.reshape((NUM_DEVICES, -1) + x.shape[1:])

  step = jax.pmap(_per_device_fn(case, "data", case.block_size), axis_name="data",
                  in_axes=(None, 0, 0))
  values, param_grads, input_grads = step(case.params, jax.tree.map(split, case.floats),
                                          jax.tree.map(split, case.ints))
  for device in range(NUM_DEVICES):  # the same global loss and gradient on every device
    chex.assert_trees_all_close(values[device], want[0], rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(jax.tree.map(lambda g, d=device: g[d], param_grads), want[1],
                                rtol=1e-5, atol=1e-5)
  # Each device's input gradient is axis_size times its slice of the global gradient.
  unsplit = jax.tree.map(lambda g: g.reshape((-1,) + g.shape[2:]) / NUM_DEVICES, input_grads)
  chex.assert_trees_all_close(unsplit, want[2], rtol=1e-5, atol=1e-5)


def test_tuple_axis_names_blockwise():
  """A batch sharded over two mesh axes at once, e.g. ("replica", "data") on a pod."""
  mesh = jax.make_mesh((2, 4), ("replica", "data"),
                       axis_types=(jax.sharding.AxisType.Explicit,) * 2)
  axes = ("replica", "data")
  name = "nt_xent+info_nce+clip_blockwise"
  case = CASES[name]
  want = _single_device(name)
  step = jax.jit(jax.shard_map(
      _per_device_fn(case, axes, case.block_size), mesh=mesh,
      in_specs=(P(), P(axes), P(axes)), out_specs=(P(), P(), P(axes))))
  sharded = jax.sharding.NamedSharding(mesh, P(axes))
  got = step(jax.device_put(case.params, jax.sharding.NamedSharding(mesh, P())),
             jax.device_put(case.floats, sharded), jax.device_put(case.ints, sharded))
  _assert_matches(*got, want)
