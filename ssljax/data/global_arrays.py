"""Per-process batches to global jax.Arrays (the multi-host input path).

Each process holds only its own rows of the global batch (grain shards by
process). `jax.make_array_from_process_local_data` stitches those rows into one
global array laid out by `sharding`, without any host ever holding all rows; on
a single process it is a plain device_put.
"""

import jax
import numpy as np


def to_global(
    local_batch: dict[str, np.ndarray], sharding: jax.sharding.NamedSharding
) -> dict[str, jax.Array]:
  """Global arrays from this process's slice of the batch.

  Args:
    local_batch: leaves with a leading per-process batch dim, e.g. image
      (b, H, W, C) and label (b,), where b = global batch / process_count.
    sharding: how the global batch is laid out, typically
      NamedSharding(mesh, jax.P("data")) so the batch dim is split over every
      device of every host and the other dims are whole on each device.

  Returns:
    The same tree of jax.Arrays with leading dim b * process_count.
  """
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
      local_batch)
