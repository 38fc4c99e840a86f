"""Optimizers and learning-rate schedules, all from optax."""

from __future__ import annotations

import jax
import ml_collections
import optax


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


def schedule(optim: ml_collections.ConfigDict, total_steps: int, global_batch: int) -> optax.Schedule:
  """Linear warmup to the peak, then cosine decay to zero over the remaining steps."""
  peak = scaled_learning_rate(optim, global_batch)
  warmup = min(optim.warmup_steps, max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak, warmup_steps=warmup, decay_steps=max(total_steps, 1)
  )


def decay_mask(params):
  """True for the weights that get weight decay and LARS trust-ratio scaling.

  Biases and BatchNorm parameters (the only parameters with fewer than two dimensions) are
  excluded, as in SimCLR and BYOL (arXiv 2006.07733, appendix C).
  """
  return jax.tree.map(lambda p: p.ndim > 1, params)


def optimizer(
    optim: ml_collections.ConfigDict, total_steps: int, global_batch: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  lr = schedule(optim, total_steps, global_batch)
  if optim.name == "lars":
    tx = optax.lars(
        lr,
        weight_decay=optim.weight_decay,
        weight_decay_mask=decay_mask,
        trust_coefficient=optim.trust_coefficient,
        trust_ratio_mask=decay_mask,
        momentum=optim.momentum,
    )
  elif optim.name == "adamw":
    tx = optax.adamw(lr, weight_decay=optim.weight_decay, mask=decay_mask)
  elif optim.name == "sgd":
    tx = optax.chain(
        optax.add_decayed_weights(optim.weight_decay, mask=decay_mask),
        optax.sgd(lr, momentum=optim.momentum, nesterov=True),
    )
  else:
    raise ValueError(f"config.optim.name must be 'lars', 'adamw' or 'sgd', got {optim.name!r}")
  return tx, lr
