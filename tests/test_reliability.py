"""Reliability of `ssljax train`: a preempted run (SIGTERM) saves and exits 75; a run killed at
any moment (SIGKILL, also while an asynchronous checkpoint is being written) resumes from its
last complete checkpoint with exactly the losses of an uninterrupted run; an unreadable
checkpoint is skipped with a warning; a changed config stops a resume; non-finite losses and
gradients stop or are skipped; bad inputs stop before compute, each with a message naming the
problem and the fix."""

import glob
import json
import os
import random
import re
import shutil
import signal
import subprocess
import time
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from absl import flags
from ml_collections import config_flags

from helpers import REPO, data_mesh, popen_cli, run_cli
from ssljax import data, interface, losses, objectives, workdir as workdir_lib
from ssljax.interface import DATA_AXIS, Family, LossAux, Objective, TrainInput
from ssljax.train import checkpoint, checks, defaults, loop, nonfinite, preemption, sharding, step as step_lib
from ssljax.train.metrics import read_metrics
from ssljax.train.state import TrainState

SMOKE = os.path.join(REPO, "configs", "simclr.py") + ":smoke"
GPT_SMOKE = os.path.join(REPO, "configs", "gpt.py") + ":smoke"
STEPS = 50
COMMON = ["--config", SMOKE, "--noprogress", f"--config.train.steps={STEPS}", "--config.train.checkpoint_every=10",
          "--config.train.log_every=1", "--config.train.evaluate=False"]


def _losses(workdir):
  return {r["step"]: r["loss"] for r in read_metrics(workdir)}


def _wait_for(condition, process, timeout=300):
  """Polls `condition()` every 5 ms while `process` runs; True once it holds."""
  deadline = time.time() + timeout
  while time.time() < deadline and process.poll() is None:
    if condition():
      return True
    time.sleep(0.005)
  return False


def _logged_steps(workdir) -> int:
  path = os.path.join(workdir, "metrics.jsonl")
  return len(open(path).readlines()) if os.path.exists(path) else 0


def _tmp_checkpoints(workdir, step="*"):
  """orbax's temporary directories of saves in progress (or killed), of `step` or any."""
  return glob.glob(os.path.join(workdir, "checkpoints", f"{step}.orbax-checkpoint-tmp*"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
  """An uninterrupted run of COMMON: its workdir."""
  workdir = str(tmp_path_factory.mktemp("reference") / "run")
  result = run_cli(["train", "--workdir", workdir, *COMMON], data_dir)
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir


# --- preemption --------------------------------------------------------------------------------


def test_sigterm_saves_the_step_in_flight_exits_75_and_resumes_identically(tmp_path, data_dir, reference):
  workdir = str(tmp_path / "run")
  process = popen_cli(["train", "--workdir", workdir, *COMMON], data_dir, stdout=subprocess.DEVNULL,
                      stderr=subprocess.PIPE, text=True)
  assert _wait_for(lambda: _logged_steps(workdir) >= 12, process), "the run ended before it could be stopped"
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=300)
  assert process.returncode == preemption.PREEMPTED_EXIT_CODE == 75, stderr[-3000:]
  stopped_at = max(_losses(workdir))
  assert stopped_at < STEPS
  assert f"stopped by SIGTERM after step {stopped_at}" in stderr and "Traceback" not in stderr
  # The step in flight was finished and saved, whether or not checkpoint_every was due.
  assert checks.saved_steps(workdir)[-1] == stopped_at and not _tmp_checkpoints(workdir)

  resumed = run_cli(["train", "--workdir", workdir, *COMMON], data_dir)  # the same command
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert _losses(workdir) == _losses(reference)


def test_sigterm_handler_is_installed_only_while_training():
  previous = signal.getsignal(signal.SIGTERM)
  with preemption.StopOnSigterm() as stop:
    assert signal.getsignal(signal.SIGTERM) not in (previous, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)  # caught: the test process goes on
    time.sleep(0.01)
    assert stop.reached(1)
  assert signal.getsignal(signal.SIGTERM) == previous


# --- kills ---------------------------------------------------------------------------------------

# Runs the CLI with the rename that completes the step-20 checkpoint held back for a minute, so
# that a test can kill the run while that asynchronous save is in progress (its files written
# into orbax's temporary directory, not yet renamed).
_SLOW_SAVE = """
import asyncio, sys
from orbax.checkpoint._src.path import atomicity
finalize = atomicity.AtomicRenameTemporaryPath.finalize
async def slow_finalize(self, *args, **kwargs):
  if self.get_final().name == "20":
    await asyncio.sleep(60)
  return await finalize(self, *args, **kwargs)
atomicity.AtomicRenameTemporaryPath.finalize = slow_finalize
from ssljax.cli import run
sys.argv = ["ssljax", *sys.argv[1:]]
run()
"""


def test_sigkill_at_start_and_during_an_async_save_resumes_identically(tmp_path, data_dir, reference):
  """Killed while starting (no checkpoint yet), then while the step-20 checkpoint is being
  written: the run restarts from step 10, the last complete checkpoint, and its losses, data
  order and final parameters (bit for bit) equal those of an uninterrupted run."""
  workdir = str(tmp_path / "run")
  quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  process = popen_cli(["train", "--workdir", workdir, *COMMON], data_dir, **quiet)
  assert _wait_for(lambda: os.path.isdir(workdir), process)  # the trainer has started
  process.kill()
  assert process.wait() == -signal.SIGKILL
  assert checks.saved_steps(workdir) == []

  process = popen_cli(["train", "--workdir", workdir, *COMMON], data_dir, python_args=("-c", _SLOW_SAVE), **quiet)
  assert _wait_for(lambda: _tmp_checkpoints(workdir, 20), process), "no save in progress was seen"
  process.kill()
  assert process.wait() == -signal.SIGKILL
  assert _tmp_checkpoints(workdir, 20), "the save finished before the kill"
  assert checks.saved_steps(workdir)[-1] == 10

  resumed = run_cli(["train", "--workdir", workdir, *COMMON], data_dir)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert _losses(workdir) == _losses(reference)
  assert not _tmp_checkpoints(workdir)  # the manager removed the partial one
  # After both kills, the final parameters and model state are the uninterrupted run's, bit for bit.
  _, params, model_state = objectives.restore_model(workdir)
  _, ref_params, ref_model_state = objectives.restore_model(reference)
  assert jax.tree.all(jax.tree.map(np.array_equal, (params, model_state), (ref_params, ref_model_state)))


@pytest.mark.slow
def test_soak_random_sigkills_end_with_the_uninterrupted_parameters(tmp_path, data_dir):
  """2,000 steps of the smoke config, SIGKILLed at a random moment every 100-300 steps (and now
  and then within seconds of starting), end with the parameters of an uninterrupted run."""
  steps = 2000
  args = ["--config", SMOKE, "--noprogress", f"--config.train.steps={steps}", "--config.train.checkpoint_every=25",
          "--config.train.log_every=10", "--config.train.evaluate=False"]
  started = time.time()
  reference_dir = str(tmp_path / "reference")
  result = run_cli(["train", "--workdir", reference_dir, *args], data_dir)
  assert result.returncode == 0, result.stderr[-3000:]

  rng = random.Random(0)
  workdir = str(tmp_path / "killed")
  logged = lambda: max(_losses(workdir), default=0)  # noqa: E731
  kills = during_save = 0
  target = rng.randint(100, 300)
  while True:
    process = popen_cli(["train", "--workdir", workdir, *args], data_dir, stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE, text=True)
    if rng.random() < 0.15:  # soon after the start: importing, building, compiling or restoring
      time.sleep(rng.uniform(0.0, 6.0))
    elif not _wait_for(lambda: logged() >= target, process, timeout=600):
      break  # the run got to its end first
    time.sleep(rng.uniform(0.0, 0.05))
    if process.poll() is not None:
      break
    process.kill()
    process.wait()
    kills += 1
    during_save += bool(_tmp_checkpoints(workdir))
    target = max(target, logged()) + rng.randint(100, 300)
  _, stderr = process.communicate()
  assert process.returncode == 0, stderr[-3000:]
  print(f"survived {kills} SIGKILLs ({during_save} during a checkpoint write) in {time.time() - started:.0f} s")
  assert kills >= 6

  _, params, model_state = objectives.restore_model(workdir)
  _, ref_params, ref_model_state = objectives.restore_model(reference_dir)
  assert jax.tree.all(jax.tree.map(np.array_equal, (params, model_state), (ref_params, ref_model_state)))
  assert _losses(workdir) == _losses(reference_dir)


# --- unreadable checkpoints ----------------------------------------------------------------------


def _saved_run(workdir, steps=(1, 2, 3)):
  mngr = checkpoint.manager(workdir, save_every=1, keep=5, async_save=False)
  for s in steps:
    checkpoint.save(mngr, s, {"w": jnp.arange(300.0) * s, "b": {"x": jnp.ones(3) * s}}, {"position": s})
  mngr.close()
  return {"w": jax.ShapeDtypeStruct((300,), jnp.float32), "b": {"x": jax.ShapeDtypeStruct((3,), jnp.float32)}}


def _truncate_arrays(step_dir):
  for path in glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True):
    open(path, "r+b").truncate(3)


def _delete_metadata(step_dir):
  os.remove(os.path.join(step_dir, "state", "_METADATA"))


def _truncate_data_state(step_dir):
  with open(os.path.join(step_dir, "data", "metadata"), "w") as f:
    f.write('{"position": ')


def _empty(step_dir):
  shutil.rmtree(step_dir)
  os.makedirs(step_dir)


@pytest.mark.parametrize("corrupt", [_truncate_arrays, _delete_metadata, _truncate_data_state, _empty],
                         ids=lambda f: f.__name__.strip("_"))
def test_an_unreadable_latest_checkpoint_is_skipped_with_a_warning(tmp_path, corrupt):
  workdir = str(tmp_path)
  abstract = _saved_run(workdir)
  corrupt(os.path.join(workdir, "checkpoints", "3"))
  mngr = checkpoint.manager(workdir, save_every=1, keep=5, async_save=False)
  with pytest.warns(checkpoint.SkippedCheckpointWarning, match=r"unreadable checkpoint \S*checkpoints/3 \(step 3\)"):
    state, data_state = checkpoint.restore(mngr, abstract)
  assert data_state == {"position": 2} and float(state["w"][1]) == 2.0
  # Set aside, not deleted, so that the run can save step 3 again.
  assert mngr.all_steps() == [1, 2] and os.path.isdir(os.path.join(workdir, "checkpoints_corrupt", "3"))
  checkpoint.save(mngr, 3, state, data_state)
  mngr.close()


def test_no_readable_checkpoint_is_an_error_not_a_fresh_start(tmp_path):
  workdir = str(tmp_path)
  abstract = _saved_run(workdir, steps=(1, 2))
  for step in (1, 2):
    _delete_metadata(os.path.join(workdir, "checkpoints", str(step)))
  mngr = checkpoint.manager(workdir, save_every=1, keep=5, async_save=False)
  with pytest.warns(checkpoint.SkippedCheckpointWarning):
    with pytest.raises(checkpoint.CorruptCheckpointError, match="none of the 2 checkpoints .* can be read"):
      checkpoint.restore(mngr, abstract)


def test_a_checkpoint_of_another_model_is_named_not_skipped(tmp_path):
  workdir = str(tmp_path)
  _saved_run(workdir)
  other = {"w": jax.ShapeDtypeStruct((30,), jnp.float32), "c": jax.ShapeDtypeStruct((3,), jnp.float32)}
  mngr = checkpoint.manager(workdir, save_every=1, keep=5, async_save=False)
  with pytest.raises(checkpoint.CheckpointMismatchError) as error:
    checkpoint.restore(mngr, other)
  message = str(error.value)
  assert "step 3" in message and "w: (300,) in the checkpoint, (30,) here" in message
  assert "b/x: only in the checkpoint" in message and "c: not in the checkpoint" in message
  assert mngr.all_steps() == [1, 2, 3]  # nothing was set aside


# --- an objective for the in-process loop tests: poisoned records make the step non-finite ------

VOCAB, LENGTH, RECORDS = 16, 12, 256
POISONED = (37, 200)  # records whose batches give a NaN loss and a NaN gradient of the embedding


class _PoisonedTokens:
  def __init__(self):
    starts = np.random.default_rng(0).integers(0, VOCAB, RECORDS)
    self.tokens = (starts[:, None] + np.arange(LENGTH)) % VOCAB

  def __len__(self):
    return RECORDS

  def __getitem__(self, i):
    return {"tokens": self.tokens[i], "poison": np.float32(i in POISONED)}

  def __getitems__(self, indices):
    return [self[i] for i in indices]


def _record(record):
  return {"tokens": np.asarray(record["tokens"], np.int32), "poison": np.asarray(record["poison"], np.float32)}


class _Bigram(nn.Module):
  @nn.compact
  def __call__(self, tokens):
    return nn.Dense(VOCAB)(nn.Embed(VOCAB, 8)(tokens))  # (B, T) -> (B, T, V)


_FAMILY = Family(
    name="test_poisoned_tokens",
    train_input=lambda config, wd: TrainInput(source=_PoisonedTokens(), record_fn=_record, unit="tokens"),
)


@interface.register("test_poisoned_next_token")
def _make(config):
  net = _Bigram()

  def init(key, batch):
    return net.init(key, batch["tokens"])["params"], {}

  def loss(params, model_state, batch, keys):
    value = losses.next_token_loss(net.apply({"params": params}, batch["tokens"]), batch["tokens"],
                                   axis_name=DATA_AXIS)
    poisoned = jax.lax.psum(jnp.sum(batch["poison"]), DATA_AXIS) > 0
    # sqrt of a negative number: NaN, and a NaN gradient for the embedding alone; the inner
    # where keeps the gradient of unpoisoned batches finite (a where's unused branch still
    # gets differentiated).
    negative = jnp.where(poisoned, -1.0 - jnp.sum(jnp.abs(params["Embed_0"]["embedding"])), 1.0)
    # pmean: the same on every device, but typed as global even where the parameters arrive
    # gathered from their slices (FSDP).
    value = value + jax.lax.pmean(jnp.where(poisoned, jnp.sqrt(negative), 0.0), DATA_AXIS)
    return value, LossAux(model_state=model_state, metrics={})

  def features(params, model_state, batch):
    return jnp.zeros((batch["tokens"].shape[0], 1))

  return Objective(name="test_poisoned_next_token", family=_FAMILY, init=init, loss=loss, features=features)


def _config(steps=40, nonfinite_policy="stop", **train):
  c = defaults.base_config()
  c.objective = "test_poisoned_next_token"
  c.data.name = "poisoned tokens"
  c.optim.name, c.optim.lr, c.optim.lr_scaling = "adamw", 0.05, "none"
  c.train.batch_size, c.train.steps = 16, steps
  c.train.log_every, c.train.checkpoint_every = 10, 5
  c.train.nonfinite = nonfinite_policy
  c.train.update(train)
  return c


def _poisoned_steps(steps):
  """The steps (1-based) whose batch holds a poisoned record, from the data pipeline alone."""
  it = data.train_iterator(_PoisonedTokens(), batch_size=16, seed=0, record_fn=_record)
  return [s + 1 for s in range(steps) if next(it)["poison"].any()]


def test_nonfinite_stop_names_the_step_and_the_parameter_and_saves_nothing_after(tmp_path):
  workdir = str(tmp_path)
  first = _poisoned_steps(40)[0]
  assert 5 < first < 40  # a checkpoint exists before it
  with pytest.raises(nonfinite.NonFiniteError) as error:
    loop.train(_config(), workdir, progress=False)
  message = str(error.value)
  assert f"stopped at step {first}:" in message and "loss=nan" in message
  assert "first parameter with a non-finite gradient: Embed_0/embedding" in message
  assert "config.train.nonfinite='skip'" in message
  last = (first - 1) // 5 * 5
  assert checks.saved_steps(workdir)[-1] == last and f"latest checkpoint (step {last})" in message
  assert all(np.isfinite(r["loss"]) for r in read_metrics(workdir))


def test_nonfinite_skip_drops_the_updates_and_counts_them(tmp_path):
  workdir = str(tmp_path)
  state = loop.train(_config(nonfinite_policy="skip"), workdir, progress=False)
  history = read_metrics(workdir)
  assert int(state.step) == 40 and [r["step"] for r in history] == [10, 20, 30, 40]
  assert sum(r["skipped_steps"] for r in history) == len(_poisoned_steps(40)) >= 2
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(jax.device_get(state.params)))
  assert history[-1]["loss"] < history[0]["loss"]


def _one_step(num_devices, batch, skip, param_sharding="replicated"):
  """One train step on `num_devices`: (state before, state after, metrics), on the host."""
  objective = objectives.build(_config())
  tx = optax.adamw(0.05)
  params, model_state = objective.init(jax.random.key(0), batch)
  state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), model_state)
  mesh = data_mesh(num_devices)
  train = _config(param_sharding=param_sharding, fsdp_min_size=0).train  # fsdp: every leaf split
  specs = sharding.state_specs(state, train, num_devices)
  state = jax.device_put(state, sharding.named(mesh, specs))
  global_batch = jax.device_put(batch, jax.NamedSharding(mesh, jax.P(DATA_AXIS)))
  train_step = step_lib.make_train_step(objective, tx, jax.random.key(1), mesh, state_specs=specs,
                                        skip_nonfinite=skip)
  before = jax.device_get(state)
  after, metrics = train_step(state, global_batch)
  return before, jax.device_get(after), jax.device_get(metrics)


@pytest.mark.parametrize("param_sharding", ["replicated", "fsdp"])
@pytest.mark.parametrize("poisoned", [False, True])
def test_skip_step_keeps_the_state_and_is_the_same_on_one_and_eight_devices(poisoned, param_sharding):
  """The guard keeps the whole state of a non-finite step, and the verdict is the same on 1
  device and on 8, with parameters replicated or split over the devices (each device then sees
  only its slice of a gradient)."""
  source = _PoisonedTokens()
  batch = _record_batch(source, list(range(15)) + [POISONED[0] if poisoned else 15])
  before, one, metrics_one = _one_step(1, batch, skip=True)
  _, eight, metrics_eight = _one_step(8, batch, skip=True, param_sharding=param_sharding)
  assert int(metrics_one[nonfinite.FIRST_BAD]) == int(metrics_eight[nonfinite.FIRST_BAD]) == (2 if poisoned else 3)
  assert int(metrics_one[nonfinite.FINITE]) == int(metrics_eight[nonfinite.FINITE]) == (not poisoned)
  assert int(one.step) == int(eight.step) == 1
  for a, b in zip(jax.tree.leaves((one.params, one.opt_state)), jax.tree.leaves((eight.params, eight.opt_state))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  kept = jax.tree.leaves((before.params, before.opt_state))
  changed = [not np.array_equal(a, b) for a, b in zip(kept, jax.tree.leaves((one.params, one.opt_state)))]
  assert not any(changed) if poisoned else any(changed)
  if not poisoned:  # the guard changes nothing about a finite step
    _, unguarded, _ = _one_step(1, batch, skip=False)
    assert jax.tree.all(jax.tree.map(np.array_equal, unguarded.params, one.params))


def _record_batch(source, indices):
  records = [_record(source[i]) for i in indices]
  return {k: np.stack([r[k] for r in records]) for k in records[0]}


# --- a changed config on resume ------------------------------------------------------------------


def _fake_run(workdir, config, steps=(10,)):
  """A workdir as `ssljax train` leaves it, without training: config.json and step directories."""
  os.makedirs(workdir, exist_ok=True)
  workdir_lib.save_config(config, workdir)
  for step in steps:
    os.makedirs(os.path.join(workdir_lib.checkpoint_dir(workdir), str(step)))


def test_resume_with_a_run_changing_key_stops_and_names_both_values(tmp_path):
  config = defaults.load_config("simclr:smoke")
  _fake_run(str(tmp_path), config)
  changed = defaults.load_config("simclr:smoke")
  changed.optim.lr, changed.train.steps, changed.data.image_size = 0.2, 8, 24
  with pytest.raises(checks.ResumeError) as error:
    checks.check_resume(changed, str(tmp_path))
  message = str(error.value)
  assert "config.optim.lr: 0.1 in the saved run, 0.2 now" in message
  assert "config.train.steps: 4 in the saved run, 8 now" in message and "To train longer" in message
  assert "config.data.image_size: None in the saved run, 24 now" in message
  assert "--allow_config_change" in message and "checkpoint of step 10" in message
  with pytest.warns(UserWarning, match="config.optim.lr"):
    checks.check_resume(changed, str(tmp_path), allow_config_change=True)


def test_resume_may_change_logging_checkpointing_and_evaluation_keys(tmp_path):
  config = defaults.load_config("simclr:smoke")
  _fake_run(str(tmp_path), config)
  changed = defaults.load_config("simclr:smoke")
  changed.train.log_every, changed.train.checkpoint_every, changed.train.keep_checkpoints = 7, 9, 1
  changed.train.evaluate, changed.train.nonfinite, changed.evals.knn.k = False, "skip", 3
  changed.data.data_dir = "/elsewhere"
  checks.check_resume(changed, str(tmp_path))  # no error


def test_resume_compares_the_compute_dtype_after_resolving_auto(tmp_path):
  # A run saved when the default was "float32" resumes under the new default "auto" on CPU,
  # where "auto" means float32; bfloat16 is another run.
  saved = defaults.load_config("simclr:smoke")
  saved.model.dtype = "float32"
  _fake_run(str(tmp_path), saved)
  now = defaults.load_config("simclr:smoke")
  now.model.dtype = "auto"
  checks.check_resume(now, str(tmp_path))  # no error
  now.model.dtype = "bfloat16"
  with pytest.raises(checks.ResumeError, match="config.model.dtype: 'float32' in the saved run, 'bfloat16' now"):
    checks.check_resume(now, str(tmp_path))


@pytest.mark.parametrize("section, key", [("model", "relative_buckets"), ("optim", "schedule"), (None, "init_from")])
def test_a_run_saved_without_a_key_of_todays_config_is_refused_naming_it(tmp_path, section, key):
  # config.json of a run saved by an older ssljax lacks the keys added since; its checkpoint
  # holds another train state, so the resume stops before restoring and names each such key.
  config = defaults.load_config("gpt:smoke")
  _fake_run(str(tmp_path), config)
  path = os.path.join(str(tmp_path), workdir_lib.CONFIG_FILE)
  with open(path) as f:
    saved = json.load(f)
  del (saved[section] if section else saved)[key]
  with open(path, "w") as f:
    json.dump(saved, f)
  now = config[section][key] if section else config[key]
  with pytest.raises(checks.ResumeError, match=re.escape(f"config.{section + '.' if section else ''}{key}: <missing> "
                                                         f"in the saved run, {now!r} now")):
    checks.check_resume(config, str(tmp_path))


def test_resume_into_another_objective_is_refused_even_when_allowed(tmp_path):
  _fake_run(str(tmp_path), defaults.load_config("gpt:smoke"))
  with pytest.raises(checks.ResumeError, match="holds a run of objective 'gpt', not 'simclr'"):
    checks.check_resume(defaults.load_config("simclr:smoke"), str(tmp_path), allow_config_change=True)


def test_a_config_without_checkpoints_starts_afresh(tmp_path):
  _fake_run(str(tmp_path), defaults.load_config("gpt:smoke"), steps=())
  checks.check_resume(defaults.load_config("simclr:smoke"), str(tmp_path))  # nothing to resume


def test_cli_refuses_a_changed_config_and_trains_longer_when_allowed(tmp_path, data_dir, reference):
  workdir = str(tmp_path / "run")
  shutil.copytree(reference, workdir)
  refused = run_cli(["train", "--workdir", workdir, *COMMON, "--config.optim.lr=0.2"], data_dir)
  assert refused.returncode == 2 and "Traceback" not in refused.stderr
  assert "config.optim.lr: 0.1 in the saved run, 0.2 now" in refused.stderr
  longer = run_cli(["train", "--workdir", workdir, *COMMON, f"--config.train.steps={STEPS + 5}",
                    "--allow_config_change"], data_dir)
  assert longer.returncode == 0, longer.stderr[-3000:]
  assert max(_losses(workdir)) == STEPS + 5
  assert json.load(open(os.path.join(workdir, "config.json")))["train"]["steps"] == STEPS + 5


# --- bad inputs: each stops before compute with a message naming the problem ---------------------
# (the table in the issue notes lists the same inputs with the messages they gave)


def _cli_config(spec, overrides):
  """The config exactly as `ssljax train --config SPEC OVERRIDES...` builds it."""
  argv = ["ssljax", "--config", spec, *overrides]
  fv = flags.FlagValues()
  # config_flags finds override flags in sys.argv unless it is given the argv explicitly.
  config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True, sys_argv=argv)
  fv(argv)
  return fv.config


def _check(spec, *overrides, edit=None):
  def run(tmp_path, data_dir):
    config = _cli_config(spec, overrides)
    if edit is not None:
      config = edit(config)
    checks.check(config)
  return run


def _train(spec, *overrides, prepare=None, allow=False):
  """loop.train in a fresh workdir (after `prepare(workdir, data_dir)`, which may return another
  data dir), with the bundled datasets of the session's data dir."""
  def run(tmp_path, data_dir):
    workdir = str(tmp_path / "run")
    data_dir = (prepare(workdir, data_dir) if prepare else None) or data_dir
    config = _cli_config(spec, [f"--config.data.data_dir={data_dir}", *overrides])
    loop.train(config, workdir, progress=False, allow_config_change=allow)
  return run


def _unlocked(change):
  def edit(config):
    config.unlock()
    change(config)
    return config
  return edit


def _from_dict(change):
  def edit(config):
    values = config.to_dict()
    change(values)
    return ml_collections.ConfigDict(values)
  return edit


def _damaged_copy(workdir, data_dir):
  """A data dir holding a copy of mnist5k whose training file lost its second half."""
  copy = os.path.join(os.path.dirname(workdir), "damaged_tfds")
  shutil.copytree(os.path.join(data_dir, "mnist5k"), os.path.join(copy, "mnist5k"))
  for path in glob.glob(os.path.join(copy, "mnist5k", "*", "mnist5k-train.array_record*")):
    open(path, "r+b").truncate(os.path.getsize(path) // 2)
  return copy


def _a_file(workdir, data_dir):
  with open(workdir, "w") as f:
    f.write("not a directory")


def _run_of(spec, **changes):
  """A workdir holding a run of `spec` (config.json and a checkpoint directory)."""
  def prepare(workdir, data_dir):
    config = defaults.load_config(spec)
    config.update_from_flattened_dict(changes)
    _fake_run(workdir, config)
  return prepare


def _trained_gpt(workdir, data_dir):
  """A real one-step run of the GPT smoke config (embed_dim 32)."""
  config = _cli_config(GPT_SMOKE, [f"--config.data.data_dir={data_dir}", "--config.train.steps=1"])
  loop.train(config, workdir, progress=False)


BAD_INPUTS = {
    # id: (how it is tried, substrings the message must hold)
    "unknown_key_override": (_check(SMOKE, "--config.train.stepz=3"), ["stepz", "steps"]),
    "wrong_type_override": (_check(SMOKE, "--config.train.steps=many"), ["config.train.steps", "many"]),
    "unknown_key_in_python": (_check(SMOKE, edit=_unlocked(lambda c: setattr(c.train, "stepz", 3))),
                              ["config.train.stepz is not a key of the simclr config", "did you mean config.train.steps"]),
    "missing_key_in_python": (_check(SMOKE, edit=_unlocked(lambda c: c.train.__delitem__("log_every"))),
                              ["config.train.log_every is missing", "configs/simclr.py"]),
    "wrong_type_in_a_dict": (_check(SMOKE, edit=_from_dict(lambda d: d["train"].update(steps=2e3))),
                             ["config.train.steps=2000.0 is of type float", "of type int"]),
    "batch_vs_devices": (_check(SMOKE, "--config.train.batch_size=12"),
                         ["config.train.batch_size=12 is not divisible by the 8 devices"]),
    "negative_seed": (_check(SMOKE, "--config.seed=-1"), ["config.seed must be a non-negative integer"]),
    "unknown_optimizer": (_check(SMOKE, "--config.optim.name=adam"), ["config.optim.name must be", "'adam'"]),
    "unknown_lr_scaling": (_check(SMOKE, "--config.optim.lr_scaling=log"), ["config.optim.lr_scaling must be"]),
    "unknown_dtype": (_check(SMOKE, "--config.model.dtype=float8"), ["config.model.dtype must be one of"]),
    "unknown_encoder": (_check(SMOKE, "--config.model.encoder=resnet19"),
                        ["config.model.encoder='resnet19' is not a ResNet", "resnet18"]),
    "zero_width": (_check(SMOKE, "--config.model.width=0"), ["config.model.width must be positive"]),
    "augment_out_of_range": (_check(SMOKE, "--config.augment.crop_scale=(0.5, 2.0)"),
                             ["config.augment", "crop_scale=(0.5, 2.0)", "<= 1"]),
    "unknown_nonfinite_policy": (_check(SMOKE, "--config.train.nonfinite=ignore"),
                                 ["config.train.nonfinite must be one of"]),
    "missing_tokenizer_file": (_check(GPT_SMOKE, "--config.text.tokenizer=sentencepiece",
                                      "--config.text.model_file=/nonexistent.model"),
                               ["config.text.model_file='/nonexistent.model' does not exist"]),
    "batch_larger_than_dataset": (_train(SMOKE, "--config.train.batch_size=8192"),
                                  ["config.train.batch_size=8192 is larger than the 3500 training examples"]),
    "dataset_not_prepared_offline": (_train(SMOKE, "--config.data.name=cifar10"),
                                     ["Dataset 'cifar10' is not prepared", "tfds build cifar10"]),
    "unknown_split": (_train(SMOKE, "--config.data.train_split=trian"), ["Unknown split 'trian'", "config.data"]),
    "missing_text_feature": (_train(GPT_SMOKE, "--config.data.text_key=body"),
                             ["KeyError: 'body'", "config.data"]),
    "image_too_small_for_the_model": (_train(os.path.join(REPO, "configs", "patch_placement.py") + ":smoke",
                                             "--config.data.image_size=16"),
                                      ["building the model", "3x3 grid needs", "16 px images"]),
    "damaged_dataset_file": (_train(SMOKE, prepare=_damaged_copy),
                             ["opening the training data (mnist5k)", "prepared again"]),
    "workdir_is_a_file": (_train(SMOKE, prepare=_a_file), ["is a file, not a directory"]),
    "resume_with_changed_config": (_train(SMOKE, "--config.optim.lr=0.2", prepare=_run_of("simclr:smoke")),
                                   ["config.optim.lr: 0.1 in the saved run, 0.2 now", "--allow_config_change"]),
    "resume_another_objective": (_train(SMOKE, prepare=_run_of("gpt:smoke")),
                                 ["holds a run of objective 'gpt', not 'simclr'"]),
    "checkpoint_of_another_model": (_train(GPT_SMOKE, "--config.model.embed_dim=64", prepare=_trained_gpt, allow=True),
                                    ["holds another model's state", "(32,) in the checkpoint, (64,) here"]),
}


def bad_input_message(name, tmp_path, data_dir) -> str:
  """The message that bad input `name` stops with (AssertionError if it does not stop)."""
  run, _ = BAD_INPUTS[name]
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # --allow_config_change's warning
    try:
      run(tmp_path, data_dir)
    except Exception as error:  # noqa: BLE001  (the message is what is checked)
      return str(error)
  raise AssertionError(f"{name} did not stop")


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_a_bad_input_stops_before_compute_naming_the_problem(name, tmp_path, data_dir):
  message = bad_input_message(name, tmp_path, data_dir)
  for part in BAD_INPUTS[name][1]:
    assert part in message, message
  assert not os.path.exists(tmp_path / "run" / "metrics.jsonl") or name == "checkpoint_of_another_model"
