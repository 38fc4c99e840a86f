"""Pieces shared by the image objectives: building the encoder from a config, image scaling."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from ssljax import models

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def compute_dtype(name: str) -> Any:
  if name not in DTYPES:
    raise ValueError(f"config.model.dtype must be one of {sorted(DTYPES)}, got {name!r}")
  return DTYPES[name]


def encoder(model_config: ml_collections.ConfigDict, axis_name: str | None) -> nn.Module:
  """The encoder f1 that `config.model` describes (encoder name, width, stem, dtype)."""
  return models.resnet(
      model_config.encoder,
      width=model_config.width,
      stem=model_config.stem,
      stem_stride=model_config.get("stem_stride", 1),
      dtype=compute_dtype(model_config.dtype),
      axis_name=axis_name,
  )


def head(widths, model_config: ml_collections.ConfigDict, axis_name: str | None, use_bn: bool = True):
  return models.MLP(
      widths=tuple(widths),
      use_bn=use_bn,
      dtype=compute_dtype(model_config.dtype),
      axis_name=axis_name,
  )


def to_unit_range(images):
  """uint8 images in [0, 255] -> float32 in [0, 1]; float images pass through."""
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 255.0
  return images.astype(jnp.float32)


class EncoderWithHead(nn.Module):
  """f1 followed by a head g: returns (h, g(h)). SimCLR, BYOL and VICReg all have this shape."""

  encoder: nn.Module
  head: nn.Module

  def __call__(self, x, train: bool = True):
    h = self.encoder(x, train=train)  # (B, H, W, C) -> (B, D)
    return h, self.head(h, train=train)  # (B, D) -> (B, projection)

  def encode(self, x, train: bool = False):
    return self.encoder(x, train=train)


def init_fn(net: EncoderWithHead):
  """The Objective's `init` for a network applied to whole images (outside the mesh):
  key, batch -> (params, {"batch_stats"})."""

  def init(key, batch):
    variables = net.init(key, to_unit_range(batch["image"]), train=False)
    return variables["params"], {"batch_stats": variables["batch_stats"]}

  return init


def features_fn(net: EncoderWithHead):
  """The Objective's `features`: the encoder f1 alone, in inference mode, on images."""

  def features(params, model_state, images):
    return net.apply({"params": params, **model_state}, to_unit_range(images), method=EncoderWithHead.encode)

  return features
