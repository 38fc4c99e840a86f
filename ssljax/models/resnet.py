"""ResNet encoders (He et al. 2015, arXiv 1512.03385) as Flax Linen modules.

The encoder is f1 in SimCLR's notation: images in, one pooled feature vector per image out.
Heads (projectors, predictors, classifiers) live in `heads.py` and never inside the encoder,
so downstream evaluation can always take the encoder alone.

Options that the bundled configs leave off make the ResNet-50 with the ImageNet stem compute
exactly torchvision's `resnet50` (torchvision/models/resnet.py, "ResNet v1.5", whose stride sits
on each bottleneck's 3x3 convolution, as here), so that its published weights can be imported
(`ssljax/convert/resnet.py`):

- `padding="symmetric"`: every convolution pads k // 2 pixels on each side and the 3x3/2 max
  pool 1 pixel of -inf on each side, as PyTorch's `padding=` does. Flax's "SAME" (the default)
  pads a stride-2 layer's even input by one pixel after it only, which shifts every window of
  the max pool and of the stride-2 3x3 convolutions by one pixel (odd inputs are padded alike
  by both). The 7x7/2 stem convolution pads 3 on each side in both modes, and 1x1 convolutions
  pad nothing in both.
- `pixel_mean`, `pixel_std`: images in [0, 1] are normalised per channel first, (x - mean) / std
  (torchvision's ImageNet weights expect (0.485, 0.456, 0.406) and (0.229, 0.224, 0.225)).

The rest already matches: BatchNorm with epsilon 1e-5 and the running statistics at inference
(Flax's momentum 0.9 is PyTorch's 0.1), a projection shortcut of a strided 1x1 convolution and
BatchNorm where the shape changes, ReLU after the sum, global average pooling. One difference
remains in training mode: PyTorch's running variance averages the unbiased batch variance
(n / (n - 1) times Flax's), which only changes the statistics that fine-tuning accumulates.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

ModuleDef = Any

# Outputs of at most this many pixels are computed as matrix products (see `Conv`).
SMALL_MAP_PIXELS = 4
# How the stride-2 layers pad their input (see the module's docstring).
PADDINGS = ("same", "symmetric")


class Conv(nn.Conv):
  """`nn.Conv` (same parameters, same result) that computes a small output map as a sum of
  shifted matrix products, one per kernel tap.

  XLA:CPU's convolution is slow on maps of 2x2 pixels: on 2 CPU cores, forward and backward of
  a 3x3 convolution over 256 x 2 x 2 x 128 took 96 ms, against 13 ms as matrix products and
  40 ms for the 4x larger 4 x 4 map. A ResNet-18 with a stride-2 stem on 28 px digits runs its
  whole last stage at 2 x 2. Maps larger than `SMALL_MAP_PIXELS` keep the convolution.
  """

  @nn.compact
  def __call__(self, inputs):
    if not self._as_matmuls(inputs):
      return super().__call__(inputs)
    kernel_size = tuple(self.kernel_size)
    strides = self._strides()
    kernel = self.param("kernel", self.kernel_init, kernel_size + (inputs.shape[-1], self.features),
                        self.param_dtype)
    x, kernel = nn.dtypes.promote_dtype(inputs, kernel, dtype=self.dtype)
    pads = self._pads(x.shape[1:3], kernel_size, strides)
    x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    out_h, out_w = self._output_shape(inputs.shape[1:3], kernel_size, strides)
    y = 0
    for i in range(kernel_size[0]):
      for j in range(kernel_size[1]):
        # (B, out_h, out_w, C_in) . (C_in, C_out) -> (B, out_h, out_w, C_out)
        tap = x[:, i:i + strides[0] * out_h:strides[0], j:j + strides[1] * out_w:strides[1], :]
        y = y + tap @ kernel[i, j]
    return y

  def _strides(self) -> tuple[int, int]:
    if self.strides is None:
      return (1, 1)
    return (self.strides,) * 2 if isinstance(self.strides, int) else tuple(self.strides)

  def _explicit_padding(self) -> bool:
    """Padding given as one (before, after) pair per spatial axis."""
    return (not isinstance(self.padding, str) and len(self.padding) == 2
            and all(not isinstance(p, int) and len(p) == 2 for p in self.padding))

  def _pads(self, in_hw, kernel_size, strides):
    if self._explicit_padding():
      return tuple(tuple(p) for p in self.padding)
    return jax.lax.padtype_to_pads(in_hw, kernel_size, strides, self.padding)

  def _output_shape(self, in_hw, kernel_size, strides):
    if self._explicit_padding():
      return tuple((n + lo + hi - k) // s + 1 for n, (lo, hi), k, s in zip(in_hw, self.padding, kernel_size, strides))
    return tuple(-(-n // s) for n, s in zip(in_hw, strides))  # SAME padding: ceil(in / stride)

  def _as_matmuls(self, inputs) -> bool:
    plain = ((self.padding == "SAME" or self._explicit_padding()) and not self.use_bias
             and self.feature_group_count == 1
             and self.kernel_dilation in (None, 1, (1, 1)) and self.input_dilation in (None, 1, (1, 1))
             and inputs.ndim == 4 and len(self.kernel_size) == 2)
    if not plain:
      return False
    out_h, out_w = self._output_shape(inputs.shape[1:3], self.kernel_size, self._strides())
    return out_h * out_w <= SMALL_MAP_PIXELS


def _last_norm_scale_init(zero: bool):
  # Zero-init of a block's last BN scale makes each block start as the identity, which helps
  # training (Goyal et al. 2017, arXiv 1706.02677). An untrained network built that way is a
  # stem, the shortcuts and a pooling layer, so the random-init baseline uses scale 1.
  return nn.initializers.zeros_init() if zero else nn.initializers.ones_init()


class BasicBlock(nn.Module):
  """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut: ResNet-18/34."""

  filters: int
  conv: ModuleDef
  norm: ModuleDef
  act: Callable
  strides: tuple[int, int] = (1, 1)
  zero_init_residual: bool = True

  @nn.compact
  def __call__(self, x):
    residual = x
    y = self.conv(self.filters, (3, 3), self.strides)(x)
    y = self.act(self.norm()(y))
    y = self.conv(self.filters, (3, 3))(y)
    y = self.norm(scale_init=_last_norm_scale_init(self.zero_init_residual))(y)
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
  zero_init_residual: bool = True

  @nn.compact
  def __call__(self, x):
    residual = x
    y = self.act(self.norm()(self.conv(self.filters, (1, 1))(x)))
    y = self.act(self.norm()(self.conv(self.filters, (3, 3), self.strides)(y)))
    y = self.conv(self.filters * 4, (1, 1))(y)
    y = self.norm(scale_init=_last_norm_scale_init(self.zero_init_residual))(y)
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
    bn_momentum: decay of BatchNorm's running statistics; 0 stores the last batch's exactly
      (how the random-init baseline's statistics are calibrated).
    zero_init_residual: each block's last BN scale starts at 0 (True, for training) or 1.
    padding: "same" (Flax's SAME: a stride-2 layer pads an even input after it only) or
      "symmetric" (k // 2 on each side, and the max pool 1 on each side: torchvision's).
    pixel_mean, pixel_std: None, or one value per channel: images in [0, 1] are normalised as
      (x - mean) / std before the stem (torchvision's ImageNet weights expect ImageNet's).
  """

  stage_sizes: Sequence[int]
  block_cls: ModuleDef
  width: int = 64
  stem: str = "imagenet"
  stem_stride: int = 1
  dtype: Any = jnp.float32
  axis_name: str | None = None
  bn_momentum: float = 0.9
  zero_init_residual: bool = True
  padding: str = "same"
  pixel_mean: tuple[float, ...] | None = None
  pixel_std: tuple[float, ...] | None = None

  @nn.compact
  def __call__(self, x, train: bool = True):
    if self.padding not in PADDINGS:
      raise ValueError(f"ResNet padding must be one of {PADDINGS}, got {self.padding!r}")
    conv = functools.partial(Conv, use_bias=False, dtype=self.dtype)
    if self.padding == "symmetric":
      conv = functools.partial(_symmetric_conv, conv)
    norm = functools.partial(
        nn.BatchNorm,
        use_running_average=not train,
        momentum=self.bn_momentum,
        epsilon=1e-5,
        dtype=self.dtype,
        axis_name=self.axis_name if train else None,
    )
    x = self._normalise(x).astype(self.dtype)
    if self.stem == "imagenet":
      x = conv(self.width, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], name="stem_conv")(x)
      x = nn.relu(norm(name="stem_norm")(x))
      pool_padding = "SAME" if self.padding == "same" else ((1, 1), (1, 1))  # pads with -inf
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=pool_padding)
    elif self.stem == "small":
      x = conv(self.width, (3, 3), (self.stem_stride, self.stem_stride), name="stem_conv")(x)
      x = nn.relu(norm(name="stem_norm")(x))
    else:
      raise ValueError(f"ResNet stem must be 'imagenet' or 'small', got {self.stem!r}")
    for stage, num_blocks in enumerate(self.stage_sizes):
      for block in range(num_blocks):
        strides = (2, 2) if stage > 0 and block == 0 else (1, 1)
        x = self.block_cls(
            self.width * 2**stage, conv=conv, norm=norm, act=nn.relu, strides=strides,
            zero_init_residual=self.zero_init_residual,
        )(x)
    # (B, H, W, C) -> (B, C)
    return jnp.mean(x, axis=(1, 2)).astype(jnp.float32)

  def _normalise(self, x):
    """(x - pixel_mean) / pixel_std per channel, in float32; x itself without them."""
    if (self.pixel_mean is None) != (self.pixel_std is None):
      raise ValueError("give both pixel_mean and pixel_std of the ResNet, or neither")
    if self.pixel_mean is None:
      return x
    channels = x.shape[-1]
    if len(self.pixel_mean) != channels or len(self.pixel_std) != channels or min(self.pixel_std) <= 0:
      raise ValueError(f"the ResNet's pixel_mean and pixel_std need one value per channel of the {x.shape[-1]}-channel "
                       f"images and std > 0, got {self.pixel_mean} and {self.pixel_std}")
    mean, std = jnp.asarray(self.pixel_mean, jnp.float32), jnp.asarray(self.pixel_std, jnp.float32)
    return (x.astype(jnp.float32) - mean) / std


def _symmetric_conv(conv: ModuleDef, features: int, kernel_size, strides=(1, 1), **kwargs) -> nn.Module:
  """`conv` padded as PyTorch's Conv2d(padding=k // 2): k // 2 pixels on each side of each axis
  (unless a padding is given)."""
  kwargs.setdefault("padding", tuple((k // 2, k // 2) for k in kernel_size))
  return conv(features, kernel_size, strides, **kwargs)


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
