"""DINO (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers", arXiv
2104.14294): a student network matches the output distribution of a momentum teacher, across crops.

  student g_s:  encoder + DINO head on every crop (2 global + N local, `config.multi_crop`)
  teacher g_t:  a moving average of the student, on the 2 global crops only
  loss:         mean over the pairs (global crop t, crop s != t) of H(P_t(x_t), P_s(x_s)), with
                P_t = softmax((g_t - c) / tau_t) and P_s = softmax(g_s / tau_s)   (section 3.1, eq. 3;
                `losses.dino_loss`)
  centre:       c <- m c + (1 - m) mean of g_t over the global batch and crops   (eq. 4; `losses.dino_center`)
  teacher:      theta_t <- l theta_t + (1 - l) theta_s after every optimizer step, l rising from
                `loss.teacher_momentum` (0.996) to 1 along a half cosine (section 3.1)

The head (section 3.1 and appendix): a 3-layer MLP (hidden 2048, GELU, no BatchNorm unless
`model.head_bn`, the authors' `use_bn_in_head`) to a 256-wide
bottleneck, L2-normalised, then a weight-normalised linear layer to K outputs (K = 65536) whose
columns have their norm fixed to 1 (`model.norm_last_layer`; off: a learned norm per output,
started at 1). The last layer gets no gradient during the first `loss.freeze_last_layer_steps`
steps (the authors' `freeze_last_layer`, one epoch), which `common.frozen_before` does in the loss.

Temperatures: tau_s = `loss.student_temperature` (0.1); tau_t warms up linearly from
`loss.teacher_temperature_start` (0.04) to `loss.teacher_temperature` (0.07) over the first
`loss.teacher_warmup_steps` steps (the paper's first 30 epochs), then stays. The loss reads the step
from `model_state["step"]`, a counter that `after_update` sets to the trainer's step + 1 (the
trainer hands the step to `after_update` only).

As BYOL's target, the teacher is never touched by gradients: its variables live in
`model_state["teacher"]` and only `after_update` moves its parameters. The centre is updated in
the loss from the teacher's outputs of this step, after the loss used the centre from before it
(Algorithm 1). With a ResNet encoder (BatchNorm, global over DATA_AXIS) the teacher runs in train
mode on the current batch, and its running statistics are its own, not averaged (as BYOL's).

`features` is the teacher's encoder output: the paper evaluates the teacher, which it finds better
than the student throughout training (section 5.2, fig. 6). Fine-tuning from a DINO run
(`init_from`) starts from the student's encoder (`params["encoder"]`).

  model_state = {"teacher": {"params": {"encoder", "head"}, ("batch_stats": ...)},
                 "center": (K,), "step": int32, ("batch_stats": the student's BN statistics)}
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from ssljax import augment, losses
from ssljax.objectives import common
from ssljax.families import image
from ssljax.interface import DATA_AXIS, LossAux, Objective, register
from ssljax.models.from_config import compute_dtype

NUM_GLOBAL_CROPS = 2
# The head's hidden layers start as in the authors' code: truncated normal of std 0.02, zero bias.
HEAD_INIT = nn.initializers.truncated_normal(0.02)


class DinoHead(nn.Module):
  """`depth - 1` Dense + GELU layers of `hidden` units, a Dense to `bottleneck`, L2-normalised, then
  the weight-normalised last layer to `num_outputs` (arXiv 2104.14294, appendix: "a 3-layer
  multi-layer perceptron with hidden dimension 2048 followed by l2 normalization and a weight
  normalized fully connected layer with K dimensions"). (B, D) -> (B, K).

  `use_bn` puts a BatchNorm (global over `axis_name` in training) after each hidden Dense, before
  the GELU: the authors' `use_bn_in_head` option, off by default and in the paper's ViT runs."""

  num_outputs: int
  hidden: int = 2048
  bottleneck: int = 256
  depth: int = 3
  norm_last_layer: bool = True
  use_bn: bool = False
  axis_name: str | None = None
  bn_momentum: float = 0.9
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    for _ in range(self.depth - 1):
      # A bias before BatchNorm would be removed by its centring: none then.
      x = nn.Dense(self.hidden, use_bias=not self.use_bn, dtype=self.dtype, kernel_init=HEAD_INIT)(x)
      if self.use_bn:
        x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, dtype=self.dtype,
                         axis_name=self.axis_name if train else None)(x)
      x = nn.gelu(x, approximate=False)
    x = nn.Dense(self.bottleneck, dtype=self.dtype, kernel_init=HEAD_INIT)(x)  # -> (B, bottleneck)
    x = losses.l2_normalize(x.astype(jnp.float32))
    # Weight normalisation w = g v / ||v|| per output column; g is fixed to 1 (norm_last_layer) or learned.
    direction = self.param("last_layer", HEAD_INIT, (self.bottleneck, self.num_outputs))
    weight = direction / jnp.linalg.norm(direction, axis=0, keepdims=True)
    if not self.norm_last_layer:
      weight = weight * self.param("last_layer_norm", nn.initializers.ones, (self.num_outputs,))
    return x @ weight  # (B, bottleneck) . (bottleneck, K) -> (B, K)


class DinoNetwork(nn.Module):
  """Encoder and DINO head: the student with the trainable parameters, the teacher with the
  moving-average ones."""

  encoder: nn.Module
  head: nn.Module

  def __call__(self, x, train: bool = True):
    h = self.encoder(x, train=train)  # (B, H, W, C) -> (B, D)
    return h, self.head(h, train=train)  # (B, D) -> (B, K)

  def crops(self, global_views, local_views=None, train: bool = True):
    """The encoder once per size of crop, the head on all crops: (V n, D), (V n, K), crop by crop."""
    h = common.apply_by_size(lambda x: self.encoder(x, train=train), global_views, local_views)  # -> (V n, D)
    return h, self.head(h, train=train)  # (V n, D) -> (V n, K)

  def encode(self, x, train: bool = False):
    return self.encoder(x, train=train)


def network(config: ml_collections.ConfigDict, axis_name: str | None) -> DinoNetwork:
  m = config.model
  return DinoNetwork(
      encoder=common.encoder(m, axis_name),
      head=DinoHead(num_outputs=m.num_outputs, hidden=m.head_hidden, bottleneck=m.head_bottleneck,
                    depth=m.head_depth, norm_last_layer=m.norm_last_layer, use_bn=m.head_bn,
                    axis_name=axis_name, bn_momentum=m.bn_momentum, dtype=compute_dtype(m.dtype)),
  )


def teacher_temperature(step: jax.Array, start: float, end: float, warmup_steps: int) -> jax.Array:
  """tau_t at `step`: linear from `start` to `end` over `warmup_steps` steps, then `end`
  (arXiv 2104.14294, section 3.1 and appendix: 0.04 to 0.07 over the first 30 epochs)."""
  if warmup_steps == 0:
    return jnp.asarray(end, jnp.float32)
  progress = jnp.minimum(jnp.asarray(step, jnp.float32) / warmup_steps, 1.0)
  return start + (end - start) * progress


def _other_collections(model_state):
  """The student's variable collections other than params (BatchNorm statistics, if any)."""
  return {k: v for k, v in model_state.items() if k not in ("teacher", "center", "step")}


def _frozen_last_layer(params, step, num_steps: int):
  """The student's parameters with the head's last layer cut from the gradient before `num_steps`."""
  head = dict(params["head"])
  for name in ("last_layer", "last_layer_norm"):
    if name in head:
      head[name] = common.frozen_before(head[name], step, num_steps)
  return {**params, "head": head}


@register("dino")
def make(config: ml_collections.ConfigDict) -> Objective:
  train_net = network(config, DATA_AXIS)
  # Initialisation and inference run outside the mesh, where no axis can be named.
  local_net = network(config, None)
  # Validated once; hashable, so the jitted augmentation closes over them as static values.
  view_configs = (augment.make_config(config.augment.view1), augment.make_config(config.augment.view2))
  total_steps = config.train.steps
  lc = config.loss

  def init(key, batch):
    variables = local_net.init(key, common.to_unit_range(batch["image"]), train=False)
    params = variables["params"]
    # The teacher starts as a copy of the student (Algorithm 1: gt.params = gs.params).
    return params, {
        **{k: v for k, v in variables.items() if k != "params"},
        "teacher": jax.tree.map(jnp.copy, dict(variables)),
        "center": jnp.zeros((config.model.num_outputs,), jnp.float32),
        "step": jnp.zeros((), jnp.int32),
    }

  def loss(params, model_state, batch, keys):
    n = batch["image"].shape[0]
    step = model_state["step"]
    global_views, local_views = common.multi_crop_views(keys, batch["image"], view_configs, config)
    student = {"params": _frozen_last_layer(params, step, lc.freeze_last_layer_steps),
               **_other_collections(model_state)}
    (_, student_logits), student_updates = train_net.apply(
        student, global_views, local_views, train=True, method=DinoNetwork.crops, mutable=["batch_stats"])
    teacher = jax.lax.stop_gradient(model_state["teacher"])
    (_, teacher_logits), teacher_updates = train_net.apply(
        teacher, global_views, train=True, method=DinoNetwork.crops, mutable=["batch_stats"])
    student_logits = common.stack_crops(student_logits, n)  # (V n, K) -> (V, n, K)
    teacher_logits = common.stack_crops(teacher_logits, n)  # (2n, K) -> (2, n, K)
    tau_t = teacher_temperature(step, lc.teacher_temperature_start, lc.teacher_temperature, lc.teacher_warmup_steps)
    value = losses.dino_loss(student_logits, teacher_logits, model_state["center"],
                             student_temperature=lc.student_temperature, teacher_temperature=tau_t,
                             axis_name=DATA_AXIS)
    center = losses.dino_center(model_state["center"], teacher_logits, momentum=lc.center_momentum,
                                axis_name=DATA_AXIS)
    metrics = {"teacher_temperature": tau_t, "teacher_entropy": teacher_entropy(teacher_logits, model_state["center"],
                                                                                 tau_t)}
    return value, LossAux(
        model_state={**model_state, **student_updates, "center": center,
                     "teacher": {**model_state["teacher"], **teacher_updates}},
        metrics=metrics,
    )

  def after_update(params, model_state, step):
    teacher = jax.lax.stop_gradient(model_state["teacher"]["params"])
    momentum = common.target_decay(step, total_steps, lc.teacher_momentum)
    teacher = common.ema_update(teacher, params, momentum)
    return {**model_state, "teacher": {**model_state["teacher"], "params": teacher},
            "step": jnp.asarray(step + 1, jnp.int32)}

  def features(params, model_state, batch):
    return local_net.apply(model_state["teacher"], common.to_unit_range(batch["image"]), method=DinoNetwork.encode)

  calibration_net = network(common.calibration_config(config), None)

  def calibrate(params, model_state, batch):
    """The teacher's encoder BatchNorm statistics of `batch` (`common.calibrate_fn`'s rule, for the
    teacher, whose encoder `features` reads); an encoder without BatchNorm has nothing to calibrate."""
    teacher = model_state["teacher"]
    if "batch_stats" not in teacher:
      return model_state
    _, updates = calibration_net.apply(teacher, common.to_unit_range(batch["image"]), train=True,
                                       method=DinoNetwork.encode, mutable=["batch_stats"])
    stats = {**teacher["batch_stats"], **updates["batch_stats"]}
    return {**model_state, "teacher": {**teacher, "batch_stats": stats}}

  return Objective(
      name="dino", family=image.FAMILY, init=init, loss=loss, features=features,
      after_update=after_update, calibrate=calibrate,
  )


def teacher_entropy(teacher_logits: jax.Array, center: jax.Array, temperature: jax.Array) -> jax.Array:
  """The mean entropy of the centred, sharpened teacher distribution over this device's rows, a
  collapse monitor (section 5.3, fig. 7): near 0 when one output dominates, near log K when the
  outputs are uniform. (T, n, K) -> (); the trainer averages it over the devices' equal shares."""
  log_probs = jax.nn.log_softmax((jax.lax.stop_gradient(teacher_logits) - center) / temperature, axis=-1)
  return jnp.mean(-jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1))
