"""One jitted, sharded train step for any objective.

`jax.jit(jax.shard_map(per_device_step))`: inside, code is per device exactly as under pmap.
The batch is split along DATA_AXIS; the state is replicated (P()), or, with
`train.param_sharding="fsdp"`, its parameters and optimizer state are split over DATA_AXIS
(`train/sharding.py`): each device then all-gathers the whole parameters before the forward
pass (the whole model at once, not layer by layer: the gathered copy lives for the step, so
FSDP here saves the state's memory, not the activations' or the gathered parameters'), the
gradient of its slice comes back reduce-scattered (the transpose of the gather), and the
optimizer updates the slices, with the norms that LARS and clipping need summed over devices
(`optim.py`).

Gradients are reduced explicitly with `lax.pmean` over DATA_AXIS. Objectives return the
global loss (the same value on every device). With shard_map's varying-axes typing
(check_vma=True) the gradient of that value with respect to replicated parameters already is
the global-batch gradient, and the pmean of an invariant value is the value itself; without it
(check_vma=False, or pmap) each device holds its share of the gradient scaled by the device
count, and the pmean turns that into the global gradient. The step is right either way, and the
tests compare both with a single-device step on the concatenated batch.

Randomness: every example gets its own key, `fold_in(fold_in(seed, step), global_index)`,
where the global index is the example's row in the global batch. The same seed therefore gives
the same augmentations (and masks) on 1 device or on 8.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from jax import lax

from ssljax.interface import DATA_AXIS, Objective
from ssljax.train import nonfinite
from ssljax.train import sharding as sharding_lib
from ssljax.train.state import TrainState

P = jax.P


def global_example_keys(seed_key: jax.Array, step: jax.Array, local_batch: int) -> jax.Array:
  """One key per example of this device's batch, from its index in the global batch: (n,)."""
  step_key = jax.random.fold_in(seed_key, step)
  first = lax.axis_index(DATA_AXIS) * local_batch  # rows are laid out device by device
  return jax.vmap(lambda i: jax.random.fold_in(step_key, i))(first + jnp.arange(local_batch))


def _whole(params, param_specs):
  return params if param_specs is None else sharding_lib.gather(params, param_specs)


def _reduce_gradients(grads, param_specs):
  """The global-batch gradient: pmean for replicated parameters (see the module docstring);
  a split parameter's gradient already is its slice of the global gradient (autodiff of the
  gather reduce-scattered it, and with check_vma the global loss's gradient is global)."""
  if param_specs is None:
    return lax.pmean(grads, DATA_AXIS)
  return jax.tree.map(lambda g, spec: g if sharding_lib.is_sharded(spec) else lax.pmean(g, DATA_AXIS),
                      grads, param_specs)


def _check_loss_is_global(loss):
  # The loss's type records the mesh axes it varies over (`{V:data}` when printed); without
  # check_vma there is no such record and nothing to check.
  axis_type = getattr(jax.typeof(loss), "manual_axis_type", None)
  if DATA_AXIS in getattr(axis_type, "varying", ()):
    raise ValueError(
        "the objective's loss differs between devices; Objective.loss must return the global "
        "loss (use lax.psum / lax.pmean over DATA_AXIS, or ssljax.losses with axis_name)."
    )


def make_per_device_step(
    objective: Objective,
    tx: optax.GradientTransformation,
    seed_key: jax.Array,
    param_specs=None,
    skip_nonfinite: bool = False,
    gather_per_layer: bool = False,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """`param_specs` (a tree of PartitionSpecs like the params; None: all replicated) says which
  parameters arrive split over DATA_AXIS (FSDP, `train/sharding.py`). `skip_nonfinite` drops
  the update of a step whose loss or gradients are not finite (`train/nonfinite.py`).
  `gather_per_layer` leaves the Transformer blocks' split parameters to the blocks, which gather
  their own when they run (`models/layer_gather.py`); the step gathers the rest."""

  def per_device_step(state: TrainState, batch: dict):
    local_batch = jax.tree.leaves(batch)[0].shape[0]
    keys = global_example_keys(seed_key, state.step, local_batch)

    def loss_fn(params):
      # Split parameters are gathered whole for the model, all at once (per model, not per
      # layer); differentiating through the gather gives each device the reduce-scattered
      # gradient of its own slice.
      if gather_per_layer and param_specs is not None:
        with sharding_lib.gathering_per_layer(param_specs):
          return objective.loss(sharding_lib.gather_outside_blocks(params, param_specs), state.model_state,
                                batch, keys)
      return objective.loss(_whole(params, param_specs), state.model_state, batch, keys)

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    _check_loss_is_global(loss)
    grads = _reduce_gradients(grads, param_specs)
    finite_flags = nonfinite.flags(loss, grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    model_state = aux.model_state
    if objective.after_update is not None:
      model_state = objective.after_update(_whole(params, param_specs), model_state, state.step)

    metrics = {"loss": loss, **jax.tree.map(lambda m: lax.pmean(m, DATA_AXIS), dict(aux.metrics))}
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, model_state=model_state)
    if skip_nonfinite:
      new_state = nonfinite.keep_if_not_finite(finite_flags[nonfinite.FINITE], new_state, state)
    return new_state, {**metrics, **finite_flags}

  return per_device_step


def make_train_step(objective, tx, seed_key, mesh, *, check_vma: bool = True,
                    state_specs: TrainState | None = None, skip_nonfinite: bool = False,
                    gather_per_layer: bool = False):
  """The jitted step: (state, global batch) -> (state, metrics); the old state is donated.

  `state_specs` (from `sharding.state_specs`; None: all replicated) lays the state out over
  the mesh; the state passed in must carry those shardings."""
  param_specs = None
  if state_specs is not None and sharding_lib.any_sharded(state_specs.params):
    if not check_vma:
      # Only the varying-axes types tell a gradient slice from a whole gradient (and the
      # optimizer's global norms need them); without them the step would be silently wrong.
      raise ValueError("sharded parameters (train.param_sharding='fsdp') need check_vma=True")
    param_specs = state_specs.params
  per_device_step = make_per_device_step(objective, tx, seed_key, param_specs, skip_nonfinite,
                                         gather_per_layer)
  state_spec = P() if state_specs is None else state_specs
  sharded = jax.shard_map(
      per_device_step, mesh=mesh, in_specs=(state_spec, P(DATA_AXIS)), out_specs=(state_spec, P()),
      check_vma=check_vma,
  )
  return jax.jit(sharded, donate_argnums=0)
