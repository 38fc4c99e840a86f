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
    tx = optax.adamw(lr, b1=optim.get("b1", 0.9), b2=optim.get("b2", 0.999),
                     weight_decay=optim.weight_decay, mask=decay_mask)
  elif optim.name == "sgd":
    tx = optax.chain(
        optax.add_decayed_weights(optim.weight_decay, mask=decay_mask),
        optax.sgd(lr, momentum=optim.momentum, nesterov=True),
    )
  else:
    raise ValueError(f"config.optim.name must be 'lars', 'adamw' or 'sgd', got {optim.name!r}")
  if optim.get("clip_norm", 0.0):
    # Clipping the global gradient norm first keeps rare large steps (early transformer
    # training) from undoing what the optimizer's moments have learned.
    tx = optax.chain(optax.clip_by_global_norm(optim.clip_norm), tx)
  return tx, lr
