"""The train state: one pytree, replicated over the mesh, saved whole by orbax."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: optimizer steps taken
  params: Any  # the objective's trainable parameters
  opt_state: Any
  model_state: Any  # batch_stats, EMA targets, ...
