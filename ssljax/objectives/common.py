"""Pieces shared by objectives: for images, the encoder from a config, image scaling, and the
init / features / calibrate functions of a network whose `encode` method is the representation;
multi-crop (`config.multi_crop`: the crops, and crops of several sizes through one network); the
moving average of a target network and a gradient switched off for the first steps; for text,
BERT's encoder from a config (pretraining and fine-tuning build the same one)."""

from __future__ import annotations

import copy
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from ssljax import augment, models
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


def ema_update(target, online, decay: jax.Array):
  """xi <- tau xi + (1 - tau) theta, leaf by leaf: a target (BYOL), momentum encoder (MoCo v3) or
  teacher (DINO, arXiv 2104.14294, section 3.1) moved towards the online network's parameters."""
  return jax.tree.map(lambda t, o: t + (1 - decay) * (o - t), target, online)


def frozen_before(tree, step: jax.Array, num_steps: int):
  """`tree` unchanged in value, but passing no gradient while `step < num_steps`: DINO's last
  layer (`freeze_last_layer`, arXiv 2104.14294, appendix) and SwAV's prototypes (arXiv
  2006.09882, appendix A.1) are kept out of the first epoch's updates. Only the gradient is cut:
  an optimizer's weight decay still shrinks the frozen weights, which both objectives normalise
  before use, so what they compute does not change."""
  frozen = jnp.asarray(step) < num_steps
  return jax.tree.map(lambda x: jnp.where(frozen, jax.lax.stop_gradient(x), x), tree)


# --- multi-crop -------------------------------------------------------------------------------


def num_local_crops(config: ml_collections.ConfigDict) -> int:
  """`config.multi_crop.num_local`: the local crops beside the two global ones; 0 for a config
  without `multi_crop` (a run saved before it existed)."""
  multi_crop = config.get("multi_crop")
  return 0 if multi_crop is None else multi_crop.num_local


def multi_crop_views(keys: jax.Array, images: jax.Array, global_configs, config: ml_collections.ConfigDict):
  """The crops of a batch for `config.multi_crop` (Caron et al. 2020, SwAV, arXiv 2006.09882,
  section 3.2): one global crop per config of `global_configs` and `multi_crop.num_local` local
  crops following `multi_crop.local` (its `crop_size` the local resolution, `crop_scale` the small
  area range). Every crop comes from its example's key (`augment.multi_crop`), so the crops do not
  depend on the device count.

    (n, H, W, C) -> global (G, n, Hg, Wg, C), local (N, n, Hl, Wl, C) or None
  """
  num_local = num_local_crops(config)
  local_config = augment.make_config(config.multi_crop.local) if num_local else None
  return augment.multi_crop(keys, images, global_configs, local_config, num_local)


def apply_by_size(fn: Callable, *view_groups):
  """Crops of several sizes through `fn` as one forward pass per size, their outputs stacked.

  Each group is (V_g, n, H_g, W_g, C) (None: no such crops); `fn` maps (V_g n, H_g, W_g, C) to an
  array (or a tree of arrays) with V_g n rows. Returns the outputs concatenated over the groups in
  their order, (V n, ...) with the rows crop by crop (`crop_rows`). One pass per size, as the
  authors' code of SwAV and DINO does, since a batch holds one size; a ViT resamples its positions
  for each size (`models/vit.py`), a ResNet pools any size. Inside a Flax module a BatchNorm
  called once per group updates its running statistics once per group, in order.

  The rows stay flat, (V n, ...) rather than (V, n, ...), so that with one group the computation
  is exactly that of the two-view objectives (one batch of 2n), to the bit: XLA can fuse a
  reshaped-and-indexed result differently and round the gradients otherwise.
  """
  outputs = [fn(flatten_crops(views)) for views in view_groups if views is not None]  # each (V_g n, ...)
  if len(outputs) == 1:
    return outputs[0]
  return jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=0), *outputs)  # -> (V n, ...)


def flatten_crops(x: jax.Array) -> jax.Array:
  """(V, n, ...) -> (V n, ...): every crop's rows as one batch, crop 0's first."""
  return x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])


def crop_rows(x: jax.Array, n: int) -> Callable[[int], jax.Array]:
  """For rows laid out crop by crop, (V n, ...), the function v -> crop v's rows (n, ...)."""
  return lambda v: x[v * n:(v + 1) * n]


def stack_crops(x: jax.Array, n: int) -> jax.Array:
  """(V n, ...) -> (V, n, ...), the layout of `losses.dino_loss` and `losses.swav_loss`."""
  return x.reshape((x.shape[0] // n, n) + x.shape[1:])


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

  def crops(self, global_views, local_views=None, train: bool = True):
    """Multi-crop: f1 on each size of crop (`apply_by_size`), then g on all crops at once, so that
    a BatchNorm of the head sees them together (as SwAV's code): (V n, D), (V n, projection), the
    rows crop by crop (`crop_rows`)."""
    h = apply_by_size(lambda x: self.encoder(x, train=train), global_views, local_views)  # -> (V n, D)
    return h, self.head(h, train=train)  # (V n, D) -> (V n, projection)


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
