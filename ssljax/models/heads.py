"""Heads that sit on top of an encoder: projector/predictor MLPs and linear classifiers."""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp


class MLP(nn.Module):
  """Dense layers with BN + ReLU between them: SimCLR's projector f2, BYOL's projector and
  predictor, VICReg's expander.

  Attributes:
    widths: output width of every layer; the last one is the embedding size.
    use_bn: BatchNorm after each hidden layer (SimCLR, BYOL and VICReg all use it).
    last_bn: BatchNorm (without affine scale) on the output as well, as in SimCLR v2's
      projector; off by default.
  """

  widths: Sequence[int]
  use_bn: bool = True
  last_bn: bool = False
  dtype: Any = jnp.float32
  axis_name: str | None = None
  bn_momentum: float = 0.9

  @nn.compact
  def __call__(self, x, train: bool = True):
    def norm(**kwargs):
      return nn.BatchNorm(
          use_running_average=not train,
          momentum=self.bn_momentum,
          dtype=self.dtype,
          axis_name=self.axis_name if train else None,
          **kwargs,
      )

    for i, width in enumerate(self.widths):
      is_last = i == len(self.widths) - 1
      x = nn.Dense(width, use_bias=not (self.use_bn and (not is_last or self.last_bn)), dtype=self.dtype)(x)
      if not is_last:
        if self.use_bn:
          x = norm()(x)
        x = nn.relu(x)
      elif self.last_bn:
        x = norm(use_scale=False)(x)
    return x.astype(jnp.float32)


def mlp_widths(depth: int, hidden: int, out: int) -> tuple[int, ...]:
  """`depth` dense layers: depth-1 hidden layers of width `hidden`, then the `out` layer."""
  if depth < 1:
    raise ValueError(f"an MLP head needs depth >= 1, got {depth}")
  return (hidden,) * (depth - 1) + (out,)
