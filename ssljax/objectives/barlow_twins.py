"""Barlow Twins (Zbontar et al. 2021, arXiv 2103.03230): redundancy reduction between two views.

Two augmented views go through the encoder f and the projector g (three linear layers, 8192 wide
in the paper, the first two followed by BatchNorm and ReLU; section 2 and 4) into embeddings
Z, Z'. Their cross-correlation matrix C over the batch (eq. 2) is pulled towards the identity:

  L_BT = sum_i (1 - C_ii)^2 + lambda sum_i sum_{j != i} C_ij^2,   lambda = 5e-3   (eq. 1)

C is over the *global* batch: `ssljax.losses.barlow_twins_terms` standardises every dimension
with the mean and variance of every device's rows and psums the products over DATA_AXIS, as the
authors' SyncBatchNorm and their all-reduce of C do, so eight devices give the one-device loss.
As in SimCLR's module, both views go through the network as one batch of 2n, so BatchNorm
statistics (global through DATA_AXIS) mix both views. The two terms are logged as
`on_diagonal` and `off_diagonal`. `features` is the encoder's output.

The projector's last layer keeps a bias (the authors' has none): C standardises every dimension
over the batch, which removes it, so it gets no gradient and changes nothing.
"""

from __future__ import annotations

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
      head=common.head(mlp_widths(m.projector_depth, m.projector_width, m.projector_dim), m, axis_name),
  )


@register("barlow_twins")
def make(config: ml_collections.ConfigDict) -> Objective:
  train_net = network(config, DATA_AXIS)
  # Initialisation and inference run outside the mesh, where no axis can be named.
  local_net = network(config, None)
  view_configs = (augment.make_config(config.augment.view1), augment.make_config(config.augment.view2))
  lambda_offdiag = config.loss.lambda_offdiag

  def loss(params, model_state, batch, keys):
    n = batch["image"].shape[0]
    views = augment.views(keys, batch["image"], view_configs, num_views=2)  # (2, n, H, W, C)
    both = views.reshape((2 * n,) + views.shape[2:])  # (2n, H, W, C)
    (_, z), updates = train_net.apply(
        {"params": params, **model_state}, both, train=True, mutable=["batch_stats"]
    )
    # Global-batch correlation: identical terms on every device.
    terms = losses.barlow_twins_terms(z[:n], z[n:], axis_name=DATA_AXIS)
    value = terms["on_diagonal"] + lambda_offdiag * terms["off_diagonal"]  # eq. (1)
    return value, LossAux(model_state={"batch_stats": updates["batch_stats"]}, metrics=dict(terms))

  return Objective(
      name="barlow_twins", family=image.FAMILY, init=common.init_fn(local_net), loss=loss,
      features=common.features_fn(local_net),
      calibrate=common.calibrate_fn(network(common.calibration_config(config), None)),
  )
