"""Shared helpers of the losses: input checks, normalisation, cross-device sums.

Every loss in this package computes in float32 whatever its inputs' dtype (bfloat16 activations
are common on accelerators, and a softmax over tens of thousands of columns loses too much in
bfloat16), checks its inputs' shapes before tracing any maths, and, when given an
``axis_name``, returns the *global* loss: the same number on every device.
"""

from __future__ import annotations

import numbers
from typing import Any, Hashable, Sequence

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array
# A mesh axis name or a tuple of them (e.g. ("data", "fsdp")), as `lax.psum` accepts.
AxisName = Hashable | tuple[Hashable, ...]

# Smallest norm a vector is divided by: zero vectors stay zero with finite gradients.
NORM_EPS = 1e-6


def describe(x: Any) -> str:
  """'float32 array of shape (4, 8)' for error messages."""
  shape = getattr(x, "shape", None)
  dtype = getattr(x, "dtype", None)
  if shape is None or dtype is None:
    return f"{type(x).__name__} {x!r}"
  return f"{dtype} array of shape {tuple(shape)}"


def as_array(fn: str, name: str, x: Any) -> Array:
  """Turns lists and numpy arrays into jax arrays, naming the argument if that fails."""
  try:
    return jnp.asarray(x)
  except TypeError as e:
    raise ValueError(f"{fn}: {name} must be an array, got {describe(x)}") from e


def check_features(fn: str, name: str, x: Any, ndim: int = 2) -> Array:
  """A floating array of rank `ndim` with no empty axis, returned as float32."""
  x = as_array(fn, name, x)
  if x.ndim != ndim or any(s == 0 for s in x.shape):
    want = "(N, D)" if ndim == 2 else f"rank {ndim}"
    raise ValueError(f"{fn}: {name} must be a non-empty {want} array, got {describe(x)}")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"{fn}: {name} must have a floating dtype, got {describe(x)}")
  return x.astype(jnp.float32)


def check_same_shape(fn: str, names: Sequence[str], arrays: Sequence[Array]) -> None:
  """Raises naming both arguments when two arrays that pair up row by row differ."""
  first = arrays[0]
  for name, other in zip(names[1:], arrays[1:]):
    if other.shape != first.shape:
      raise ValueError(
          f"{fn}: {names[0]} and {name} must have the same shape, got {names[0]} "
          f"{tuple(first.shape)} and {name} {tuple(other.shape)}")


def check_scalar(fn: str, name: str, x: Any, positive: bool = False) -> Array:
  """A Python number or a shape-() floating array (learnable scales are arrays), as float32."""
  if isinstance(x, numbers.Number) and not isinstance(x, bool):
    if positive and not x > 0:
      raise ValueError(f"{fn}: {name} must be > 0, got {x!r}")
    return jnp.float32(x)
  x = as_array(fn, name, x)
  if x.shape != () or not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"{fn}: {name} must be a float or a floating array of shape (), got "
                     f"{describe(x)}")
  return x.astype(jnp.float32)


def check_block_size(fn: str, block_size: int | None) -> int | None:
  if block_size is None:
    return None
  if isinstance(block_size, bool) or not isinstance(block_size, numbers.Integral) or \
      block_size < 1:
    raise ValueError(f"{fn}: block_size must be a positive int or None, got {block_size!r}")
  return int(block_size)


def l2_normalize(x: Array, axis: int = -1, eps: float = NORM_EPS) -> Array:
  """x / max(||x||, eps) along `axis`.

  Written as x * rsqrt(max(sum x^2, eps^2)) so that a zero vector maps to zero with a finite
  gradient (1/eps) instead of the NaN of x / ||x||.
  """
  squared_norm = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
  return x * lax.rsqrt(jnp.maximum(squared_norm, eps * eps))


def gather_rows(x: Array, axis_name: AxisName | None) -> Array:
  """Every device's rows, in device order: (n, ...) -> (n * devices, ...)."""
  if axis_name is None:
    return x
  return lax.all_gather(x, axis_name, tiled=True)


def row_offset(n_local: int, axis_name: AxisName | None) -> Array | int:
  """Global index of this device's first row (rows are gathered in device order)."""
  if axis_name is None:
    return 0
  return lax.axis_index(axis_name) * n_local


def axis_size(axis_name: AxisName | None) -> int:
  return 1 if axis_name is None else lax.axis_size(axis_name)


def global_sum(x: Array, axis_name: AxisName | None) -> Array:
  """Sum over devices of per-device partial sums (identity on one device).

  Differentiating the psum is what makes gradients right: under `jax.shard_map` its transpose
  hands every device the cotangent of the global value, and under `jax.pmap` the per-device
  gradients become `axis_size` times each device's share, which the usual `lax.pmean` of
  gradients turns back into the global gradient.
  """
  if axis_name is None:
    return x
  return lax.psum(x, axis_name)
