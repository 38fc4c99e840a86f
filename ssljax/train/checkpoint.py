"""orbax checkpoints of the train state and the grain iterator, saved side by side.

A step's checkpoint holds two items: `state` (the TrainState pytree, written by all processes
together, each its own shards) and `data` (every process's data iterator state as JSON, one
file per process), so a resumed run sees exactly the batches an uninterrupted run would have
seen. orbax writes into a temporary directory and renames it when complete, so a
killed run never leaves a half-written checkpoint under a step's name (the manager removes the
temporary directories when it starts).

A checkpoint can still be unreadable: a disk that filled up, a file truncated or deleted by
hand, a copy that stopped halfway. `restore` then warns, naming it, moves it aside into
`<workdir>/checkpoints_corrupt/` (so later saves of that step do not collide with it, and
nothing is deleted) and takes the one before. A checkpoint that reads fine but holds another
model's parameters is not skipped: every older one would hold the same, and starting afresh
over a run would lose it; that is an error naming the parameters that differ.
"""

from __future__ import annotations

import os
import shutil
import warnings

import jax
import orbax.checkpoint as ocp

from ssljax.errors import UserError
from ssljax.workdir import CorruptCheckpointError, checkpoint_dir

CORRUPT_DIR = "checkpoints_corrupt"  # beside `checkpoints/`: unreadable steps, set aside


class CheckpointMismatchError(UserError):
  """A readable checkpoint of another model: other parameter names or shapes."""


class SkippedCheckpointWarning(UserWarning):
  """An unreadable checkpoint was skipped and the one before it restored."""


def manager(workdir: str, *, save_every: int, keep: int, async_save: bool = True,
            low_memory: bool = False) -> ocp.CheckpointManager:
  """The run's checkpoint manager. orbax's default layout (OCDBT) holds every array's compressed
  bytes in memory until the whole checkpoint commits, about the state's size again; with
  `low_memory` each array is written to its own files as it goes (an imported checkpoint, saved
  once). `restore` reads either layout."""
  options = ocp.CheckpointManagerOptions(
      save_interval_steps=save_every,
      max_to_keep=keep,
      enable_async_checkpointing=async_save,
      cleanup_tmp_directories=True,
  )
  handlers = {"state": ocp.StandardCheckpointHandler(use_ocdbt=not low_memory), "data": data_handler()}
  return ocp.CheckpointManager(checkpoint_dir(workdir), item_handlers=handlers, options=options)


def data_file(process_index: int, process_count: int) -> str:
  """The file of one process's iterator state in a checkpoint's `data` item. One process keeps
  orbax's own name (`metadata`), so single-process checkpoints read as they always have."""
  return "metadata" if process_count == 1 else f"process_{process_index}-of-{process_count}.json"


def data_handler() -> ocp.JsonCheckpointHandler:
  """Every process writes and reads its own iterator state (each reads other records), not
  the primary process's alone: `primary_host=None` lets every process write."""
  return ocp.JsonCheckpointHandler(
      filename=data_file(jax.process_index(), jax.process_count()),
      multiprocessing_options=ocp.options.MultiprocessingOptions(primary_host=None),
  )


def save(mngr: ocp.CheckpointManager, step: int, state, data_state: dict | None, force: bool = False) -> bool:
  items = {"state": ocp.args.StandardSave(state)}
  items["data"] = ocp.args.JsonSave(data_state or {})
  return mngr.save(step, args=ocp.args.Composite(**items), force=force)


def restore(mngr: ocp.CheckpointManager, abstract_state, step: int | None = None):
  """(state, data_state) of `step`, by default of the newest readable checkpoint; None when
  there is none.

  Without `step`, the checkpoints are tried newest first: an unreadable one is skipped with a
  SkippedCheckpointWarning naming it and set aside (module docstring). Raises
  CorruptCheckpointError when checkpoints exist but none can be read (starting afresh would
  silently drop the run), and CheckpointMismatchError for a readable checkpoint of another
  model, without trying older ones.
  """
  if step is not None:
    return _restore_step(mngr, abstract_state, step)
  skipped = []
  for candidate in sorted(mngr.all_steps(), reverse=True):
    try:
      restored = _restore_step(mngr, abstract_state, candidate)
    except CorruptCheckpointError as error:
      cause = error.__cause__ or error
      reason = f"{type(cause).__name__}: {str(cause)[:400]}"  # tensorstore's errors run to pages
      warnings.warn(f"skipping the unreadable checkpoint {step_path(mngr, candidate)} (step {candidate}): {reason}",
                    SkippedCheckpointWarning, stacklevel=2)
      skipped.append((candidate, reason))
      continue
    _set_aside(mngr, [s for s, _ in skipped])
    return restored
  if skipped:
    reasons = "; ".join(f"step {s}: {reason}" for s, reason in skipped)
    raise CorruptCheckpointError(
        f"none of the {len(skipped)} checkpoints in {mngr.directory} can be read ({reasons}). "
        "Move that directory aside to train afresh, or use a new --workdir.")
  return None


def step_path(mngr: ocp.CheckpointManager, step: int) -> str:
  return os.path.join(str(mngr.directory), str(step))


def _restore_step(mngr: ocp.CheckpointManager, abstract_state, step: int):
  path = step_path(mngr, step)
  try:
    metadata = mngr.item_metadata(step)["state"]
    tree = getattr(metadata, "tree", metadata)
    if tree is None:
      raise ValueError("the state's metadata is missing")
  except Exception as error:  # orbax raises many types for unreadable files
    raise CorruptCheckpointError(f"cannot read the checkpoint of step {step} in {path}") from error
  differences = shape_differences(tree, abstract_state)
  if differences:
    raise CheckpointMismatchError(
        f"the checkpoint of step {step} in {path} holds another model's state: "
        f"{len(differences)} entries differ from this config's, e.g. {'; '.join(differences[:3])}. "
        "Resume with the config that run saved (config.json beside it), or use a new --workdir.")
  _check_process_count(path, step)
  try:
    restored = mngr.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()
        ),
    )
  except Exception as error:  # orbax raises many types for unreadable files
    raise CorruptCheckpointError(
        f"cannot restore the checkpoint of step {step} in {path}: {type(error).__name__}: {error}. "
        "Delete that step's directory to resume from the previous checkpoint, or use a new --workdir."
    ) from error
  return restored["state"], restored["data"]


def _check_process_count(path: str, step: int) -> None:
  """A checkpoint saved by another number of processes holds no iterator state for this
  process's part of the data (text packs each process's documents on its own): a mismatch, not
  a corrupt checkpoint, since every older one was saved the same way."""
  directory = os.path.join(path, "data")
  mine = data_file(jax.process_index(), jax.process_count())
  if not os.path.isdir(directory) or os.path.exists(os.path.join(directory, mine)):
    return
  saved = sorted(f for f in os.listdir(directory) if f == "metadata" or f.startswith("process_"))
  if saved:
    counts = {1 if f == "metadata" else int(f.split("-of-")[1].split(".")[0]) for f in saved}
    raise CheckpointMismatchError(
        f"the checkpoint of step {step} in {path} was saved by {' or '.join(map(str, sorted(counts)))} "
        f"process(es), this run has {jax.process_count()}: each process's data position is its own. "
        "Resume with the same number of processes, or use a new --workdir.")


def _path_shapes(tree) -> dict[str, tuple[int, ...]]:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(path, simple=True, separator="/"): tuple(leaf.shape) for path, leaf in leaves}


def shape_differences(saved_tree, abstract_state) -> list[str]:
  """Where a checkpoint's state (its metadata tree) and this run's state disagree: entries only
  one of them has, and shapes that differ, each as a readable line."""
  saved, wanted = _path_shapes(saved_tree), _path_shapes(abstract_state)
  params_first = lambda k: (not k.startswith("params/"), k)  # noqa: E731  (the optimizer state follows them)
  lines = [f"{k}: {saved[k]} in the checkpoint, {wanted[k]} here"
           for k in sorted(saved.keys() & wanted.keys(), key=params_first) if saved[k] != wanted[k]]
  lines += [f"{k}: only in the checkpoint" for k in sorted(saved.keys() - wanted.keys(), key=params_first)]
  lines += [f"{k}: not in the checkpoint" for k in sorted(wanted.keys() - saved.keys(), key=params_first)]
  return lines


def _set_aside(mngr: ocp.CheckpointManager, steps: list[int]) -> None:
  """Moves unreadable steps out of the manager's directory: a later save of the same step
  would otherwise collide with them, and deleting them would destroy what a person may want
  to inspect."""
  if not steps:
    return
  if jax.process_index() == 0:
    aside = os.path.join(os.path.dirname(str(mngr.directory)), CORRUPT_DIR)
    os.makedirs(aside, exist_ok=True)
    for step in steps:
      target = os.path.join(aside, str(step))
      suffix = 1
      while os.path.exists(target):
        target, suffix = os.path.join(aside, f"{step}.{suffix}"), suffix + 1
      shutil.move(step_path(mngr, step), target)
      warnings.warn(f"moved the unreadable checkpoint of step {step} to {target}", SkippedCheckpointWarning,
                    stacklevel=3)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices("ssljax_checkpoints_set_aside")
  mngr.reload()
