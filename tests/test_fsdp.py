"""Sharded parameters (train.param_sharding="fsdp"): which leaves are split, and a step with
parameters, gradients and optimizer state split over 8 devices equals the replicated step and
the one-device step, with the optimizers whose norms span a whole leaf (LARS, clipping)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import data_mesh
from ssljax import objectives
from ssljax.interface import DATA_AXIS
from ssljax.train import checks, defaults, optim, sharding, step as step_lib
from ssljax.train.state import TrainState

P = jax.P


def test_large_leaves_split_along_their_largest_divisible_dimension():
  assert sharding.leaf_spec((64, 2048), 8, 1024) == P(None, DATA_AXIS)
  assert sharding.leaf_spec((2048, 64), 8, 1024) == P(DATA_AXIS, None)
  assert sharding.leaf_spec((12, 3, 30), 8, 0) == P()  # no dimension divisible by 8
  assert sharding.leaf_spec((30, 3, 16), 8, 0) == P(None, None, DATA_AXIS)  # 30 is not divisible
  assert sharding.leaf_spec((2048,), 8, 4096) == P()  # small: replicated
  assert sharding.leaf_spec((), 8, 0) == P()
  assert sharding.leaf_spec((64, 2048), 1, 0) == P()  # one device: nothing to split


def test_parameters_and_their_adam_moments_get_the_same_specs():
  config = defaults.load_config("gpt:gpt2")
  config.unlock()
  config.train.param_sharding = "fsdp"
  objective = objectives.build(config)
  example = {"tokens": jnp.zeros((2, config.text.seq_len), jnp.int32)}
  tx, _ = optim.optimizer(config.optim, 10, 8, sharded=True)

  def create():
    params, model_state = objective.init(jax.random.key(0), example)
    return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), model_state)

  abstract = jax.eval_shape(create)
  specs = sharding.state_specs(abstract, config.train, 8)
  adam = specs.opt_state[1][0]  # chain(clip, adamw): adamw's ScaleByAdamState
  assert jax.tree.leaves(adam.mu) == jax.tree.leaves(specs.params) == jax.tree.leaves(adam.nu)
  assert adam.count == P()
  split = [s for s in jax.tree.leaves(specs.params) if sharding.is_sharded(s)]
  kept = [s for s in jax.tree.leaves(specs.params) if not sharding.is_sharded(s)]
  assert split and kept  # matrices split, LayerNorm scales and biases (768 < 2**18) whole
  sizes = {sharding.is_sharded(s): 0 for s in jax.tree.leaves(specs.params)}
  for leaf, spec in zip(jax.tree.leaves(abstract.params), jax.tree.leaves(specs.params)):
    sizes[sharding.is_sharded(spec)] += leaf.size
  assert sizes[True] > 0.99 * (sizes[True] + sizes[False])  # almost every parameter is split


def _run(objective, batch, num_devices, tx, mode, steps=3, min_size=0, gather_per_layer=False):
  """`steps` train steps with parameters `mode` ("replicated" or "fsdp") on `num_devices`;
  (state on the host, losses, the state's PartitionSpecs)."""
  params, model_state = objective.init(jax.random.key(0), batch)
  state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), model_state)
  mesh = data_mesh(num_devices)
  train = defaults.base_config().train
  train.param_sharding, train.fsdp_min_size = mode, min_size
  specs = sharding.state_specs(state, train, num_devices)
  state = jax.device_put(state, sharding.named(mesh, specs))
  global_batch = jax.device_put(batch, jax.NamedSharding(mesh, P(DATA_AXIS)))
  train_step = step_lib.make_train_step(objective, tx, jax.random.key(1), mesh, state_specs=specs,
                                        gather_per_layer=gather_per_layer)
  losses = []
  for _ in range(steps):
    state, metrics = train_step(state, global_batch)
    losses.append(float(metrics["loss"]))
  if mode == "fsdp":  # the state stays split between steps (donated, not gathered)
    leaf = max(jax.tree.leaves(state.params), key=lambda x: x.size)
    assert leaf.sharding.spec != P() and leaf.addressable_shards[0].data.size == leaf.size // num_devices
  return jax.device_get(state), losses, specs


def _assert_same(run_a, run_b):
  (state_a, losses_a, _), (state_b, losses_b, _) = run_a, run_b
  np.testing.assert_allclose(losses_a, losses_b, rtol=1e-5)
  chex.assert_trees_all_close(state_a.params, state_b.params, rtol=1e-4, atol=1e-6)
  chex.assert_trees_all_close(state_a.opt_state, state_b.opt_state, rtol=1e-4, atol=1e-6)


def _gpt():
  objective = objectives.build(defaults.load_config("gpt:smoke"))
  tokens = np.random.default_rng(0).integers(6, 262, (16, 32)).astype(np.int32)
  return objective, {"tokens": tokens}


def _clipped_sgd(sharded):
  """SGD (Adam's sign-like first steps turn rounding into lr-sized differences) after a global
  norm clip small enough to act on every step, so a norm of a slice would show."""
  config = defaults.text_config().optim
  config.name, config.lr, config.momentum, config.clip_norm, config.weight_decay = "sgd", 0.5, 0.9, 0.05, 0.1
  return optim.optimizer(config, 10, 16, sharded=sharded)[0]


@pytest.fixture(scope="module")
def gpt_one_device():
  objective, batch = _gpt()
  return _run(objective, batch, 1, _clipped_sgd(False), "replicated")


def test_fsdp_gpt_step_equals_replicated_and_one_device(gpt_one_device):
  objective, batch = _gpt()
  fsdp = _run(objective, batch, 8, _clipped_sgd(True), "fsdp")
  assert sum(sharding.is_sharded(s) for s in jax.tree.leaves(fsdp[2].params)) >= 5
  _assert_same(fsdp, _run(objective, batch, 8, _clipped_sgd(False), "replicated"))
  _assert_same(fsdp, gpt_one_device)
  assert fsdp[1][2] < fsdp[1][0]


@pytest.mark.parametrize("remat", [False, True])
def test_fsdp_gathered_per_layer_equals_one_device(gpt_one_device, remat):
  """fsdp_gather="layer": the step gathers only what lies outside the blocks and hands the
  blocks their split parameters. Were a block not to gather its own, it would get 1/8-wide
  kernels and fail, so equal results show the per-layer gathers (and their reduce-scattered
  gradients) in place; with remat each block gathers again in the backward pass."""
  config = defaults.load_config("gpt:smoke")
  config.model.remat = remat
  objective, batch = objectives.build(config), _gpt()[1]
  per_layer = _run(objective, batch, 8, _clipped_sgd(True), "fsdp", gather_per_layer=True)
  blocks = per_layer[2].params["blocks_0"]
  assert any(sharding.is_sharded(s) for s in jax.tree.leaves(blocks))
  _assert_same(per_layer, gpt_one_device)


def test_fsdp_gather_per_layer_only_for_transformer_objectives():
  config = defaults.load_config("simclr:smoke")
  config.train.param_sharding, config.train.fsdp_gather = "fsdp", "layer"
  with pytest.raises(checks.ConfigError, match="fsdp_gather='layer' needs a Transformer objective"):
    checks.check(config, device_count=8)


def test_fsdp_needs_the_global_norm_of_split_leaves(gpt_one_device):
  """optax's own clip, given split gradients, clips each device's slice by the slice's norm:
  the step then differs, so the test above can fail."""
  objective, batch = _gpt()
  wrong = _run(objective, batch, 8, _clipped_sgd(False), "fsdp", steps=2)
  assert not np.allclose(wrong[1][1], gpt_one_device[1][1], rtol=1e-4)


def test_fsdp_image_step_with_lars_and_global_batchnorm_equals_one_device():
  """SimCLR's smoke config, real augmentation, LARS (a trust ratio per whole leaf), BatchNorm
  statistics kept replicated."""
  config = defaults.load_config("simclr:smoke")
  objective = objectives.build(config)
  batch = {"image": np.random.default_rng(1).integers(0, 256, (16, 28, 28, 1), dtype=np.uint8)}
  config.optim.lr = 0.5

  def lars(sharded):
    return optim.optimizer(config.optim, 10, 16, sharded=sharded)[0]

  fsdp = _run(objective, batch, 8, lars(True), "fsdp", steps=2)
  assert sum(sharding.is_sharded(s) for s in jax.tree.leaves(fsdp[2].params)) >= 3
  one = _run(objective, batch, 1, lars(False), "replicated", steps=2)
  _assert_same(fsdp, one)
  chex.assert_trees_all_close(fsdp[0].model_state, one[0].model_state, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["lars", "adamw", "sgd"])
def test_sharded_optimizers_keep_the_state_structure(name):
  """A checkpoint of a replicated run restores into an FSDP run and back: the shard-aware
  clipping and trust ratio keep optax's state structure."""
  config = defaults.text_config().optim
  config.name, config.clip_norm = name, 1.0
  params = {"dense": {"kernel": jnp.ones((4, 8)), "bias": jnp.ones((8,))}}
  plain, split = (optim.optimizer(config, 10, 16, sharded=s)[0].init(params) for s in (False, True))
  assert jax.tree.structure(plain) == jax.tree.structure(split)


def test_fsdp_without_vma_checks_is_refused():
  objective, batch = _gpt()
  params, _ = objective.init(jax.random.key(0), batch)
  state = jax.eval_shape(lambda: TrainState(jnp.zeros((), jnp.int32), params, (), {}))
  train = defaults.base_config().train
  train.param_sharding, train.fsdp_min_size = "fsdp", 0
  specs = sharding.state_specs(state, train, 8)
  with pytest.raises(ValueError, match="check_vma"):
    step_lib.make_train_step(objective, _clipped_sgd(True), jax.random.key(0), data_mesh(8),
                             check_vma=False, state_specs=specs)


def test_bench_memory_plans_a_state_split_eight_ways():
  """`ssljax bench memory`: XLA's per-device plan of the real step from abstract shapes. With
  every leaf that can be split split, a device's part of the state is about 1/8."""
  from ssljax.bench import memory

  config = defaults.load_config("gpt:smoke")
  config.unlock()
  config.train.fsdp_min_size = 0
  replicated, fsdp = (memory.step_memory(config, mode) for mode in ("replicated", "fsdp"))
  # AdamW: parameters and two moments, float32, plus the step counts.
  assert 12 * replicated["params"] <= replicated["state_bytes"] < 12 * replicated["params"] + 64
  assert fsdp["state_bytes"] < replicated["state_bytes"] / 6
  for row in (replicated, fsdp):
    assert row["argument_bytes"] >= row["state_bytes"]  # the state's part and the batch's
    assert row["alias_bytes"] >= row["state_bytes"]  # the new state is written over the donated one
    assert row["temp_bytes"] > 0
  assert fsdp["argument_bytes"] < replicated["argument_bytes"] / 4
  table = memory.format_rows([replicated, fsdp])
  assert "fsdp" in table and "replicated" in table
  with pytest.raises(ValueError, match="param_sharding"):
    memory.step_memory(config, "zero2")
