"""Per-example image augmentations: `fn(key, image, ...) -> image`, pure, jittable, vmappable.

Every image is float32 (H, W, C) in [0, 1] with C = 1 or 3, and every op returns float32 in
[0, 1] (it clips) with the same shape, except `random_resized_crop`, which resamples to its `size`.
The random ops draw everything from their own `key`; `p` is the probability that the op is
applied at all (a Bernoulli draw per example). A `p` given as a Python number of 0 or 1 is
resolved while tracing, so a disabled op costs nothing and an always-on op has no branch.

Every random op makes exactly one PRNG call: `random_x(key, image)` draws one vector of U[0, 1)
numbers and hands it to the deterministic `x_from_draws(draws, image)`; `X_DRAWS` (or
`x_draws(...)` where it depends on the arguments) is how many numbers it needs. The pipeline
draws once for all its stages and slices. (Each threefry call is inlined into the compiled step;
twenty of them cost seconds of compile time on CPU.)

One-channel images are supported everywhere: colour jitter does brightness and contrast only
(saturation and hue are undefined without colour), grayscale is the identity, and the rest work
per channel as they do for RGB.

References: SimCLR (Chen et al. 2020, arXiv 2002.05709, §3 and appendix A) for crop, flip, colour
jitter, colour drop, blur and the study transforms (rotation, cutout, noise, Sobel); BYOL (Grill
et al. 2020, arXiv 2006.07733, appendix B) for solarization.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import dm_pix as pix
import jax
import jax.numpy as jnp

Array = jax.Array
ImageFn = Callable[[Array], Array]

# Rec. 601 luma, the weights of tf.image.rgb_to_grayscale and dm-pix's default.
LUMA_WEIGHTS = (0.2989, 0.5870, 0.1140)


def to_float_image(image: Array) -> Array:
  """uint8 in 0..255 -> float32 in [0, 1]; any float -> float32, assumed to be in [0, 1] already."""
  image = jnp.asarray(image)
  if image.dtype == jnp.uint8:
    return image.astype(jnp.float32) / 255.0
  if not jnp.issubdtype(image.dtype, jnp.floating):
    raise TypeError(f"images must be uint8 or floating point, got {image.dtype}")
  return image.astype(jnp.float32)


def _check_image(image: Array) -> None:
  if image.ndim != 3 or image.shape[-1] not in (1, 3):
    raise ValueError(f"expected one image of shape (H, W, C) with C in (1, 3), got {image.shape}")


def _uniforms(key: Array, n: int) -> Array:
  """n independent U[0, 1) draws from one PRNG call."""
  return jax.random.uniform(key, (n,), jnp.float32)


def randint_from_uniform(u: Array, low: int | Array, high: int | Array) -> Array:
  """An integer in [low, high) from a U[0, 1) draw `u` (high may be traced)."""
  value = low + jnp.floor(u * (high - low)).astype(jnp.int32)
  return jnp.minimum(value, high - 1)


def _apply_if(u: Array, p: float | Array, fn: ImageFn, image: Array) -> Array:
  """`fn(image)` if the U[0, 1) draw `u` is below p, else `image`."""
  if isinstance(p, (int, float)):
    if p <= 0:
      return image
    if p >= 1:
      return fn(image)
  # A select, not lax.cond: the augmentations always run under vmap, where a cond becomes a
  # select of both branches anyway, and a vmapped cond whose branch closes over a constant fails
  # to trace inside shard_map (JAX 0.10: "pvary is a invariant->variant collective").
  return jnp.where(u < p, fn(image), image)


def normal_from_uniform(u: Array) -> Array:
  """Standard normal draws from U[0, 1) draws by the inverse CDF, sqrt(2) erfinv(2u - 1)."""
  v = jnp.clip(2.0 * u - 1.0, jnp.nextafter(jnp.float32(-1), jnp.float32(0)), 1.0)
  return jnp.sqrt(2.0).astype(jnp.float32) * jax.lax.erf_inv(v)


def apply_with_probability(key: Array, p: float | Array, fn: ImageFn, image: Array) -> Array:
  """`fn(image)` with probability `p`, else `image` (one Bernoulli draw from `key`).

  A Python-number p of 0 or 1 is resolved while tracing (no draw, no branch).
  """
  return _apply_if(jax.random.uniform(key, ()), p, fn, image)


# ---------------------------------------------------------------------------------------------
# Random resized crop and flip


def crop_output_size(height: int, width: int,
                     size: int | Sequence[int] | None) -> tuple[int, int]:
  """(H', W') of a crop: `size` as (h, w), an int for a square, or None for the input size."""
  if size is None:
    return height, width
  if isinstance(size, int):
    return size, size
  out_h, out_w = size
  return int(out_h), int(out_w)


def _central_box(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int, int, int]:
  """The fallback box (y0, x0, h, w): the whole image, narrowed to the nearest allowed aspect."""
  aspect = width / height
  if aspect < ratio[0]:
    w, h = width, max(1, min(height, round(width / ratio[0])))
  elif aspect > ratio[1]:
    h, w = height, max(1, min(width, round(height * ratio[1])))
  else:
    h, w = height, width
  return (height - h) // 2, (width - w) // 2, h, w


def crop_box_draws(attempts: int = 10) -> int:
  return 2 * attempts + 2


def crop_box_from_draws(draws: Array, height: int, width: int, *,
                        scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3),
                        attempts: int = 10) -> Array:
  """`sample_crop_box` from `crop_box_draws(attempts)` uniforms."""
  u_area, u_ratio = draws[:attempts], draws[attempts:2 * attempts]
  u_y, u_x = draws[2 * attempts], draws[2 * attempts + 1]
  area = height * width * (scale[0] + (scale[1] - scale[0]) * u_area)  # (attempts,)
  log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
  aspect = jnp.exp(log_low + (log_high - log_low) * u_ratio)  # (attempts,)
  w = jnp.maximum(jnp.round(jnp.sqrt(area * aspect)), 1).astype(jnp.int32)
  h = jnp.maximum(jnp.round(jnp.sqrt(area / aspect)), 1).astype(jnp.int32)
  fits = (w <= width) & (h <= height)
  first = jnp.argmax(fits)  # 0 when nothing fits; then the fallback below is used
  found = fits[first]
  y0_fb, x0_fb, h_fb, w_fb = _central_box(height, width, ratio)
  h = jnp.where(found, h[first], h_fb)
  w = jnp.where(found, w[first], w_fb)
  y0 = jnp.where(found, randint_from_uniform(u_y, 0, height - h + 1), y0_fb)
  x0 = jnp.where(found, randint_from_uniform(u_x, 0, width - w + 1), x0_fb)
  return jnp.stack([y0, x0, h, w]).astype(jnp.int32)


def sample_crop_box(key: Array, height: int, width: int, *,
                    scale: tuple[float, float] = (0.08, 1.0),
                    ratio: tuple[float, float] = (3 / 4, 4 / 3),
                    attempts: int = 10) -> Array:
  """A random box (y0, x0, h, w), int32, inside an (height, width) image.

  Area fraction ~ U(scale), aspect w/h ~ log-U(ratio) so that r and 1/r are equally likely; sides
  are rounded to whole pixels. `attempts` boxes are drawn at once (no data-dependent loop under
  jit) and the first that fits is kept; if none fits, a central box of the nearest allowed aspect.
  """
  return crop_box_from_draws(_uniforms(key, crop_box_draws(attempts)), height, width,
                             scale=scale, ratio=ratio, attempts=attempts)


def crop_and_resize(image: Array, box: Array, size: tuple[int, int]) -> Array:
  """Resamples the box (y0, x0, h, w) of `image` to `size` with antialiased bilinear weights.

  `jax.image.scale_and_translate` maps output pixel centres back into the input, so a box of
  traced size needs no dynamic shapes: output u samples input y0 + (u + 0.5) * h / H' - 0.5.
  """
  box = box.astype(jnp.float32)
  out_h, out_w = size
  scale = jnp.stack([out_h / box[2], out_w / box[3]])
  translation = -box[:2] * scale
  out = jax.image.scale_and_translate(image, (out_h, out_w, image.shape[-1]), (0, 1), scale,
                                      translation, method="linear", antialias=True)
  return jnp.clip(out, 0.0, 1.0)


def resized_crop_draws(attempts: int = 10) -> int:
  return crop_box_draws(attempts) + 1


def resized_crop_from_draws(draws: Array, image: Array, *,
                            scale: tuple[float, float] = (0.08, 1.0),
                            ratio: tuple[float, float] = (3 / 4, 4 / 3),
                            size: int | Sequence[int] | None = None,
                            attempts: int = 10,
                            p: float = 1.0) -> Array:
  """`random_resized_crop` from `resized_crop_draws(attempts)` uniforms."""
  _check_image(image)
  height, width = image.shape[:2]
  out_size = crop_output_size(height, width, size)
  if isinstance(p, (int, float)) and p <= 0 and out_size == (height, width):
    return image
  box = crop_box_from_draws(draws[1:], height, width, scale=scale, ratio=ratio,
                            attempts=attempts)
  if not (isinstance(p, (int, float)) and p >= 1):
    box = jnp.where(draws[0] < p, box, jnp.array([0, 0, height, width], jnp.int32))
  return crop_and_resize(image, box, out_size)


def random_resized_crop(key: Array, image: Array, *,
                        scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3),
                        size: int | Sequence[int] | None = None,
                        attempts: int = 10,
                        p: float = 1.0) -> Array:
  """Inception-style crop (SimCLR appendix A): a random box resized to `size` (default: input size).

  The box is drawn by `sample_crop_box`. With probability 1 - p the box is the whole image (still
  resized to `size`), so the output shape never depends on the draw.
  """
  return resized_crop_from_draws(_uniforms(key, resized_crop_draws(attempts)), image,
                                 scale=scale, ratio=ratio, size=size, attempts=attempts, p=p)


FLIP_DRAWS = 1


def flip_from_draws(draws: Array, image: Array, *, p: float = 0.5) -> Array:
  """`random_flip` from one uniform."""
  _check_image(image)
  return _apply_if(draws[0], p, lambda x: x[:, ::-1, :], image)


def random_flip(key: Array, image: Array, *, p: float = 0.5) -> Array:
  """Mirror left-right (the width axis) with probability p."""
  return flip_from_draws(_uniforms(key, FLIP_DRAWS), image, p=p)


# ---------------------------------------------------------------------------------------------
# Colour: jitter, drop

COLOR_JITTER_DRAWS = 9  # apply, four amounts, four sort keys for the order


def color_jitter_from_draws(draws: Array, image: Array, *,
                            strength: float = 1.0,
                            brightness: float = 0.8,
                            contrast: float = 0.8,
                            saturation: float = 0.8,
                            hue: float = 0.2,
                            brightness_mode: str = "additive",
                            random_order: bool = True,
                            p: float = 0.8) -> Array:
  """`random_color_jitter` from `COLOR_JITTER_DRAWS` uniforms."""
  _check_image(image)
  if brightness_mode not in ("additive", "multiplicative"):
    raise ValueError(f"brightness_mode must be 'additive' or 'multiplicative', "
                     f"got {brightness_mode!r}")
  u_apply, u_b, u_c, u_s, u_h, u_order = (draws[0], draws[1], draws[2], draws[3], draws[4],
                                          draws[5:9])

  def between(v: Array, low: float, high: float) -> Array:
    return low + (high - low) * v

  b, c, s, h = (strength * brightness, strength * contrast, strength * saturation,
                strength * hue)

  def adjust_brightness(x: Array) -> Array:
    if brightness_mode == "additive":
      return pix.adjust_brightness(x, between(u_b, -b, b))
    return x * between(u_b, max(0.0, 1.0 - b), 1.0 + b)

  def adjust_contrast(x: Array) -> Array:
    return pix.adjust_contrast(x, between(u_c, max(0.0, 1.0 - c), 1.0 + c))

  def adjust_saturation(x: Array) -> Array:
    return pix.adjust_saturation(x, between(u_s, max(0.0, 1.0 - s), 1.0 + s))

  def adjust_hue(x: Array) -> Array:
    return pix.adjust_hue(x, between(u_h, -h, h))

  ops = [(b, adjust_brightness), (c, adjust_contrast)]
  if image.shape[-1] == 3:
    ops += [(s, adjust_saturation), (h, adjust_hue)]
  # An op with zero range is the identity; leaving it out saves its work in every branch.
  branches = [lambda x, fn=fn: jnp.clip(fn(x), 0.0, 1.0) for amount, fn in ops if amount > 0]
  if not branches:
    return image

  def jitter(x: Array) -> Array:
    if not random_order:
      for branch in branches:
        x = branch(x)
      return x
    # argsort of i.i.d. uniforms is a uniformly random permutation; the loop body holds each op
    # once, so the compiled size does not grow with the number of positions.
    order = jnp.argsort(u_order[:len(branches)])
    return jax.lax.fori_loop(0, len(branches),
                             lambda i, y: jax.lax.switch(order[i], branches, y), x)

  return _apply_if(u_apply, p, jitter, image)


def random_color_jitter(key: Array, image: Array, *,
                        strength: float = 1.0,
                        brightness: float = 0.8,
                        contrast: float = 0.8,
                        saturation: float = 0.8,
                        hue: float = 0.2,
                        brightness_mode: str = "additive",
                        random_order: bool = True,
                        p: float = 0.8) -> Array:
  """SimCLR colour jitter (arXiv 2002.05709, appendix A), applied with probability p.

  With s = strength: brightness x + d, d ~ U[-0.8s, 0.8s] ("additive", tf.image.random_brightness
  as in the paper) or x * f, f ~ U[max(0, 1 - 0.8s), 1 + 0.8s] ("multiplicative", SimCLR v2's
  code); contrast (x - mean) * f + mean and saturation (in HSV) with f ~ U[max(0, 1 - 0.8s),
  1 + 0.8s]; hue shift ~ U[-0.2s, 0.2s] turns. The 0.8 / 0.2 factors are the `brightness`,
  `contrast`, `saturation`, `hue` arguments. The ops run in a random order per example (a random
  permutation, each position dispatched with `lax.switch` in a `fori_loop`) and the image is
  clipped to [0, 1] after each, as in SimCLR's reference code. One channel: brightness and
  contrast only.
  """
  return color_jitter_from_draws(
      _uniforms(key, COLOR_JITTER_DRAWS), image, strength=strength, brightness=brightness,
      contrast=contrast, saturation=saturation, hue=hue, brightness_mode=brightness_mode,
      random_order=random_order, p=p)


def to_grayscale(image: Array) -> Array:
  """Rec. 601 luma, repeated over the channels so the shape stays (H, W, C); C=1 is unchanged."""
  _check_image(image)
  if image.shape[-1] == 1:
    return image
  luma = pix.rgb_to_grayscale(image, keep_dims=True)  # (H, W, 1)
  return jnp.clip(jnp.broadcast_to(luma, image.shape), 0.0, 1.0)


GRAYSCALE_DRAWS = 1


def grayscale_from_draws(draws: Array, image: Array, *, p: float = 0.2) -> Array:
  """`random_grayscale` from one uniform."""
  return _apply_if(draws[0], p, to_grayscale, image)


def random_grayscale(key: Array, image: Array, *, p: float = 0.2) -> Array:
  """SimCLR's colour drop: grayscale with probability p, keeping C channels."""
  return grayscale_from_draws(_uniforms(key, GRAYSCALE_DRAWS), image, p=p)


# ---------------------------------------------------------------------------------------------
# Blur, solarize


def blur_kernel_size(side: int, kernel_frac: float = 0.1) -> int:
  """Odd kernel side ~ kernel_frac * side (SimCLR: 10% of the image side; 23 px at 224), >= 3."""
  radius = max(1, int(kernel_frac * side / 2))
  radius = min(radius, side - 1)  # reflect padding needs radius < side
  return 2 * radius + 1


def gaussian_blur(image: Array, sigma: float | Array, kernel_size: int) -> Array:
  """Separable Gaussian blur with `pix.gaussian_blur`; sigma may be traced, kernel_size is static.

  The border is padded by reflection (SimCLR pads with zeros) so that a flat image stays flat
  instead of darkening at its edges.
  """
  radius = kernel_size // 2
  padded = jnp.pad(image, ((radius, radius), (radius, radius), (0, 0)), mode="reflect")
  blurred = pix.gaussian_blur(padded, sigma, kernel_size, padding="VALID")  # (H, W, C)
  return jnp.clip(blurred, 0.0, 1.0)


BLUR_DRAWS = 2


def gaussian_blur_from_draws(draws: Array, image: Array, *,
                             sigma: tuple[float, float] = (0.1, 2.0),
                             kernel_frac: float = 0.1,
                             p: float = 0.5) -> Array:
  """`random_gaussian_blur` from `BLUR_DRAWS` uniforms."""
  _check_image(image)
  side = min(image.shape[:2])
  if side < 2:
    return image
  kernel_size = blur_kernel_size(side, kernel_frac)
  draw = sigma[0] + (sigma[1] - sigma[0]) * draws[1]
  return _apply_if(draws[0], p, lambda x: gaussian_blur(x, draw, kernel_size), image)


def random_gaussian_blur(key: Array, image: Array, *,
                         sigma: tuple[float, float] = (0.1, 2.0),
                         kernel_frac: float = 0.1,
                         p: float = 0.5) -> Array:
  """Blur with sigma ~ U(sigma) px, kernel `kernel_frac` of the shorter side, with probability p."""
  return gaussian_blur_from_draws(_uniforms(key, BLUR_DRAWS), image, sigma=sigma,
                                  kernel_frac=kernel_frac, p=p)


SOLARIZE_DRAWS = 1


def solarize_from_draws(draws: Array, image: Array, *, threshold: float = 0.5,
                        p: float = 0.2) -> Array:
  """`random_solarize` from one uniform."""
  _check_image(image)
  return _apply_if(draws[0], p, lambda x: pix.solarize(x, threshold), image)


def random_solarize(key: Array, image: Array, *, threshold: float = 0.5, p: float = 0.2) -> Array:
  """Solarization (BYOL, arXiv 2006.07733): x -> x if x < threshold else 1 - x, with prob. p."""
  return solarize_from_draws(_uniforms(key, SOLARIZE_DRAWS), image, threshold=threshold, p=p)


# ---------------------------------------------------------------------------------------------
# SimCLR's study transforms (§3, fig. 4): rotation, cutout, Gaussian noise, Sobel

ROTATE_DRAWS = 2


def rotate90_from_draws(draws: Array, image: Array, *, p: float = 0.5) -> Array:
  """`random_rotate90` from `ROTATE_DRAWS` uniforms."""
  _check_image(image)
  if image.shape[0] != image.shape[1]:
    raise ValueError(f"random_rotate90 needs a square image to keep its shape, got {image.shape}")
  quarter_turns = randint_from_uniform(draws[1], 1, 4)
  rotations = [lambda x, k=k: jnp.rot90(x, k, axes=(0, 1)) for k in (1, 2, 3)]
  return _apply_if(draws[0], p, lambda x: jax.lax.switch(quarter_turns - 1, rotations, x), image)


def random_rotate90(key: Array, image: Array, *, p: float = 0.5) -> Array:
  """Rotate by k quarter turns counter-clockwise, k ~ U{1, 2, 3}, with probability p.

  Exact (`jnp.rot90`, no resampling). Requires a square image so the shape is kept.
  """
  return rotate90_from_draws(_uniforms(key, ROTATE_DRAWS), image, p=p)


def cutout_side(height: int, width: int, size: float) -> int:
  """Side in pixels of the cutout square: `size` times the shorter image side, at least 1."""
  return max(1, min(height, width, round(size * min(height, width))))


CUTOUT_DRAWS = 3


def cutout_from_draws(draws: Array, image: Array, *, size: float = 0.25, p: float = 0.5) -> Array:
  """`random_cutout` from `CUTOUT_DRAWS` uniforms."""
  _check_image(image)
  height, width = image.shape[:2]
  side = cutout_side(height, width, size)
  y0 = randint_from_uniform(draws[1], 0, height - side + 1)
  x0 = randint_from_uniform(draws[2], 0, width - side + 1)
  rows = jnp.arange(height)[:, None]  # (H, 1)
  cols = jnp.arange(width)[None, :]  # (1, W)
  inside = (rows >= y0) & (rows < y0 + side) & (cols >= x0) & (cols < x0 + side)  # (H, W)
  return _apply_if(draws[0], p, lambda x: jnp.where(inside[..., None], 0.0, x), image)


def random_cutout(key: Array, image: Array, *, size: float = 0.25, p: float = 0.5) -> Array:
  """Set a random square of side `size` * shorter side to 0, with probability p.

  The square lies wholly inside the image (DeVries & Taylor 2017, arXiv 1708.04552, let it hang
  over the border; keeping it inside makes the erased area exactly the configured size).
  """
  return cutout_from_draws(_uniforms(key, CUTOUT_DRAWS), image, size=size, p=p)


def gaussian_noise_draws(shape: Sequence[int]) -> int:
  return 1 + math.prod(shape)


def gaussian_noise_from_draws(draws: Array, image: Array, *, std: float = 0.1,
                              p: float = 0.5) -> Array:
  """`random_gaussian_noise` from `gaussian_noise_draws(image.shape)` uniforms."""
  _check_image(image)
  noise = std * normal_from_uniform(draws[1:]).reshape(image.shape)
  return _apply_if(draws[0], p, lambda x: jnp.clip(x + noise, 0.0, 1.0), image)


def random_gaussian_noise(key: Array, image: Array, *, std: float = 0.1, p: float = 0.5) -> Array:
  """Add i.i.d. N(0, std^2) noise per pixel and channel, then clip, with probability p."""
  return gaussian_noise_from_draws(_uniforms(key, gaussian_noise_draws(image.shape)), image,
                                   std=std, p=p)


def sobel(image: Array) -> Array:
  """Sobel gradient magnitude per channel, sqrt(gx^2 + gy^2), divided by the image's maximum.

  gx uses the 3x3 kernel [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]] and gy its transpose. The border is
  padded by repeating edge pixels, so a flat image (and a flat border) has zero gradient. The
  division by the largest magnitude in the image puts the output in [0, 1] with the strongest edge
  at 1; a flat image maps to all zeros.
  """
  _check_image(image)
  height, width = image.shape[:2]
  x = jnp.pad(image, ((1, 1), (1, 1), (0, 0)), mode="edge")  # (H + 2, W + 2, C)

  def shifted(dy: int, dx: int) -> Array:
    """Input pixel (i + dy, j + dx) for every output pixel (i, j), dy, dx in {-1, 0, 1}."""
    return x[1 + dy:1 + dy + height, 1 + dx:1 + dx + width]

  gx = ((shifted(-1, 1) + 2 * shifted(0, 1) + shifted(1, 1))
        - (shifted(-1, -1) + 2 * shifted(0, -1) + shifted(1, -1)))
  gy = ((shifted(1, -1) + 2 * shifted(1, 0) + shifted(1, 1))
        - (shifted(-1, -1) + 2 * shifted(-1, 0) + shifted(-1, 1)))
  magnitude = jnp.sqrt(gx**2 + gy**2)  # (H, W, C)
  return jnp.clip(magnitude / jnp.maximum(magnitude.max(), 1e-6), 0.0, 1.0)


SOBEL_DRAWS = 1


def sobel_from_draws(draws: Array, image: Array, *, p: float = 0.5) -> Array:
  """`random_sobel` from one uniform."""
  return _apply_if(draws[0], p, sobel, image)


def random_sobel(key: Array, image: Array, *, p: float = 0.5) -> Array:
  """Replace the image by its normalised Sobel magnitude (`sobel`) with probability p."""
  return sobel_from_draws(_uniforms(key, SOBEL_DRAWS), image, p=p)


def example_keys(key: Array, batch: int) -> Array:
  """One key per example: `key` itself when it already is a (batch,) array of keys (what the
  trainer passes, derived from each example's global index), else `key` split `batch` ways."""
  key = jnp.asarray(key)
  if not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.wrap_key_data(key)  # a raw uint32 key, (2,) or (batch, 2)
  if key.shape == (batch,):
    return key
  if key.shape != ():
    raise ValueError(f"expected one key or {batch} per-example keys, got keys of shape {key.shape}")
  return jax.random.split(key, batch)
