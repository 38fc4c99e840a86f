"""Masked autoencoders (He et al. 2021, arXiv 2111.06377): a ViT encoder sees a random 25% of an
image's patches, a narrow decoder predicts the pixels of the others.

  view       x = crop_and_flip(image)             (Section 4 / Appendix A.1: random resized crop of
                                                   area 0.2-1 and a horizontal flip, nothing else)
  masking    each example drops `model.mask_ratio` of its L patches at random (`models.mae`)
  loss       mean over the masked patches of the squared error between the decoder's pixels and
             the patch's pixels, each target patch normalised by its own mean and variance
             with `loss.norm_pix` (Section 3, "Reconstruction target"; Table 1d)

Randomness. Example i's view comes from `fold_in(key_i, 0)` (`augment.views`) and its mask from
`fold_in(key_i, MASK_STREAM)`, key_i the trainer's key of its global index: the crop and the
mask of an example do not depend on the device count, nor on each other.

The network is `models.mae.MAE` (`model.encoder` a ViT preset; `model.decoder_*` and
`model.mask_ratio` its decoder and masking). The loss is `losses.mae_loss` over the global batch
(`axis_name=DATA_AXIS`). Logged: `visible_loss`, the same error on the visible patches, which
the decoder is not trained on (held out of the gradient): it shows how much of the loss the
decoder could lower by copying.

Features (`model.feature_pool`): "cls", the encoder's class-token feature of the whole
unmasked image (the paper's linear probe, Section 4.3 / Appendix A.2); or "mean", the average of
its patch tokens after the final LayerNorm (the paper notes that MAE works as well without a
class token, with average pooling, Appendix A.1). Pretraining never reads the class token's
output as a feature, so a short run's class token can lag its patch tokens for probes and kNN.
No BatchNorm: `calibrate` leaves the state as it is, and `model_state` is empty.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from ssljax import augment, losses
from ssljax.families import image
from ssljax.interface import DATA_AXIS, LossAux, Objective, register
from ssljax.models import mae, vit
from ssljax.objectives import common

# The views use fold_in(example_key, 0) (augment.views, one view); the masks the next stream.
MASK_STREAM = 1
FEATURE_POOLS = ("cls", "mean")


def mae_network_config(model_config: ml_collections.ConfigDict) -> mae.MAEConfig:
  """The `mae.MAEConfig` of `config.model`: the ViT preset `model.encoder` (with the run's dtype,
  attention kernel, remat and pixel normalisation) and the decoder and mask ratio of
  `model.decoder_*` and `model.mask_ratio`."""
  m = model_config
  if m.encoder not in vit.VIT_PRESETS:
    raise ValueError(f"config.model.encoder={m.encoder!r}: MAE masks the patches of a ViT; choose one of "
                     f"{sorted(vit.VIT_PRESETS)}")
  return mae.mae_config("mae_tiny", encoder=common.vit_encoder_config(m), decoder_layers=m.decoder_layers,
                        decoder_heads=m.decoder_heads, decoder_dim=m.decoder_dim, decoder_mlp_dim=m.decoder_mlp_dim,
                        mask_ratio=m.mask_ratio)


def mask_keys(example_keys: jax.Array) -> jax.Array:
  """Each example's masking key from its own key: (n,) -> (n,)."""
  return jax.vmap(lambda key: jax.random.fold_in(key, MASK_STREAM))(example_keys)


def mean_patch_feature(module: mae.MAE, images):
  """The average of the encoder's patch tokens of whole images, after its final LayerNorm:
  (B, H, W, C) -> (B, D) float32."""
  tokens = module.encoder.encode_tokens(module.encoder.embed(images))  # (B, 1 + L, D)
  return jnp.mean(tokens[:, 1:].astype(jnp.float32), axis=1)


@register("mae")
def make(config: ml_collections.ConfigDict) -> Objective:
  net = mae.MAE(mae_network_config(config.model))  # no BatchNorm: one network inside and outside the mesh
  patch_size = net.config.encoder.patch_size
  augment_config = augment.make_config(config.augment)  # validated once; hashable
  normalize_target = config.loss.norm_pix
  pool = config.model.feature_pool
  if pool not in FEATURE_POOLS:
    raise ValueError(f"config.model.feature_pool={pool!r}: choose one of {FEATURE_POOLS}")

  def init(key, batch):
    images = common.to_unit_range(batch["image"])
    keys = jax.random.split(jax.random.fold_in(key, MASK_STREAM), images.shape[0])
    return net.init(key, images, keys)["params"], {}

  def loss(params, model_state, batch, keys):
    images = augment.views(keys, batch["image"], augment_config, num_views=1)[0]  # (n, H, W, C) in [0, 1]
    predictions, mask = net.apply({"params": params}, images, mask_keys(keys))  # (n, L, p p C), (n, L)
    targets = mae.patchify(images, patch_size)  # (n, H, W, C) -> (n, L, p p C)
    value = losses.mae_loss(predictions, targets, mask, normalize_target=normalize_target, axis_name=DATA_AXIS)
    visible = losses.mae_loss(jax.lax.stop_gradient(predictions), targets, 1.0 - mask,
                              normalize_target=normalize_target, axis_name=DATA_AXIS)
    return value, LossAux(model_state=model_state, metrics={"visible_loss": visible})

  def features(params, model_state, batch):
    images = common.to_unit_range(batch["image"])
    method = mae.MAE.encode if pool == "cls" else mean_patch_feature
    return net.apply({"params": params}, images, method=method)

  return Objective(name="mae", family=image.FAMILY, init=init, loss=loss, features=features,
                   calibrate=lambda params, model_state, batch: model_state)
