"""Non-finite losses and gradients: found inside the step, acted on by the loop.

`config.train.nonfinite` says what happens when a step's loss or any gradient is NaN or inf:

- "stop" (default): training stops with a NonFiniteError naming the step, the metrics that
  went non-finite and the first parameter whose gradient did. No checkpoint of a non-finite
  state is ever written (the flags are looked at before every save), so the latest checkpoint
  is the last good state.
- "skip": the update is dropped inside the jitted step (parameters, optimizer state, model
  state and probe stay as they were; only the step counter advances, so the data and the
  random keys move on) and the loop logs `skipped_steps`, the steps skipped since the
  previous log line.

The step returns two small integer metrics, the same on every device: FINITE (1 when the loss
and every gradient are finite) and FIRST_BAD (the index, in `jax.tree.leaves(params)` order,
of the first parameter with a non-finite gradient; the number of leaves when there is none).
The loop keeps them on the device and reads them only when it fetches metrics anyway (log
points) or is about to save, so checking costs no host round trip per step.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from ssljax.errors import UserError
from ssljax.interface import DATA_AXIS

POLICIES = ("stop", "skip")
FINITE, FIRST_BAD = "all_finite", "first_nonfinite_grad"


class NonFiniteError(UserError, FloatingPointError):
  """A step's loss or gradients were NaN or inf under train.nonfinite="stop"."""


def flags(loss: jax.Array, grads) -> dict[str, jax.Array]:
  """{FINITE, FIRST_BAD} of one step, per device inside shard_map. A split (FSDP) gradient is
  each device's slice, so the verdict is agreed over the devices (pmin); for replicated ones
  the pmin changes nothing."""
  leaves = jax.tree.leaves(grads)
  bad_index = jnp.int32(len(leaves))
  for i, g in reversed(list(enumerate(leaves))):  # ends at the first non-finite leaf
    bad_index = jnp.where(jnp.all(jnp.isfinite(g)), bad_index, jnp.int32(i))
  first_bad = lax.pmin(bad_index, DATA_AXIS)
  loss_finite = lax.pmin(jnp.all(jnp.isfinite(loss)).astype(jnp.int32), DATA_AXIS)
  finite = loss_finite * (first_bad == len(leaves)).astype(jnp.int32)
  return {FINITE: finite, FIRST_BAD: first_bad}


def keep_if_not_finite(finite: jax.Array, new_state, old_state):
  """`new_state` if `finite`, else `old_state` with the step counter of `new_state`."""
  kept = jax.tree.map(lambda new, old: jnp.where(finite > 0, new, old), new_state, old_state)
  return kept.replace(step=new_state.step)


class Watch:
  """The loop's side: collects each step's flags (still on the device), and at `check` reads
  them, counts skipped steps and, under "stop", raises for the first non-finite one."""

  def __init__(self, policy: str, params):
    if policy not in POLICIES:
      raise ValueError(f"config.train.nonfinite must be one of {POLICIES}, got {policy!r}")
    self.policy = policy
    paths = jax.tree_util.tree_flatten_with_path(params)[0]
    self._paths = [jax.tree_util.keystr(path, simple=True, separator="/") for path, _ in paths]
    self._pending: list[tuple[int, dict]] = []
    self._skipped = 0

  def add(self, step: int, metrics: dict) -> dict:
    """Keeps `step`'s metrics (device arrays) for the next `check`; returns them without the
    flags, which are not metrics to log."""
    self._pending.append((step, metrics))
    return {k: v for k, v in metrics.items() if k not in (FINITE, FIRST_BAD)}

  def check(self, last_checkpoint: int | None = None) -> None:
    pending, self._pending = jax.device_get(self._pending), []
    for step, metrics in pending:
      if int(metrics[FINITE]):
        continue
      if self.policy == "skip":
        self._skipped += 1
        continue
      raise NonFiniteError(self._message(step, metrics, last_checkpoint))

  def metrics(self) -> dict[str, int]:
    """What to log: under "skip", `skipped_steps`, the steps skipped since the previous call
    (their sum over the log is the run's total); nothing under "stop"."""
    if self.policy != "skip":
      return {}
    skipped, self._skipped = self._skipped, 0
    return {"skipped_steps": skipped}

  def _message(self, step: int, metrics: dict, last_checkpoint: int | None) -> str:
    values = {k: float(v) for k, v in metrics.items() if k not in (FINITE, FIRST_BAD)}
    bad = [f"{k}={v}" for k, v in values.items() if not math.isfinite(v)]
    first = int(metrics[FIRST_BAD])
    what = [f"non-finite metrics: {', '.join(bad)}"] if bad else [f"loss={values.get('loss')} (finite)"]
    if first < len(self._paths):
      what.append(f"first parameter with a non-finite gradient: {self._paths[first]}")
    resume = (f"The latest checkpoint (step {last_checkpoint}) holds finite values; the same command "
              "resumes from it." if last_checkpoint is not None else "No checkpoint was written before it.")
    return (f"training stopped at step {step}: the loss or gradients are not finite ({'; '.join(what)}). "
            f"{resume} Lower config.optim.lr, clip gradients with config.optim.clip_norm, compute in "
            "float32 (config.model.dtype), or set config.train.nonfinite='skip' to drop such updates.")
