"""Shared by the objective tests: the `ssljax` command in a subprocess, and the trainer's own
step (`train.step.make_train_step`) run on the first n fake CPU devices, for the
sharded-equals-one-device checks."""

import os
import subprocess
import sys

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
