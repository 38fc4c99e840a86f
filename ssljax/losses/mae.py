"""MAE: mean squared error on the masked patches' (normalised) pixels, over the global batch."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ssljax.losses import _common
from ssljax.losses._common import AxisName
from ssljax.losses.cross_entropy import _weighted_mean

Array = jax.Array


def mae_loss(predictions: Array, target_patches: Array, mask: Array, *,
             normalize_target: bool = True, eps: float = 1e-6,
             axis_name: AxisName | None = None) -> Array:
  """Masked autoencoder reconstruction loss.

  He et al. 2021, "Masked Autoencoders Are Scalable Vision Learners", arXiv:2111.06377,
  Section 3 ("Reconstruction target"): the mean squared error between the decoder's output
  and the pixels, per patch, counted on the masked patches only:

      t_bl   = (x_bl - mean(x_bl)) / sqrt(var(x_bl) + eps)     with normalize_target
      loss   = sum_{b, l} m_bl * mean_p (y_blp - t_blp)^2 / sum_{b, l} m_bl

  Choices, following the authors' code (`forward_loss` with `norm_pix_loss`): the mean and
  variance of a patch are over its own P pixels (all channels together); the variance is the
  unbiased one (1/(P - 1), torch's `var`); eps = 1e-6 is added to the variance inside the square
  root. The paper's best setting normalises (Table 1d). The target is not put under
  stop_gradient: pixels have no gradient, and a caller's learned target would want one.

  Across devices (`axis_name` set) both sums are over the global batch (psum), so a device
  with more masked patches counts for more, exactly as on one device; the loss is the same on
  every device, and `lax.pmean` of the per-device gradients is the global gradient.

  Args:
    predictions: (n, L, P) decoder outputs for the L patches of each example, P = p * p * C
      pixels each (bfloat16 is computed in float32).
    target_patches: (n, L, P) the image's patches, in the same order.
    mask: (n, L), 1 for the masked (reconstructed) patches that count, 0 for the visible ones
      (bool, int or float; fractional weights are honoured).
    normalize_target: normalise each target patch by its own mean and variance.
    eps: epsilon >= 0 added to the variance (> 0 keeps a constant patch finite).
    axis_name: mesh axis (or tuple of axes) of a sharded batch, or None.

  Returns:
    Scalar float32 loss; 0 when no patch is masked.
  """
  fn = "mae_loss"
  predictions = _common.check_features(fn, "predictions", predictions, ndim=3)
  targets = _common.check_features(fn, "target_patches", target_patches, ndim=3)
  _common.check_same_shape(fn, ("predictions", "target_patches"), (predictions, targets))
  mask = _common.as_array(fn, "mask", mask)
  if mask.shape != predictions.shape[:2]:
    raise ValueError(f"{fn}: mask must have shape (n, L) = {tuple(predictions.shape[:2])}, got "
                     f"{_common.describe(mask)}")
  if not eps >= 0:
    raise ValueError(f"{fn}: eps must be >= 0, got {eps!r}")

  if normalize_target:
    if targets.shape[-1] < 2:
      raise ValueError(f"{fn}: normalize_target needs at least 2 pixels per patch for a "
                       f"variance, got target_patches {_common.describe(targets)}")
    mean = jnp.mean(targets, axis=-1, keepdims=True)  # (n, L, 1)
    variance = jnp.var(targets, axis=-1, keepdims=True, ddof=1)
    targets = (targets - mean) / jnp.sqrt(variance + eps)
  per_patch = jnp.mean(jnp.square(predictions - targets), axis=-1)  # (n, L, P) -> (n, L)
  return _weighted_mean(per_patch, mask.astype(jnp.float32), axis_name)
