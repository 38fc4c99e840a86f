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


def network(config: ml_collections.ConfigDict, axis_name: str | None) -> ByolNetwork:
  m = config.model
  return ByolNetwork(
      encoder=common.encoder(m, axis_name),
      projector=common.head(mlp_widths(m.projector_depth, m.projector_width, m.projector_dim), m, axis_name),
      predictor=common.head(mlp_widths(m.predictor_depth, m.predictor_width, m.projector_dim), m, axis_name),
  )


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
    views = augment.views(keys, batch["image"], view_configs, num_views=2)  # (2, n, H, W, C)
    both = views.reshape((2 * n,) + views.shape[2:])  # (2n, H, W, C): view 1 rows, then view 2
    (_, z, p), online_updates = train_net.apply(
        {"params": params, "batch_stats": model_state["batch_stats"]}, both, train=True, mutable=["batch_stats"]
    )
    target = jax.lax.stop_gradient(model_state["target"])
    (_, z_target), target_updates = train_net.apply(
        target, both, train=True, method=ByolNetwork.project, mutable=["batch_stats"]
    )
    # Symmetric: each view's prediction regresses the target's projection of the other view.
    value = (losses.byol_loss(p[:n], z_target[n:], axis_name=DATA_AXIS)
             + losses.byol_loss(p[n:], z_target[:n], axis_name=DATA_AXIS))
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
