"""ResNet encoders (He et al. 2015, arXiv 1512.03385) as Flax Linen modules.

The encoder is f1 in SimCLR's notation: images in, one pooled feature vector per image out.
Heads (projectors, predictors, classifiers) live in `heads.py` and never inside the encoder,
so downstream evaluation can always take the encoder alone.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

ModuleDef = Any


class BasicBlock(nn.Module):
  """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut: ResNet-18/34."""

  filters: int
  conv: ModuleDef
  norm: ModuleDef
  act: Callable
  strides: tuple[int, int] = (1, 1)

  @nn.compact
  def __call__(self, x):
    residual = x
    y = self.conv(self.filters, (3, 3), self.strides)(x)
    y = self.act(self.norm()(y))
    y = self.conv(self.filters, (3, 3))(y)
    # Zero-init the last BN scale so each block starts as the identity (Goyal et al. 2017).
    y = self.norm(scale_init=nn.initializers.zeros_init())(y)
    if residual.shape != y.shape:
      residual = self.conv(self.filters, (1, 1), self.strides, name="shortcut_conv")(residual)
      residual = self.norm(name="shortcut_norm")(residual)
    return self.act(residual + y)


class BottleneckBlock(nn.Module):
  """1x1 -> 3x3 -> 1x1 convolutions with 4x expansion: ResNet-50 and deeper."""

  filters: int
  conv: ModuleDef
  norm: ModuleDef
  act: Callable
  strides: tuple[int, int] = (1, 1)

  @nn.compact
  def __call__(self, x):
    residual = x
    y = self.act(self.norm()(self.conv(self.filters, (1, 1))(x)))
    y = self.act(self.norm()(self.conv(self.filters, (3, 3), self.strides)(y)))
    y = self.conv(self.filters * 4, (1, 1))(y)
    y = self.norm(scale_init=nn.initializers.zeros_init())(y)
    if residual.shape != y.shape:
      residual = self.conv(self.filters * 4, (1, 1), self.strides, name="shortcut_conv")(residual)
      residual = self.norm(name="shortcut_norm")(residual)
    return self.act(residual + y)


class ResNet(nn.Module):
  """A ResNet trunk with global average pooling; returns (B, features) float32.

  Attributes:
    stage_sizes: blocks per stage; each stage after the first halves the resolution.
    block_cls: BasicBlock or BottleneckBlock.
    width: filters of the first stage (64 in the paper); stage i has width * 2**i.
    stem: "imagenet" (7x7/2 conv + 3x3/2 max-pool, for 224 px) or "small" (one 3x3 conv and
      no pooling, the CIFAR variant of SimCLR's appendix B.9, for 28-32 px inputs).
    stem_stride: stride of the small stem's conv; 2 halves the resolution of every stage,
      which cuts compute about 4x (used to fit CPU time budgets on 28 px digits).
    dtype: compute dtype (bfloat16 on accelerators); parameters stay float32.
    axis_name: mesh axis over which BatchNorm averages its statistics, so that BN sees the
      global batch (SimCLR's global BN). None outside shard_map.
  """

  stage_sizes: Sequence[int]
  block_cls: ModuleDef
  width: int = 64
  stem: str = "imagenet"
  stem_stride: int = 1
  dtype: Any = jnp.float32
  axis_name: str | None = None
  bn_momentum: float = 0.9

  @nn.compact
  def __call__(self, x, train: bool = True):
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype)
    norm = functools.partial(
        nn.BatchNorm,
        use_running_average=not train,
        momentum=self.bn_momentum,
        epsilon=1e-5,
        dtype=self.dtype,
        axis_name=self.axis_name if train else None,
    )
    x = x.astype(self.dtype)
    if self.stem == "imagenet":
      x = conv(self.width, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], name="stem_conv")(x)
      x = nn.relu(norm(name="stem_norm")(x))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
    elif self.stem == "small":
      x = conv(self.width, (3, 3), (self.stem_stride, self.stem_stride), name="stem_conv")(x)
      x = nn.relu(norm(name="stem_norm")(x))
    else:
      raise ValueError(f"ResNet stem must be 'imagenet' or 'small', got {self.stem!r}")
    for stage, num_blocks in enumerate(self.stage_sizes):
      for block in range(num_blocks):
        strides = (2, 2) if stage > 0 and block == 0 else (1, 1)
        x = self.block_cls(
            self.width * 2**stage, conv=conv, norm=norm, act=nn.relu, strides=strides
        )(x)
    # (B, H, W, C) -> (B, C)
    return jnp.mean(x, axis=(1, 2)).astype(jnp.float32)


STAGE_SIZES = {
    "resnet_tiny": ((1, 1), BasicBlock),
    "resnet18": ((2, 2, 2, 2), BasicBlock),
    "resnet34": ((3, 4, 6, 3), BasicBlock),
    "resnet50": ((3, 4, 6, 3), BottleneckBlock),
}


def resnet(name: str, **kwargs) -> ResNet:
  """Builds a ResNet by name: resnet_tiny (tests), resnet18, resnet34 or resnet50."""
  if name not in STAGE_SIZES:
    raise ValueError(f"unknown encoder {name!r}; choose one of {sorted(STAGE_SIZES)}")
  stage_sizes, block_cls = STAGE_SIZES[name]
  return ResNet(stage_sizes=stage_sizes, block_cls=block_cls, **kwargs)
