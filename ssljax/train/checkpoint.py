"""orbax checkpoints of the train state and the grain iterator, saved side by side.

A step's checkpoint holds two items: `state` (the TrainState pytree) and `data` (the data
iterator's state as JSON), so a resumed run sees exactly the batches an uninterrupted run
would have seen. orbax writes into a temporary directory and renames it when complete, so a
killed run never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import os

import orbax.checkpoint as ocp

from ssljax.workdir import CHECKPOINT_DIR, checkpoint_dir


class CorruptCheckpointError(RuntimeError):
  pass


def manager(workdir: str, *, save_every: int, keep: int, async_save: bool = True) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      save_interval_steps=save_every,
      max_to_keep=keep,
      enable_async_checkpointing=async_save,
      cleanup_tmp_directories=True,
  )
  return ocp.CheckpointManager(checkpoint_dir(workdir), item_names=("state", "data"), options=options)


def save(mngr: ocp.CheckpointManager, step: int, state, data_state: dict | None, force: bool = False) -> bool:
  items = {"state": ocp.args.StandardSave(state)}
  items["data"] = ocp.args.JsonSave(data_state or {})
  return mngr.save(step, args=ocp.args.Composite(**items), force=force)


def restore(mngr: ocp.CheckpointManager, abstract_state, step: int | None = None):
  """(state, data_state) of `step` (default: the latest), or None when there is none."""
  step = mngr.latest_step() if step is None else step
  if step is None:
    return None
  try:
    restored = mngr.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()
        ),
    )
  except Exception as error:  # orbax raises many types for unreadable files
    path = os.path.join(str(mngr.directory), str(step))
    raise CorruptCheckpointError(
        f"cannot restore the checkpoint of step {step} in {path}: {type(error).__name__}: {error}. "
        "Delete that step's directory to resume from the previous checkpoint, or use a new --workdir."
    ) from error
  return restored["state"], restored["data"]
