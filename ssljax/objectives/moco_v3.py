"""MoCo v3 (Chen, Xie, He 2021, arXiv 2104.02057): a base encoder's queries retrieve the keys of a
momentum encoder, with the negatives of the whole (global) batch.

  base encoder f_q:      h = f(x), z = g(h), q = p(z)      (encoder, projector, predictor)
  momentum encoder f_k:  k = g'(f'(x))                     (encoder + projector, no predictor)
  loss (Algorithm 1):    ctr(q1, k2) + ctr(q2, k1),  ctr = 2 tau InfoNCE over the batch's keys
  momentum update:       theta_k <- m theta_k + (1 - m) theta_q after every optimizer step, with m
                         rising from `loss.momentum` (0.99) to 1 along a half cosine (section 4)

As in BYOL's module, the momentum encoder is never touched by gradients: its parameters live in
`model_state["momentum_encoder"]` and only `after_update` moves them, after the optimizer step
(the authors' code moves it before computing the keys with the parameters that step starts from:
the same sequence of encoders, with m one step later). The two views come from BYOL's asymmetric
augmentations (section 4) and go through each encoder as one batch of 2n, so BatchNorm
statistics (global over DATA_AXIS, the paper's SyncBN) mix both views. The momentum encoder runs
in train mode and normalises with the current batch's statistics, as the authors' code does;
its running averages are its own, not EMA'd (nothing reads them).

Heads (section 4): the projector is a 3-layer MLP and the predictor a 2-layer MLP, hidden layers
4096 wide, outputs 256 wide, and "all layers in both MLPs have BN" (`model.head_last_bn`: BN on
the outputs too). `features` is the base encoder f's output h.

  model_state = {"batch_stats": the base encoder's BN statistics,
                 "momentum_encoder": {"params": {"encoder", "projector"}, "batch_stats": {...}}}
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

# The parts of the base encoder that the momentum encoder copies; the predictor has no copy.
MOMENTUM_MODULES = ("encoder", "projector")


class MocoNetwork(nn.Module):
  """Encoder f, projector g and predictor p. `__call__` is the base encoder f_q; `project`
  (f then g) is what the momentum encoder f_k computes with the momentum parameters."""

  encoder: nn.Module
  projector: nn.Module
  predictor: nn.Module

  def __call__(self, x, train: bool = True):
    h, z = self.project(x, train=train)
    return h, self.predictor(z, train=train)  # (B, D), (B, P)

  def project(self, x, train: bool = True):
    h = self.encoder(x, train=train)  # (B, H, W, C) -> (B, D)
    return h, self.projector(h, train=train)  # (B, D) -> (B, P)

  def encode(self, x, train: bool = False):
    return self.encoder(x, train=train)


def network(config: ml_collections.ConfigDict, axis_name: str | None) -> MocoNetwork:
  m = config.model
  return MocoNetwork(
      encoder=common.encoder(m, axis_name),
      projector=common.head(mlp_widths(m.projector_depth, m.projector_width, m.projector_dim), m, axis_name,
                            last_bn=m.head_last_bn),
      predictor=common.head(mlp_widths(m.predictor_depth, m.predictor_width, m.projector_dim), m, axis_name,
                            last_bn=m.head_last_bn),
  )


def momentum_part(tree):
  """The entries of a base-encoder params/batch_stats tree that the momentum encoder copies."""
  return {name: tree[name] for name in MOMENTUM_MODULES}


def momentum_update(momentum_params, base_params, m: jax.Array):
  """theta_k <- m theta_k + (1 - m) theta_q (arXiv 2104.02057, Algorithm 1), leaf by leaf."""
  return jax.tree.map(lambda k, q: k + (1 - m) * (q - k), momentum_params, base_params)


def global_std(x: jax.Array) -> jax.Array:
  """The mean over dimensions of each dimension's standard deviation over the global batch, so
  that the logged value does not depend on the device count: (n, P) -> ()."""
  x = jax.lax.stop_gradient(x)
  count = jax.lax.psum(x.shape[0], DATA_AXIS)
  mean = jax.lax.psum(jnp.sum(x, axis=0), DATA_AXIS) / count  # (n, P) -> (P,)
  variance = jax.lax.psum(jnp.sum(jnp.square(x - mean), axis=0), DATA_AXIS) / count
  return jnp.mean(jnp.sqrt(variance))


@register("moco_v3")
def make(config: ml_collections.ConfigDict) -> Objective:
  train_net = network(config, DATA_AXIS)
  # Initialisation and inference run outside the mesh, where no axis can be named.
  local_net = network(config, None)
  # Validated once; hashable, so the jitted augmentation closes over them as static values.
  view_configs = (augment.make_config(config.augment.view1), augment.make_config(config.augment.view2))
  total_steps = config.train.steps
  m_base = config.loss.momentum
  temperature = config.loss.temperature

  def init(key, batch):
    images = common.to_unit_range(batch["image"])
    variables = local_net.init(key, images, train=False)
    params, batch_stats = variables["params"], variables["batch_stats"]
    # The momentum encoder starts as a copy of the base encoder (Algorithm 1: f_k.params = f_q.params).
    momentum = {"params": momentum_part(params), "batch_stats": momentum_part(batch_stats)}
    return params, {"batch_stats": batch_stats, "momentum_encoder": jax.tree.map(jnp.copy, momentum)}

  def loss(params, model_state, batch, keys):
    n = batch["image"].shape[0]
    views = augment.views(keys, batch["image"], view_configs, num_views=2)  # (2, n, H, W, C)
    both = views.reshape((2 * n,) + views.shape[2:])  # (2n, H, W, C): view 1 rows, then view 2
    (_, q), base_updates = train_net.apply(
        {"params": params, "batch_stats": model_state["batch_stats"]}, both, train=True, mutable=["batch_stats"]
    )
    momentum = jax.lax.stop_gradient(model_state["momentum_encoder"])
    (_, k), momentum_updates = train_net.apply(
        momentum, both, train=True, method=MocoNetwork.project, mutable=["batch_stats"]
    )
    # Each view's query against the momentum encoder's key of the other view.
    value = losses.moco_v3_loss(q[:n], q[n:], k[:n], k[n:], temperature=temperature, axis_name=DATA_AXIS)
    metrics = {"query_std": global_std(q / jnp.linalg.norm(q, axis=-1, keepdims=True))}  # -> 0 on collapse
    return value, LossAux(
        model_state={
            "batch_stats": base_updates["batch_stats"],
            "momentum_encoder": {"params": momentum["params"], "batch_stats": momentum_updates["batch_stats"]},
        },
        metrics=metrics,
    )

  def after_update(params, model_state, step):
    momentum = jax.lax.stop_gradient(model_state["momentum_encoder"]["params"])
    m = common.target_decay(step, total_steps, m_base)
    momentum = momentum_update(momentum, momentum_part(params), m)
    return {**model_state, "momentum_encoder": {**model_state["momentum_encoder"], "params": momentum}}

  def features(params, model_state, batch):
    return local_net.apply(
        {"params": params, "batch_stats": model_state["batch_stats"]}, common.to_unit_range(batch["image"]),
        method=MocoNetwork.encode,
    )

  return Objective(
      name="moco_v3", family=image.FAMILY, init=init, loss=loss, features=features,
      after_update=after_update,
      calibrate=common.calibrate_fn(network(common.calibration_config(config), None), MocoNetwork.encode),
  )
