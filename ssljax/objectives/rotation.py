"""Rotation prediction (RotNet, Gidaris, Singh, Komodakis 2018, arXiv 1803.07728).

Every image of the batch is shown at 0, 90, 180 and 270 degrees (`augment.rotations`: exact
`rot90`, no resampling, on square images) and a 4-way classifier on the encoder predicts the
number of quarter turns:

  loss = -1/(4N) sum_i sum_{k=0..3} log softmax(head(f(rot90(x_i, k))))[k]

The paper rotated plain images; here a light augmentation (`config.augment`, by default a
random resized crop, with or without a flip) comes first, which a small dataset needs. The
four rotations of the local batch go through the network as one batch of 4n, so BatchNorm
(global through DATA_AXIS) sees all orientations. The mean over the global batch comes from
`classification_loss(..., axis_name=DATA_AXIS)`, which psums sums and counts: with equal
local batches that is the pmean of the local means.
"""

from __future__ import annotations

import jax
import ml_collections

from ssljax import augment, losses
from ssljax.models import mlp_widths
from ssljax.objectives import common
from ssljax.families import image
from ssljax.interface import DATA_AXIS, LossAux, Objective, register

NUM_ROTATIONS = 4


def network(config: ml_collections.ConfigDict, axis_name: str | None) -> common.EncoderWithHead:
  """Encoder + classifier; head_depth 1 is the paper's linear layer on pooled features."""
  m = config.model
  widths = mlp_widths(m.head_depth, m.head_width, NUM_ROTATIONS)
  return common.EncoderWithHead(encoder=common.encoder(m, axis_name), head=common.head(widths, m, axis_name))


def rotated_batch(keys: jax.Array, images: jax.Array, augment_config) -> tuple[jax.Array, jax.Array]:
  """Augmented images (n, H, W, C) -> all four rotations (4n, H, W, C) and labels (4n,).

  `keys`: one key, or one per example. Row k*n + i is augmented image i turned k quarter
  turns, with label k.
  """
  augmented = augment.views(keys, images, augment_config, num_views=1)[0]  # (n, H, W, C)
  return augment.rotations(augmented)


@register("rotation")
def make(config: ml_collections.ConfigDict) -> Objective:
  train_net = network(config, DATA_AXIS)
  # Initialisation and inference run outside the mesh, where no axis can be named.
  local_net = network(config, None)
  augment_config = augment.make_config(config.augment)

  def loss(params, model_state, batch, keys):
    rotated, labels = rotated_batch(keys, batch["image"], augment_config)  # (4n, H, W, C), (4n,)
    (h, logits), updates = train_net.apply(
        {"params": params, **model_state}, rotated, train=True, mutable=["batch_stats"]
    )
    value = losses.classification_loss(logits, labels, axis_name=DATA_AXIS)
    return value, LossAux(
        model_state=dict(updates),
        metrics={"rotation_accuracy": losses.accuracy(logits, labels, axis_name=DATA_AXIS)},
    )

  return Objective(
      name="rotation", family=image.FAMILY, init=common.init_fn(local_net), loss=loss,
      features=common.features_fn(local_net),
      calibrate=common.calibrate_fn(network(common.calibration_config(config), None)),
  )
