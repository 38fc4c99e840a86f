"""SimCLR (Chen et al. 2020, arXiv 2002.05709): two augmented views, NT-Xent on projections.

The encoder f1 and projector f2 see the two views concatenated into one batch, so BatchNorm
statistics (global across devices through DATA_AXIS) mix both views as in the paper.
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from ssljax import augment, losses
from ssljax.models import mlp_widths
from ssljax.objectives import common
from ssljax.families import image
from ssljax.interface import DATA_AXIS, LossAux, Objective, register


def network(config: ml_collections.ConfigDict, axis_name: str | None) -> common.EncoderWithHead:
  m = config.model
  widths = mlp_widths(m.projector_depth, m.projector_width, m.projector_dim)
  return common.EncoderWithHead(
      encoder=common.encoder(m, axis_name),
      head=common.head(widths, m, axis_name, use_bn=m.projector_bn),
  )


@register("simclr")
def make(config: ml_collections.ConfigDict) -> Objective:
  train_net = network(config, DATA_AXIS)
  # Initialisation and inference run outside the mesh, where no axis can be named.
  local_net = network(config, None)
  augment_config = config.augment
  temperature = config.loss.temperature
  block_size = config.loss.block_size or None

  def loss(params, model_state, batch, keys):
    n = batch["image"].shape[0]
    views = augment.views(keys, batch["image"], augment_config, num_views=2)  # (2, n, H, W, C)
    both = views.reshape((2 * n,) + views.shape[2:])  # (2n, H, W, C)
    (_, z), updates = train_net.apply(
        {"params": params, **model_state}, both, train=True, mutable=["batch_stats"]
    )
    value = losses.nt_xent(
        z[:n], z[n:], temperature=temperature, axis_name=DATA_AXIS, block_size=block_size
    )
    metrics = {"embedding_std": jnp.mean(jnp.std(z / jnp.linalg.norm(z, axis=-1, keepdims=True), axis=0))}
    return value, LossAux(model_state={"batch_stats": updates["batch_stats"]}, metrics=metrics)

  return Objective(
      name="simclr", family=image.FAMILY, init=common.init_fn(local_net), loss=loss,
      features=common.features_fn(local_net),
      calibrate=common.calibrate_fn(network(common.calibration_config(config), None)),
  )
