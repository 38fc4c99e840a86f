"""A run's directory: its config and the trained state in its checkpoints.

Everything that reads a run (evaluation, generation, fine-tuning, the table, `init_from`) goes
through here, so none of it needs the trainer: reading the state takes only the checkpoint (no
dataset, no optimizer, no objective). The trainer writes what is read here; the objective of a
saved run is `ssljax.objectives.restore_model`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from ssljax.errors import UserError

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"


class NotARunError(UserError, FileNotFoundError):
  """A directory given as a run's workdir holds no run (no config.json), or no checkpoint of it."""


class CorruptCheckpointError(UserError, RuntimeError):
  """No checkpoint of the run (or not the step asked for) can be read."""


def replace_file(path: str, text: str) -> None:
  """Writes `text` beside `path` and renames it into place, so a run killed mid-write leaves the
  old file whole (or none), never a torn one."""
  with open(path + ".tmp", "w") as f:
    f.write(text)
  os.replace(path + ".tmp", path)


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  replace_file(os.path.join(workdir, CONFIG_FILE), config.to_json_best_effort(indent=2))


def load_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise NotARunError(f"{path} does not exist: is {workdir!r} the workdir of an `ssljax train` run?")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def saved_config(workdir: str) -> dict | None:
  """The config a run saved in `workdir`, as plain JSON, or None when there is none."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def flatten(tree: dict, prefix: str = "") -> dict:
  """{"train": {"steps": 5}} -> {"train.steps": 5}: a config as its dotted keys."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(flatten(value, f"{prefix}{key}."))
    else:
      flat[prefix + key] = value
  return flat


MISSING = "<missing>"  # how config_differences shows a key that one side lacks


def config_differences(saved: dict, config: ml_collections.ConfigDict) -> dict[str, tuple[Any, Any]]:
  """{dotted key: (saved value, value in `config`)} for every key whose values differ.

  `saved` is a config as `load_config`'s JSON holds it; `config` goes through the same JSON
  (tuples become lists), so only real differences remain."""
  old = flatten(saved)
  new = flatten(json.loads(config.to_json_best_effort()))
  return {k: (old.get(k, MISSING), new.get(k, MISSING))
          for k in sorted(old.keys() | new.keys()) if old.get(k, MISSING) != new.get(k, MISSING)}


def checkpoint_dir(workdir: str) -> str:
  return os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))


def restore_state(workdir: str, step: int | None, sharding: jax.sharding.Sharding | None) -> dict:
  """The saved TrainState of `step` (default: the latest) as a plain dict of arrays, each placed
  with `sharding` (default: this process's first device). Shapes come from the checkpoint's own
  metadata: nothing of the run (objective, dataset, optimizer) is rebuilt."""
  directory = checkpoint_dir(workdir)
  if not os.path.isdir(directory):
    raise NotARunError(f"no checkpoint in {directory}: is {workdir!r} the workdir of an `ssljax train` run "
                       "that saved one?")
  handlers = {"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler()}
  # A step that cannot be read is reported once, as the CorruptCheckpointError below; orbax's own
  # warnings about its missing files would come before it.
  with quiet_absl(), ocp.CheckpointManager(directory, item_handlers=handlers) as mngr:
    step = mngr.latest_step() if step is None else step
    if step is None:
      raise NotARunError(f"no checkpoint in {directory}: has `ssljax train` saved one yet?")
    sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    try:
      metadata = mngr.item_metadata(step)["state"]
      tree = getattr(metadata, "tree", metadata)
      abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), tree)
      return mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))["state"]
    except Exception as error:  # orbax raises many types for unreadable files
      reason = f"{type(error).__name__}: {str(error)[:400]}"  # tensorstore's errors run to pages
      raise CorruptCheckpointError(f"cannot read the checkpoint of step {step} in {directory} ({reason}); restore "
                                   "an intact copy of the run, or move that step's directory aside to read the "
                                   "one before") from error


@contextlib.contextmanager
def quiet_absl():
  """absl's warnings (orbax logs through absl) held back for the duration; errors still show."""
  logger = logging.getLogger("absl")
  level = logger.level
  logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    logger.setLevel(level)


def restore_params(workdir: str, step: int | None = None, sharding: jax.sharding.Sharding | None = None):
  """The trained parameters of a run's latest (or `step`'s) checkpoint, without building its
  objective (what `config.init_from` reads). `sharding`: where every array goes (default: this
  process's first device; the trainer passes one replicated over its mesh)."""
  return restore_state(workdir, step, sharding)["params"]

