"""Several processes, one per host (or several per host): JAX's multi-controller runtime.

`initialize` runs at the start of the CLI, before any JAX computation, and calls
`jax.distributed.initialize` when something asks for several processes:

- the command line: `--distributed`, or any of `--coordinator_address`, `--num_processes`,
  `--process_id` (all three for a hand-started group, e.g. on one machine);
- the config: `config.train.distributed = True`;
- the environment: `JAX_COORDINATOR_ADDRESS` (JAX's own variable), or a launcher that started
  several tasks: SLURM (a job step of `srun` with `SLURM_NTASKS` > 1), Open MPI
  (`OMPI_COMM_WORLD_SIZE` > 1). JAX then reads the coordinator and the process ids from that
  environment, and (JAX's rule) gives each task one GPU, its local rank's: start one task per
  GPU. Cloud TPU pods are detected by JAX too, but finding out needs a metadata query: pass
  `--distributed` there.

Afterwards `jax.devices()` lists every device of every process; the mesh spans them all
(`train/mesh.py`), each process feeds its own part of every batch (`data.train_iterator`,
`data.to_global`), and orbax writes checkpoints from all processes together.
"""

from __future__ import annotations

import os

import jax


def requested(flag: bool = False, coordinator_address: str | None = None, num_processes: int | None = None,
              process_id: int | None = None, config=None, environ=None) -> bool:
  """Whether the flags, the config or the environment ask for a multi-process run."""
  environ = os.environ if environ is None else environ
  if flag or coordinator_address or num_processes is not None or process_id is not None:
    return True
  if config is not None and "train" in config and config.train.get("distributed", False):
    return True
  if environ.get("JAX_COORDINATOR_ADDRESS"):
    return True
  slurm_step = "SLURM_STEP_NODELIST" in environ  # inside `srun`, not merely an allocation
  return ((slurm_step and int(environ.get("SLURM_NTASKS") or 1) > 1)
          or int(environ.get("OMPI_COMM_WORLD_SIZE") or 1) > 1)


def initialize(flag: bool = False, coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, config=None) -> bool:
  """Starts JAX's distributed runtime when `requested`; returns whether it did. Arguments left
  None come from the cluster environment."""
  if not requested(flag, coordinator_address, num_processes, process_id, config):
    return False
  # Cross-process collectives between CPU devices (tests, CPU clusters) go through gloo; the
  # option only concerns CPU devices and is gloo by default in current JAX, named here so an
  # older default ("none": no cross-process collectives) cannot hang a CPU run.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                             process_id=process_id)
  return True
