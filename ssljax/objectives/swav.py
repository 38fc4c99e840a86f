"""SwAV (Caron et al. 2020, "Unsupervised Learning of Visual Features by Contrasting Cluster
Assignments", arXiv 2006.09882): each crop predicts the cluster codes of the other crops.

  z = g(f(x)) / ||g(f(x))||          encoder f, projector g (2048 hidden, BN + ReLU, 128 out)
  scores = z . C                      against K prototypes C, each column of unit norm
  codes q = sinkhorn(scores)          equipartitioned over the global batch (section 3.1, eq. 3)
  loss = swapped prediction           each of the 2 global crops' codes predicted by every other
                                      crop's softmax(scores / tau)  (eqs. 1-2; `losses.swav_loss`)

Multi-crop (section 3.2): the two global crops and `multi_crop.num_local` local ones (SwAV's
ImageNet runs: 2 x 224 px of area 0.14-1 and 6 x 96 px of area 0.05-0.14), the encoder run once per
size (`common.apply_by_size`) and the projector on all crops at once, so its BatchNorm (global over
DATA_AXIS) sees every crop, as in the authors' code. Codes are computed for the global crops only.

Prototypes. A bias-free linear layer whose columns are normalised in the forward pass, C = V /
||V|| column by column, so the scores are cosines. The paper normalises the stored prototypes after
each update instead (appendix A.1); `after_update` can move only the model state, not the
parameters, so here the normalisation is part of the function: the scores are the same, and the
gradient reaching V is the paper's gradient with its component along each prototype removed (and
divided by ||V||). The prototypes get no gradient during the first `loss.freeze_prototypes_steps`
steps (the paper's first epoch, "freeze_prototypes_niters"), done in the loss with
`common.frozen_before`, which needs the step: `model_state["step"]`, which `after_update` sets to
the trainer's step + 1. The paper's queue of earlier batches' embeddings (used when the batch is
small) is left out: the codes are over the current global batch only.

`features` is the encoder's output f(x).

  model_state = {"batch_stats": BN statistics of the encoder and projector, "step": int32}
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

NUM_GLOBAL_CROPS = 2


class Prototypes(nn.Module):
  """K prototypes as the columns of a (P, K) matrix, each normalised to unit length before use:
  (B, P) -> (B, K) cosines for unit-norm inputs."""

  num_prototypes: int

  @nn.compact
  def __call__(self, z):
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (z.shape[-1], self.num_prototypes))
    prototypes = kernel / jnp.linalg.norm(kernel, axis=0, keepdims=True)  # each column of unit norm
    return z @ prototypes  # (B, P) . (P, K) -> (B, K)


class SwavNetwork(nn.Module):
  """Encoder f, projector g and prototypes C."""

  encoder: nn.Module
  projector: nn.Module
  prototypes: nn.Module

  def __call__(self, x, train: bool = True):
    h = self.encoder(x, train=train)  # (B, H, W, C) -> (B, D)
    return h, self.score(h, train=train)

  def crops(self, global_views, local_views=None, train: bool = True):
    """The encoder once per size of crop, projector and prototypes on all crops at once:
    (V n, D), (V n, K), crop by crop."""
    h = common.apply_by_size(lambda x: self.encoder(x, train=train), global_views, local_views)  # -> (V n, D)
    return h, self.score(h, train=train)

  def score(self, h, train: bool = True):
    z = losses.l2_normalize(self.projector(h, train=train))  # (B, D) -> (B, P), unit norm
    return self.prototypes(z)  # (B, P) -> (B, K)

  def encode(self, x, train: bool = False):
    return self.encoder(x, train=train)


def network(config: ml_collections.ConfigDict, axis_name: str | None) -> SwavNetwork:
  m = config.model
  return SwavNetwork(
      encoder=common.encoder(m, axis_name),
      projector=common.head(mlp_widths(m.projector_depth, m.projector_width, m.projector_dim), m, axis_name),
      prototypes=Prototypes(m.num_prototypes),
  )


@register("swav")
def make(config: ml_collections.ConfigDict) -> Objective:
  train_net = network(config, DATA_AXIS)
  # Initialisation and inference run outside the mesh, where no axis can be named.
  local_net = network(config, None)
  # Validated once; hashable, so the jitted augmentation closes over it as a static value.
  global_configs = (augment.make_config(config.augment),) * NUM_GLOBAL_CROPS
  lc = config.loss

  def init(key, batch):
    params, model_state = common.init_fn(local_net)(key, batch)
    return params, {**model_state, "step": jnp.zeros((), jnp.int32)}

  def loss(params, model_state, batch, keys):
    n = batch["image"].shape[0]
    global_views, local_views = common.multi_crop_views(keys, batch["image"], global_configs, config)
    params = {**params, "prototypes": common.frozen_before(params["prototypes"], model_state["step"],
                                                           lc.freeze_prototypes_steps)}
    (_, scores), updates = train_net.apply(
        {"params": params, "batch_stats": model_state["batch_stats"]}, global_views, local_views, train=True,
        method=SwavNetwork.crops, mutable=["batch_stats"])
    scores = common.stack_crops(scores, n)  # (V n, K) -> (V, n, K)
    value = losses.swav_loss(scores, num_assigned=NUM_GLOBAL_CROPS, temperature=lc.temperature,
                             epsilon=lc.epsilon, iterations=lc.sinkhorn_iterations, axis_name=DATA_AXIS)
    return value, LossAux(model_state={**model_state, "batch_stats": updates["batch_stats"]},
                          metrics={"prototype_usage": prototype_usage(scores[:NUM_GLOBAL_CROPS])})

  def after_update(params, model_state, step):
    return {**model_state, "step": jnp.asarray(step + 1, jnp.int32)}

  def features(params, model_state, batch):
    return local_net.apply({"params": params, "batch_stats": model_state["batch_stats"]},
                           common.to_unit_range(batch["image"]), method=SwavNetwork.encode)

  return Objective(
      name="swav", family=image.FAMILY, init=init, loss=loss, features=features,
      after_update=after_update,
      calibrate=common.calibrate_fn(network(common.calibration_config(config), None)),
  )


def prototype_usage(scores: jax.Array) -> jax.Array:
  """The fraction of prototypes that are the best match of at least one global crop of the global
  batch, a collapse monitor (1 / K when every crop picks the same prototype): (T, n, K) -> ()."""
  scores = jax.lax.stop_gradient(scores)
  best = jax.nn.one_hot(jnp.argmax(scores, axis=-1), scores.shape[-1])  # (T, n, K)
  picked = jax.lax.psum(jnp.sum(best, axis=(0, 1)), DATA_AXIS) > 0  # (K,), the same on every device
  return jnp.mean(picked.astype(jnp.float32))
