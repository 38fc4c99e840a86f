"""The network of a masked autoencoder (He et al. 2021, arXiv 2111.06377, Section 3): a ViT
encoder that sees only a random 25% of the patches, and a narrow decoder that predicts the
pixels of every patch from the encoded visible ones and a learned mask token.

  images (B, H, W, C) -> p x p patches, L = (H/p)(W/p) of them, each with its position
  -> keep L_keep = int(L (1 - mask_ratio)) of them per example, at random (`random_masking`)
  -> [class token; visible patches] -> the ViT's blocks and final LayerNorm     (the encoder)
  -> Dense to the decoder's width; a mask token for each dropped patch; every patch token put
     back at its place in the image; fixed 2-D sine-cosine positions added
  -> decoder blocks, LayerNorm, Dense to the p * p * C pixels of each patch       (the decoder)

The encoder is `models.vit.ViT` itself (its `embed` and `encode_tokens`), under `encoder` in the
parameters, so a pretrained MAE encoder is the ViT that the probes, fine-tuning and the other
image objectives use (`encode`: the class-token feature of the whole, unmasked image).

Positions. The encoder keeps the ViT's learned positions (made for the training image's grid,
resampled for others, `vit.resample_positions`) rather than the paper's fixed sine-cosine ones:
the encoder's parameters are then exactly the ViT's, and its positions are added to all L
patches before the masking, so each visible patch carries its own. The decoder, which exists
only for pretraining, uses the paper's fixed 2-D sine-cosine positions (`sincos_positions`).

The class token. As in the paper's encoder (a ViT with a class token, Appendix A.1), it is
prepended after the masking, with its own position, so it attends to the
visible patches only. Its encoder output goes through the decoder at position 0, with no
position added there, and its prediction is dropped: the pixels are predicted for the L patch
tokens.

The loss (mean squared error on the masked patches' pixels, each patch normalised by its own
mean and variance, Section 3 "Reconstruction target") belongs to the objective: `patchify` gives
its targets in the order of the predictions.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssljax.models import transformer, vit

# The paper's mask ratio (Section 4.1, Figure 5: 75% is good for both fine-tuning and linear probing).
MASK_RATIO = 0.75
SINCOS_BASE = 10_000.0  # the wavelength scale of Vaswani et al.'s positions

# Encoder preset and decoder shape. mae_b16: ViT-B/16 with the paper's default decoder (Table 1a
# and 1b: 8 blocks of width 512; its released code: 16 heads and an MLP of 4 x 512). mae_tiny: tests and 28 px
# digits (vit_tiny's 7 x 7 patches of 4 px; 12 visible at 75%).
MAE_PRESETS: dict[str, dict] = {
    "mae_tiny": dict(encoder="vit_tiny", decoder_layers=2, decoder_heads=4, decoder_dim=64, decoder_mlp_dim=256),
    "mae_b16": dict(encoder="vit_b16", decoder_layers=8, decoder_heads=16, decoder_dim=512, decoder_mlp_dim=2048),
}


@dataclasses.dataclass(frozen=True)
class MAEConfig:
  """An MAE's encoder (a `vit.ViTConfig`), its decoder's shape and its mask ratio. The decoder's
  blocks take the encoder's numerics (dtype, attention kernel, remat, activation, epsilon)."""

  encoder: vit.ViTConfig
  decoder_layers: int
  decoder_heads: int
  decoder_dim: int
  decoder_mlp_dim: int
  mask_ratio: float = MASK_RATIO

  def __post_init__(self):
    if not 0.0 <= self.mask_ratio < 1.0:
      raise ValueError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}")
    if self.decoder_dim % 4:
      raise ValueError(f"decoder_dim {self.decoder_dim} must be a multiple of 4 (2-D sine-cosine positions)")
    self.decoder()  # the decoder's own checks (heads, positive sizes)

  def decoder(self) -> vit.ViTConfig:
    """The decoder blocks' shape, with the encoder's numerics."""
    return dataclasses.replace(self.encoder, num_layers=self.decoder_layers, num_heads=self.decoder_heads,
                               embed_dim=self.decoder_dim, mlp_dim=self.decoder_mlp_dim, pixel_mean=None,
                               pixel_std=None)


def mae_config(preset: str, encoder: vit.ViTConfig | None = None, **overrides) -> MAEConfig:
  """An `MAEConfig` from a named preset: `encoder` replaces the preset's ViT (e.g. with the run's
  dtype), `overrides` any other field."""
  if preset not in MAE_PRESETS:
    raise ValueError(f"unknown MAE preset {preset!r}; choose one of {sorted(MAE_PRESETS)}")
  fields = dict(MAE_PRESETS[preset])
  encoder_preset = fields.pop("encoder")
  return MAEConfig(encoder=encoder or vit.vit_config(encoder_preset), **{**fields, **overrides})


def patchify(images, patch_size: int):
  """Images (B, H, W, C) -> patches (B, L, p * p * C), L = (H/p)(W/p) in row-major order (the
  ViT's token order), each patch's pixels in (row, column, channel) order."""
  batch, _, _, channels = images.shape
  rows, cols = vit.patch_grid(images.shape, patch_size)
  x = images.reshape(batch, rows, patch_size, cols, patch_size, channels)
  x = x.transpose(0, 1, 3, 2, 4, 5)  # (B, h, p, w, p, C) -> (B, h, w, p, p, C)
  return x.reshape(batch, rows * cols, patch_size * patch_size * channels)


def unpatchify(patches, patch_size: int, grid: tuple[int, int]):
  """The inverse of `patchify`: patches (B, L, p * p * C) of an h x w grid -> images (B, hp, wp, C)."""
  batch, length, size = patches.shape
  rows, cols = grid
  if length != rows * cols or size % (patch_size * patch_size):
    raise ValueError(f"{length} patches of {size} values are not a {rows}x{cols} grid of {patch_size} px patches")
  channels = size // (patch_size * patch_size)
  x = patches.reshape(batch, rows, cols, patch_size, patch_size, channels)
  x = x.transpose(0, 1, 3, 2, 4, 5)  # (B, h, w, p, p, C) -> (B, h, p, w, p, C)
  return x.reshape(batch, rows * patch_size, cols * patch_size, channels)


def num_visible(num_patches: int, mask_ratio: float) -> int:
  """Patches the encoder sees: int(L (1 - mask_ratio)), as the paper's code rounds (49 of 196 at 75%)."""
  keep = int(num_patches * (1 - mask_ratio))
  if keep < 1:
    raise ValueError(f"mask_ratio {mask_ratio} leaves no visible patch of {num_patches}")
  return keep


def random_masking(key, num_patches: int, mask_ratio: float = MASK_RATIO):
  """One example's random mask (Section 3, "Masking": patches sampled uniformly without
  replacement), from that example's key only, so an example gets the same mask on any number of
  devices (the objective vmaps this over the per-example keys).

  Returns:
    keep_ids: (L_keep,) int32, the visible patches, in the random order of a permutation of 0..L-1.
    mask: (L,) float32, 1 at the dropped (masked) patches, 0 at the visible ones.
    restore_ids: (L,) int32, the inverse permutation: tokens in the order [visible, dropped]
      (keep_ids first, then the rest of the permutation) taken at restore_ids are in patch order.
  """
  keep = num_visible(num_patches, mask_ratio)
  shuffle = jax.random.permutation(key, num_patches).astype(jnp.int32)  # (L,)
  restore_ids = jnp.argsort(shuffle).astype(jnp.int32)  # shuffle[restore_ids[i]] == i
  keep_ids = shuffle[:keep]
  mask = jnp.ones((num_patches,), jnp.float32).at[keep_ids].set(0.0)
  return keep_ids, mask, restore_ids


def sincos_positions(grid: tuple[int, int], dim: int):
  """Fixed 2-D sine-cosine positions (L, dim) of an h x w grid, row-major: the first dim/2
  channels encode the row, the last dim/2 the column, each with Vaswani et al.'s 1-D encoding
  (arXiv 1706.03762, Section 3.5: sin and cos of pos / 10000^(2i/d), i < d/2, here d = dim/2),
  the sines before the cosines, as MAE's decoder uses them."""
  quarter = dim // 4
  frequencies = SINCOS_BASE ** (-jnp.arange(quarter, dtype=jnp.float32) / quarter)  # (dim/4,)

  def encode(positions):  # (L,) -> (L, dim/2)
    angles = positions.astype(jnp.float32)[:, None] * frequencies[None, :]
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=1)

  rows, cols = jnp.meshgrid(jnp.arange(grid[0]), jnp.arange(grid[1]), indexing="ij")  # (h, w) each
  return jnp.concatenate([encode(rows.reshape(-1)), encode(cols.reshape(-1))], axis=1)


class MAE(nn.Module):
  """Images (B, H, W, C) in [0, 1] and one key per example -> (predicted pixels (B, L, p * p * C)
  float32, mask (B, L) float32, 1 where a patch was dropped); `encode` is the ViT's class-token
  feature of whole images. No BatchNorm, no dropout: `train` only mirrors the other networks.

  Parameters: encoder/... (exactly `vit.ViT`'s), decoder_embed, mask_token (1, 1, Dd),
  decoder_blocks_{i}, decoder_norm, decoder_pred (Dd -> p * p * C).
  """

  config: MAEConfig

  def setup(self):
    cfg = self.config
    decoder = cfg.decoder()
    init = nn.initializers.normal(transformer.INIT_STD)
    self.encoder = vit.ViT(cfg.encoder)
    self.decoder_embed = nn.Dense(cfg.decoder_dim, dtype=decoder.dtype, param_dtype=jnp.float32, kernel_init=init)
    self.mask_token = self.param("mask_token", init, (1, 1, cfg.decoder_dim))
    self.decoder_blocks = vit.make_blocks(decoder, "decoder_blocks")
    self.decoder_norm = vit.layer_norm(decoder)()

  def _encode_visible(self, images, keys):
    """The encoder on each example's visible patches: -> ((B, 1 + L_keep, D) encoded [class
    token; visible patches], mask (B, L), restore_ids (B, L))."""
    tokens = self.encoder.embed(images)  # (B, 1 + L, D): every patch with its position
    length = tokens.shape[1] - 1
    masking = functools.partial(random_masking, num_patches=length, mask_ratio=self.config.mask_ratio)
    keep_ids, mask, restore_ids = jax.vmap(masking)(keys)  # (B, L_keep), (B, L), (B, L)
    visible = jnp.take_along_axis(tokens[:, 1:], keep_ids[:, :, None], axis=1)  # (B, L, D) -> (B, L_keep, D)
    encoded = self.encoder.encode_tokens(jnp.concatenate([tokens[:, :1], visible], axis=1))
    return encoded, mask, restore_ids

  def _decode(self, encoded, restore_ids, grid: tuple[int, int]):
    """(B, 1 + L_keep, D) encoded tokens -> (B, 1 + L, Dd) decoded tokens, every patch at its place."""
    x = self.decoder_embed(encoded)  # (B, 1 + L_keep, D) -> (B, 1 + L_keep, Dd)
    batch, width = x.shape[0], x.shape[-1]
    length = restore_ids.shape[1]
    mask_tokens = jnp.broadcast_to(self.mask_token.astype(x.dtype), (batch, length - (x.shape[1] - 1), width))
    # [visible; dropped] is the order of the example's permutation; restore_ids puts it back in
    # patch order: (B, L, Dd).
    patches = jnp.take_along_axis(jnp.concatenate([x[:, 1:], mask_tokens], axis=1), restore_ids[:, :, None], axis=1)
    patches = patches + sincos_positions(grid, width)[None].astype(x.dtype)
    x = jnp.concatenate([x[:, :1], patches], axis=1)  # (B, 1 + L, Dd)
    for block in self.decoder_blocks:
      x, _ = block(x, None, False)
    return self.decoder_norm(x)

  # Compact for the pixel projection, whose width p * p * C comes from the images.
  @nn.compact
  def __call__(self, images, keys, train: bool = False):
    del train
    cfg = self.config
    p = cfg.encoder.patch_size
    grid = vit.patch_grid(images.shape, p)
    encoded, mask, restore_ids = self._encode_visible(images, keys)
    decoded = self._decode(encoded, restore_ids, grid)
    pixels = p * p * images.shape[-1]
    project = nn.Dense(pixels, dtype=cfg.encoder.dtype, param_dtype=jnp.float32,
                       kernel_init=nn.initializers.normal(transformer.INIT_STD), name="decoder_pred")
    predictions = project(decoded[:, 1:])  # the patch tokens: (B, L, Dd) -> (B, L, p * p * C)
    return predictions.astype(jnp.float32), mask  # (B, L, p * p * C), (B, L)

  def encode(self, images, train: bool = False):
    """The encoder's class-token feature of whole images (every patch, no masking): (B, D) float32."""
    del train
    return self.encoder(images)
