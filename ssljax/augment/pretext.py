"""Inputs and labels for the pretext classification tasks.

- Rotation prediction (RotNet, Gidaris et al. 2018, arXiv 1803.07728): every image at 0, 90, 180
  and 270 degrees; the label is the number of quarter turns.
- Relative patch placement (Doersch et al. 2015, arXiv 1505.05192): a centre patch and one of its
  8 neighbours from a 3x3 grid with gaps and jitter; the label is the neighbour's position.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ssljax.augment.ops import example_keys, normal_from_uniform, randint_from_uniform, to_float_image

Array = jax.Array

NUM_ROTATIONS = 4
NUM_PATCH_POSITIONS = 8

# (row, col) cell offset of each neighbour from the centre, in reading order: label 0 is the
# top-left cell, 1 top, 2 top-right, 3 left, 4 right, 5 bottom-left, 6 bottom, 7 bottom-right.
NEIGHBOUR_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def rotations(images: Array) -> tuple[Array, Array]:
  """All four rotations of a batch of square images, with their labels.

  images (B, H, W, C) with H == W -> rotated (4B, H, W, C), labels (4B,) int32.
  Row k*B + i is image i turned k quarter turns counter-clockwise as displayed (row 0 at the top),
  i.e. `jnp.rot90(image, k)`, with label k: the blocks are k = 0, 1, 2, 3 in that order. Exact
  (no resampling), dtype kept.
  """
  images = jnp.asarray(images)
  if images.ndim != 4:
    raise ValueError(f"expected images of shape (B, H, W, C), got {images.shape}")
  if images.shape[1] != images.shape[2]:
    raise ValueError(f"rotation prediction needs square images (a quarter turn swaps H and W), "
                     f"got H={images.shape[1]}, W={images.shape[2]}")
  rotated = jnp.concatenate(
      [jnp.rot90(images, k, axes=(1, 2)) for k in range(NUM_ROTATIONS)])  # (4B, H, W, C)
  labels = jnp.repeat(jnp.arange(NUM_ROTATIONS, dtype=jnp.int32), images.shape[0])  # (4B,)
  return rotated, labels


def patch_grid_extent(patch_size: int, gap: int, jitter: int) -> int:
  """Side of the square the 3x3 grid may occupy: 3 * patch + 2 * gap + 2 * jitter."""
  return 3 * patch_size + 2 * gap + 2 * jitter


def _drop_colour(draws: Array, patch: Array, p: float) -> Array:
  """Doersch et al.'s colour dropping, with probability p: keep one random channel and replace the
  other two by Gaussian noise with 1/100 of the kept channel's standard deviation.

  `draws` holds 2 + P * P * 3 uniforms (apply, channel, noise). The paper does not say where the
  noise is centred; here it is centred on the kept channel's mean, so the dropped channels carry
  neither colour nor a brightness shift.
  """
  keep = randint_from_uniform(draws[1], 0, 3)
  kept = jnp.take(patch, keep, axis=-1)  # (P, P)
  noise = normal_from_uniform(draws[2:]).reshape(patch.shape)  # (P, P, 3)
  dropped = jnp.where(jnp.arange(3) == keep, patch, kept.mean() + kept.std() / 100.0 * noise)
  return jnp.where(draws[0] < p, dropped, patch)


def patch_pair(key: Array, image: Array, *, patch_size: int, gap: int, jitter: int = 0,
               color_drop_p: float = 1.0) -> tuple[Array, Array, Array]:
  """One relative-placement example (Doersch et al. 2015, arXiv 1505.05192).

  image (H, W, C) -> centre (P, P, C), neighbour (P, P, C), label () int32 in 0..7.

  A 3x3 grid of P x P cells with `gap` pixels between cells is placed at a random offset inside
  the image (it needs 3P + 2 gap + 2 jitter pixels along both axes, else ValueError). The centre
  cell and one of its 8 neighbours, drawn uniformly, are cut out, each shifted independently by an
  integer in [-jitter, jitter] along each axis so that lines and textures do not continue from
  one patch into the next (the actual gap between the two is gap +- 2 jitter). The label is the
  neighbour's position in reading order (see `NEIGHBOUR_OFFSETS`: 0 top-left ... 7 bottom-right).
  The paper used P=96, gap 48, jitter 7.

  Chromatic aberration lets a network find a patch's absolute position in the frame; the paper's
  two guards are projecting out the green-magenta axis and colour dropping. This implements colour
  dropping: for C = 3, each patch with probability `color_drop_p` keeps one random channel and
  gets small noise in the other two (see `_drop_colour`); for C = 1 it is a no-op. uint8 images
  are scaled to [0, 1]; float images are used as they are (no clipping), so tests can encode
  positions in pixel values.
  """
  image = to_float_image(image)
  if image.ndim != 3:
    raise ValueError(f"expected one image of shape (H, W, C), got {image.shape}")
  if patch_size < 1 or gap < 0 or jitter < 0:
    raise ValueError(f"need patch_size >= 1, gap >= 0, jitter >= 0; got patch_size={patch_size}, "
                     f"gap={gap}, jitter={jitter}")
  if not 0.0 <= color_drop_p <= 1.0:
    raise ValueError(f"color_drop_p must be in [0, 1], got {color_drop_p}")
  height, width, channels = image.shape
  extent = patch_grid_extent(patch_size, gap, jitter)
  if extent > height or extent > width:
    raise ValueError(f"the patch grid (3 * patch_size + 2 * gap + 2 * jitter = {extent} px) does "
                     f"not fit in a {height}x{width} image")
  drop = channels == 3 and color_drop_p > 0
  drop_draws = 2 + patch_size * patch_size * 3
  # one PRNG call for everything (see ops.py): origin 2, label 1, shifts 4, then colour drop
  draws = jax.random.uniform(key, (7 + (2 * drop_draws if drop else 0),), jnp.float32)
  room = jnp.array([height, width]) - extent + 1
  origin = randint_from_uniform(draws[0:2], 0, room)  # grid's top-left (y, x)
  label = randint_from_uniform(draws[2], 0, NUM_PATCH_POSITIONS)
  cell = jnp.array(NEIGHBOUR_OFFSETS, jnp.int32)[label] + 1  # neighbour's (row, col) in 0..2
  shifts = randint_from_uniform(draws[3:7], -jitter, jitter + 1).reshape(2, 2)  # (patch, axis)
  stride = patch_size + gap
  centre_corner = origin + jitter + stride + shifts[0]  # top-left (y, x)
  neighbour_corner = origin + jitter + stride * cell + shifts[1]
  size = (patch_size, patch_size, channels)
  centre = jax.lax.dynamic_slice(image, (centre_corner[0], centre_corner[1], 0), size)
  neighbour = jax.lax.dynamic_slice(image, (neighbour_corner[0], neighbour_corner[1], 0), size)
  if drop:
    centre = _drop_colour(draws[7:7 + drop_draws], centre, color_drop_p)
    neighbour = _drop_colour(draws[7 + drop_draws:], neighbour, color_drop_p)
  return centre, neighbour, label


@functools.partial(jax.jit, static_argnames=("patch_size", "gap", "jitter", "color_drop_p"))
def patch_pairs(key: Array, images: Array, *, patch_size: int, gap: int, jitter: int = 0,
                color_drop_p: float = 1.0) -> tuple[Array, Array, Array]:
  """`patch_pair` vmapped with one key per example (`key` is one key, split per example, or a
  (B,) array of per-example keys).

  images (B, H, W, C) -> centres (B, P, P, C), neighbours (B, P, P, C), labels (B,) int32.
  Jitted (the keyword arguments are static), so eager callers compile it once per setting.
  """
  images = jnp.asarray(images)
  if images.ndim != 4:
    raise ValueError(f"expected images of shape (B, H, W, C), got {images.shape}")
  one = functools.partial(patch_pair, patch_size=patch_size, gap=gap, jitter=jitter,
                          color_drop_p=color_drop_p)
  return jax.vmap(one)(example_keys(key, images.shape[0]), images)
