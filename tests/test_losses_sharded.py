"""ssljax.losses across 8 fake CPU devices: every loss, on its own, == single device.

Each loss is checked alone (a sum of losses would let a small loss's wrong gradient hide behind a
larger one's) against the dense loss on the concatenated global batch on one device, in three
settings:
  * "shard_map": `jax.jit(jax.shard_map(...))` with check_vma=True, as the trainer runs;
  * "shard_map_no_vma": the same with check_vma=False;
  * "pmap": legacy `jax.pmap`.
In all three the loss value on every device, and `lax.pmean(param_grads, "data")` on every
device, equal the single-device loss and gradient w.r.t. the replicated parameters (a tiny linear
encoder W, plus the learnable scale and bias of CLIP and SigLIP). The raw per-device gradients
show why the trainer pmean-s explicitly:
  * with check_vma=True the raw gradient w.r.t. the replicated parameters already is the global
    one on every device, and the gradient w.r.t. a device's inputs is exactly its slice of the
    global input gradient;
  * with check_vma=False and under pmap the loss's psum transposes to a psum, so everything comes
    out `axis_size` times too large per share: the raw W gradient of device d is axis_size times
    the gradient through device d's rows only (not the global gradient), and the input gradient
    is axis_size times the device's slice. Only the pmean turns the former into the global
    gradient.
Blockwise variants are compared with the *dense* single-device loss, so they also prove that
the blockwise loss across devices equals the dense one. `accuracy` has no gradient: its value is
checked. The statistics that must be global (DINO's centre, SwAV's Sinkhorn codes, Barlow
Twins' cross-correlation) are checked on their own, on data where each device's local answer
differs from the global one.
"""

import dataclasses
import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from ssljax import losses

NUM_DEVICES = 8
GLOBAL_BATCH = 16  # 2 rows per device
P = jax.P
SETTINGS = ("shard_map", "shard_map_no_vma", "pmap")


@dataclasses.dataclass(frozen=True)
class Loss:
  """fn(params, floats, ints, axis_name, block_size) -> scalar loss.

  `floats` and `ints` are tuples of arrays sharded over their first axis; gradients are taken
  w.r.t. params and floats. `params` holds exactly the parameters the loss uses, so each must
  get a gradient.
  """
  fn: Callable
  params: dict
  floats: tuple
  ints: tuple = ()
  block_size: int | None = None
  # The loss whose dense single-device result is the reference (itself if None).
  reference: str | None = None
  differentiable: bool = True


def _encode(w, x):
  """x @ w, (n, ..., 4) . (4, K) -> (n, ..., K).

  A (devices, 4, K) stack of copies of w gives each device's rows their own copy, so that the
  gradient w.r.t. copy d is the part of the W gradient that flows through device d's rows
  (see `_single_device`).
  """
  if w.ndim == 3:
    per_row = jnp.repeat(w, x.shape[0] // w.shape[0], axis=0)  # (n, 4, K)
    return jnp.einsum("n...i,nik->n...k", x, per_row)
  return x @ w


def _nt_xent(params, floats, ints, axis_name, block_size):
  del ints
  e1, e2 = (_encode(params["w"], x) for x in floats)
  return losses.nt_xent(e1, e2, temperature=0.2, axis_name=axis_name, block_size=block_size)


def _info_nce(params, floats, ints, axis_name, block_size):
  del ints
  e1, e2 = (_encode(params["w"], x) for x in floats)
  return losses.info_nce(e1, e2, temperature=0.3, axis_name=axis_name, block_size=block_size)


def _clip(params, floats, ints, axis_name, block_size):
  del ints
  e1, e2 = (_encode(params["w"], x) for x in floats)
  return losses.clip_loss(e1, e2, jnp.exp(params["log_scale"]), axis_name=axis_name,
                          block_size=block_size)


def _siglip(params, floats, ints, axis_name, block_size):
  del ints, block_size
  e1, e2 = (_encode(params["w"], x) for x in floats)
  return losses.siglip_loss(e1, e2, jnp.exp(params["log_scale"]), params["bias"],
                            axis_name=axis_name)


def _byol(params, floats, ints, axis_name, block_size):
  del ints, block_size
  prediction, target = (_encode(params["w"], x) for x in floats)
  return losses.byol_loss(prediction, target, axis_name=axis_name)  # target: stop_gradient


def _vicreg(params, floats, ints, axis_name, block_size):
  del ints, block_size
  e1, e2 = (_encode(params["w"], x) for x in floats)
  return losses.vicreg_loss(e1, e2, axis_name=axis_name)  # the paper's weights 25 / 25 / 1


def _crops_first(w, crops):
  """(n, V, 4) crops of each example -> (V, n, K) outputs, the crop axis first as the
  multi-crop losses take them."""
  return jnp.swapaxes(_encode(w, crops), 0, 1)


def _dino(params, floats, ints, axis_name, block_size, center):
  del ints, block_size
  student_crops, teacher_crops = floats  # (n, S, 4), (n, T, 4)
  # The teacher through the same weights, as an EMA teacher nearly is: dino_loss stops its
  # gradient, so W learns through the student only.
  return losses.dino_loss(_crops_first(params["w"], student_crops),
                          _crops_first(params["w"], teacher_crops), center, axis_name=axis_name)


def _moco_v3(params, floats, ints, axis_name, block_size, key_weights):
  del ints
  q1, q2 = (_encode(params["w"], x) for x in floats)
  k1, k2 = (x @ key_weights for x in floats)  # the momentum encoder: constants
  return losses.moco_v3_loss(q1, q2, k1, k2, axis_name=axis_name, block_size=block_size)


def _barlow_twins(params, floats, ints, axis_name, block_size):
  del ints, block_size
  e1, e2 = (_encode(params["w"], x) for x in floats)
  return losses.barlow_twins_loss(e1, e2, axis_name=axis_name)  # the paper's lambda 5e-3


def _barlow_twins_off_diagonal(params, floats, ints, axis_name, block_size):
  """The off-diagonal term alone: at lambda = 5e-3 its gradient would hide in the loss's."""
  del ints, block_size
  e1, e2 = (_encode(params["w"], x) for x in floats)
  return losses.barlow_twins_terms(e1, e2, axis_name=axis_name)["off_diagonal"]


def _swav(params, floats, ints, axis_name, block_size, prototypes):
  del ints, block_size
  (crops,) = floats  # (n, V, 4)
  # Cosine scores against L2-normalised prototypes, as SwAV's are.
  embeddings = losses.l2_normalize(_crops_first(params["w"], crops))  # (V, n, 8)
  scores = embeddings @ losses.l2_normalize(prototypes, axis=0)  # (V, n, 8) . (8, P) -> (V, n, P)
  return losses.swav_loss(scores, num_assigned=2, axis_name=axis_name)


def _mae(params, floats, ints, axis_name, block_size):
  del ints, block_size
  inputs, targets, mask = floats  # (n, L, 4), (n, L, P), (n, L)
  return losses.mae_loss(_encode(params["w"], inputs), targets, mask, axis_name=axis_name)


def _masked_lm(params, floats, ints, axis_name, block_size):
  del block_size
  inputs, mask = floats  # (n, T, 4), (n, T)
  (tokens,) = ints  # (n, T)
  return losses.masked_lm_loss(_encode(params["w"], inputs), tokens, mask, axis_name=axis_name)


def _next_token(params, floats, ints, axis_name, block_size):
  del block_size
  inputs, mask = floats
  (tokens,) = ints
  return losses.next_token_loss(_encode(params["w"], inputs), tokens, mask, axis_name=axis_name)


def _pooled_logits(params, floats):
  """(n, T, 4) -> (n, V): a sequence-level classifier on the mean token logits."""
  (inputs,) = floats
  return jnp.mean(_encode(params["w"], inputs), axis=1)


def _classification(params, floats, ints, axis_name, block_size):
  del block_size
  (labels,) = ints  # (n,)
  return losses.classification_loss(_pooled_logits(params, floats), labels, axis_name=axis_name)


def _weighted_classification(params, floats, ints, axis_name, block_size):
  del block_size
  inputs, row_weights = floats  # (n, T, 4), (n,)
  (labels,) = ints
  return losses.classification_loss(_pooled_logits(params, (inputs,)), labels, weights=row_weights,
                                    axis_name=axis_name)


def _tagging(params, floats, ints, axis_name, block_size):
  del block_size
  inputs, row_weights = floats
  (tags,) = ints  # (n, T), -1 at unlabelled tokens
  return losses.tagging_loss(_encode(params["w"], inputs), tags, row_weights, axis_name=axis_name)


def _span(params, floats, ints, axis_name, block_size):
  del block_size
  inputs, row_weights = floats
  starts, ends, context = ints  # (n,), (n,), (n, T)
  logits = _encode(params["w"], inputs)  # (n, T, 2)
  return losses.span_loss(logits[..., 0], logits[..., 1], starts, ends, context > 0, row_weights,
                          axis_name=axis_name)


def _accuracy(params, floats, ints, axis_name, block_size):
  del block_size
  (labels,) = ints
  return losses.accuracy(_pooled_logits(params, floats), labels, axis_name=axis_name)


def _losses():
  rng = np.random.default_rng(0)

  def normal(*shape):
    return jnp.asarray(rng.normal(size=shape), jnp.float32)

  x1 = normal(GLOBAL_BATCH, 4)
  x2 = x1 + 0.5 * normal(GLOBAL_BATCH, 4)
  w = normal(4, 8)
  # Embedding dimensions with standard deviations from about 0.25 to 2.5, so that VICReg's
  # variance hinge max(0, 1 - std) is active for some and not for others.
  w_vicreg = normal(4, 8) * jnp.linspace(0.1, 1.5, 8)
  # Uneven numbers of counted tokens per device: a global weighted mean is not a mean of
  # per-device means.
  mask = jnp.asarray(rng.random((GLOBAL_BATCH, 5)) < np.linspace(0.1, 0.9, GLOBAL_BATCH)[:, None],
                     jnp.float32)
  assert len(np.unique(np.asarray(mask).reshape(NUM_DEVICES, -1).sum(axis=1))) > 1
  tokens = jnp.asarray(rng.integers(0, 6, (GLOBAL_BATCH, 5)), jnp.int32)
  labels = jnp.asarray(rng.integers(0, 6, (GLOBAL_BATCH,)), jnp.int32)
  token_inputs = normal(GLOBAL_BATCH, 5, 4)
  w_tokens = normal(4, 6)  # 6 classes / vocabulary entries
  log_scale = jnp.float32(1.5)
  # Rows of weight 0 (padding) on some devices only, and tokens without a tag (-1).
  row_weights = jnp.asarray(np.where(np.arange(GLOBAL_BATCH) % 5 == 3, 0.0, 1.0), jnp.float32)
  tags = jnp.asarray(np.where(rng.random((GLOBAL_BATCH, 5)) < np.linspace(0.1, 0.8, GLOBAL_BATCH)[:, None], -1,
                              rng.integers(0, 6, (GLOBAL_BATCH, 5))), jnp.int32)
  context = np.zeros((GLOBAL_BATCH, 5), np.int32)
  context[:, 1:] = 1  # position 0 ([CLS]) is never in the context
  context[::3, 4] = 0
  starts = jnp.asarray(rng.integers(1, 4, GLOBAL_BATCH), jnp.int32)
  ends = jnp.asarray(np.minimum(np.asarray(starts) + 1, 3), jnp.int32)
  w_span = normal(4, 2)
  # Crops per example: DINO's and SwAV's 2 global crops first (the teacher's), then the others.
  crops = normal(GLOBAL_BATCH, 4, 4)
  teacher_crops = crops[:, :2] + 0.2 * normal(GLOBAL_BATCH, 2, 4)
  pixels = 2.0 + 3.0 * normal(GLOBAL_BATCH, 5, 6)
  table = {
      "nt_xent": Loss(_nt_xent, {"w": w}, (x1, x2)),
      "info_nce": Loss(_info_nce, {"w": w}, (x1, x2)),
      "clip_loss": Loss(_clip, {"w": w, "log_scale": log_scale}, (x1, x2)),
      "siglip_loss": Loss(_siglip, {"w": w, "log_scale": log_scale, "bias": jnp.float32(-1.0)},
                          (x1, x2)),
      "byol_loss": Loss(_byol, {"w": w}, (x1, x2)),
      "vicreg_loss": Loss(_vicreg, {"w": w_vicreg}, (x1, x2)),
      "masked_lm_loss": Loss(_masked_lm, {"w": w_tokens}, (token_inputs, mask), (tokens,)),
      "next_token_loss": Loss(_next_token, {"w": w_tokens}, (token_inputs, mask), (tokens,)),
      "classification_loss": Loss(_classification, {"w": w_tokens}, (token_inputs,), (labels,)),
      "weighted_classification_loss": Loss(_weighted_classification, {"w": w_tokens}, (token_inputs, row_weights),
                                           (labels,)),
      "tagging_loss": Loss(_tagging, {"w": w_tokens}, (token_inputs, row_weights), (tags,)),
      "span_loss": Loss(_span, {"w": w_span}, (token_inputs, row_weights), (starts, ends, jnp.asarray(context))),
      "accuracy": Loss(_accuracy, {"w": w_tokens}, (token_inputs,), (labels,),
                       differentiable=False),
      "dino_loss": Loss(functools.partial(_dino, center=0.3 * normal(8)), {"w": 0.5 * w},
                        (crops, teacher_crops)),
      "moco_v3_loss": Loss(functools.partial(_moco_v3, key_weights=w + 0.3 * normal(4, 8)), {"w": w},
                           (x1, x2)),
      "barlow_twins_loss": Loss(_barlow_twins, {"w": w}, (x1, x2)),
      "barlow_twins_off_diagonal": Loss(_barlow_twins_off_diagonal, {"w": w}, (x1, x2)),
      "swav_loss": Loss(functools.partial(_swav, prototypes=normal(8, 6)), {"w": w}, (crops[:, :3],)),
      "mae_loss": Loss(_mae, {"w": w_tokens}, (token_inputs, pixels, mask)),
  }
  for name in ("nt_xent", "info_nce", "clip_loss", "moco_v3_loss"):
    # 3 divides neither the 4 local anchors of NT-Xent nor the 32 global views.
    table[f"{name}_blockwise"] = dataclasses.replace(table[name], block_size=3, reference=name)
  return table


LOSSES = _losses()
BLOCKWISE = [name for name, loss in LOSSES.items() if loss.block_size is not None]


class Reference(NamedTuple):
  value: np.ndarray
  param_grads: dict | None
  input_grads: tuple | None
  # (devices, 4, K): the part of the W gradient that flows through each device's rows.
  w_shares: np.ndarray | None


@functools.cache
def _single_device(name: str) -> Reference:
  """The reference: the dense loss on the whole batch, on one device, in float32."""
  loss = LOSSES[name]
  if loss.reference is not None:
    return _single_device(loss.reference)

  def dense(params, floats):
    return loss.fn(params, floats, loss.ints, None, None)

  if not loss.differentiable:
    return Reference(np.asarray(jax.jit(dense)(loss.params, loss.floats)), None, None, None)
  value, (param_grads, input_grads) = jax.jit(jax.value_and_grad(dense, argnums=(0, 1)))(
      loss.params, loss.floats)
  w = loss.params["w"]
  copies = dict(loss.params, w=jnp.broadcast_to(w, (NUM_DEVICES,) + w.shape))
  w_shares = jax.jit(jax.grad(dense))(copies, loss.floats)["w"]
  return Reference(*jax.tree.map(np.asarray, (value, param_grads, input_grads, w_shares)))


def _per_device_fn(loss: Loss, axis_name, block_size):
  """(params, floats, ints) -> (value, raw param grads, pmean-ed param grads, input grads).

  The trainer's recipe: the gradient of the per-device (global) loss, then an explicit pmean
  of the parameter gradients. The raw gradients are returned too, to show what the pmean does.
  """

  def per_device(params, floats, ints):
    if not loss.differentiable:
      return loss.fn(params, floats, ints, axis_name, block_size), None, None, None

    def value(params, floats):
      return loss.fn(params, floats, ints, axis_name, block_size)

    value, (param_grads, input_grads) = jax.value_and_grad(value, argnums=(0, 1))(params, floats)
    return value, param_grads, lax.pmean(param_grads, axis_name), input_grads

  return per_device


def _shard_map_step(loss: Loss, mesh, axes, check_vma: bool):
  """The per-device function under jit(shard_map), every per-device output stacked on axis 0."""
  per_device = _per_device_fn(loss, axes, loss.block_size)

  def stacked(params, floats, ints):
    value, raw, reduced, input_grads = per_device(params, floats, ints)
    # A leading device axis: out_specs P(axes) then shows every device's copy, which with
    # check_vma=False is not checked to be the same.
    value, raw, reduced = jax.tree.map(lambda a: a[None], (value, raw, reduced))
    return value, raw, reduced, input_grads

  step = jax.jit(jax.shard_map(stacked, mesh=mesh, in_specs=(P(), P(axes), P(axes)),
                               out_specs=P(axes), check_vma=check_vma))
  sharded = jax.sharding.NamedSharding(mesh, P(axes))
  return step(jax.device_put(loss.params, jax.sharding.NamedSharding(mesh, P())),
              jax.device_put(loss.floats, sharded), jax.device_put(loss.ints, sharded))


def _pmap_step(loss: Loss):

  def split(x):  # (N, ...) -> (devices, N / devices, ...)
    return x.reshape((NUM_DEVICES, -1) + x.shape[1:])

  step = jax.pmap(_per_device_fn(loss, "data", loss.block_size), axis_name="data",
                  in_axes=(None, 0, 0))
  value, raw, reduced, input_grads = step(loss.params, jax.tree.map(split, loss.floats),
                                          jax.tree.map(split, loss.ints))
  unsplit = jax.tree.map(lambda g: g.reshape((-1,) + g.shape[2:]), input_grads)
  return value, raw, reduced, unsplit


def _assert_close(got, want, what, scale=1.0):
  jax.tree.map(
      lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * scale, err_msg=what),
      got, want)


@pytest.fixture(scope="module")
def mesh():
  assert jax.device_count() >= NUM_DEVICES, "tests/conftest.py sets 8 fake CPU devices"
  # Explicit axis types: the inputs' shardings are stated with device_put, as the trainer does
  # with its global arrays.
  return jax.make_mesh((NUM_DEVICES,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_matches_single_device(name, setting, mesh):
  loss = LOSSES[name]
  want = _single_device(name)
  if setting == "pmap":
    got = _pmap_step(loss)
  else:
    got = _shard_map_step(loss, mesh, "data", check_vma=setting == "shard_map")
  value, raw, reduced, input_grads = jax.tree.map(np.asarray, got)

  for device in range(NUM_DEVICES):  # the same global loss on every device
    _assert_close(value[device], want.value, f"loss value on device {device}")
  if not loss.differentiable:
    assert 0 < want.value < 1, "an accuracy of 0 or 1 would not tell devices apart"
    return

  for key, grad in want.param_grads.items():
    assert np.abs(grad).max() > 1e-4, f"the reference gradient w.r.t. {key} is ~0"
  for device in range(NUM_DEVICES):  # the global gradient on every device after the pmean
    _assert_close(jax.tree.map(lambda g, d=device: g[d], reduced), want.param_grads,
                  f"pmean-ed param grads on device {device}")

  if setting == "shard_map":
    for device in range(NUM_DEVICES):  # already global before the pmean
      _assert_close(jax.tree.map(lambda g, d=device: g[d], raw), want.param_grads,
                    f"raw param grads on device {device}")
    _assert_close(input_grads, want.input_grads, "input grads")
  else:
    # axis_size times each device's share: the pmean is what makes the gradient global.
    _assert_close(raw["w"], NUM_DEVICES * want.w_shares, "raw W grads", scale=NUM_DEVICES)
    assert not all(np.allclose(raw["w"][d], want.param_grads["w"], rtol=1e-3, atol=1e-3)
                   for d in range(NUM_DEVICES))
    _assert_close(input_grads, jax.tree.map(lambda g: NUM_DEVICES * g, want.input_grads),
                  "input grads", scale=NUM_DEVICES)


@pytest.mark.parametrize("name", BLOCKWISE)
def test_tuple_axis_names_blockwise(name):
  """A batch sharded over two mesh axes at once, e.g. ("replica", "data") on a pod."""
  axes = ("replica", "data")
  mesh = jax.make_mesh((2, 4), axes, axis_types=(jax.sharding.AxisType.Explicit,) * 2)
  want = _single_device(name)
  value, raw, reduced, input_grads = jax.tree.map(
      np.asarray, _shard_map_step(LOSSES[name], mesh, axes, check_vma=True))
  for device in range(NUM_DEVICES):
    _assert_close(value[device], want.value, f"loss value on device {device}")
    for grads in (raw, reduced):
      _assert_close(jax.tree.map(lambda g, d=device: g[d], grads), want.param_grads,
                    f"param grads on device {device}")
  _assert_close(input_grads, want.input_grads, "input grads")


def test_vicreg_case_exercises_every_term():
  """Each VICReg term contributes to the gradient compared above (the variance hinge is 0,
  with no gradient, once every dimension's std exceeds 1)."""
  loss = LOSSES["vicreg_loss"]
  e1, e2 = (x @ loss.params["w"] for x in loss.floats)
  terms = losses.vicreg_terms(e1, e2)
  assert all(float(terms[k]) > 1e-3 for k in ("invariance", "variance", "covariance")), terms


def test_barlow_twins_case_exercises_both_terms():
  """Neither Barlow Twins term is ~0 on the data above, and the on-diagonal term is not at its
  minimum, so both carry a gradient in the comparisons."""
  loss = LOSSES["barlow_twins_loss"]
  e1, e2 = (x @ loss.params["w"] for x in loss.floats)
  terms = losses.barlow_twins_terms(e1, e2)
  assert all(float(terms[k]) > 0.1 for k in ("on_diagonal", "off_diagonal")), terms


# ---------------------------------------------------------------------------------------------
# the statistics that must be global: DINO's centre, SwAV's codes, Barlow Twins' correlation
# ---------------------------------------------------------------------------------------------


def _sharded_and_local(fn, mesh, arrays, specs):
  """fn(*arrays, axis_name) per device under jit(shard_map): the sharded result (with
  axis_name="data") and the local one (None: the device's own rows only), each stacked over
  the devices on a new first axis."""

  def per_device(*local):
    return fn(*local, axis_name="data")[None], fn(*local, axis_name=None)[None]

  step = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=specs, out_specs=P("data")))
  placed = [jax.device_put(a, jax.sharding.NamedSharding(mesh, spec)) for a, spec in zip(arrays, specs)]
  return jax.tree.map(np.asarray, step(*placed))


def _assert_global_not_local(sharded, local, want, what):
  """Every device's sharded result is the one-device result on the whole batch, and every
  device's local result is not (the data are such that the local statistics differ)."""
  for device in range(NUM_DEVICES):
    _assert_close(sharded[device], want, f"{what} on device {device}")
    assert np.abs(local[device] - want).max() > 1e-2, f"{what}: device {device}'s local == global"


def _device_dependent(rng, *shape):
  """Rows whose distribution moves with the device they land on (2 rows a device)."""
  shift = np.repeat(np.linspace(-2.0, 2.0, NUM_DEVICES), GLOBAL_BATCH // NUM_DEVICES)
  return jnp.asarray(rng.normal(size=shape) + shift.reshape((-1,) + (1,) * (len(shape) - 1)),
                     jnp.float32)


def test_dino_center_is_the_global_mean(mesh):
  rng = np.random.default_rng(1)
  teacher = jnp.swapaxes(_device_dependent(rng, GLOBAL_BATCH, 2, 5), 0, 1)  # (T, N, K)
  center = jnp.asarray(rng.normal(size=5), jnp.float32)
  want = np.asarray(losses.dino_center(center, teacher))

  def fn(teacher, axis_name):
    return losses.dino_center(center, teacher, axis_name=axis_name)

  sharded, local = _sharded_and_local(fn, mesh, (teacher,), (P(None, "data"),))
  _assert_global_not_local(sharded, local, want, "dino_center")


def test_sinkhorn_codes_are_the_global_ones(mesh):
  rng = np.random.default_rng(2)
  # Cosine-like scores whose preferred prototypes move with the device.
  scores = jnp.tanh(_device_dependent(rng, GLOBAL_BATCH, 6) * jnp.linspace(-1.0, 1.0, 6))
  want = np.asarray(losses.sinkhorn(scores))

  def fn(scores, axis_name):
    return losses.sinkhorn(scores, axis_name=axis_name)

  sharded, local = _sharded_and_local(fn, mesh, (scores,), (P("data"),))
  # Each device returns the codes of its own rows: together the global batch's codes.
  _assert_close(sharded.reshape(want.shape), want, "sinkhorn codes")
  assert np.abs(local.reshape(want.shape) - want).max() > 1e-2, "local codes == global codes"


def test_barlow_twins_correlation_is_the_global_one(mesh):
  rng = np.random.default_rng(3)
  z1 = _device_dependent(rng, GLOBAL_BATCH, 3)
  z2 = z1 + jnp.asarray(rng.normal(size=(GLOBAL_BATCH, 3)), jnp.float32)
  want = np.asarray(losses.barlow_twins_correlation(z1, z2))

  def fn(z1, z2, axis_name):
    return losses.barlow_twins_correlation(z1, z2, axis_name=axis_name)

  sharded, local = _sharded_and_local(fn, mesh, (z1, z2), (P("data"), P("data")))
  _assert_global_not_local(sharded, local, want, "barlow_twins_correlation")
