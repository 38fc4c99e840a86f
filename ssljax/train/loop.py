"""The generic training loop: any registered objective, of any modality, on every device of
every host. It knows the objective only through the Objective interface and its family's
`train_input`, and the evaluators that `config.evals` names; nothing here names images or text."""

from __future__ import annotations

import logging
import os

import jax
import jax.numpy as jnp
import ml_collections

from ssljax import data, evaluators, objectives
from ssljax import workdir as workdir_lib
from ssljax.train import checkpoint, checks, mesh as mesh_lib, nonfinite, optim, preemption, sharding, step as step_lib
from ssljax.train.metrics import MetricWriter, Progress
from ssljax.train.state import TrainState
from ssljax.workdir import save_config


def state_factory(objective, example, tx):
  """A jitted function (key, pretrained=None) -> fresh TrainState (one compilation: Flax and
  optax initialise leaf by leaf otherwise, each op a compilation of its own, tens of seconds on
  CPU).

  `pretrained`: another run's parameters (`config.init_from`), handed to the objective's
  `load_pretrained` before the optimizer state is made for the result. They are an argument,
  not a constant closed over, so that they are not baked into the compiled program."""

  @jax.jit
  def create(key, pretrained=None):
    params, model_state = objective.init(key, example)
    if pretrained is not None:
      params = objective.load_pretrained(params, pretrained)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      model_state=model_state)

  return create


def init_key(config) -> jax.Array:
  return jax.random.fold_in(jax.random.key(config.seed), 0)


def abstract_state(create, config, sharding) -> TrainState:
  """Shapes, dtypes and sharding of the state `create` makes, without computing it;
  `sharding` is one sharding for every leaf or a tree of them shaped like the state."""
  shapes = jax.eval_shape(create, init_key(config))
  if isinstance(sharding, jax.sharding.Sharding):
    sharding = jax.tree.map(lambda _: sharding, shapes)
  return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, sharding)


def pretrained_params(config: ml_collections.ConfigDict, objective, mesh) -> dict | None:
  """The parameters of the run `config.init_from` names, replicated over `mesh`; None when it is
  unset. Read from that run's checkpoint alone: its objective is not built."""
  source = config.init_from
  if not source:
    return None
  if objective.load_pretrained is None:
    raise checks.ConfigError(f"config.init_from={source!r}: the {objective.name!r} objective cannot start from "
                             "another run's parameters (it has no load_pretrained); unset config.init_from")
  replicated = jax.NamedSharding(mesh, jax.P())
  return checks.as_input_error(f"reading the parameters of config.init_from={source!r}",
                               "Give the workdir of a finished `ssljax train` run.",
                               workdir_lib.restore_params, source, sharding=replicated)


def train(config: ml_collections.ConfigDict, workdir: str, *, progress: bool = True,
          allow_config_change: bool = False) -> TrainState:
  """Pretrains `config.objective`, resuming from the latest readable checkpoint in `workdir`.

  Stops before any compute when the config, its data or the workdir's run do not fit
  (`checks`; a workdir's checkpoints are resumed only with a config that trains the same run,
  unless `allow_config_change`). On SIGTERM it saves the step just finished and raises
  `preemption.Preempted`; on a non-finite loss or gradient it follows `config.train.nonfinite`."""
  checks.check(config)
  checks.check_resume(config, workdir, allow_config_change)
  objective = checks.as_input_error("building the objective from the config", "Check the config's keys.",
                                    objectives.build, config)
  mesh = mesh_lib.data_mesh()
  t = config.train

  inp = checks.as_input_error(f"opening the training data ({config.data.name})", checks.data_fix(config),
                              objective.family.train_input, config, workdir)
  if inp.iter_stage is None:  # one example per record
    checks.check_batch_fits(config, len(inp.source))
  iterator = data.train_iterator(
      inp.source, batch_size=t.batch_size // jax.process_count(), seed=config.seed,
      record_fn=inp.record_fn, iter_stage=inp.iter_stage,
  )
  example = checks.as_input_error(f"reading the first training records of {config.data.name}",
                                  checks.data_fix(config), data.example_batch, inp.source, inp.record_fn,
                                  inp.iter_stage)
  fsdp = t.param_sharding == "fsdp"
  tx, learning_rate = optim.optimizer(config.optim, t.steps, t.batch_size, sharded=fsdp)
  create = checks.as_input_error("building the model for the training examples", checks.MODEL_FIX, state_factory,
                                 objective, example, tx)
  shapes = checks.as_input_error("building the model for the training examples", checks.MODEL_FIX, jax.eval_shape,
                                 create, init_key(config))
  specs = sharding.state_specs(shapes, t, jax.device_count())
  shardings = sharding.named(mesh, specs)

  # Made only now: a run stopped by its config or its data leaves no workdir behind.
  os.makedirs(workdir, exist_ok=True)
  mngr = checkpoint.manager(workdir, save_every=t.checkpoint_every, keep=t.keep_checkpoints)
  restored = checkpoint.restore(mngr, abstract_state(create, config, shardings))
  if restored is None:
    # Made in place, each device computing only its part: a model that does not fit one
    # device replicated never exists whole (except another run's parameters, read replicated).
    pretrained = pretrained_params(config, objective, mesh)
    make = jax.jit(create, out_shardings=shardings)
    if pretrained is None:
      state = make(init_key(config))
    else:
      state = checks.as_input_error(f"starting from the parameters of config.init_from={config.init_from!r}",
                                    "Give the workdir of a run whose model this objective can start from.",
                                    make, init_key(config), pretrained)
      del pretrained  # copied into the state
  else:
    state, data_state = restored
    if data_state:  # empty for an imported run (`ssljax import`): no batch read yet
      iterator.set_state(data_state)
    logging.info("resumed from step %d", int(state.step))
  if jax.process_index() == 0:  # one writer: the processes' configs are the same
    save_config(config, workdir)
  start = int(state.step)

  train_step = step_lib.make_train_step(objective, tx, jax.random.key(config.seed), mesh,
                                        state_specs=specs, skip_nonfinite=t.nonfinite == "skip",
                                        gather_per_layer=t.fsdp_gather == "layer")
  watch = nonfinite.Watch(t.nonfinite, state.params)
  writer = MetricWriter(workdir, resume_step=start, enabled=jax.process_index() == 0)
  bar = Progress(t.steps, start, units_per_step=t.batch_size * inp.units_per_example, unit=inp.unit,
                 enabled=progress and jax.process_index() == 0)
  evaluation = checks.as_input_error("making the evaluators of config.evals", "Check config.evals.",
                                    evaluators.from_config, objective, config, workdir)
  batch_sharding = mesh_lib.batch_sharded(mesh)
  sigterm = preemption.StopOnSigterm(mngr.reached_preemption).install()
  try:
    for step in range(start, t.steps):
      batch = data.to_global(next(iterator), batch_sharding)
      state, metrics = train_step(state, batch)
      done = step + 1
      metrics = watch.add(done, metrics)
      stop = sigterm.reached(done)
      log = done % t.log_every == 0 or done == t.steps
      if log or stop or mngr.should_save(done):  # no non-finite state is logged or saved
        watch.check(last_checkpoint=mngr.latest_step())
      if log:
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        metrics.update(watch.metrics())
        metrics["learning_rate"] = float(learning_rate(step))
        due = evaluation.due(done, t.steps)
        if due:  # on the validation split: the test split is reported once, at the end
          params, model_state = sharding.to_host((state.params, state.model_state), mesh)
          reports = evaluation.run(params, model_state, config.data.eval_split, due)
          metrics.update(evaluation.scalars(reports))
        metrics.update(bar.update(done, metrics))
        if jax.process_index() == 0:
          writer.write(done, metrics)
      checkpoint.save(mngr, done, state, iterator.get_state(), force=done == t.steps or stop)
      if stop:
        mngr.wait_until_finished()
        raise preemption.Preempted(done, str(mngr.directory))
  finally:
    sigterm.uninstall()
    mngr.wait_until_finished()
    mngr.close()
    bar.close()
    writer.close()
  return state
