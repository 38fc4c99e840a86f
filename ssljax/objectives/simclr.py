"""SimCLR (Chen et al. 2020, arXiv 2002.05709): two augmented views, NT-Xent on projections.

The encoder f1 and projector f2 see the two views concatenated into one batch, so BatchNorm
statistics (global across devices through DATA_AXIS) mix both views as in the paper.

Multi-crop (`config.multi_crop.num_local` > 0; SwAV's, arXiv 2006.09882, section 3.2, not part of
SimCLR): beside the two global views, local crops at a smaller size. The loss is then the mean of
NT-Xent over every pair of a global view and another crop, each pair once: (global 1, global 2),
and (global g, local l) for both globals and every local crop. NT-Xent is symmetric in its two
views, so (g, l) and (l, g) would be the same term, and local crops are never paired with each
other (as DINO and SwAV pair only with the global crops). With no local crop this is the single
pair (global 1, global 2): the plain SimCLR loss.
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from ssljax import augment, losses
from ssljax.models import mlp_widths
from ssljax.objectives import common
from ssljax.families import image
from ssljax.interface import DATA_AXIS, LossAux, Objective, register

NUM_GLOBAL_CROPS = 2


def network(config: ml_collections.ConfigDict, axis_name: str | None) -> common.EncoderWithHead:
  m = config.model
  widths = mlp_widths(m.projector_depth, m.projector_width, m.projector_dim)
  return common.EncoderWithHead(
      encoder=common.encoder(m, axis_name),
      head=common.head(widths, m, axis_name, use_bn=m.projector_bn),
  )


def crop_pairs(num_crops: int) -> list[tuple[int, int]]:
  """The (global, other crop) pairs that the multi-crop loss contrasts, each unordered pair once:
  (0, 1), then (0, l) and (1, l) for every local crop l >= 2."""
  return [(0, 1)] + [(g, local) for local in range(NUM_GLOBAL_CROPS, num_crops) for g in range(NUM_GLOBAL_CROPS)]


@register("simclr")
def make(config: ml_collections.ConfigDict) -> Objective:
  train_net = network(config, DATA_AXIS)
  # Initialisation and inference run outside the mesh, where no axis can be named.
  local_net = network(config, None)
  # Validated once; hashable, so the jitted augmentation closes over it as a static value.
  global_configs = (augment.make_config(config.augment),) * NUM_GLOBAL_CROPS
  temperature = config.loss.temperature
  block_size = config.loss.block_size or None

  def loss(params, model_state, batch, keys):
    n = batch["image"].shape[0]
    global_views, local_views = common.multi_crop_views(keys, batch["image"], global_configs, config)
    (_, z), updates = train_net.apply(
        {"params": params, **model_state}, global_views, local_views, train=True,
        method=common.EncoderWithHead.crops, mutable=["batch_stats"]
    )  # z: (V n, projection), crop by crop
    crop = common.crop_rows(z, n)
    pairs = crop_pairs(z.shape[0] // n)
    value = sum(losses.nt_xent(crop(a), crop(b), temperature=temperature, axis_name=DATA_AXIS, block_size=block_size)
                for a, b in pairs) / len(pairs)
    metrics = {"embedding_std": jnp.mean(jnp.std(z / jnp.linalg.norm(z, axis=-1, keepdims=True), axis=0))}
    return value, LossAux(model_state={"batch_stats": updates["batch_stats"]}, metrics=metrics)

  return Objective(
      name="simclr", family=image.FAMILY, init=common.init_fn(local_net), loss=loss,
      features=common.features_fn(local_net),
      calibrate=common.calibrate_fn(network(common.calibration_config(config), None)),
  )
