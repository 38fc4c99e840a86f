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

Any crop size: the learned positions are made at initialisation for the patch grid of the image
the model first sees, and keep that shape (checkpoints, imported CLIP models). An input with
another patch grid (the 96 px local views of DINO's multi-crop beside its 224 px global ones,
Caron et al. 2021, arXiv 2104.14294, Section 3.1, whose released code interpolates the positions;
a non-square h x w image) gets the patch positions resampled to its grid as a 2-D image,
bicubically, the class token's position kept (`resample_positions`). An input of the initial
grid takes the positions as they are.

The parts are methods, so that MAE (`models/mae.py`) runs them on its visible patches with the
same parameters: `embed` (patches, class token, positions), `encode_tokens` (the LayerNorm,
blocks and final LayerNorm on any token sequence), and `__call__`, the class-token feature.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssljax.models import transformer

# Architecture presets; `image_size` comes from the data and the rest can be overridden.
VIT_PRESETS: dict[str, dict[str, int]] = {
    # Tests, the bundled 32 px `shapes` set (8 x 8 patches of 4 px) and 28 px digits (7 x 7; local
    # crops of 12 or 16 px give 3 x 3 or 4 x 4).
    "vit_tiny": dict(patch_size=4, num_layers=4, num_heads=4, embed_dim=128, mlp_dim=512),
    # The smoke configs and the tests' steps: vit_tiny's patches, one block of width 32.
    "vit_micro": dict(patch_size=4, num_layers=1, num_heads=2, embed_dim=32, mlp_dim=64),
    # ViT-S/16 (Touvron et al. 2021, arXiv 2012.12877, Table 1), DINO's smallest model: 22M parameters.
    "vit_s16": dict(patch_size=16, num_layers=12, num_heads=6, embed_dim=384, mlp_dim=1536),
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


def layer_norm(cfg: ViTConfig):
  """The LayerNorm of every block and of the ends, float32 parameters and the compute dtype."""
  return functools.partial(nn.LayerNorm, epsilon=cfg.layer_norm_epsilon, dtype=cfg.dtype, param_dtype=jnp.float32)


def make_blocks(cfg: ViTConfig, prefix: str) -> list[nn.Module]:
  """`cfg.num_layers` bidirectional pre-LN `transformer.Block`s of width `cfg.embed_dim`, named
  `{prefix}_{i}`; called from a module's `setup`, which they then belong to (the ViT's blocks,
  MAE's decoder blocks)."""
  init = nn.initializers.normal(transformer.INIT_STD)
  residual_init = nn.initializers.normal(transformer.INIT_STD / math.sqrt(2 * cfg.num_layers))
  dense = functools.partial(nn.Dense, dtype=cfg.dtype, param_dtype=jnp.float32, kernel_init=init)
  attention = functools.partial(transformer.SelfAttention, num_heads=cfg.num_heads, causal=False,
                                dtype=cfg.dtype, out_init=residual_init, attention_impl=cfg.attention_impl)
  mlp = functools.partial(transformer.MLP, hidden_dim=cfg.mlp_dim, dense=dense, out_init=residual_init,
                          activation=transformer.activation_fn(cfg.activation))
  block = nn.remat(transformer.Block, static_argnums=(3,)) if cfg.remat else transformer.Block
  return [block(attention=attention, mlp=mlp, norm=layer_norm(cfg), name=f"{prefix}_{i}")
          for i in range(cfg.num_layers)]


def patch_grid(image_shape, patch_size: int) -> tuple[int, int]:
  """(rows, columns) of p x p patches of (B, H, W, C) images; H and W must be multiples of p."""
  height, width = image_shape[1], image_shape[2]
  if height % patch_size or width % patch_size:
    raise ValueError(f"image size {height}x{width} is not a multiple of the patch size {patch_size}")
  return height // patch_size, width // patch_size


def initial_patches(grid: tuple[int, int]) -> int:
  """Patches of the grid that a new ViT's positions are made for. A non-square grid with a square
  number of patches is refused: `stored_grid` would later read its positions as a square grid."""
  count = grid[0] * grid[1]
  if grid[0] != grid[1] and math.isqrt(count) ** 2 == count:
    raise ValueError(f"a ViT initialised on a non-square {grid[0]}x{grid[1]} patch grid of a square number of "
                     "patches could not tell its grid from its positions' count; initialise it on square images")
  return count


def stored_grid(num_patches: int, grid: tuple[int, int]) -> tuple[int, int]:
  """The patch grid that `num_patches` stored positions were made for, for an input whose grid
  is `grid`: a square grid when the count is a square (a non-square image of a square count is
  refused at initialisation, so this is never ambiguous), else the input's own grid, the only
  non-square one that can be told from the count."""
  side = math.isqrt(num_patches)
  if side * side == num_patches:
    return side, side
  if num_patches == grid[0] * grid[1]:
    return grid
  raise ValueError(f"the position embedding holds {num_patches} patch positions, made for a non-square image; "
                   f"they cannot be resampled to this input's {grid[0]}x{grid[1]} patch grid, only used on "
                   f"images with {num_patches} patches")


def resample_positions(positions, from_grid: tuple[int, int], to_grid: tuple[int, int]):
  """Position embeddings (1, 1 + h0 * w0, D) of a class token and an h0 x w0 patch grid (row-major)
  -> (1, 1 + h * w, D) for an h x w grid, the class token's position kept.

  The patch positions are resampled as an (h0, w0, D) image with `jax.image.resize`'s "bicubic"
  (Keys' cubic convolution, a = -0.5, pixel centres at half-integers, weights renormalised at
  the borders): bicubic, as DINO's released code does for its local crops, because the learned
  positions vary smoothly over the grid and a cubic keeps more of that than a linear blend. With
  antialiasing (jax's default): when the grid shrinks (DINO's 14 x 14 -> 6 x 6) the kernel is
  widened by the shrink factor, so every stored position contributes instead of 4 x 4 samples
  per output; growing grids are unaffected. PyTorch's bicubic (a = -0.75, no antialiasing)
  differs slightly, so a DINO checkpoint from PyTorch gets slightly different positions at other
  grids here than there.
  """
  if tuple(from_grid) == tuple(to_grid):
    return positions
  dim = positions.shape[-1]
  patches = positions[0, 1:].reshape(*from_grid, dim)  # (h0 * w0, D) -> (h0, w0, D)
  patches = jax.image.resize(patches, (*to_grid, dim), method="bicubic", antialias=True)  # -> (h, w, D)
  return jnp.concatenate([positions[:, :1], patches.reshape(1, -1, dim).astype(positions.dtype)], axis=1)


class ViT(nn.Module):
  """Images (B, H, W, C) in [0, 1] -> (B, embed_dim) float32 class-token features.

  `train` only exists so that the module is called like the ResNet; a ViT has no BatchNorm and,
  here, no dropout.

  Parameters: patch_embed/kernel (p, p, C, D), class_token (1, 1, D), position_embed
  (1, 1 + N, D) for the N patches of the image it was initialised with, pre_norm,
  blocks_{i} (as `transformer.Block`), final_norm.
  """

  config: ViTConfig

  def setup(self):
    cfg = self.config
    p = cfg.patch_size
    # A p x p convolution with stride p is one linear map per patch.
    self.patch_embed = nn.Conv(cfg.embed_dim, (p, p), strides=(p, p), padding="VALID", use_bias=False,
                               dtype=cfg.dtype, param_dtype=jnp.float32)
    self.pre_norm = layer_norm(cfg)()
    self.blocks = make_blocks(cfg, "blocks")
    self.final_norm = layer_norm(cfg)()

  # Compact (the rest is in setup) because the positions' shape comes from the first image seen.
  @nn.compact
  def embed(self, images):
    """Images (B, H, W, C) -> tokens (B, 1 + N, D) in the compute dtype: the class token, then the
    N = (H/p)(W/p) patches in row-major order, each with its position added (resampled when the
    image's patch grid is not the one the positions were made for)."""
    cfg = self.config
    grid = patch_grid(images.shape, cfg.patch_size)
    if cfg.pixel_std is not None:
      images = (images - jnp.asarray(cfg.pixel_mean)) / jnp.asarray(cfg.pixel_std)
    x = self.patch_embed(images.astype(cfg.dtype))  # (B, H, W, C) -> (B, H/p, W/p, D)
    batch = x.shape[0]
    x = x.reshape(batch, -1, cfg.embed_dim)  # (B, N, D)
    init = nn.initializers.normal(transformer.INIT_STD)
    class_token = self.param("class_token", init, (1, 1, cfg.embed_dim))
    x = jnp.concatenate([jnp.broadcast_to(class_token, (batch, 1, cfg.embed_dim)).astype(x.dtype), x], axis=1)
    if self.has_variable("params", "position_embed"):
      shape = self.get_variable("params", "position_embed").shape
    else:
      shape = (1, 1 + initial_patches(grid), cfg.embed_dim)
    positions = self.param("position_embed", init, shape)  # (1, 1 + N0, D)
    positions = resample_positions(positions, stored_grid(shape[1] - 1, grid), grid)  # -> (1, 1 + N, D)
    return x + positions.astype(x.dtype)

  def _blocks(self, tokens):
    """CLIP's LayerNorm of the embeddings, then the blocks (bidirectional: every token sees every
    other): (B, T, D) -> (B, T, D)."""
    x = self.pre_norm(tokens)
    for block in self.blocks:
      x, _ = block(x, None, False)
    return x

  def encode_tokens(self, tokens):
    """Tokens (B, T, D) -> (B, T, D) in the compute dtype: the blocks and the final LayerNorm of
    every token."""
    return self.final_norm(self._blocks(tokens))

  def __call__(self, images, train: bool = False):
    del train
    # Only the class token is read, so only it is normalised: (B, 1 + N, D) -> (B, D).
    return self.final_norm(self._blocks(self.embed(images))[:, 0]).astype(jnp.float32)
