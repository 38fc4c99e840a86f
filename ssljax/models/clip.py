"""CLIP's two towers and shared embedding space (Radford et al. 2021, arXiv 2103.00020).

    image (B, H, W, C) -> image tower (ResNet or ViT) -> (B, Di) -> W_i -> L2-normalise -> (B, E)
    tokens (B, T)      -> causal Transformer, the [EOS] position -> (B, Dt) -> W_t -> L2-normalise -> (B, E)

as in the paper's Figure 3 pseudocode: each tower's feature is linearly projected (no bias) into
the joint space and normalised; the logits are the cosines times a learned temperature
exp(t). The text tower is the library's `Transformer` with `causal=True` (the paper's masked
self-attention); its feature is the final LayerNorm's output at the [EOS] token, which every
caption ends with, so that token has attended to the whole caption.

The temperature is stored as its logarithm t, initialised to log(1 / 0.07), and the scale
exp(t) is clipped at 100 ("to prevent scaling the logits by more than 100, which we found
necessary to prevent training instability", Section 2.5); see `logit_scale`. A SigLIP model
(Zhai et al. 2023, arXiv 2303.15343) also learns a logit bias.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ssljax.models.transformer import Transformer

CLIP_TEMPERATURE = 0.07  # the paper's initial temperature: t = log(1 / 0.07)
MAX_LOGIT_SCALE = 100.0  # the paper's ceiling on exp(t)


@jax.custom_vjp
def _ceiling(log_scale, log_max):
  return jnp.minimum(log_scale, log_max)


def _ceiling_fwd(log_scale, log_max):
  return jnp.minimum(log_scale, log_max), (log_scale, log_max)


def _ceiling_bwd(residuals, grad):
  log_scale, log_max = residuals
  # Below the ceiling the gradient passes. Above it, only a gradient that descent would use to
  # lower t passes (grad > 0): t can always come back down, but nothing pushes it further up
  # where the scale no longer changes. This is the projected-gradient form of the paper's
  # clipping of the parameter after every step, which the Objective interface cannot do.
  passes = (log_scale <= log_max) | (grad > 0)
  return jnp.where(passes, grad, 0.0), jnp.zeros_like(log_max)


_ceiling.defvjp(_ceiling_fwd, _ceiling_bwd)


def logit_scale(log_scale: jax.Array, max_scale: float = MAX_LOGIT_SCALE) -> jax.Array:
  """exp(min(t, log max_scale)): CLIP's multiplier of the cosines, never above `max_scale`.

  Args:
    log_scale: t, the learnable shape-() parameter.
    max_scale: the ceiling (100 in the paper); 0 or inf for none.

  Returns:
    Shape-() float32 scale in (0, max_scale].
  """
  log_scale = jnp.asarray(log_scale, jnp.float32)
  if not max_scale or math.isinf(max_scale):
    return jnp.exp(log_scale)
  return jnp.exp(_ceiling(log_scale, jnp.float32(log_ceiling(max_scale))))


def log_ceiling(max_scale: float) -> np.float32:
  """The float32 t_max with exp(t_max) <= max_scale: float32(log 100) rounds up, and its exp
  is 100.0000076. One more ulp down covers an exp that rounds up where numpy's does not."""
  t = np.float32(math.log(max_scale))
  while np.exp(t) > max_scale:
    t = np.nextafter(t, np.float32(-np.inf))
  return np.nextafter(t, np.float32(-np.inf))


def l2_normalize(x: jax.Array) -> jax.Array:
  """Rows scaled to unit L2 norm, in float32 (x / max(|x|, 1e-6))."""
  x = x.astype(jnp.float32)
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-6)


def eos_positions(tokens: jax.Array, eos_id: int) -> jax.Array:
  """(B, T) token ids -> (B,) index of each row's first [EOS] (0 if a row has none)."""
  return jnp.argmax(tokens == eos_id, axis=1)


class CLIP(nn.Module):
  """Two towers, two projections, a learned temperature (and a SigLIP bias).

  Attributes:
    image_tower: images (B, H, W, C) in [0, 1], train -> (B, Di) features (a ResNet, with its
      BatchNorm, or a ViT).
    text_tower: a causal `Transformer`; its hidden state at [EOS] is the text feature.
    embed_dim: E, the width of the joint space.
    eos_id: the [EOS] token id the text feature is read at.
    logit_scale_init: exp(t) at initialisation (1 / 0.07 for CLIP, 10 for SigLIP).
    logit_bias_init: SigLIP's bias b at initialisation (-10 in the paper); None: no bias.
  """

  image_tower: nn.Module
  text_tower: Transformer
  embed_dim: int
  eos_id: int
  logit_scale_init: float = 1.0 / CLIP_TEMPERATURE
  logit_bias_init: float | None = None

  def setup(self):
    # Normal(0, D^-1/2) keeps the projections' outputs at the scale of their inputs.
    self.image_projection = nn.Dense(self.embed_dim, use_bias=False, name="image_projection",
                                     kernel_init=nn.initializers.variance_scaling(1.0, "fan_in", "normal"))
    self.text_projection = nn.Dense(self.embed_dim, use_bias=False, name="text_projection",
                                    kernel_init=nn.initializers.variance_scaling(1.0, "fan_in", "normal"))
    self.log_scale = self.param("log_scale", nn.initializers.constant(math.log(self.logit_scale_init)), ())
    if self.logit_bias_init is not None:
      self.logit_bias = self.param("logit_bias", nn.initializers.constant(self.logit_bias_init), ())

  def encode_image(self, images, train: bool = False):
    """The image tower's feature, before projection: (B, H, W, C) -> (B, Di) float32."""
    return self.image_tower(images, train=train).astype(jnp.float32)

  def encode_text(self, tokens):
    """The text tower's feature at each row's [EOS], before projection: (B, T) -> (B, Dt)."""
    hidden = self.text_tower(tokens)  # (B, T, Dt); causal, so right padding is never seen
    return hidden[jnp.arange(tokens.shape[0]), eos_positions(tokens, self.eos_id)].astype(jnp.float32)

  def embed_image(self, images, train: bool = False):
    """Normalised image embeddings in the joint space: (B, H, W, C) -> (B, E)."""
    return l2_normalize(self.image_projection(self.encode_image(images, train)))

  def embed_text(self, tokens):
    """Normalised text embeddings in the joint space: (B, T) -> (B, E)."""
    return l2_normalize(self.text_projection(self.encode_text(tokens)))

  def __call__(self, images, tokens, train: bool = False):
    """(image embeddings (B, E), text embeddings (B, E), image features (B, Di))."""
    features = self.encode_image(images, train)
    return l2_normalize(self.image_projection(features)), self.embed_text(tokens), features
