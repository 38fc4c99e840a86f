"""The SimCLR augmentation pipeline: one view of one image, and `num_views` views of a batch.

Order (SimCLR, arXiv 2002.05709, appendix A, then the optional study transforms of §3):
crop -> flip -> colour jitter -> grayscale -> blur -> rotate -> Sobel -> cutout -> noise ->
solarize -> clip to [0, 1]. Sobel runs before cutout and noise so that it sees neither the
cutout's artificial edges nor amplified noise.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from ssljax.augment import ops
from ssljax.augment.ops import example_keys
from ssljax.augment.config import AugmentConfig, make_config

Array = jax.Array
ConfigLike = AugmentConfig | ml_collections.ConfigDict | Mapping[str, Any] | None

_Stage = Callable[[Array, Array], Array]  # (draws, image) -> image


def _stages(c: AugmentConfig, image_shape: tuple[int, ...]) -> list[tuple[str, int, _Stage]]:
  """(name, number of uniforms, fn(draws, image)) for each stage, in pipeline order."""
  out_h, out_w = ops.crop_output_size(image_shape[0], image_shape[1], c.crop_size)
  return [
      ("crop", ops.resized_crop_draws(c.crop_attempts), functools.partial(
          ops.resized_crop_from_draws, scale=c.crop_scale, ratio=c.crop_ratio, size=c.crop_size,
          attempts=c.crop_attempts, p=c.crop_p)),
      ("flip", ops.FLIP_DRAWS, functools.partial(ops.flip_from_draws, p=c.flip_p)),
      ("jitter", ops.COLOR_JITTER_DRAWS, functools.partial(
          ops.color_jitter_from_draws, strength=c.jitter_strength, brightness=c.jitter_brightness,
          contrast=c.jitter_contrast, saturation=c.jitter_saturation, hue=c.jitter_hue,
          brightness_mode=c.jitter_brightness_mode, random_order=c.jitter_random_order,
          p=c.jitter_p)),
      ("grayscale", ops.GRAYSCALE_DRAWS,
       functools.partial(ops.grayscale_from_draws, p=c.grayscale_p)),
      ("blur", ops.BLUR_DRAWS, functools.partial(
          ops.gaussian_blur_from_draws, sigma=c.blur_sigma, kernel_frac=c.blur_kernel_frac,
          p=c.blur_p)),
      ("rotate", ops.ROTATE_DRAWS, functools.partial(ops.rotate90_from_draws, p=c.rotate_p)),
      ("sobel", ops.SOBEL_DRAWS, functools.partial(ops.sobel_from_draws, p=c.sobel_p)),
      ("cutout", ops.CUTOUT_DRAWS, functools.partial(
          ops.cutout_from_draws, size=c.cutout_size, p=c.cutout_p)),
      # one number per output pixel: drawn only when noise is on (see `view`)
      ("noise", ops.gaussian_noise_draws((out_h, out_w, image_shape[-1])) if c.noise_p > 0 else 0,
       functools.partial(ops.gaussian_noise_from_draws, std=c.noise_std, p=c.noise_p)),
      ("solarize", ops.SOLARIZE_DRAWS, functools.partial(
          ops.solarize_from_draws, threshold=c.solarize_threshold, p=c.solarize_p)),
  ]


def view(key: Array, image: Array, config: ConfigLike = None) -> Array:
  """One augmented view of one image: (H, W, C) -> (H', W', C) float32 in [0, 1].

  `image` is uint8 (0..255, scaled by 1/255) or float (assumed in [0, 1]); C is 1 or 3.
  `config` is static: validate it once with `make_config` (or pass a ConfigDict / mapping, which
  is validated here at trace time) and close over it inside `jax.jit`. (H', W') is
  `config.crop_size`, or (H, W) when that is None.

  All randomness comes from one `jax.random.uniform(key, (n,))` call, sliced per stage, which
  keeps the compiled step small. The slices have fixed places (noise's, the only one whose size
  depends on whether the stage is on, is last), so switching a stage on or off leaves the draws
  of the others unchanged.
  """
  c = make_config(config)
  image = ops.to_float_image(image)
  stages = _stages(c, image.shape)
  # noise's slice goes last so that its size cannot move anyone else's
  layout = sorted(stages, key=lambda stage: stage[0] == "noise")
  offsets, total = {}, 0
  for name, n, _ in layout:
    offsets[name] = total
    total += n
  draws = jax.random.uniform(key, (total,), jnp.float32)
  for name, n, stage in stages:
    if n:
      image = stage(draws[offsets[name]:offsets[name] + n], image)
  return jnp.clip(image, 0.0, 1.0)


def views(key: Array, images: Array, config: ConfigLike | Sequence[ConfigLike] = None,
          num_views: int = 2, first_view: int = 0) -> Array:
  """`num_views` independent augmented views of a batch: (B, H, W, C) -> (V, B, H', W', C).

  `key` is one key, or one key per example (B,); view v of example i uses
  `fold_in(example_key_i, first_view + v)`, so an example's views depend on its own key only (not on where it
  sits in the batch or on which device), and the per-example `view` is vmapped over the batch. `config` is one config for all views or a
  sequence of `num_views` configs (BYOL's asymmetric views); all views must share an output size.
  `images` may be uint8 (0..255) or float in [0, 1]; the result is float32 in [0, 1].
  """
  if num_views < 1:
    raise ValueError(f"num_views must be >= 1, got {num_views}")
  images = jnp.asarray(images)
  if images.ndim != 4:
    raise ValueError(f"expected images of shape (B, H, W, C), got {images.shape}")
  if isinstance(config, Sequence) and not isinstance(config, (str, Mapping)):
    if len(config) != num_views:
      raise ValueError(f"got {len(config)} configs for num_views={num_views}")
    configs = [make_config(c) for c in config]
  else:
    configs = [make_config(config)] * num_views
  keys = example_keys(key, images.shape[0])
  return _views(keys, ops.to_float_image(images), tuple(configs), first_view)


def multi_crop(key: Array, images: Array, global_configs: Sequence[ConfigLike],
               local_config: ConfigLike = None, num_local: int = 0) -> tuple[Array, Array | None]:
  """Multi-crop (Caron et al. 2020, SwAV, arXiv 2006.09882, Section 3.2; DINO, arXiv 2104.14294):
  a few global views at full resolution and `num_local` local views at a smaller one.

    (B, H, W, C) -> global views (G, B, Hg, Wg, C), local views (N, B, Hl, Wl, C) or None

  One global view per config of `global_configs` (DINO's and BYOL's two differ in blur and
  solarisation); every local view follows `local_config`, whose `crop_size` is the local
  resolution and `crop_scale` the small area range. View v of example i uses
  `fold_in(example_key_i, v)` with the global views first (v = 0..G-1, exactly `views` of the same
  configs) and the local ones after them (v = G..G+N-1), so every crop depends on its example's
  key alone. The two groups have different sizes, so a model runs them as separate forward passes.
  """
  global_configs = list(global_configs)
  global_views = views(key, images, global_configs, num_views=len(global_configs))
  if num_local == 0:
    return global_views, None
  if num_local < 0:
    raise ValueError(f"num_local must be >= 0, got {num_local}")
  local_views = views(key, images, local_config, num_views=num_local, first_view=len(global_configs))
  return global_views, local_views


@functools.partial(jax.jit, static_argnames=("configs", "first_view"))
def _views(keys: Array, images: Array, configs: tuple[AugmentConfig, ...], first_view: int = 0) -> Array:
  # Compiled once per (configs, shapes) so eager callers (notebooks, data checks) do not dispatch
  # op by op; inside a caller's jit this is simply inlined.
  view_ids = first_view + jnp.arange(len(configs))
  per_view = jax.vmap(lambda v: jax.vmap(lambda k: jax.random.fold_in(k, v))(keys))(view_ids)  # (V, B)
  if len(set(configs)) == 1:
    # one config: vmap over views too, so the pipeline is traced and compiled once, not V times
    one_view = jax.vmap(lambda k, x: view(k, x, configs[0]))  # over the batch
    return jax.vmap(one_view, in_axes=(0, None))(per_view, images)  # (V, B, H', W', C)
  outputs = [jax.vmap(lambda k, x, c=c: view(k, x, c))(view_keys, images)
             for view_keys, c in zip(per_view, configs)]
  shapes = {out.shape for out in outputs}
  if len(shapes) != 1:
    raise ValueError(f"views have different shapes {sorted(shapes)}; give every config the same "
                     "crop_size")
  return jnp.stack(outputs)  # V x (B, H', W', C) -> (V, B, H', W', C)
