"""Where each leaf of the train state lives: replicated on every device, or split over the data
axis (FSDP / ZeRO-3), as `config.train.param_sharding` says.

- "replicated": every leaf whole on every device (P()). The default: right for models that
  fit, and the cheapest in communication (one gradient all-reduce per step).
- "fsdp": parameters and optimizer state are split over DATA_AXIS, so each device holds
  1/n of them. A leaf of at least `train.fsdp_min_size` elements is split along its largest
  dimension that the device count divides; smaller leaves (biases, LayerNorm scales, scalars
  such as Adam's step count) and leaves with no such dimension stay replicated, where
  splitting would save little and cost a collective each. The step gathers the parameters
  before the forward pass and reduce-scatters their gradients (`train/step.py`).

The rule reads only shapes, so a parameter and its Adam moments (same shape) always get the
same spec, and the specs can be computed from `jax.eval_shape` without building anything.
Model state (BatchNorm statistics, BYOL's target) stays replicated.
"""

from __future__ import annotations

import re

import jax
import ml_collections
import numpy as np

from ssljax.models import layer_gather
from ssljax.interface import DATA_AXIS
from ssljax.train.state import TrainState

P = jax.P
MODES = ("replicated", "fsdp")
# "model": the step gathers every split parameter before the forward pass. "layer": the
# Transformer's blocks gather their own, each when it runs (and again in the backward pass,
# with remat), so one block's parameters are whole at a time; the rest is gathered by the step.
GATHERS = ("model", "layer")
_BLOCK = re.compile(r"blocks_\d+")


def leaf_spec(shape: tuple[int, ...], num_devices: int, min_size: int) -> jax.sharding.PartitionSpec:
  """P() or a spec with DATA_AXIS on the largest dimension divisible by `num_devices`."""
  if num_devices == 1 or int(np.prod(shape, dtype=np.int64)) < max(min_size, 1):
    return P()
  # Largest dimension first; the earliest among equals, so the choice does not depend on ties.
  for dim in sorted(range(len(shape)), key=lambda d: (-shape[d], d)):
    if shape[dim] % num_devices == 0:
      return P(*(DATA_AXIS if d == dim else None for d in range(len(shape))))
  return P()


def tree_specs(tree, num_devices: int, min_size: int):
  """`leaf_spec` of every leaf of a tree of arrays or ShapeDtypeStructs."""
  return jax.tree.map(lambda x: leaf_spec(tuple(x.shape), num_devices, min_size), tree)


def state_specs(state: TrainState, train: ml_collections.ConfigDict, num_devices: int) -> TrainState:
  """The PartitionSpec of every leaf of `state` (concrete or abstract) for `train.param_sharding`."""
  mode = train.param_sharding
  if mode not in MODES:
    raise ValueError(f"config.train.param_sharding must be one of {MODES}, got {mode!r}")
  replicated = jax.tree.map(lambda _: P(), state)
  if mode == "replicated":
    return replicated
  min_size = train.fsdp_min_size
  return replicated.replace(params=tree_specs(state.params, num_devices, min_size),
                            opt_state=tree_specs(state.opt_state, num_devices, min_size))


def is_sharded(spec: jax.sharding.PartitionSpec) -> bool:
  return DATA_AXIS in tuple(spec)


def any_sharded(specs) -> bool:
  return any(is_sharded(s) for s in jax.tree.leaves(specs))


def named(mesh: jax.sharding.Mesh, specs):
  """NamedShardings on `mesh` for a tree of PartitionSpecs."""
  return jax.tree.map(lambda spec: jax.sharding.NamedSharding(mesh, spec), specs)


def gather(tree, specs):
  """Per device, inside shard_map: every split leaf all-gathered whole (tiled along its split
  dimension); replicated leaves as they are. Its transpose, which autodiff applies to the
  gradients, is a reduce-scatter."""

  def whole(x, spec):
    if not is_sharded(spec):
      return x
    return jax.lax.all_gather(x, DATA_AXIS, axis=tuple(spec).index(DATA_AXIS), tiled=True)

  return jax.tree.map(whole, tree, specs)


def in_block(path: tuple[str, ...]) -> bool:
  """Whether a parameter path lies inside a Transformer block (`blocks_<i>`)."""
  return any(_BLOCK.fullmatch(name) for name in path)


def gather_outside_blocks(params, specs):
  """Per device: every split leaf gathered whole except those inside a Transformer block,
  which the block gathers itself when the loss is traced within `gathering_per_layer`."""
  def leaf(key_path, x, spec):
    names = tuple(getattr(k, "key", str(k)) for k in key_path)
    return x if in_block(names) else layer_gather.whole(x, spec, DATA_AXIS)

  return jax.tree_util.tree_map_with_path(leaf, params, specs)


def gathering_per_layer(param_specs):
  """Context for tracing the loss: the blocks find their specs here (`models/layer_gather.py`)."""
  return layer_gather.gathering(param_specs, DATA_AXIS)


def to_host(tree, mesh: jax.sharding.Mesh):
  """numpy copies of global arrays, split ones too: those are gathered whole on the devices
  first, since with several processes no process holds every slice."""
  if not any(not x.is_fully_replicated for x in jax.tree.leaves(tree)):
    return jax.device_get(tree)
  return jax.device_get(jax.jit(lambda t: t, out_shardings=jax.sharding.NamedSharding(mesh, P()))(tree))
