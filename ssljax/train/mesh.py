"""The device mesh: one `data` axis over every device of every host."""

from __future__ import annotations

import jax

from ssljax.interface import DATA_AXIS


def data_mesh() -> jax.sharding.Mesh:
  # Explicit axes make the batch's sharding part of its type: an input that is not split
  # over `data` is an error at trace time rather than a silent reshard inside the step.
  return jax.make_mesh((jax.device_count(),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Explicit,))


def replicated(mesh) -> jax.sharding.NamedSharding:
  return jax.sharding.NamedSharding(mesh, jax.P())


def batch_sharded(mesh) -> jax.sharding.NamedSharding:
  return jax.sharding.NamedSharding(mesh, jax.P(DATA_AXIS))
