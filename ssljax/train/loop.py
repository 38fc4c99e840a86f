"""The generic training loop: any registered objective, on every device of every host."""

from __future__ import annotations

import json
import logging
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from ssljax import data, objectives
from ssljax.evaluate import features as features_lib
from ssljax.evaluate import knn
from ssljax.train import checkpoint, checks, mesh as mesh_lib, optim, step as step_lib
from ssljax.train.metrics import MetricWriter, Progress
from ssljax.train.state import TrainState

CONFIG_FILE = "config.json"


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  with open(os.path.join(workdir, CONFIG_FILE), "w") as f:
    f.write(config.to_json_best_effort(indent=2))


def load_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist: is {workdir!r} the workdir of an `ssljax train` run?")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def example_batch(source, image_size: int | None = None, n: int = 2) -> dict:
  """A small batch shaped like the training batches, for initialising the model."""
  images = [np.asarray(source[i]["image"]) for i in range(n)]
  if image_size is not None:
    images = [data.resize_and_center_crop(image, image_size) for image in images]
  return {"image": np.stack(images), "label": np.array([source[i]["label"] for i in range(n)], np.int32)}


def state_factory(objective, config, example, tx, probe_tx, num_classes):
  """A jitted function key -> fresh TrainState (one compilation: Flax and optax initialise
  leaf by leaf otherwise, each op a compilation of its own, tens of seconds on CPU)."""
  feature_dim = jax.eval_shape(
      lambda: objective.features(*objective.init(jax.random.key(0), example), example["image"])
  ).shape[-1]

  @jax.jit
  def create(key):
    params, model_state = objective.init(key, example)
    probe_params = step_lib.init_probe(feature_dim, num_classes)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        model_state=model_state,
        probe_params=probe_params,
        probe_opt_state=probe_tx.init(probe_params),
    )

  return create


def init_key(config) -> jax.Array:
  return jax.random.fold_in(jax.random.key(config.seed), 0)


def abstract_state(create, config, sharding) -> TrainState:
  """Shapes, dtypes and sharding of the state `create` makes, without computing it."""
  shapes = jax.eval_shape(create, init_key(config))
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)


class KnnMonitor:
  """kNN accuracy of the current encoder on the evaluation split, every `every` steps."""

  def __init__(self, objective, config, every: int):
    self.objective, self.config, self.every = objective, config, every
    self._data = None

  def __call__(self, state: TrainState) -> float:
    if self._data is None:
      d = self.config.data
      self._data = (
          data.load_numpy(d.name, d.train_split, data_dir=d.data_dir),
          data.load_numpy(d.name, d.eval_split, data_dir=d.data_dir),
      )
    (train_x, train_y), (test_x, test_y) = self._data
    params, model_state = jax.device_get((state.params, state.model_state))

    def encode(images):
      return self.objective.features(params, model_state, images)

    e = self.config.eval
    return knn.knn_accuracy(
        features_lib.extract(encode, train_x), train_y, features_lib.extract(encode, test_x), test_y,
        num_classes=int(max(train_y.max(), test_y.max()) + 1), k=e.knn_k, temperature=e.knn_temperature,
    )


def train(config: ml_collections.ConfigDict, workdir: str, *, progress: bool = True) -> TrainState:
  """Pretrains `config.objective`, resuming from the latest checkpoint in `workdir`."""
  checks.check(config)
  os.makedirs(workdir, exist_ok=True)
  objective = objectives.build(config)
  mesh = mesh_lib.data_mesh()
  d, t = config.data, config.train

  source = data.in_memory(data.load(d.name, d.train_split, data_dir=d.data_dir))
  num_classes = data.info(d.name, data_dir=d.data_dir).num_classes
  iterator = data.train_iterator(
      source, batch_size=t.batch_size // jax.process_count(), seed=config.seed, image_size=d.image_size
  )
  tx, learning_rate = optim.optimizer(config.optim, t.steps, t.batch_size)
  probe_tx = optax.adam(config.train.probe_lr)
  create = state_factory(objective, config, example_batch(source, d.image_size), tx, probe_tx, num_classes)
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
  bar = Progress(t.steps, start, images_per_step=t.batch_size, enabled=progress and jax.process_index() == 0)
  knn_monitor = KnnMonitor(objective, config, t.knn_every) if t.knn_every else None
  batch_sharding = mesh_lib.batch_sharded(mesh)
  try:
    for step in range(start, t.steps):
      batch = data.to_global(next(iterator), batch_sharding)
      state, metrics = train_step(state, batch)
      done = step + 1
      if done % t.log_every == 0 or done == t.steps:
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        metrics["learning_rate"] = float(learning_rate(step))
        if knn_monitor is not None and (done % t.knn_every == 0 or done == t.steps):
          metrics["knn_accuracy"] = knn_monitor(state)
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


def restore_trained(workdir: str, config: ml_collections.ConfigDict | None = None):
  """(objective, params, model_state) from the latest checkpoint of a training run."""
  config = load_config(workdir) if config is None else config
  objective = objectives.build(config)
  d = config.data
  source = data.in_memory(data.load(d.name, d.train_split, data_dir=d.data_dir))
  num_classes = data.info(d.name, data_dir=d.data_dir).num_classes
  tx, _ = optim.optimizer(config.optim, config.train.steps, config.train.batch_size)
  probe_tx = optax.adam(config.train.probe_lr)
  create = state_factory(objective, config, example_batch(source, d.image_size), tx, probe_tx, num_classes)
  mngr = checkpoint.manager(workdir, save_every=1, keep=config.train.keep_checkpoints, async_save=False)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  restored = checkpoint.restore(mngr, abstract_state(create, config, device))
  mngr.close()
  if restored is None:
    raise FileNotFoundError(f"no checkpoint in {os.path.join(workdir, checkpoint.CHECKPOINT_DIR)}")
  state, _ = restored
  return objective, state.params, state.model_state
