"""Shared by the objective tests: the `ssljax` command in a subprocess, and, for the
sharded-equals-one-device checks on the first n fake CPU devices, the trainer's own step
(`train.step.make_train_step`) and an objective's loss and gradients as the trainer computes them."""

import os
import subprocess
import sys
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ssljax.interface import DATA_AXIS
from ssljax.train import step as step_lib
from ssljax.train.state import TrainState

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli_env(data_dir: str, devices: int = 2) -> dict:
  """The environment of an `ssljax` subprocess: `devices` fake CPU devices, datasets in `data_dir`."""
  return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
          "SSLJAX_DATA_DIR": data_dir, "JAX_PLATFORMS": "cpu"}


def run_cli(args, data_dir: str, devices: int = 2, timeout: int = 600) -> subprocess.CompletedProcess:
  """`python -m ssljax.cli ARGS` from the repository root, on `devices` fake CPU devices, reading
  and building datasets in `data_dir`; stdout and stderr captured as text."""
  return subprocess.run([sys.executable, "-m", "ssljax.cli", *args], env=cli_env(data_dir, devices), cwd=REPO,
                        capture_output=True, text=True, timeout=timeout)


def popen_cli(args, data_dir: str, devices: int = 2, python_args=("-m", "ssljax.cli"), **kwargs) -> subprocess.Popen:
  """`run_cli` started in the background, for tests that signal or kill it; `python_args`
  replaces `-m ssljax.cli` (e.g. `-c CODE` that patches something first)."""
  return subprocess.Popen([sys.executable, *python_args, *args], env=cli_env(data_dir, devices), cwd=REPO, **kwargs)


def data_mesh(num_devices: int) -> jax.sharding.Mesh:
  """The trainer's one-axis mesh over the first `num_devices` devices."""
  return jax.make_mesh((num_devices,), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Explicit,),
                       devices=jax.devices()[:num_devices])


def run_steps(objective, batch, num_devices: int, tx, steps: int = 2, jit_init: bool = False, params=None):
  """`steps` train steps of `objective` on one global `batch` split over `num_devices` devices,
  from the params of key 0 (no online probe), or from a host copy of `params` when given (the
  step donates its state). Returns (final state, [metrics of each step]) on the host."""
  if params is None:
    init = jax.jit(objective.init) if jit_init else objective.init
    params, model_state = init(jax.random.key(0), batch)
  else:
    params, model_state = jax.tree.map(np.asarray, params), {}
  state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), model_state)
  mesh = data_mesh(num_devices)
  state = jax.device_put(state, jax.NamedSharding(mesh, jax.P()))
  global_batch = jax.device_put(batch, jax.NamedSharding(mesh, jax.P(DATA_AXIS)))
  train_step = step_lib.make_train_step(objective, tx, jax.random.key(1), mesh)
  history = []
  for _ in range(steps):
    state, metrics = train_step(state, global_batch)
    history.append(jax.device_get(metrics))
  return jax.device_get(state), history


class ShardedLoss(NamedTuple):
  """What `sharded_loss_and_grads` returns, on the host."""
  value: Any  # the global loss
  grads: Any  # of the loss, with respect to params
  state_grads: Any  # of the loss, with respect to the model state's float part (without "step")
  model_state: Any  # the loss's new model state
  metrics: Any  # the logged metrics, mean over the devices


_COMPILED = {}  # (id(objective), num_devices, example_keys, grads) -> (objective, compiled function)


def sharded_loss_and_grads(objective, params, model_state, batch, num_devices: int, *, seed: jax.Array,
                           example_keys: bool = True, grads: bool = True):
  """`objective.loss` per device inside `shard_map`, on one global `batch` split over the first
  `num_devices` devices, with replicated `params` and `model_state` (no optimizer, no gradient
  reduction: the loss and its gradients as the objective gives them).

  The keys are the trainer's at step 0, one per example from its global index
  (`step_lib.global_example_keys(seed, 0, local_batch)`), so an example's randomness is the same on
  any device count; with `example_keys=False`, `seed` itself, the same one key on every device
  (objective.loss splits it over its local batch: random views then differ by device count). The
  model state's integer step counter ("step", DINO's and SwAV's) goes in as it is, and the rest of
  the model state is differentiated, to show which parts of it get no gradient.

  Returns a `ShardedLoss` (value, grads, state_grads, model_state, metrics) on the host, or the
  loss alone when not `grads`. Compiled once per objective, device count and mode; the cache holds
  the objective, so that its id cannot be reused by another one.
  """
  mesh = data_mesh(num_devices)
  step = {k: jnp.asarray(v) for k, v in model_state.items() if k == "step"}
  float_state = {k: v for k, v in model_state.items() if k != "step"}
  cache_key = (id(objective), num_devices, example_keys, grads)
  if cache_key not in _COMPILED:

    def per_device(params, float_state, step, seed, batch):
      local_batch = jax.tree.leaves(batch)[0].shape[0]  # this device's rows
      keys = step_lib.global_example_keys(seed, 0, local_batch) if example_keys else seed
      loss = lambda p, s: objective.loss(p, {**s, **step}, batch, keys)
      if not grads:
        return loss(params, float_state)[0]
      (value, aux), (g, state_g) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, float_state)
      metrics = jax.tree.map(lambda m: jax.lax.pmean(m, DATA_AXIS), dict(aux.metrics))
      return ShardedLoss(value, g, state_g, aux.model_state, metrics)

    _COMPILED[cache_key] = (objective, jax.jit(jax.shard_map(
        per_device, mesh=mesh, in_specs=(jax.P(),) * 4 + (jax.P(DATA_AXIS),), out_specs=jax.P())))
  run = _COMPILED[cache_key][1]
  replicated = jax.NamedSharding(mesh, jax.P())
  return jax.device_get(run(*jax.device_put((params, float_state, step, seed), replicated),
                            jax.device_put(batch, jax.NamedSharding(mesh, jax.P(DATA_AXIS)))))
