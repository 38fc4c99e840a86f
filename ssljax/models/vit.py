"""A Vision Transformer (Dosovitskiy et al. 2020, arXiv 2010.11929) built from the Transformer's
pre-LN `Block`, in the form CLIP uses as its image tower (Radford et al. 2021, arXiv 2103.00020,
Section 2.4):

  patches (p x p, one linear map) + a learned class token + learned positions
  -> LayerNorm (CLIP's "additional layer normalization to the combined patch and position
     embeddings before the transformer")
  -> num_layers bidirectional pre-LN blocks
  -> LayerNorm of the class token: (B, D), the image feature that CLIP then projects.

The blocks are `ssljax.models.transformer.Block` with non-causal `SelfAttention`, so the image
and text towers share one attention implementation (`jax.nn.dot_product_attention`, cuDNN's
fused kernel on NVIDIA GPUs in 16-bit).

A published checkpoint (`ssljax/convert/`) also fixes the MLP's `activation` (OpenAI's CLIP:
"quick_gelu"), the LayerNorms' epsilon, and the pixel normalisation its images were trained
with (`pixel_mean`, `pixel_std`: each channel's (x - mean) / std of images in [0, 1], as its
preprocessor_config.json gives them); the bundled configs leave the images in [0, 1].
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from ssljax.models import transformer

# Architecture presets; `image_size` comes from the data and the rest can be overridden.
VIT_PRESETS: dict[str, dict[str, int]] = {
    # Tests and the bundled 32 px `shapes` set: 8 x 8 patches of 4 px.
    "vit_tiny": dict(patch_size=4, num_layers=4, num_heads=4, embed_dim=128, mlp_dim=512),
    # ViT-B/16, the image tower of CLIP's ViT-B/16 model (86M parameters at 224 px).
    "vit_b16": dict(patch_size=16, num_layers=12, num_heads=12, embed_dim=768, mlp_dim=3072),
}


@dataclasses.dataclass(frozen=True)
class ViTConfig:
  """Shape and numerics of a ViT; frozen, so it can key jit caches.

  Attributes:
    patch_size: side p of the square patches; the image side must be a multiple of it.
    num_layers, num_heads, embed_dim, mlp_dim: as in `TransformerConfig`.
    dtype: compute dtype; parameters stay float32.
    attention_impl: None / "xla" or "cudnn" (`jax.nn.dot_product_attention`).
    remat: recompute each block in the backward pass.
    activation: the MLP's nonlinearity, a key of `transformer.ACTIVATIONS`.
    layer_norm_epsilon: every LayerNorm's epsilon.
    pixel_mean, pixel_std: None, or one value per channel: images are normalised as
      (x - mean) / std before the patch embedding.
  """

  patch_size: int
  num_layers: int
  num_heads: int
  embed_dim: int
  mlp_dim: int
  dtype: Any = jnp.float32
  attention_impl: str | None = None
  remat: bool = False
  activation: str = transformer.DEFAULT_ACTIVATION
  layer_norm_epsilon: float = transformer.LAYER_NORM_EPSILON
  pixel_mean: tuple[float, ...] | None = None
  pixel_std: tuple[float, ...] | None = None

  def __post_init__(self):
    object.__setattr__(self, "dtype", jnp.dtype(self.dtype))
    transformer.activation_fn(self.activation)
    if (self.pixel_mean is None) != (self.pixel_std is None):
      raise ValueError("give both pixel_mean and pixel_std, or neither")
    if self.pixel_std is not None:
      # Tuples, so that the config stays hashable when it comes from lists (JSON).
      object.__setattr__(self, "pixel_mean", tuple(float(v) for v in self.pixel_mean))
      object.__setattr__(self, "pixel_std", tuple(float(v) for v in self.pixel_std))
      if len(self.pixel_mean) != len(self.pixel_std) or min(self.pixel_std) <= 0:
        raise ValueError(f"pixel_mean and pixel_std need one value per channel and std > 0, got "
                         f"{self.pixel_mean} and {self.pixel_std}")
    for field in ("patch_size", "num_layers", "num_heads", "embed_dim", "mlp_dim"):
      if getattr(self, field) <= 0:
        raise ValueError(f"{field} must be positive, got {getattr(self, field)}")
    if self.embed_dim % self.num_heads:
      raise ValueError(f"embed_dim {self.embed_dim} does not split into {self.num_heads} heads")


def vit_config(preset: str, **overrides) -> ViTConfig:
  """A `ViTConfig` from a named preset; `overrides` replace any field."""
  if preset not in VIT_PRESETS:
    raise ValueError(f"unknown ViT preset {preset!r}; choose one of {sorted(VIT_PRESETS)}")
  return ViTConfig(**{**VIT_PRESETS[preset], **overrides})


class ViT(nn.Module):
  """Images (B, H, W, C) in [0, 1] -> (B, embed_dim) float32 class-token features.

  `train` only exists so that the module is called like the ResNet; a ViT has no BatchNorm and,
  here, no dropout.
  """

  config: ViTConfig

  @nn.compact
  def __call__(self, images, train: bool = False):
    del train
    cfg = self.config
    batch, height, width, _ = images.shape
    p = cfg.patch_size
    if height % p or width % p:
      raise ValueError(f"image size {height}x{width} is not a multiple of the patch size {p}")
    init = nn.initializers.normal(transformer.INIT_STD)
    if cfg.pixel_std is not None:
      images = (images - jnp.asarray(cfg.pixel_mean)) / jnp.asarray(cfg.pixel_std)
    # A p x p convolution with stride p is one linear map per patch: (B, H, W, C) -> (B, H/p, W/p, D).
    x = nn.Conv(cfg.embed_dim, (p, p), strides=(p, p), padding="VALID", use_bias=False, dtype=cfg.dtype,
                param_dtype=jnp.float32, name="patch_embed")(images.astype(cfg.dtype))
    x = x.reshape(batch, -1, cfg.embed_dim)  # (B, N, D), N = HW / p^2
    class_token = self.param("class_token", init, (1, 1, cfg.embed_dim))
    x = jnp.concatenate([jnp.broadcast_to(class_token, (batch, 1, cfg.embed_dim)).astype(x.dtype), x], axis=1)
    positions = self.param("position_embed", init, (1, x.shape[1], cfg.embed_dim))  # (1, N + 1, D)
    x = x + positions.astype(x.dtype)

    norm = functools.partial(nn.LayerNorm, epsilon=cfg.layer_norm_epsilon, dtype=cfg.dtype,
                             param_dtype=jnp.float32)
    x = norm(name="pre_norm")(x)
    residual_init = nn.initializers.normal(transformer.INIT_STD / math.sqrt(2 * cfg.num_layers))
    dense = functools.partial(nn.Dense, dtype=cfg.dtype, param_dtype=jnp.float32, kernel_init=init)
    attention = functools.partial(transformer.SelfAttention, num_heads=cfg.num_heads, causal=False,
                                  dtype=cfg.dtype, out_init=residual_init, attention_impl=cfg.attention_impl)
    mlp = functools.partial(transformer.MLP, hidden_dim=cfg.mlp_dim, dense=dense, out_init=residual_init,
                            activation=transformer.activation_fn(cfg.activation))
    block = nn.remat(transformer.Block, static_argnums=(3,)) if cfg.remat else transformer.Block
    for i in range(cfg.num_layers):
      x, _ = block(attention=attention, mlp=mlp, norm=norm, name=f"blocks_{i}")(x, None, False)
    # The class token after a final LayerNorm: (B, N + 1, D) -> (B, D).
    return norm(name="final_norm")(x[:, 0]).astype(jnp.float32)
