"""Parameters that a layer gathers itself, for FSDP that is whole one layer at a time.

With `train.param_sharding="fsdp"` and `train.fsdp_gather="layer"`, the train step hands the
model its Transformer blocks' parameters still split over the data axis and traces the loss
inside `gathering(param_specs, axis)`. Each block (`Transformer._block_class`, through
`nn.map_variables`) then all-gathers its own parameters when it runs; under remat it gathers them
again in the backward pass instead of keeping them. Autodiff turns each gather into a
reduce-scatter of that block's gradients. Outside `gathering` (initialisation, replicated runs,
evaluation) nothing changes.
"""

from __future__ import annotations

import contextlib
import contextvars

import jax

# (the parameters' PartitionSpecs, the mesh axis they are split over) while the step traces.
_CURRENT: contextvars.ContextVar = contextvars.ContextVar("ssljax_layer_gather", default=None)


@contextlib.contextmanager
def gathering(param_specs, axis_name: str):
  """Within: `gather_in_layer` finds a layer's specs by its path in the parameter tree."""
  token = _CURRENT.set((param_specs, axis_name))
  try:
    yield
  finally:
    _CURRENT.reset(token)


def whole(x, spec, axis_name: str):
  """One leaf all-gathered along the dimension that `spec` splits over `axis_name` (tiled);
  a leaf that is not split, as it is."""
  if axis_name not in tuple(spec):
    return x
  return jax.lax.all_gather(x, axis_name, axis=tuple(spec).index(axis_name), tiled=True)


def gather_in_layer(path: tuple[str, ...], variables: dict) -> dict:
  """`nn.map_variables`' input transform for the layer at `path` (its scope path, e.g.
  ("encoder", "blocks_3")): its split parameters gathered whole inside `gathering`, unchanged
  outside it."""
  current = _CURRENT.get()
  if current is None or "params" not in variables:
    return variables
  specs, axis_name = current
  for name in path:
    specs = specs[name]
  return {**variables, "params": jax.tree.map(lambda x, s: whole(x, s, axis_name), variables["params"], specs)}
