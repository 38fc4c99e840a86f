"""The generic training loop: any registered objective, of any modality, on every device of
every host. It knows the objective only through the Objective interface and its family's
`train_input` and `monitors`; nothing here names images or text."""

from __future__ import annotations

import logging
import os

import jax
import jax.numpy as jnp
import ml_collections
import optax

from ssljax import data, objectives
from ssljax.train import checkpoint, checks, mesh as mesh_lib, optim, step as step_lib
from ssljax.train.metrics import MetricWriter, Progress
from ssljax.train.state import TrainState
from ssljax.workdir import save_config


def state_factory(objective, example, tx, probe_tx, num_classes: int | None):
  """A jitted function key -> fresh TrainState (one compilation: Flax and optax initialise
  leaf by leaf otherwise, each op a compilation of its own, tens of seconds on CPU).

  The online linear probe exists when the examples have `num_classes` classes and a probe
  optimizer is given; otherwise its fields are None."""
  with_probe = probe_tx is not None and num_classes is not None
  if with_probe:
    feature_dim = jax.eval_shape(
        lambda: objective.features(*objective.init(jax.random.key(0), example), example)
    ).shape[-1]

  @jax.jit
  def create(key):
    params, model_state = objective.init(key, example)
    probe_params = step_lib.init_probe(feature_dim, num_classes) if with_probe else None
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        model_state=model_state,
        probe_params=probe_params,
        probe_opt_state=probe_tx.init(probe_params) if with_probe else None,
    )

  return create


def init_key(config) -> jax.Array:
  return jax.random.fold_in(jax.random.key(config.seed), 0)


def abstract_state(create, config, sharding) -> TrainState:
  """Shapes, dtypes and sharding of the state `create` makes, without computing it."""
  shapes = jax.eval_shape(create, init_key(config))
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)


def probe_optimizer(config) -> optax.GradientTransformation:
  return optax.adam(config.train.probe_lr)


def train(config: ml_collections.ConfigDict, workdir: str, *, progress: bool = True) -> TrainState:
  """Pretrains `config.objective`, resuming from the latest checkpoint in `workdir`."""
  checks.check(config)
  os.makedirs(workdir, exist_ok=True)
  objective = objectives.build(config)
  mesh = mesh_lib.data_mesh()
  t = config.train

  inp = objective.family.train_input(config, workdir)
  iterator = data.train_iterator(
      inp.source, batch_size=t.batch_size // jax.process_count(), seed=config.seed,
      record_fn=inp.record_fn, iter_stage=inp.iter_stage,
  )
  example = data.example_batch(inp.source, inp.record_fn, inp.iter_stage)
  tx, learning_rate = optim.optimizer(config.optim, t.steps, t.batch_size)
  probe_tx = probe_optimizer(config)
  create = state_factory(objective, example, tx, probe_tx, inp.num_classes)
  replicated = mesh_lib.replicated(mesh)

  mngr = checkpoint.manager(workdir, save_every=t.checkpoint_every, keep=t.keep_checkpoints)
  restored = checkpoint.restore(mngr, abstract_state(create, config, replicated))
  if restored is None:
    state = jax.device_put(create(init_key(config)), replicated)
  else:
    state, data_state = restored
    iterator.set_state(data_state)
    logging.info("resumed from step %d", int(state.step))
  save_config(config, workdir)
  start = int(state.step)

  train_step = step_lib.make_train_step(objective, tx, probe_tx, jax.random.key(config.seed), mesh)
  writer = MetricWriter(workdir, resume_step=start)
  bar = Progress(t.steps, start, units_per_step=t.batch_size * inp.units_per_example, unit=inp.unit,
                 enabled=progress and jax.process_index() == 0)
  monitors = objective.family.monitors(objective, config, workdir)
  batch_sharding = mesh_lib.batch_sharded(mesh)
  try:
    for step in range(start, t.steps):
      batch = data.to_global(next(iterator), batch_sharding)
      state, metrics = train_step(state, batch)
      done = step + 1
      if done % t.log_every == 0 or done == t.steps:
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        metrics["learning_rate"] = float(learning_rate(step))
        due = [m for m in monitors if done % m.every == 0 or done == t.steps]
        if due:
          params, model_state = jax.device_get((state.params, state.model_state))
          for monitor in due:
            metrics.update(monitor.fn(params, model_state))
        metrics.update(bar.update(done, metrics))
        if jax.process_index() == 0:
          writer.write(done, metrics)
      checkpoint.save(mngr, done, state, iterator.get_state(), force=done == t.steps)
  finally:
    mngr.wait_until_finished()
    mngr.close()
    bar.close()
    writer.close()
  return state
