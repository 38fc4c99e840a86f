"""The Objective interface: what a model is, how a batch becomes a loss, and which modality
family feeds it.

The trainer and the evaluators know an objective only through this dataclass, so a new
objective is a new module plus a config; nothing else changes. `config.objective` names the
objective and `build(config)` looks it up in the registry. How records of a modality become
examples is a `Family`, shared by every objective of that modality; what a run is evaluated by
is named in its config (`config.evals`, `ssljax.evaluators`). A new modality is a new family
and its evaluators, and the trainer does not change.

This is the ground floor of the package: it imports nothing of ssljax, so every room may import
it (the trainer for `DATA_AXIS`, a family for `TrainInput`) without loading an objective.
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
Batch = Mapping[str, jax.Array]  # e.g. {"image": uint8 (n, H, W, C), "label"} or {"tokens": (n, T)}


@dataclasses.dataclass(frozen=True)
class LossAux:
  """What a loss returns besides its value.

  Attributes:
    model_state: the updated non-trainable state (BatchNorm statistics, ...).
    metrics: scalars to log; each is averaged over devices by the trainer.
  """

  model_state: ModelState
  metrics: Mapping[str, jax.Array]


jax.tree_util.register_dataclass(LossAux, data_fields=["model_state", "metrics"], meta_fields=[])


@dataclasses.dataclass(frozen=True)
class TrainInput:
  """What the trainer reads: a random-access source and the host-side stages that turn its
  records into training examples (deterministic, and checkpointed with the grain iterator).

  Attributes:
    source: random-access records (len, [i], __getitems__).
    record_fn: record -> example dict of numpy arrays (decode, resize, tokenise), or None.
    iter_stage: grain.IterDataset -> grain.IterDataset applied after record_fn and before
      batching, for stages that change the number of examples (packing documents into
      fixed-length sequences); None for one example per record.
    unit: what the throughput counts ("images", "tokens", ...).
    units_per_example: how many of `unit` one example holds (1 image, T tokens).
  """

  source: Any
  record_fn: Callable[[dict], dict] | None = None
  iter_stage: Callable[[Any], Any] | None = None
  unit: str = "examples"
  units_per_example: int = 1


@dataclasses.dataclass(frozen=True)
class Family:
  """The modality-specific half of an objective, shared by every objective of the modality.

  Attributes:
    name: "image", "text", ...
    train_input: (config, workdir) -> TrainInput. The workdir is where a family keeps what a
      run needs besides the model (a trained tokenizer).
  """

  name: str
  train_input: Callable[[ml_collections.ConfigDict, str], TrainInput]


@dataclasses.dataclass(frozen=True)
class Objective:
  """A self-supervised objective as pure functions.

  Attributes:
    name: registry name.
    family: the modality family that feeds and evaluates it.
    init: (key, example_batch) -> (params, model_state). Runs outside any mesh.
    loss: (params, model_state, local_batch, example_keys) -> (loss, LossAux). Runs per device
      inside shard_map; `example_keys` holds one PRNG key per example of the local batch,
      derived from the example's global index, so the same seed gives the same randomness on
      any device count. Must return the *global* loss (identical on every device, e.g. through
      `psum` or a loss from `ssljax.losses` with axis_name=DATA_AXIS).
    features: (params, model_state, batch) -> (B, D) float32 features of the representation
      being learned, in inference mode, for probes, kNN and fine-tuning. The batch is a dict
      ({"image"} for images, {"tokens"} for text), so any modality fits.
    after_update: (params, model_state, step) -> model_state, called after the optimizer
      step (BYOL's EMA target); None when the objective has nothing to do there.
    calibrate: (params, model_state, batch) -> model_state whose BatchNorm statistics are the
      batch's, measured in train mode (for the random-init baseline); None without BatchNorm.
    extras: what the objective's family needs beyond the above, by name; each family's
      module says which names it reads (the text family: "log_probs" and "generate").
    load_pretrained: (params, source_params) -> params, for a run started from another run's
      parameters (`config.init_from`): the fresh `params` with the parts the objective takes
      from `source_params` (fine-tuning: the pretrained encoder) copied in; it checks their
      names and shapes and raises a ValueError naming what does not fit. Runs under jit.
      None: the objective cannot start from another run.
  """

  name: str
  family: Family
  init: Callable[[jax.Array, Batch], tuple[Params, ModelState]]
  loss: Callable[[Params, ModelState, Batch, jax.Array], tuple[jax.Array, LossAux]]
  features: Callable[[Params, ModelState, Batch], jax.Array]
  after_update: Callable[[Params, ModelState, jax.Array], ModelState] | None = None
  calibrate: Callable[[Params, ModelState, Batch], ModelState] | None = None
  extras: Mapping[str, Callable] = dataclasses.field(default_factory=dict)
  load_pretrained: Callable[[Params, Params], Params] | None = None


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
