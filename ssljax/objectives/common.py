"""Pieces shared by objectives: for images, the encoder from a config, image scaling, and the
init / features / calibrate functions of a network whose `encode` method is the representation;
for text, BERT's encoder from a config (pretraining and fine-tuning build the same one)."""

from __future__ import annotations

import copy
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from ssljax import models
from ssljax.models import from_config, transformer, vit
from ssljax.models.from_config import attention_implementation, compute_dtype, resolve_dtype
from ssljax.models.resnet import STAGE_SIZES
from ssljax.text import vocab

NUM_SEGMENTS = 2  # BERT's sentence A and sentence B


# `config.model.encoder`: a ResNet (models/resnet.py) or a ViT preset (models/vit.py).
ENCODERS = tuple(sorted(STAGE_SIZES)) + tuple(sorted(vit.VIT_PRESETS))


def encoder(model_config: ml_collections.ConfigDict, axis_name: str | None) -> nn.Module:
  """The encoder f1 that `config.model` describes: a ViT when `model.encoder` names a ViT preset
  (`vit_encoder_config`; `model.width`, the stem and the BatchNorm keys are then unused), else the
  ResNet (encoder name, width, stem, dtype, and the padding and pixel normalisation of an
  imported torchvision ResNet; a config without those keys gets the bundled models' values)."""
  if model_config.encoder in vit.VIT_PRESETS:
    return vit.ViT(vit_encoder_config(model_config))
  if model_config.encoder not in STAGE_SIZES:
    raise ValueError(f"config.model.encoder={model_config.encoder!r} is not an encoder; choose one of {ENCODERS}")
  return models.resnet(
      model_config.encoder,
      width=model_config.width,
      stem=model_config.stem,
      stem_stride=model_config.stem_stride,
      dtype=compute_dtype(model_config.dtype),
      axis_name=axis_name,
      bn_momentum=model_config.bn_momentum,
      zero_init_residual=model_config.zero_init_residual,
      padding=model_config.get("padding", "same"),
      pixel_mean=_floats(model_config.get("pixel_mean")),
      pixel_std=_floats(model_config.get("pixel_std")),
  )


def vit_encoder_config(model_config: ml_collections.ConfigDict) -> vit.ViTConfig:
  """The ViT preset that `model.encoder` names, with `model.dtype`, `model.attention_impl` and
  `model.remat` ("auto" and off in a config without them) and the pixel normalisation."""
  dtype = resolve_dtype(model_config.dtype)
  return vit.vit_config(
      model_config.encoder, dtype=dtype,
      attention_impl=attention_implementation(model_config.get("attention_impl", "auto"), dtype),
      remat=model_config.get("remat", False),
      pixel_mean=_floats(model_config.get("pixel_mean")),
      pixel_std=_floats(model_config.get("pixel_std")),
  )


def _floats(values) -> tuple[float, ...] | None:
  """A config's per-channel values (a tuple, or a list once read back from config.json)."""
  return None if values is None else tuple(float(v) for v in values)


def head(widths, model_config: ml_collections.ConfigDict, axis_name: str | None, use_bn: bool = True,
         last_bn: bool = False):
  """An MLP head of `widths` (BN + ReLU between layers when `use_bn`; `last_bn`: BN on the output
  too, without a scale, as MoCo v3's heads)."""
  return models.MLP(
      widths=tuple(widths),
      use_bn=use_bn,
      last_bn=last_bn,
      dtype=compute_dtype(model_config.dtype),
      axis_name=axis_name,
  )


def to_unit_range(images):
  """uint8 images in [0, 255] -> float32 in [0, 1]; float images pass through."""
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 255.0
  return images.astype(jnp.float32)


def target_decay(step: jax.Array, total_steps: int, tau_base: float) -> jax.Array:
  """The EMA decay of a momentum network at step k of K: tau_k = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2.

  Rises from tau_base at k = 0 to 1 at k = K: BYOL's target (arXiv 2006.07733, section 3.2) and
  MoCo v3's momentum encoder (arXiv 2104.02057, section 4: m from 0.99 to 1 along a half cosine).
  """
  progress = jnp.asarray(step, jnp.float32) / total_steps
  return 1.0 - (1.0 - tau_base) * (jnp.cos(jnp.pi * progress) + 1.0) / 2.0


def calibration_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config` with BatchNorm momentum 0: one train-mode pass stores that batch's statistics."""
  config = copy.deepcopy(config)
  with config.unlocked():
    config.model.bn_momentum = 0.0
  return config


class EncoderWithHead(nn.Module):
  """f1 followed by a head g: returns (h, g(h)). SimCLR, VICReg, rotation and the supervised
  baseline all have this shape."""

  encoder: nn.Module
  head: nn.Module

  def __call__(self, x, train: bool = True):
    h = self.encoder(x, train=train)  # (B, H, W, C) -> (B, D)
    return h, self.head(h, train=train)  # (B, D) -> (B, projection)

  def encode(self, x, train: bool = False):
    return self.encoder(x, train=train)


def init_fn(net: nn.Module):
  """The Objective's `init` for a network applied to whole images (outside the mesh):
  key, batch -> (params, every other variable collection, e.g. {"batch_stats"})."""

  def init(key, batch):
    variables = net.init(key, to_unit_range(batch["image"]), train=False)
    return variables["params"], {k: v for k, v in variables.items() if k != "params"}

  return init


def features_fn(net: nn.Module, method: Callable | str = "encode"):
  """The Objective's `features`: the network's `encode` (f1) alone, in inference mode, on a
  batch's images."""

  def features(params, model_state, batch):
    return net.apply({"params": params, **model_state}, to_unit_range(batch["image"]), method=method)

  return features


def calibrate_fn(net: nn.Module, method: Callable | str = "encode"):
  """The Objective's `calibrate`: `net` (built from `calibration_config`, BN momentum 0) runs
  `encode` on the batch in train mode, and the encoder's BatchNorm statistics become the
  batch's. Inference with them then matches train mode on that batch, which is what a fair
  random-init baseline needs (its initial statistics, mean 0 and variance 1, match nothing).
  An encoder without BatchNorm (a ViT) has nothing to calibrate: the state comes back as it
  was, whether or not the heads have BatchNorm statistics."""

  def calibrate(params, model_state, batch):
    if "batch_stats" not in model_state:
      return model_state
    images = to_unit_range(batch["image"])
    _, updates = net.apply({"params": params, "batch_stats": model_state["batch_stats"]}, images,
                           train=True, method=method, mutable=["batch_stats"])
    return {**model_state, "batch_stats": {**model_state["batch_stats"], **updates.get("batch_stats", {})}}

  return calibrate


def max_positions(config: ml_collections.ConfigDict) -> int:
  """Rows of a language model's position embedding: `model.max_len`, or `text.seq_len` when that
  is 0 (BERT-base keeps 512, so that fine-tuning can use longer inputs than the pretraining's
  128; an imported GPT-2 keeps its 1024 whatever the training windows)."""
  max_len = config.model.get("max_len") or config.text.seq_len
  if max_len < config.text.seq_len:
    raise ValueError(f"config.model.max_len={max_len} is shorter than config.text.seq_len={config.text.seq_len}")
  return max_len


def bert_encoder_config(config: ml_collections.ConfigDict) -> transformer.TransformerConfig:
  """The bidirectional encoder that a BERT run's `config.model` describes: `model.num_segments`
  token types (BERT's sentence A and B by default) and `max_positions` positions."""
  return from_config.transformer_config(
      config.model, vocab_size=vocab.model_vocab_size(config), max_len=max_positions(config), causal=False,
      real_vocab_size=vocab.real_vocab_size(config)).replace(
          num_segments=config.model.get("num_segments", NUM_SEGMENTS))
