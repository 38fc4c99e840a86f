"""The Objective interface: what a model is and how a batch becomes a loss.

The trainer and the evaluators know an objective only through this dataclass, so a new
objective is a new module plus a config; nothing else changes. `config.objective` names the
objective and `build(config)` looks it up in the registry.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import ml_collections

# The mesh axis that spans every device of every host. Per-device code (losses, BatchNorm)
# reduces over it; the trainer builds its Mesh with this name.
DATA_AXIS = "data"

Params = Any  # a pytree of float32 arrays, the trainable parameters
ModelState = Any  # a pytree of everything else the objective carries (batch_stats, EMA target)
Batch = Mapping[str, jax.Array]  # at least {"image": uint8 (n, H, W, C)}; "label" when known


@dataclasses.dataclass(frozen=True)
class LossAux:
  """What a loss returns besides its value.

  Attributes:
    model_state: the updated non-trainable state (BatchNorm statistics, ...).
    metrics: scalars to log; each is averaged over devices by the trainer.
    features: stop-gradient encoder features of the un-augmented-label-aligned first view,
      (n, D), used by the trainer's online linear probe; None when the objective has none.
  """

  model_state: ModelState
  metrics: Mapping[str, jax.Array]
  features: jax.Array | None = None


jax.tree_util.register_dataclass(
    LossAux, data_fields=["model_state", "metrics", "features"], meta_fields=[]
)


@dataclasses.dataclass(frozen=True)
class Objective:
  """A self-supervised objective as pure functions.

  Attributes:
    name: registry name.
    init: (key, example_batch) -> (params, model_state). Runs outside any mesh.
    loss: (params, model_state, local_batch, key) -> (loss, LossAux). Runs per device inside
      shard_map; must return the *global* loss (identical on every device, e.g. through
      `psum` or a loss from `ssljax.losses` with axis_name=DATA_AXIS) so that its gradient
      with respect to the replicated parameters is the gradient of the global batch.
    features: (params, model_state, images) -> (B, D) float32 features of the encoder f1
      in inference mode, for probes, kNN and fine-tuning.
    after_update: (params, model_state, step) -> model_state, called after the optimizer
      step (BYOL's EMA target); None when the objective has nothing to do there.
  """

  name: str
  init: Callable[[jax.Array, Batch], tuple[Params, ModelState]]
  loss: Callable[[Params, ModelState, Batch, jax.Array], tuple[jax.Array, LossAux]]
  features: Callable[[Params, ModelState, jax.Array], jax.Array]
  after_update: Callable[[Params, ModelState, jax.Array], ModelState] | None = None


ObjectiveFactory = Callable[[ml_collections.ConfigDict], Objective]
_REGISTRY: dict[str, ObjectiveFactory] = {}


def register(name: str) -> Callable[[ObjectiveFactory], ObjectiveFactory]:
  """Decorator that makes `config.objective = name` pick the decorated factory."""

  def add(factory: ObjectiveFactory) -> ObjectiveFactory:
    if name in _REGISTRY:
      raise ValueError(f"objective {name!r} is registered twice")
    _REGISTRY[name] = factory
    return factory

  return add


def names() -> list[str]:
  return sorted(_REGISTRY)


def get(name: str) -> ObjectiveFactory:
  if name not in _REGISTRY:
    raise ValueError(f"unknown objective {name!r}; registered objectives: {', '.join(names())}")
  return _REGISTRY[name]


def build(config: ml_collections.ConfigDict) -> Objective:
  """The objective that `config.objective` names, built from the rest of the config."""
  return get(config.objective)(config)
