"""SIGTERM as a request to stop cleanly, so that a preempted run loses no work.

Schedulers (Slurm, Kubernetes, spot and preemptible VMs) send SIGTERM some seconds before they
kill a job. While `train` runs, SIGTERM only raises a flag: the step in flight finishes, a
checkpoint of that step is written (forced, and waited for), and `train` raises `Preempted`,
which the CLI turns into exit status PREEMPTED_EXIT_CODE. Resuming is the same command.

With several processes (`jax.distributed`), every process must stop at the same step or the
others would hang in the next collective; there JAX's own preemption service (which catches
SIGTERM itself) agrees on that step, read through orbax's `reached_preemption`. No handler of
ours is installed then.
"""

from __future__ import annotations

import signal
import threading
from typing import Callable

import jax

# EX_TEMPFAIL of sysexits.h, "temporary failure; the user is invited to retry": schedulers
# and wrappers can requeue the job on this status and treat any other non-zero one as a failure.
PREEMPTED_EXIT_CODE = 75


class Preempted(Exception):
  """Training stopped on SIGTERM after saving the checkpoint of `step`."""

  def __init__(self, step: int, checkpoint_dir: str):
    super().__init__(f"stopped by SIGTERM after step {step}; its checkpoint is in {checkpoint_dir}. "
                     "Run the same command again to resume.")
    self.step, self.checkpoint_dir = step, checkpoint_dir


class StopOnSigterm:
  """Between `install` and `uninstall` (or inside `with`), SIGTERM sets `requested` instead of
  ending the process; `uninstall` puts the previous handler back. `reached(step)` says whether to stop after `step`.

  `sync_point(step)`: the multi-process agreement (orbax's `CheckpointManager.reached_preemption`),
  used instead of a handler when there are several processes. A handler can only be installed
  from the main thread; elsewhere (a notebook's worker thread) SIGTERM keeps its usual effect.
  """

  def __init__(self, sync_point: Callable[[int], bool] | None = None):
    self.requested = False
    self._sync_point = sync_point
    self._previous = None
    self._installed = False

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def install(self) -> StopOnSigterm:
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
      self._installed = True
    return self

  def uninstall(self) -> None:
    if self._installed:
      signal.signal(signal.SIGTERM, self._previous)
      self._installed = False

  def __enter__(self) -> StopOnSigterm:
    return self.install()

  def __exit__(self, *exc_info) -> None:
    self.uninstall()

  def reached(self, step: int) -> bool:
    if jax.process_count() > 1 and self._sync_point is not None:
      return self._sync_point(step)
    return self.requested
