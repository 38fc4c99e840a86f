"""Relative patch placement (Doersch, Gupta, Efros 2015, arXiv 1505.05192).

From a 3x3 grid of P x P patches with gaps and jitter (`augment.patch_pairs`), the centre patch
and one of its 8 neighbours are cut out. A shared (siamese) encoder f embeds both, and an MLP on
the concatenated embeddings, standing in for the paper's fc layers, predicts which of the 8
positions the neighbour came from:

  loss = -1/N sum_i log softmax(head([f(centre_i), f(neighbour_i)]))[position_i]

Both patches of every pair go through f as one batch of 2n, so BatchNorm (global through
DATA_AXIS) normalises centres and neighbours alike.

Evaluation features are f applied to the WHOLE image: the encoder ends in global average
pooling, so it accepts any input size. This is the representation the paper transfers (its
conv layers, run on full images), and it is what `features` and the evaluators see; it is computed in inference mode, with the BatchNorm statistics gathered on
patches. The small-image ResNet stem (3x3, stride 1, no pooling) suits the small patches.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from ssljax import augment, losses
from ssljax.models import mlp_widths
from ssljax.objectives import common
from ssljax.families import image
from ssljax.interface import DATA_AXIS, LossAux, Objective, register

NUM_POSITIONS = len(augment.NEIGHBOUR_OFFSETS)  # 8


class SiameseClassifier(nn.Module):
  """f on both patches of a pair, then a head on [f(centre), f(neighbour)]."""

  encoder: nn.Module
  head: nn.Module

  def __call__(self, centres, neighbours, train: bool = True):
    n = centres.shape[0]
    h = self.encoder(jnp.concatenate([centres, neighbours]), train=train)  # (2n, P, P, C) -> (2n, D)
    pair = jnp.concatenate([h[:n], h[n:]], axis=-1)  # (n, 2D)
    return self.head(pair, train=train)  # (n, 2D) -> (n, 8)

  def encode(self, x, train: bool = False):
    return self.encoder(x, train=train)  # whole images (B, H, W, C) -> (B, D)


def network(config: ml_collections.ConfigDict, axis_name: str | None) -> SiameseClassifier:
  m = config.model
  widths = mlp_widths(m.head_depth, m.head_width, NUM_POSITIONS)
  return SiameseClassifier(encoder=common.encoder(m, axis_name), head=common.head(widths, m, axis_name))


def check_patches_fit(patches: ml_collections.ConfigDict, image_side: int) -> None:
  extent = augment.patch_grid_extent(patches.patch_size, patches.gap, patches.jitter)
  if extent > image_side:
    raise ValueError(
        f"config.patches: the 3x3 grid needs 3 * patch_size + 2 * gap + 2 * jitter = {extent} px, "
        f"more than the {image_side} px images (patch_size={patches.patch_size}, gap={patches.gap}, "
        f"jitter={patches.jitter})")


def patch_batch(key: jax.Array, images: jax.Array, patches: ml_collections.ConfigDict):
  """images (n, H, W, C) -> centres (n, P, P, C), neighbours (n, P, P, C), positions (n,)."""
  return augment.patch_pairs(
      key, images, patch_size=patches.patch_size, gap=patches.gap, jitter=patches.jitter,
      color_drop_p=patches.color_drop_p,
  )


@register("patch_placement")
def make(config: ml_collections.ConfigDict) -> Objective:
  train_net = network(config, DATA_AXIS)
  # Initialisation and inference run outside the mesh, where no axis can be named.
  local_net = network(config, None)
  patches = config.patches

  def encode(params, model_state, batch):
    return local_net.apply(
        {"params": params, **model_state}, common.to_unit_range(batch["image"]),
        method=SiameseClassifier.encode,
    )

  def init(key, batch):
    images = common.to_unit_range(batch["image"])
    check_patches_fit(patches, min(images.shape[1:3]))
    corner = images[:, : patches.patch_size, : patches.patch_size]  # any P x P patch will do
    variables = local_net.init(key, corner, corner, train=False)
    return variables["params"], {"batch_stats": variables["batch_stats"]}

  def loss(params, model_state, batch, keys):
    centres, neighbours, positions = patch_batch(keys, batch["image"], patches)
    logits, updates = train_net.apply(
        {"params": params, **model_state}, centres, neighbours, train=True, mutable=["batch_stats"]
    )
    value = losses.classification_loss(logits, positions, axis_name=DATA_AXIS)
    return value, LossAux(
        model_state=dict(updates),
        metrics={"position_accuracy": losses.accuracy(logits, positions, axis_name=DATA_AXIS)},
    )

  return Objective(
      name="patch_placement", family=image.FAMILY, init=init, loss=loss, features=encode,
      calibrate=common.calibrate_fn(network(common.calibration_config(config), None),
                                    SiameseClassifier.encode),
  )
