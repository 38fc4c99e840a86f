"""VICReg (Bardes, Ponce, LeCun 2022, arXiv 2105.04906): variance-invariance-covariance.

Two augmented views go through the encoder f and the expander h (an MLP, 8192-8192-8192 in the
paper); the embeddings Z, Z' are pulled together (invariance), each dimension's standard
deviation is kept above 1 (variance), and dimensions are decorrelated (covariance):

  l = lambda s(Z, Z') + mu [v(Z) + v(Z')] + nu [c(Z) + c(Z')],   lambda = mu = 25, nu = 1

The variance and covariance statistics are over the *global* batch: `ssljax.losses`
psums the partial sums over DATA_AXIS, so eight devices give the single-device loss. As in
SimCLR's module, both views go through the network as one batch of 2n, so BatchNorm
statistics (global through DATA_AXIS) mix both views.
"""

from __future__ import annotations

import jax
import ml_collections

from ssljax import augment, losses
from ssljax.models import mlp_widths
from ssljax.objectives import common
from ssljax.families import image
from ssljax.interface import DATA_AXIS, LossAux, Objective, register


def network(config: ml_collections.ConfigDict, axis_name: str | None) -> common.EncoderWithHead:
  m = config.model
  return common.EncoderWithHead(
      encoder=common.encoder(m, axis_name),
      head=common.head(mlp_widths(m.expander_depth, m.expander_width, m.expander_dim), m, axis_name),
  )


def weighted_loss(terms, loss_config: ml_collections.ConfigDict) -> jax.Array:
  """`losses.vicreg_loss`'s weighted sum, from terms computed once so logging them is free."""
  return (loss_config.sim_weight * terms["invariance"] + loss_config.var_weight * terms["variance"]
          + loss_config.cov_weight * terms["covariance"])


@register("vicreg")
def make(config: ml_collections.ConfigDict) -> Objective:
  train_net = network(config, DATA_AXIS)
  # Initialisation and inference run outside the mesh, where no axis can be named.
  local_net = network(config, None)
  view_configs = (augment.make_config(config.augment.view1), augment.make_config(config.augment.view2))
  loss_config = config.loss

  def loss(params, model_state, batch, keys):
    n = batch["image"].shape[0]
    views = augment.views(keys, batch["image"], view_configs, num_views=2)  # (2, n, H, W, C)
    both = views.reshape((2 * n,) + views.shape[2:])  # (2n, H, W, C)
    (_, z), updates = train_net.apply(
        {"params": params, **model_state}, both, train=True, mutable=["batch_stats"]
    )
    # Global-batch statistics: identical terms on every device.
    terms = losses.vicreg_terms(z[:n], z[n:], eps=loss_config.eps, axis_name=DATA_AXIS)
    return weighted_loss(terms, loss_config), LossAux(
        model_state=dict(updates),
        metrics=dict(terms),
    )

  return Objective(
      name="vicreg", family=image.FAMILY, init=common.init_fn(local_net), loss=loss,
      features=common.features_fn(local_net),
      calibrate=common.calibrate_fn(network(common.calibration_config(config), None)),
  )
