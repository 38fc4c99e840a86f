"""The fully supervised baseline: the same encoder and a linear classifier, trained on labels.

  loss = -1/N sum_i log softmax(W f(aug(x_i)) + b)[y_i]

on augmented images (`config.augment`: random resized crop and flip by default). It is the
reference row of the evaluation table, "supervised on all labels", that the self-supervised
encoders are measured against; its `features` are the encoder's, probed like any other.
The global-batch mean comes from `classification_loss(..., axis_name=DATA_AXIS)`.
"""

from __future__ import annotations

import ml_collections

from ssljax import augment, losses
from ssljax.objectives import common
from ssljax.families import image
from ssljax.interface import DATA_AXIS, LossAux, Objective, register


def network(config: ml_collections.ConfigDict, axis_name: str | None) -> common.EncoderWithHead:
  m = config.model
  classifier = common.head((m.num_classes,), m, axis_name, use_bn=False)  # one Dense layer
  return common.EncoderWithHead(encoder=common.encoder(m, axis_name), head=classifier)


@register("supervised")
def make(config: ml_collections.ConfigDict) -> Objective:
  train_net = network(config, DATA_AXIS)
  # Initialisation and inference run outside the mesh, where no axis can be named.
  local_net = network(config, None)
  augment_config = augment.make_config(config.augment)

  def loss(params, model_state, batch, keys):
    if "label" not in batch:
      raise ValueError("the supervised objective needs labelled batches (a 'label' entry)")
    images = augment.views(keys, batch["image"], augment_config, num_views=1)[0]  # (n, H, W, C)
    (_, logits), updates = train_net.apply(
        {"params": params, **model_state}, images, train=True, mutable=["batch_stats"]
    )
    labels = batch["label"]
    value = losses.classification_loss(logits, labels, axis_name=DATA_AXIS)
    return value, LossAux(
        model_state=dict(updates),
        metrics={"train_accuracy": losses.accuracy(logits, labels, axis_name=DATA_AXIS)},
    )

  return Objective(
      name="supervised", family=image.FAMILY, init=common.init_fn(local_net), loss=loss,
      features=common.features_fn(local_net),
      calibrate=common.calibrate_fn(network(common.calibration_config(config), None)),
  )
