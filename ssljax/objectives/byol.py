"""BYOL (Grill et al. 2020, arXiv 2006.07733): an online network regresses an EMA target.

  online:  y = f(x), z = g(y), p = q(z)        (encoder, projector, predictor)
  target:  y' = f'(x'), z' = g'(y')            (encoder + projector, no predictor)
  loss:    byol(p(v1), z'(v2)) + byol(p(v2), z'(v1)),   byol(p, z') = 2 - 2 cos(p, z')
  target:  xi <- tau_k xi + (1 - tau_k) theta, after every optimizer step, with
           tau_k = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2   (tau_base = 0.996 in the paper)

The target is never touched by gradients: its parameters live in `model_state["target"]`
(not in the trainable `params`) and are moved only by `after_update`, which the trainer calls
after the optimizer step. The two views come from BYOL's asymmetric augmentations
(`config.augment.view1` / `view2`) and go through each network as one batch of 2n, so
BatchNorm statistics (global across devices through DATA_AXIS) mix both views.

BatchNorm in the target: the target network runs in train mode and normalises with the
statistics of the current (global) batch, as in the paper. Its running averages
(`model_state["target"]["batch_stats"]`) are updated by its own forward pass, like the
online network's; they are not EMA'd from the online ones. Nothing reads them during
training (train mode uses batch statistics), and evaluation uses the online encoder, so this
choice only decides what a checkpoint holds for the target: the statistics the target
actually saw.

  model_state = {"batch_stats": online BN statistics,
                 "target": {"params": {"encoder", "projector"}, "batch_stats": {...}}}

Multi-crop (`config.multi_crop.num_local` > 0; SwAV's, arXiv 2006.09882, section 3.2, not part of
BYOL): the online network also sees local crops at a smaller size (one forward pass per size,
`common.apply_by_size`), the target only the two global views, and, as in DINO's pair loop
(arXiv 2104.14294, Algorithm 1), each global view's target projection is regressed by the
prediction of every other crop:

  loss = sum over the global views t of the mean over the crops s != t of byol(p(s), z'(t))

With no local crop that is byol(p(v2), z'(v1)) + byol(p(v1), z'(v2)), the plain BYOL loss.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from ssljax import augment, losses
from ssljax.models import mlp_widths
from ssljax.objectives import common
from ssljax.objectives.common import target_decay
from ssljax.families import image
from ssljax.interface import DATA_AXIS, LossAux, Objective, register

# The online sub-networks that the target mirrors; the predictor has no target copy.
TARGET_MODULES = ("encoder", "projector")


class ByolNetwork(nn.Module):
  """Encoder f, projector g and predictor q. `__call__` is the online network; `project`
  (f then g) is what the target network computes with the target's parameters."""

  encoder: nn.Module
  projector: nn.Module
  predictor: nn.Module

  def __call__(self, x, train: bool = True):
    h, z = self.project(x, train=train)
    return h, z, self.predictor(z, train=train)  # (B, D), (B, P), (B, P)

  def project(self, x, train: bool = True):
    h = self.encoder(x, train=train)  # (B, H, W, C) -> (B, D)
    return h, self.projector(h, train=train)  # (B, D) -> (B, P)

  def encode(self, x, train: bool = False):
    return self.encoder(x, train=train)

  def crops(self, global_views, local_views=None, train: bool = True):
    """The online network on every crop, the encoder once per size of crop and the heads on all
    crops at once: (V n, D), (V n, P), (V n, P), the rows crop by crop."""
    h = common.apply_by_size(lambda x: self.encoder(x, train=train), global_views, local_views)  # -> (V n, D)
    z = self.projector(h, train=train)  # (V n, D) -> (V n, P)
    return h, z, self.predictor(z, train=train)


def network(config: ml_collections.ConfigDict, axis_name: str | None) -> ByolNetwork:
  m = config.model
  return ByolNetwork(
      encoder=common.encoder(m, axis_name),
      projector=common.head(mlp_widths(m.projector_depth, m.projector_width, m.projector_dim), m, axis_name),
      predictor=common.head(mlp_widths(m.predictor_depth, m.predictor_width, m.projector_dim), m, axis_name),
  )


def crop_pair_loss(p, z_target, n: int, num_targets: int = 2):
  """Each global view t's target projection against every other crop's prediction, averaged over
  those crops and summed over t: p (V n, P) online predictions of the V crops, z_target (T n, P)
  the target's projections of the T global views, rows crop by crop."""
  num_crops = p.shape[0] // n
  prediction, target = common.crop_rows(p, n), common.crop_rows(z_target, n)
  # Global view T-1 first: with two views the sum is then byol(p1, z'2) + byol(p2, z'1), as written
  # in the paper and in the order the plain objective added them.
  per_target = [sum(losses.byol_loss(prediction(s), target(t), axis_name=DATA_AXIS)
                    for s in range(num_crops) if s != t) / (num_crops - 1)
                for t in reversed(range(num_targets))]
  return sum(per_target[1:], per_target[0])


def online_part(tree):
  """The entries of an online params/batch_stats tree that the target mirrors."""
  return {name: tree[name] for name in TARGET_MODULES}


@register("byol")
def make(config: ml_collections.ConfigDict) -> Objective:
  train_net = network(config, DATA_AXIS)
  # Initialisation and inference run outside the mesh, where no axis can be named.
  local_net = network(config, None)
  # Validated once; hashable, so the jitted augmentation closes over them as static values.
  view_configs = (augment.make_config(config.augment.view1), augment.make_config(config.augment.view2))
  total_steps = config.train.steps
  tau_base = config.loss.tau_base

  def init(key, batch):
    images = common.to_unit_range(batch["image"])
    variables = local_net.init(key, images, train=False)
    params, batch_stats = variables["params"], variables["batch_stats"]
    # The target starts as a copy of the online encoder and projector (xi = theta).
    target = {"params": online_part(params), "batch_stats": online_part(batch_stats)}
    return params, {"batch_stats": batch_stats, "target": jax.tree.map(jnp.copy, target)}

  def loss(params, model_state, batch, keys):
    n = batch["image"].shape[0]
    global_views, local_views = common.multi_crop_views(keys, batch["image"], view_configs, config)
    (_, z, p), online_updates = train_net.apply(
        {"params": params, "batch_stats": model_state["batch_stats"]}, global_views, local_views, train=True,
        method=ByolNetwork.crops, mutable=["batch_stats"]
    )  # (V n, P): view 1 rows, view 2 rows, then the local crops'
    target = jax.lax.stop_gradient(model_state["target"])
    (_, z_target), target_updates = train_net.apply(
        target, common.flatten_crops(global_views), train=True, method=ByolNetwork.project, mutable=["batch_stats"]
    )  # (2n, P): the global views only
    value = crop_pair_loss(p, z_target, n)
    unit = z / jnp.linalg.norm(z, axis=-1, keepdims=True)
    metrics = {"projection_std": jnp.mean(jnp.std(unit, axis=0))}  # -> 0 on collapse
    return value, LossAux(
        model_state={
            "batch_stats": online_updates["batch_stats"],
            "target": {"params": target["params"], "batch_stats": target_updates["batch_stats"]},
        },
        metrics=metrics,
    )

  def after_update(params, model_state, step):
    target = jax.lax.stop_gradient(model_state["target"]["params"])
    tau = target_decay(step, total_steps, tau_base)
    target = jax.tree.map(lambda t, o: t + (1 - tau) * (o - t), target, online_part(params))
    return {**model_state, "target": {**model_state["target"], "params": target}}

  def features(params, model_state, batch):
    return local_net.apply(
        {"params": params, "batch_stats": model_state["batch_stats"]}, common.to_unit_range(batch["image"]),
        method=ByolNetwork.encode,
    )

  return Objective(
      name="byol", family=image.FAMILY, init=init, loss=loss, features=features,
      after_update=after_update,
      calibrate=common.calibrate_fn(network(common.calibration_config(config), None), ByolNetwork.encode),
  )
