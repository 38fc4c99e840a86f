"""The trainer's sharded step equals a single-device step on the same global batch, with and
without shard_map's varying-axes checks, with fixed views and with real augmentation."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ssljax import losses, models, objectives
from ssljax.families import image
from ssljax.interface import DATA_AXIS, LossAux, Objective
from ssljax.train import defaults, optim, step as step_lib
from ssljax.train.state import TrainState
from ssljax.train.defaults import base_config


def _deterministic_objective() -> Objective:
  """A SimCLR-shaped objective whose two views are fixed (image, mirror), so that any
  difference between device counts can only come from the trainer's machinery: global BN,
  the gathered loss, the gradient reduction and the optimizer."""

  def net(axis_name):
    return models.resnet("resnet_tiny", width=4, stem="small", axis_name=axis_name)

  train_net, local_net = net(DATA_AXIS), net(None)

  def init(key, batch):
    v = local_net.init(key, batch["image"].astype(jnp.float32), train=False)
    return v["params"], {"batch_stats": v["batch_stats"]}

  def loss(params, model_state, batch, key):
    x = batch["image"].astype(jnp.float32) / 255.0
    both = jnp.concatenate([x, x[:, :, ::-1]])
    h, updates = train_net.apply({"params": params, **model_state}, both, train=True, mutable=["batch_stats"])
    n = x.shape[0]
    value = losses.nt_xent(h[:n], h[n:], temperature=0.5, axis_name=DATA_AXIS)
    return value, LossAux(model_state=updates, metrics={"h_mean": jnp.mean(h)})

  def features(params, model_state, batch):
    return local_net.apply({"params": params, **model_state}, batch["image"].astype(jnp.float32), train=False)

  return Objective(name="fixed_views", family=image.FAMILY, init=init, loss=loss, features=features)


def _run(num_devices, batch, steps=2, objective=None, check_vma=True):
  objective = objective or _deterministic_objective()
  config = base_config()
  config.optim.name, config.optim.lr, config.optim.warmup_steps = "lars", 0.5, 1
  tx, _ = optim.optimizer(config.optim, 10, batch["image"].shape[0])
  params, model_state = objective.init(jax.random.key(0), batch)
  state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), model_state)
  mesh = jax.make_mesh((num_devices,), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Explicit,),
                       devices=jax.devices()[:num_devices])
  state = jax.device_put(state, jax.NamedSharding(mesh, jax.P()))
  global_batch = jax.device_put(batch, jax.NamedSharding(mesh, jax.P(DATA_AXIS)))
  train_step = step_lib.make_train_step(objective, tx, jax.random.key(1), mesh, check_vma=check_vma)
  history = []
  for _ in range(steps):
    state, metrics = train_step(state, global_batch)
    history.append(jax.device_get(metrics))
  return jax.device_get(state), history


@pytest.fixture(scope="module")
def batch():
  rng = np.random.default_rng(0)
  return {"image": rng.integers(0, 256, (16, 8, 8, 1), dtype=np.uint8), "label": rng.integers(0, 10, 16).astype(np.int32)}


def _assert_same_run(run8, run1):
  (state8, hist8), (state1, hist1) = run8, run1
  for m8, m1 in zip(hist8, hist1):
    for k in m1:
      np.testing.assert_allclose(m8[k], m1[k], rtol=2e-5, atol=2e-6, err_msg=k)
  chex.assert_trees_all_close(state8.params, state1.params, rtol=1e-4, atol=1e-6)
  # Global BN: running statistics average over the global batch, not the local one.
  chex.assert_trees_all_close(state8.model_state, state1.model_state, rtol=1e-4, atol=1e-6)
  assert int(state8.step) == int(state1.step) == 2


def test_eight_devices_equal_one(batch):
  assert jax.device_count() == 8
  _assert_same_run(_run(8, batch), _run(1, batch))


def test_without_vma_checks_the_explicit_gradient_pmean_still_gives_the_global_step(batch):
  """check_vma=False types nothing, so each device's raw gradient is its share of the global
  one times the device count; the step's explicit pmean must turn that into the global
  gradient, exactly as on one device."""
  _assert_same_run(_run(8, batch, check_vma=False), _run(1, batch))


@pytest.mark.parametrize("name", ["simclr", "patch_placement"])
def test_real_augmentation_is_the_same_on_one_and_eight_devices(name, batch):
  """Per-example keys come from the example's global index, so the random views, hence the
  losses and the parameters, do not depend on the device count."""
  config = defaults.load_config(f"{name}:smoke")
  objective = objectives.build(config)
  digits = {"image": np.random.default_rng(1).integers(0, 256, (16, 28, 28, 1), dtype=np.uint8),
         "label": batch["label"]}
  state8, hist8 = _run(8, digits, objective=objective)
  state1, hist1 = _run(1, digits, objective=objective)
  for m8, m1 in zip(hist8, hist1):
    np.testing.assert_allclose(m8["loss"], m1["loss"], rtol=2e-5, atol=2e-6)
  chex.assert_trees_all_close(state8.params, state1.params, rtol=1e-4, atol=1e-6)
  assert not np.allclose(hist8[0]["loss"], hist8[1]["loss"])  # the views do change per step


def test_example_keys_follow_the_global_index():
  """Row r of the global batch gets fold_in(fold_in(seed, step), r), whatever the mesh."""
  seed = jax.random.key(3)

  def keys_on(num_devices):
    mesh = jax.make_mesh((num_devices,), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Explicit,),
                         devices=jax.devices()[:num_devices])
    fn = jax.shard_map(lambda: jax.random.key_data(step_lib.global_example_keys(seed, 5, 16 // num_devices)),
                       mesh=mesh, in_specs=(), out_specs=jax.P(DATA_AXIS))
    return np.asarray(jax.jit(fn)())

  want = np.stack([np.asarray(jax.random.key_data(jax.random.fold_in(jax.random.fold_in(seed, 5), r)))
                   for r in range(16)])
  np.testing.assert_array_equal(keys_on(8), want)
  np.testing.assert_array_equal(keys_on(1), want)


def test_steps_change_params(batch):
  state0_params = _deterministic_objective().init(jax.random.key(0), batch)[0]
  state, hist = _run(8, batch, steps=2)  # step 0 has warmup's zero learning rate
  changed = jax.tree.map(lambda a, b: not np.allclose(a, b), state0_params, state.params)
  assert any(jax.tree.leaves(changed))
  assert np.isfinite(hist[0]["loss"])


def test_local_loss_is_rejected(batch):
  objective = _deterministic_objective()

  def local_loss(params, model_state, b, key):
    value, aux = objective.loss(params, model_state, b, key)
    return value + jnp.mean(b["image"].astype(jnp.float32)) * 0.0 + jax.lax.axis_index(DATA_AXIS) * 0.0, aux

  bad = Objective("bad", image.FAMILY, objective.init, local_loss, objective.features)
  tx = optax.sgd(0.1)
  params, model_state = bad.init(jax.random.key(0), batch)
  state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), model_state)
  mesh = jax.make_mesh((8,), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Explicit,))
  state = jax.device_put(state, jax.NamedSharding(mesh, jax.P()))
  b = jax.device_put(batch, jax.NamedSharding(mesh, jax.P(DATA_AXIS)))
  with pytest.raises(ValueError, match="global loss"):
    step_lib.make_train_step(bad, tx, jax.random.key(0), mesh)(state, b)
