"""Optimizers and learning-rate schedules, all from optax."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax import lax

from ssljax.interface import DATA_AXIS


def scaled_learning_rate(optim: ml_collections.ConfigDict, global_batch: int) -> float:
  """The peak learning rate: SimCLR's linear scaling rule lr = base x batch / 256, or
  the square-root rule it recommends for small batches (arXiv 2002.05709, appendix B.1)."""
  if optim.lr_scaling == "linear":
    return optim.lr * global_batch / 256
  if optim.lr_scaling == "sqrt":
    return optim.lr * global_batch**0.5
  if optim.lr_scaling == "none":
    return optim.lr
  raise ValueError(
      f"config.optim.lr_scaling must be 'linear', 'sqrt' or 'none', got {optim.lr_scaling!r}"
  )


SCHEDULES = ("cosine", "linear")


def warmup_steps(optim: ml_collections.ConfigDict, total_steps: int) -> int:
  """Steps of the linear warm-up: `optim.warmup_fraction` of the run when set (BERT's
  fine-tuning: 10%), else `optim.warmup_steps`; always at least one step short of the run."""
  fraction = optim.warmup_fraction
  if fraction and optim.warmup_steps:
    raise ValueError(f"set config.optim.warmup_steps ({optim.warmup_steps}) or config.optim.warmup_fraction "
                     f"({fraction}), not both")
  if not 0.0 <= fraction < 1.0:
    raise ValueError(f"config.optim.warmup_fraction must be in [0, 1), got {fraction}")
  steps = int(fraction * total_steps) if fraction else optim.warmup_steps
  return min(steps, max(total_steps - 1, 0))


def schedule(optim: ml_collections.ConfigDict, total_steps: int, global_batch: int) -> optax.Schedule:
  """Linear warm-up to the peak, then decay to zero at the last step: along a cosine
  (`optim.schedule="cosine"`, the pretraining default) or a straight line ("linear", BERT's
  fine-tuning schedule, Devlin et al. 2019, appendix A.3)."""
  peak = scaled_learning_rate(optim, global_batch)
  warmup = warmup_steps(optim, total_steps)
  kind = optim.schedule
  if kind == "cosine":
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=peak, warmup_steps=warmup, decay_steps=max(total_steps, 1)
    )
  if kind == "linear":
    return optax.join_schedules([optax.linear_schedule(0.0, peak, max(warmup, 1)),
                                 optax.linear_schedule(peak, 0.0, max(total_steps - warmup, 1))], [warmup])
  raise ValueError(f"config.optim.schedule must be one of {SCHEDULES}, got {kind!r}")


def decay_mask(params):
  """True for the weights that get weight decay and LARS trust-ratio scaling: the matrices and
  convolution kernels.

  Biases and BatchNorm / LayerNorm parameters (the only parameters with fewer than two
  dimensions) are excluded, as in SimCLR and BYOL (arXiv 2006.07733, appendix C), and so are
  embedding tables (leaves named `embedding`), as in GPT-2-style training, where decaying
  token and position embeddings only shrinks rare tokens' vectors.
  """

  def decays(path, p):
    name = getattr(path[-1], "key", getattr(path[-1], "name", None)) if path else None
    return p.ndim > 1 and name != "embedding"

  return jax.tree_util.tree_map_with_path(decays, params)


def _sum_of_squares(x) -> jax.Array:
  """sum(x**2) over the whole leaf, also when each device holds only a slice of it (FSDP).

  Inside the step's shard_map a slice of a split leaf has a type that varies over DATA_AXIS
  (check_vma), a replicated leaf does not; only the slices' sums are added across devices.
  Outside shard_map nothing varies and this is the plain sum."""
  total = jnp.sum(jnp.square(x.astype(jnp.float32)))
  axis_type = getattr(jax.typeof(total), "manual_axis_type", None)
  if DATA_AXIS in getattr(axis_type, "varying", ()):
    total = lax.psum(total, DATA_AXIS)
  return total


def clip_by_global_norm_sharded(max_norm: float) -> optax.GradientTransformation:
  """optax.clip_by_global_norm with the norm of the whole gradient when it is split over
  devices (optax's own would clip each device's slice by the slice's norm)."""

  def update_fn(updates, state, params=None):
    del params
    g_norm = jnp.sqrt(sum(_sum_of_squares(u) for u in jax.tree.leaves(updates)))
    trigger = g_norm < max_norm
    updates = jax.tree.map(lambda t: lax.select(trigger, t, (t / g_norm.astype(t.dtype)) * max_norm), updates)
    return updates, state

  return optax.GradientTransformation(optax.init_empty_state, update_fn)


def scale_by_trust_ratio_sharded(trust_coefficient: float) -> optax.GradientTransformation:
  """LARS's layer-wise trust ratio (optax.scale_by_trust_ratio, min_norm 0, eps 0) with each
  leaf's norms taken over the whole leaf when it is split over devices."""

  def update_fn(updates, state, params):
    def scale(update, param):
      param_norm = jnp.sqrt(_sum_of_squares(param)).astype(param.dtype)
      update_norm = jnp.sqrt(_sum_of_squares(update)).astype(param.dtype)
      ratio = trust_coefficient * param_norm / update_norm
      safe = jnp.where((param_norm == 0.0) | (update_norm == 0.0), jnp.ones((), param.dtype), ratio)
      return update * safe

    return jax.tree.map(scale, updates, params), state

  return optax.GradientTransformation(optax.init_empty_state, update_fn)


def optimizer(
    optim: ml_collections.ConfigDict, total_steps: int, global_batch: int, *, sharded: bool = False
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optimizer and its learning-rate schedule.

  `sharded`: parameters may be split over devices (FSDP); the norms that LARS and gradient
  clipping take are then summed over the slices. The state has the same structure either way,
  so a checkpoint restores into both."""
  lr = schedule(optim, total_steps, global_batch)
  if optim.name == "lars" and sharded:
    # optax.lars's chain, with the trust ratio's norms over whole leaves.
    tx = optax.chain(
        optax.add_decayed_weights(optim.weight_decay, mask=decay_mask),
        optax.masked(scale_by_trust_ratio_sharded(optim.trust_coefficient), decay_mask),
        optax.scale_by_learning_rate(lr),
        optax.trace(decay=optim.momentum, nesterov=False),
    )
  elif optim.name == "lars":
    tx = optax.lars(
        lr,
        weight_decay=optim.weight_decay,
        weight_decay_mask=decay_mask,
        trust_coefficient=optim.trust_coefficient,
        trust_ratio_mask=decay_mask,
        momentum=optim.momentum,
    )
  elif optim.name == "adamw":
    tx = optax.adamw(lr, b1=optim.b1, b2=optim.b2, eps=optim.eps,
                     weight_decay=optim.weight_decay, mask=decay_mask)
  elif optim.name == "sgd":
    tx = optax.chain(
        optax.add_decayed_weights(optim.weight_decay, mask=decay_mask),
        optax.sgd(lr, momentum=optim.momentum, nesterov=True),
    )
  else:
    raise ValueError(f"config.optim.name must be 'lars', 'adamw' or 'sgd', got {optim.name!r}")
  if optim.clip_norm:
    # Clipping the global gradient norm first keeps rare large steps (early transformer
    # training) from undoing what the optimizer's moments have learned.
    clip = clip_by_global_norm_sharded if sharded else optax.clip_by_global_norm
    tx = optax.chain(clip(optim.clip_norm), tx)
  return tx, lr
