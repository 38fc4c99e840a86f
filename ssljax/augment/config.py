"""Augmentation config: every knob in an `ml_collections.ConfigDict`, validated into a dataclass.

`default_config(variant)` gives every knob with the values of a published recipe:

- `"simclr"`: SimCLR on ImageNet (Chen et al. 2020, arXiv 2002.05709, appendix A): random resized
  crop (area 0.08-1, aspect 3/4-4/3), flip p=0.5, colour jitter strength s=1.0 applied with p=0.8
  (brightness 0.8s, contrast 0.8s, saturation 0.8s, hue 0.2s, random order), colour drop p=0.2,
  Gaussian blur p=0.5 with sigma in [0.1, 2.0] and a kernel of 10% of the image side.
- `"simclr_cifar"`: SimCLR on CIFAR-10 (same paper, appendix B.9): jitter strength 0.5, no blur.
- `"byol_view1"` / `"byol_view2"`: BYOL's two asymmetric views (Grill et al. 2020, arXiv 2006.07733,
  table 6): jitter brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1 with p=0.8, grayscale 0.2,
  blur p=1.0 / 0.1, solarize p=0.0 / 0.2.
- `"none"`: every transform off (crop_p=0): the pipeline only converts to float32 in [0, 1] and
  resizes to `crop_size` when one is set.

The study transforms of SimCLR §3 (fig. 4) -- rotation, cutout, Gaussian noise, Sobel -- are off
(p=0) in every variant; turn them on by probability.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import ml_collections

_VARIANTS = ("simclr", "simclr_cifar", "byol_view1", "byol_view2", "none")
_BRIGHTNESS_MODES = ("additive", "multiplicative")


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """Validated, hashable augmentation settings (safe to close over inside `jax.jit`).

  Probabilities are per example. Colour-jitter ranges are `jitter_strength * jitter_<op>`:
  brightness delta (additive) or factor - 1 (multiplicative) in [-b, b], contrast and saturation
  factors in [1 - c, 1 + c] (lower end clamped at 0), hue shift in [-h, h] turns of the colour
  wheel.
  """

  # random resized crop, then horizontal flip
  crop_p: float = 1.0
  crop_scale: tuple[float, float] = (0.08, 1.0)   # fraction of the input area
  crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # width / height, sampled log-uniformly
  crop_size: int | tuple[int, int] | None = None  # output (H', W'); None = input size
  crop_attempts: int = 10  # boxes tried before falling back to a central crop
  flip_p: float = 0.5
  # colour jitter (random order), colour drop
  jitter_p: float = 0.8
  jitter_strength: float = 1.0
  jitter_brightness: float = 0.8
  jitter_contrast: float = 0.8
  jitter_saturation: float = 0.8
  jitter_hue: float = 0.2
  jitter_brightness_mode: str = "additive"
  jitter_random_order: bool = True
  grayscale_p: float = 0.2
  # Gaussian blur
  blur_p: float = 0.5
  blur_sigma: tuple[float, float] = (0.1, 2.0)
  blur_kernel_frac: float = 0.1  # kernel side as a fraction of the image side
  # SimCLR's study transforms (§3, fig. 4), off by default
  rotate_p: float = 0.0
  sobel_p: float = 0.0
  cutout_p: float = 0.0
  cutout_size: float = 0.25  # side of the erased square as a fraction of the image side
  noise_p: float = 0.0
  noise_std: float = 0.1
  # solarize (BYOL)
  solarize_p: float = 0.0
  solarize_threshold: float = 0.5


_FIELDS = tuple(f.name for f in dataclasses.fields(AugmentConfig))
_PROBABILITIES = tuple(name for name in _FIELDS if name.endswith("_p"))


def default_config(variant: str = "simclr") -> ml_collections.ConfigDict:
  """Every augmentation knob as a ConfigDict, set to the recipe `variant` (see the module doc)."""
  if variant not in _VARIANTS:
    raise ValueError(f"unknown augment variant {variant!r}; expected one of {_VARIANTS}")
  values = dataclasses.asdict(AugmentConfig())
  if variant == "simclr_cifar":
    values.update(jitter_strength=0.5, blur_p=0.0)
  elif variant in ("byol_view1", "byol_view2"):
    values.update(jitter_brightness=0.4, jitter_contrast=0.4, jitter_saturation=0.2,
                  jitter_hue=0.1)
    if variant == "byol_view1":
      values.update(blur_p=1.0, solarize_p=0.0)
    else:
      values.update(blur_p=0.1, solarize_p=0.2)
  elif variant == "none":
    values.update({name: 0.0 for name in _PROBABILITIES})
  return ml_collections.ConfigDict(values)


def make_config(config: AugmentConfig | ml_collections.ConfigDict | Mapping[str, Any] | None
                ) -> AugmentConfig:
  """Validates `config` and returns it as an `AugmentConfig`.

  Accepts an `AugmentConfig` (returned as is, already valid), a ConfigDict or a plain mapping;
  keys left out take the `"simclr"` defaults, `None` means all defaults. Raises ValueError naming
  the key for an unknown key or an out-of-range value.
  """
  if isinstance(config, AugmentConfig):
    return config
  if config is None:
    values: dict[str, Any] = {}
  elif isinstance(config, ml_collections.ConfigDict):
    values = config.to_dict()
  elif isinstance(config, Mapping):
    values = dict(config)
  else:
    raise TypeError(f"augment config must be a ConfigDict, mapping or AugmentConfig, "
                    f"got {type(config).__name__}")
  for name in values:
    if name not in _FIELDS:
      raise ValueError(f"unknown augment config key {name!r}")
  values = {name: _normalise(name, value) for name, value in values.items()}
  result = AugmentConfig(**values)
  _validate(result)
  return result


def _normalise(name: str, value: Any) -> Any:
  """Lists become tuples so the dataclass stays hashable."""
  if isinstance(value, list):
    value = tuple(value)
  if name == "crop_size" and isinstance(value, tuple) and len(value) == 1:
    value = value[0]
  return value


def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check(ok: bool, name: str, value: Any, rule: str) -> None:
  if not ok:
    raise ValueError(f"augment config {name}={value!r}: {rule}")


def _check_range(name: str, value: Any, positive: bool = False) -> None:
  """A (low, high) pair with low <= high (and low > 0 when `positive`)."""
  _check(isinstance(value, tuple) and len(value) == 2 and all(_is_number(v) for v in value),
         name, value, "must be a pair (low, high) of numbers")
  _check(value[0] <= value[1], name, value, "low must not exceed high")
  if positive:
    _check(value[0] > 0, name, value, "low must be > 0")


def _validate(c: AugmentConfig) -> None:
  for name in _PROBABILITIES:
    value = getattr(c, name)
    _check(_is_number(value) and 0.0 <= value <= 1.0, name, value, "probability must be in [0, 1]")
  _check_range("crop_scale", c.crop_scale, positive=True)
  _check(c.crop_scale[1] <= 1.0, "crop_scale", c.crop_scale, "area fraction must be <= 1")
  _check_range("crop_ratio", c.crop_ratio, positive=True)
  size = c.crop_size
  if size is not None:
    sizes = size if isinstance(size, tuple) else (size,)
    _check(len(sizes) in (1, 2) and all(isinstance(s, int) and not isinstance(s, bool) and s > 0
                                        for s in sizes),
           "crop_size", size, "must be None, a positive int or a pair of positive ints")
  _check(isinstance(c.crop_attempts, int) and c.crop_attempts >= 1, "crop_attempts",
         c.crop_attempts, "must be an int >= 1")
  for name in ("jitter_strength", "jitter_brightness", "jitter_contrast", "jitter_saturation",
               "jitter_hue"):
    value = getattr(c, name)
    _check(_is_number(value) and value >= 0, name, value, "must be a number >= 0")
  _check(c.jitter_hue * c.jitter_strength <= 0.5, "jitter_hue", c.jitter_hue,
         "jitter_hue * jitter_strength must be <= 0.5 (half a turn of the colour wheel)")
  _check(c.jitter_brightness_mode in _BRIGHTNESS_MODES, "jitter_brightness_mode",
         c.jitter_brightness_mode, f"must be one of {_BRIGHTNESS_MODES}")
  _check(isinstance(c.jitter_random_order, bool), "jitter_random_order", c.jitter_random_order,
         "must be a bool")
  _check_range("blur_sigma", c.blur_sigma, positive=True)
  _check(_is_number(c.blur_kernel_frac) and 0 < c.blur_kernel_frac <= 1, "blur_kernel_frac",
         c.blur_kernel_frac, "must be in (0, 1]")
  _check(_is_number(c.cutout_size) and 0 < c.cutout_size <= 1, "cutout_size", c.cutout_size,
         "must be in (0, 1]")
  _check(_is_number(c.noise_std) and c.noise_std >= 0, "noise_std", c.noise_std, "must be >= 0")
  _check(_is_number(c.solarize_threshold) and 0 <= c.solarize_threshold <= 1,
         "solarize_threshold", c.solarize_threshold, "must be in [0, 1]")


def crop_and_flip(crop_scale: tuple[float, float] = (0.08, 1.0), flip_p: float = 0.5) -> ml_collections.ConfigDict:
  """Random resized crop and horizontal flip only, every other transform off: the standard
  supervised augmentation, and the light one of the pretext tasks."""
  a = default_config("none")
  a.crop_p, a.crop_scale, a.flip_p = 1.0, tuple(crop_scale), flip_p
  return a
