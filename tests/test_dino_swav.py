"""DINO, SwAV and multi-crop: sharded == one device with real multi-crop augmentation, each loss
against its paper's formula in float64 on the networks' own outputs, DINO's teacher (the EMA formula,
no gradient) and global centre, SwAV's unit-norm prototypes, the frozen last layer / prototypes,
multi-crop SimCLR and BYOL, a ViT on crops of two sizes, a CLI run, the configs and bench presets."""

import json
import math
import os

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import REPO, run_cli, sharded_loss_and_grads

from ssljax import augment, losses, objectives
from ssljax.bench import presets, throughput
from ssljax.objectives import byol, common, dino, simclr, swav
from ssljax.table import load_config

NAMES = ("dino", "swav")
# The runs of the `runs` fixture: (objective, smoke variant, config overrides).
VARIANTS = {"dino": ("dino", "smoke"), "swav": ("swav", "smoke"),
            "dino_head_bn": ("dino", "smoke", {"model.head_bn": True})}
SEED = jax.random.key(5)
N = 16  # global batch


@pytest.fixture(scope="module")
def batch():
  rng = np.random.default_rng(0)
  return {"image": rng.integers(0, 256, (N, 12, 12, 1), dtype=np.uint8),
          "label": rng.integers(0, 10, N).astype(np.int32)}


def _config(name, variant="smoke", overrides=None):
  config = load_config(name, variant)
  config.update_from_flattened_dict(overrides or {})
  return config


def _crops_by_hand(config, images, global_configs):
  """The crops the trainer's step 0 draws, from the keys fold_in(fold_in(seed, 0), r) of the
  examples r = 0..B-1: global (2, B, ...) and local (N, B, ...) views."""
  step_key = jax.random.fold_in(SEED, 0)
  keys = jax.vmap(lambda r: jax.random.fold_in(step_key, r))(jnp.arange(images.shape[0]))
  return augment.multi_crop(keys, images, global_configs, config.multi_crop.local, config.multi_crop.num_local)


def _moved(tree, scale, seed):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda x: np.asarray(x) + scale * rng.standard_normal(x.shape).astype(np.float32), tree)


def _nonzero(tree):
  return any(float(np.abs(g).max()) > 0 for g in jax.tree.leaves(tree))


# --- float64 references, written from the papers ---------------------------------------------


def _log_softmax64(x):
  x = np.asarray(x, np.float64)
  top = x.max(axis=-1, keepdims=True)
  return x - top - np.log(np.exp(x - top).sum(axis=-1, keepdims=True))


def _dino64(student, teacher, center, tau_s, tau_t, skip_same=True):
  """DINO's loss (arXiv 2104.14294, eq. 3 and Algorithm 1): the cross-entropy H(P_t, P_s) of the
  centred, sharpened teacher on global crop t and the student on crop s, averaged over the pairs
  s != t and the batch. student (S, B, K), teacher (T, B, K)."""
  teacher_probs = np.exp(_log_softmax64((np.asarray(teacher, np.float64) - center) / tau_t))
  student_log_probs = _log_softmax64(np.asarray(student, np.float64) / tau_s)
  terms = [-(teacher_probs[t] * student_log_probs[s]).sum(axis=-1).mean()
           for t in range(teacher.shape[0]) for s in range(student.shape[0]) if s != t or not skip_same]
  return np.mean(terms)


def _sinkhorn64(scores, epsilon, iterations):
  """SwAV's Sinkhorn-Knopp (arXiv 2006.09882, appendix A.1): Q = exp(scores / eps)^T normalised,
  then rows to 1/K and columns to 1/B in turn; codes B Q^T. (B, K) -> (B, K)."""
  q = np.exp(np.asarray(scores, np.float64) / epsilon).T  # (K, B)
  q /= q.sum()
  num_prototypes, b = q.shape
  for _ in range(iterations):
    q /= q.sum(axis=1, keepdims=True) * num_prototypes
    q /= q.sum(axis=0, keepdims=True) * b
  return (b * q).T


def _swav64(scores, tau, epsilon, iterations, num_assigned=2):
  """SwAV's swapped prediction (eqs. 1-2, section 3.2): each assigned crop's codes against the
  softmax(scores / tau) of every other crop, averaged. scores (V, B, K)."""
  log_probs = _log_softmax64(np.asarray(scores, np.float64) / tau)
  terms = []
  for a in range(num_assigned):
    codes = _sinkhorn64(scores[a], epsilon, iterations)
    terms += [-(codes * log_probs[v]).sum(axis=-1).mean() for v in range(scores.shape[0]) if v != a]
  return np.mean(terms)


# --- sharded == one device, with real multi-crop augmentation ----------------------------------


def _prepared_state(name, objective, batch):
  """Parameters and a model state as after some training: DINO's teacher moved away from the
  student and a non-zero centre; both at step 1 (warm-up half done, nothing frozen any more)."""
  params, model_state = jax.jit(objective.init)(jax.random.key(0), batch)
  model_state = {**model_state, "step": jnp.int32(1)}
  if name == "dino":
    teacher = {**model_state["teacher"], "params": _moved(model_state["teacher"]["params"], 0.05, 7)}
    center = np.random.default_rng(3).standard_normal(model_state["center"].shape).astype(np.float32)
    model_state = {**model_state, "teacher": teacher, "center": center}
  return params, model_state


@pytest.fixture(scope="module")
def runs(batch):
  """Per objective (smoke config: 2 global + 2 local crops): config, parameters, state, and
  `sharded_loss_and_grads` (the trainer's per-example keys: real multi-crop augmentation) on 8
  devices and on 1, computed once for the tests below."""
  cache = {}

  def run(name):
    if name not in cache:
      config = _config(*VARIANTS[name])
      objective = objectives.build(config)
      params, model_state = _prepared_state(config.objective, objective, batch)
      cache[name] = dict(config=config, objective=objective, params=params, model_state=model_state,
                         one=sharded_loss_and_grads(objective, params, model_state, batch, 1, seed=SEED),
                         eight=sharded_loss_and_grads(objective, params, model_state, batch, 8, seed=SEED))
    return cache[name]

  return run


@pytest.mark.parametrize("name", NAMES + ("dino_head_bn",))
def test_eight_devices_equal_one_with_real_multi_crop(name, runs):
  """Each example's crops come from its own key, so 8 devices compute the one-device loss,
  gradients, new model state (DINO's centre and teacher statistics, global BatchNorm) and metrics
  (global Sinkhorn codes for SwAV, the global centre for DINO)."""
  assert jax.device_count() == 8
  value8, grads8, _, state8, metrics8 = runs(name)["eight"]
  value1, grads1, _, state1, metrics1 = runs(name)["one"]
  assert np.isfinite(value1) and value1 > 0
  np.testing.assert_allclose(value8, value1, rtol=1e-5)
  for g8, g1 in zip(jax.tree.leaves(grads8), jax.tree.leaves(grads1)):
    np.testing.assert_allclose(g8, g1, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(g1).max())))
  chex.assert_trees_all_close(state8, state1, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(metrics8, metrics1, rtol=1e-4, atol=1e-6)
  assert _nonzero(grads1)


# --- DINO ---------------------------------------------------------------------------------------


def _dino_outputs(run, batch):
  """The student's logits of every crop and the teacher's of the global crops, (V, B, K) and
  (2, B, K), from the networks applied here to the trainer's crops (one device, global BatchNorm)."""
  config, params, model_state = run["config"], run["params"], run["model_state"]
  net = dino.network(config, None)
  global_views, local_views = _crops_by_hand(config, batch["image"], (config.augment.view1, config.augment.view2))
  crops = jax.jit(lambda v, g, loc: net.apply(v, g, loc, train=True, method=dino.DinoNetwork.crops,
                                              mutable=["batch_stats"])[0][1])
  student = crops({"params": params, "batch_stats": model_state["batch_stats"]}, global_views, local_views)
  teacher = crops(model_state["teacher"], global_views, None)
  return common.stack_crops(student, N), common.stack_crops(teacher, N)


def test_dino_loss_is_the_papers_loss_of_the_networks_outputs(batch, runs):
  """The objective's loss is eq. (3) on the student's logits of all 4 crops and the teacher's of
  the 2 global ones, centred by the state's centre, at the warmed-up teacher temperature of step 1,
  in float64; pairing a crop with itself, forgetting the centre or using the student as teacher
  gives another value. The new centre is eq. (4) over the global batch of the teacher's outputs,
  and no gradient reaches the teacher or the centre."""
  run = runs("dino")
  config, model_state = run["config"], run["model_state"]
  value, _, state_grads, new_state, metrics = run["one"]
  student, teacher = _dino_outputs(run, batch)
  assert student.shape == (4, N, config.model.num_outputs) and teacher.shape == (2, N, config.model.num_outputs)

  lc = config.loss
  start, end = lc.teacher_temperature_start, lc.teacher_temperature
  tau_t = start + (end - start) * 1 / lc.teacher_warmup_steps  # step 1 of the warm-up
  np.testing.assert_allclose(metrics["teacher_temperature"], tau_t, rtol=1e-6)
  center = np.asarray(model_state["center"], np.float64)
  expected = _dino64(student, teacher, center, lc.student_temperature, tau_t)
  np.testing.assert_allclose(value, expected, rtol=1e-6)
  for wrong in (_dino64(student, teacher, center, lc.student_temperature, tau_t, skip_same=False),
                _dino64(student, teacher, 0.0, lc.student_temperature, tau_t),
                _dino64(student, student[:2], center, lc.student_temperature, tau_t)):
    # (a crop paired with itself changes the mean by ~3e-4 here: early student crops are alike)
    assert not np.isclose(wrong, expected, rtol=1e-4)

  m = lc.center_momentum
  expected_center = m * center + (1 - m) * np.asarray(teacher, np.float64).mean(axis=(0, 1))
  np.testing.assert_allclose(new_state["center"], expected_center, rtol=1e-5, atol=1e-6)
  # The batch's part of the centre is the global batch's mean, on 8 devices too, and the first
  # device's rows alone have another mean.
  teacher64 = np.asarray(teacher, np.float64)
  for state in (new_state, run["eight"].model_state):
    batch_center = (np.asarray(state["center"], np.float64) - m * center) / (1 - m)
    np.testing.assert_allclose(batch_center, teacher64.mean(axis=(0, 1)), rtol=0, atol=2e-5)
  assert np.abs(teacher64[:, :N // 8].mean(axis=(0, 1)) - teacher64.mean(axis=(0, 1))).max() > 5e-4
  for g in jax.tree.leaves((state_grads["teacher"], state_grads["center"])):
    assert float(np.abs(g).max()) == 0.0


def test_dino_after_update_is_the_ema_formula_and_counts_steps(runs):
  """theta_t <- l theta_t + (1 - l) theta_s with l = 1 - (1 - l0)(cos(pi k / K) + 1) / 2, in float64,
  for the whole student (encoder and head); the step counter becomes k + 1; nothing else moves."""
  run = runs("dino")
  objective, params, model_state = run["objective"], run["params"], run["model_state"]
  l0, total = run["config"].loss.teacher_momentum, run["config"].train.steps
  moved = _moved(params, 1.0, 1)
  after_update = jax.jit(objective.after_update)
  old64 = jax.tree.map(lambda x: np.asarray(x, np.float64), model_state["teacher"]["params"])
  student64 = jax.tree.map(lambda x: np.asarray(x, np.float64), moved)
  for step in (0, 1, total):
    momentum = 1 - (1 - l0) * (math.cos(math.pi * step / total) + 1) / 2
    new_state = after_update(moved, model_state, jnp.int32(step))
    expected = jax.tree.map(lambda t, s: momentum * t + (1 - momentum) * s, old64, student64)
    chex.assert_trees_all_close(new_state["teacher"]["params"], expected, rtol=0, atol=1e-6)
    assert int(new_state["step"]) == step + 1
    chex.assert_trees_all_equal(new_state["center"], model_state["center"])
    chex.assert_trees_all_equal(new_state["teacher"]["batch_stats"], model_state["teacher"]["batch_stats"])


def test_dino_head_and_features(batch, runs):
  """The head: depth-1 hidden layers, the bottleneck, and a last layer with unit-norm columns (its
  stored directions scaled freely give the same outputs); the teacher starts as the student;
  `features` is the teacher's encoder."""
  run = runs("dino")
  config, objective = run["config"], run["objective"]
  params, model_state = jax.jit(objective.init)(jax.random.key(0), batch)
  m = config.model
  assert params["head"]["Dense_0"]["kernel"].shape[1] == m.head_hidden
  assert params["head"]["Dense_2"]["kernel"].shape[1] == m.head_bottleneck
  assert params["head"]["last_layer"].shape == (m.head_bottleneck, m.num_outputs)
  chex.assert_trees_all_equal(model_state["teacher"]["params"], params)
  assert int(model_state["step"]) == 0 and float(np.abs(model_state["center"]).max()) == 0.0

  net = dino.network(config, None)
  h = np.random.default_rng(2).standard_normal((4, 8)).astype(np.float32)
  head = lambda p: net.head.apply({"params": p}, h)  # noqa: E731
  scaled = {**params["head"], "last_layer": params["head"]["last_layer"] * np.linspace(0.5, 3, m.num_outputs)}
  np.testing.assert_allclose(head(scaled), head(params["head"]), rtol=1e-5, atol=1e-6)
  assert np.abs(np.asarray(head(params["head"]))).max() <= 1 + 1e-5  # unit bottleneck . unit columns

  state = {**run["model_state"]}  # teacher moved away from the student
  features = jax.jit(objective.features)(params, state, batch)
  teacher = net.apply(state["teacher"], batch["image"] / 255.0, method=dino.DinoNetwork.encode)
  student = net.apply({"params": params, "batch_stats": state["batch_stats"]}, batch["image"] / 255.0,
                      method=dino.DinoNetwork.encode)
  np.testing.assert_allclose(features, teacher, rtol=1e-5, atol=1e-6)
  assert not np.allclose(features, student, rtol=1e-3)


def test_dino_head_bn_normalises_each_hidden_layer_over_the_batch():
  """`model.head_bn` (the authors' use_bn_in_head): a BatchNorm after each hidden Dense, whose
  train-mode output has zero mean over the batch before the GELU; without it, no BatchNorm."""
  h = np.random.default_rng(4).standard_normal((16, 8)).astype(np.float32) + 3.0  # a common offset
  for head_bn in (False, True):
    net = dino.network(_config("dino", overrides={"model.head_bn": head_bn}), None).head
    variables = net.init(jax.random.key(0), h, train=False)
    assert ("batch_stats" in variables) == head_bn
    if head_bn:
      assert set(variables["batch_stats"]) == {"BatchNorm_0", "BatchNorm_1"}
      _, state = net.apply(variables, h, train=True, mutable=["batch_stats", "intermediates"],
                           capture_intermediates=lambda module, _: isinstance(module, nn.BatchNorm))
      normalised = state["intermediates"]["BatchNorm_0"]["__call__"][0]
      np.testing.assert_allclose(np.asarray(normalised).mean(axis=0), 0.0, atol=1e-5)


def test_dino_calibrate_with_a_vit_and_head_bn_keeps_the_heads_statistics(batch):
  """A ViT encoder has no BatchNorm statistics to calibrate, the head's BatchNorm has: `calibrate`
  leaves the teacher's head statistics as they are (and does not fail on the encoder's none)."""
  objective = objectives.build(_config("dino", overrides={"model.encoder": "vit_micro", "model.head_bn": True}))
  params, model_state = jax.jit(objective.init)(jax.random.key(0), batch)
  assert set(model_state["teacher"]["batch_stats"]) == {"head"}
  calibrated = objective.calibrate(params, model_state, batch)
  chex.assert_trees_all_equal(calibrated["teacher"], model_state["teacher"])


@pytest.mark.parametrize("name, frozen", [("dino", ("head", "last_layer")), ("swav", ("prototypes", "kernel"))])
def test_frozen_before_the_set_step(name, frozen, batch, runs):
  """DINO's last layer and SwAV's prototypes get no gradient before `freeze_*_steps` (1 in the
  smoke configs) and one from then on (step 1 is `runs`' state); the rest learns throughout."""
  run = runs(name)
  objective, params, model_state = run["objective"], run["params"], run["model_state"]
  grads0 = sharded_loss_and_grads(objective, params, {**model_state, "step": jnp.int32(0)}, batch, 1, seed=SEED).grads
  grads1 = run["one"].grads
  part, leaf = frozen
  assert float(np.abs(grads0[part][leaf]).max()) == 0.0
  assert float(np.abs(grads1[part][leaf]).max()) > 0.0
  assert _nonzero(grads0["encoder"])


# --- SwAV ---------------------------------------------------------------------------------------


def test_swav_loss_is_the_papers_loss_of_the_networks_outputs(batch, runs):
  """The objective's loss is the swapped prediction on the prototype scores of all 4 crops, codes
  from Sinkhorn-Knopp over the global batch of the 2 global crops, in float64; the scores are
  cosines with unit-norm prototypes; codes for every crop, or softmax codes without Sinkhorn, give
  another value."""
  run = runs("swav")
  config, params, model_state = run["config"], run["params"], run["model_state"]
  value = run["one"].value
  net = swav.network(config, None)
  global_views, local_views = _crops_by_hand(config, batch["image"], (config.augment, config.augment))
  variables = {"params": params, "batch_stats": model_state["batch_stats"]}
  (h, scores), _ = jax.jit(lambda v, g, loc: net.apply(v, g, loc, train=True, method=swav.SwavNetwork.crops,
                                                       mutable=["batch_stats"]))(variables, global_views, local_views)
  scores = common.stack_crops(scores, N)  # (4, N, K)

  # Cosines: the projector's L2-normalised output against the prototypes' unit columns.
  (z, _) = jax.jit(lambda v, x: net.apply(v, x, method=lambda mdl, x: mdl.projector(x, train=True),
                                          mutable=["batch_stats"]))(variables, h)
  kernel = np.asarray(params["prototypes"]["kernel"], np.float64)
  z64 = np.asarray(z, np.float64)
  cosines = (z64 / np.linalg.norm(z64, axis=1, keepdims=True)) @ (kernel / np.linalg.norm(kernel, axis=0))
  np.testing.assert_allclose(common.flatten_crops(scores), cosines, rtol=1e-5, atol=1e-6)

  lc = config.loss
  expected = _swav64(scores, lc.temperature, lc.epsilon, lc.sinkhorn_iterations)
  np.testing.assert_allclose(value, expected, rtol=1e-5)
  assert not np.isclose(_swav64(scores, lc.temperature, lc.epsilon, lc.sinkhorn_iterations, num_assigned=4),
                        expected, rtol=1e-3)
  softmax_codes = np.exp(_log_softmax64(np.asarray(scores, np.float64) / lc.epsilon))
  log_probs = _log_softmax64(np.asarray(scores, np.float64) / lc.temperature)
  no_sinkhorn = np.mean([-(softmax_codes[a] * log_probs[v]).sum(-1).mean()
                         for a in range(2) for v in range(4) if v != a])
  assert not np.isclose(no_sinkhorn, expected, rtol=1e-3)


# --- multi-crop in SimCLR and BYOL -------------------------------------------------------------


# BYOL's multi-crop path is the same helpers as SimCLR's: kept out of the default run for time.
@pytest.mark.slow  # two objectives' losses compiled with and without local crops: ~35 s each
@pytest.mark.parametrize("name", ["simclr", "byol"])
def test_multi_crop_simclr_and_byol(name, batch):
  """With num_local=0 the loss is the plain two-view loss of the networks' outputs (NT-Xent of the
  two views; byol(p1, z'2) + byol(p2, z'1)); with 2 local crops it is the documented pairing: the
  mean NT-Xent over (g1, g2), (g, l) for both globals and each local crop; for BYOL each global
  target against every other crop's prediction, averaged over those crops and summed."""
  for num_local in (0, 2):
    config = _config(name, overrides={"multi_crop.num_local": num_local})
    objective = objectives.build(config)
    params, model_state = jax.jit(objective.init)(jax.random.key(0), batch)
    value = sharded_loss_and_grads(objective, params, model_state, batch, 1, seed=SEED, grads=False)
    if name == "simclr":
      net, global_configs = simclr.network(config, None), (config.augment, config.augment)
    else:
      net, global_configs = byol.network(config, None), (config.augment.view1, config.augment.view2)
    global_views, local_views = _crops_by_hand(config, batch["image"], global_configs)
    method = common.EncoderWithHead.crops if name == "simclr" else byol.ByolNetwork.crops
    variables = {"params": params, "batch_stats": model_state["batch_stats"]}
    out, _ = net.apply(variables, global_views, local_views, train=True, method=method, mutable=["batch_stats"])
    crops = common.stack_crops(out[-1], N)  # z (SimCLR) or p (BYOL): (V, N, P)
    assert crops.shape[0] == 2 + num_local
    if name == "simclr":
      tau = config.loss.temperature
      pairs = [(0, 1)] + [(g, loc) for loc in range(2, 2 + num_local) for g in (0, 1)]
      expected = np.mean([losses.nt_xent(crops[a], crops[b], temperature=tau) for a, b in pairs])
    else:
      (_, z_target), _ = net.apply(model_state["target"], common.flatten_crops(global_views), train=True,
                                   method=byol.ByolNetwork.project, mutable=["batch_stats"])
      targets = common.stack_crops(z_target, N)
      expected = sum(np.mean([_byol64(crops[s], targets[t]) for s in range(2 + num_local) if s != t]) for t in (0, 1))
    np.testing.assert_allclose(value, expected, rtol=1e-5)


def _byol64(p, z):
  """BYOL's 2 - 2 cos(p, z'), averaged over the batch (arXiv 2006.07733, eq. 2)."""
  p, z = np.asarray(p, np.float64), np.asarray(z, np.float64)
  cos = (p * z).sum(-1) / np.linalg.norm(p, axis=-1) / np.linalg.norm(z, axis=-1)
  return np.mean(2 - 2 * cos)


@pytest.mark.slow  # a ViT compiled on two crop sizes: ~10 s
def test_vit_runs_local_crops_through_the_same_parameters(batch):
  """A ViT student takes 12 px global and 8 px local crops with one set of parameters (positions
  stored for the 12 px grid, resampled for 8 px): the stacked logits equal the network applied to
  each size on its own."""
  config = _config("dino", overrides={"model.encoder": "vit_tiny"})
  net = dino.network(config, None)
  global_views, local_views = _crops_by_hand(config, batch["image"], (config.augment.view1, config.augment.view2))
  assert global_views.shape[2:4] == (12, 12) and local_views.shape[2:4] == (8, 8)
  variables = net.init(jax.random.key(0), batch["image"] / 255.0, train=False)
  assert variables["params"]["encoder"]["position_embed"].shape[1] == 1 + 3 * 3
  _, stacked = jax.jit(lambda v, g, loc: net.apply(v, g, loc, method=dino.DinoNetwork.crops))(
      variables, global_views, local_views)
  alone = jax.jit(lambda v, x: net.apply(v, common.flatten_crops(x))[1])
  np.testing.assert_allclose(stacked[2 * N:], alone(variables, local_views), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(stacked[:2 * N], alone(variables, global_views), rtol=1e-5, atol=1e-6)


# --- configs, CLI, bench ------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_config_variants(name):
  for variant in ("mnist5k", "cifar10", "imagenet", "smoke"):
    assert load_config(name, variant).objective == name
  objectives.get(name)  # registered
  with pytest.raises(ValueError, match="variant"):
    load_config(name, "imagenett")


def test_imagenet_variants_have_the_papers_numbers():
  d = load_config("dino", "imagenet")
  assert (d.model.encoder, d.train.batch_size, d.optim.name, d.optim.lr, d.optim.weight_decay) == (
      "vit_s16", 1024, "adamw", 0.0005, 0.04)
  assert (d.model.num_outputs, d.model.head_hidden, d.model.head_bottleneck, d.model.norm_last_layer) == (
      65536, 2048, 256, True)
  assert (d.loss.student_temperature, d.loss.teacher_temperature_start, d.loss.teacher_temperature) == (0.1, 0.04, 0.07)
  assert (d.loss.teacher_momentum, d.loss.center_momentum) == (0.996, 0.9)
  assert d.train.steps == 10 * d.optim.warmup_steps == 100 * d.loss.freeze_last_layer_steps
  assert d.loss.teacher_warmup_steps == 30 * d.loss.freeze_last_layer_steps
  assert (d.augment.view1.crop_size, d.multi_crop.num_local, d.multi_crop.local.crop_size) == (224, 10, 96)
  assert d.multi_crop.local.crop_scale == (0.05, 0.4) and d.augment.view1.crop_scale == (0.4, 1.0)
  s = load_config("swav", "imagenet")
  assert (s.model.encoder, s.train.batch_size, s.optim.name, s.optim.lr * 4096 / 256, s.optim.weight_decay) == (
      "resnet50", 4096, "lars", 4.8, 1e-6)
  assert (s.model.num_prototypes, s.model.projector_width, s.model.projector_dim) == (3000, 2048, 128)
  assert (s.loss.epsilon, s.loss.temperature, s.loss.sinkhorn_iterations) == (0.05, 0.1, 3)
  assert (s.augment.crop_size, s.multi_crop.num_local, s.multi_crop.local.crop_size) == (224, 6, 96)
  assert s.augment.crop_scale == (0.14, 1.0) and s.multi_crop.local.crop_scale == (0.05, 0.14)


@pytest.mark.slow  # a subprocess that builds mnist5k and compiles the step: ~20 s
def test_cli_smoke_run(tmp_path, data_dir):
  workdir = str(tmp_path / "dino")
  result = run_cli(["train", "--config", os.path.join(REPO, "configs", "dino.py") + ":smoke",
                    "--workdir", workdir, "--noprogress", "--config.train.evaluate=False",
                    "--config.train.steps=3", "--config.train.checkpoint_every=3"], data_dir)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  assert [r["step"] for r in records] == [1, 2, 3]
  assert all(math.isfinite(r["loss"]) and math.isfinite(r["teacher_entropy"]) for r in records)
  # The teacher temperature follows the step counter: 0.04 at step 0, halfway at 1, 0.07 from 2.
  np.testing.assert_allclose([r["teacher_temperature"] for r in records], [0.04, 0.055, 0.07], rtol=1e-5)
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "3"))


@pytest.mark.parametrize("name", ["dino", "swav"])
def test_tiny_bench_preset_step_runs(name):
  preset = {"dino": "dino_vit_s16_tiny", "swav": "swav_resnet50_tiny"}[name]
  result = throughput.measure(presets.preset_config(preset), steps=1, warmup=1, preset=preset)
  assert result["preset"] == preset and result["objective"] == name and result["device_count"] == 8
  assert result["input_shape"] == [32, 32, 3] and result["batch_size"] == 16
  assert result["unit"] == "views" and result["per_second"] == pytest.approx(16 * 4 / result["step_seconds"])
  assert np.isfinite(result["step_seconds"]) and result["flops_per_step"] > 0
  full = presets.preset_config(preset[:-len("_tiny")], device_count=1)
  encoder = {"dino": "vit_s16", "swav": "resnet50"}[name]
  assert (full.model.encoder, full.data.image_size, full.multi_crop.local.crop_size) == (encoder, 256, 96)
