"""The MoCo v3 and Barlow Twins objectives: sharded == one device with real augmentation, each loss
against its paper's formula in float64 on the networks' own outputs, MoCo v3's momentum encoder
(the EMA formula, no gradient), CLI runs, configs and bench presets."""

import json
import math
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import REPO, run_cli, sharded_loss_and_grads

from ssljax import augment, objectives
from ssljax.bench import presets, throughput
from ssljax.objectives import barlow_twins, moco_v3
from ssljax.table import load_config

NAMES = ("moco_v3", "barlow_twins")
SEED = jax.random.key(5)


@pytest.fixture(scope="module")
def batch():
  rng = np.random.default_rng(0)
  return {"image": rng.integers(0, 256, (16, 12, 12, 1), dtype=np.uint8),
          "label": rng.integers(0, 10, 16).astype(np.int32)}


def _config(name, variant="smoke", **overrides):
  config = load_config(name, variant)
  config.update_from_flattened_dict(overrides)
  return config


def _views_by_hand(config, images):
  """The two views the trainer's step 0 draws, from the keys fold_in(fold_in(seed, 0), r) of the
  examples r = 0..B-1, stacked as (2B, H, W, C): view 1 rows, then view 2."""
  step_key = jax.random.fold_in(SEED, 0)
  keys = jax.vmap(lambda r: jax.random.fold_in(step_key, r))(jnp.arange(images.shape[0]))
  views = augment.views(keys, images, (config.augment.view1, config.augment.view2), num_views=2)
  return views.reshape((-1,) + views.shape[2:])


def _moved_momentum_encoder(model_state, scale=0.05):
  """The model state with a momentum encoder that differs from the base encoder, as after training."""
  rng = np.random.default_rng(7)
  moved = jax.tree.map(lambda x: np.asarray(x) + scale * rng.standard_normal(x.shape).astype(np.float32),
                       model_state["momentum_encoder"]["params"])
  return {**model_state, "momentum_encoder": {**model_state["momentum_encoder"], "params": moved}}


# --- float64 references, written from the papers ---------------------------------------------


def _ctr64(q, k, tau):
  """MoCo v3's ctr(q, k) (arXiv 2104.02057, Algorithm 1): 2 tau x InfoNCE of L2-normalised q
  against the keys, the positive of query i being key i."""
  q = np.asarray(q, np.float64)
  k = np.asarray(k, np.float64)
  q = q / np.linalg.norm(q, axis=1, keepdims=True)
  k = k / np.linalg.norm(k, axis=1, keepdims=True)
  logits = q @ k.T / tau  # (N, D) . (D, N) -> (N, N)
  top = logits.max(axis=1, keepdims=True)
  log_denominator = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
  return 2 * tau * np.mean(log_denominator - np.diag(logits))


def _barlow64(z1, z2, lambda_offdiag, eps=1e-5):
  """Barlow Twins' eq. (1) over C of eq. (2), each dimension standardised over the batch with its
  biased variance (+ eps, BatchNorm's, as the loss documents): (loss, on-diagonal, off-diagonal)."""
  def standardise(z):
    z = np.asarray(z, np.float64)
    centred = z - z.mean(axis=0)
    return centred / np.sqrt((centred**2).mean(axis=0) + eps)

  c = standardise(z1).T @ standardise(z2) / z1.shape[0]  # (D, N) . (N, D) -> (D, D)
  on = np.sum((1 - np.diag(c)) ** 2)
  off = np.sum(c**2) - np.sum(np.diag(c) ** 2)
  return on + lambda_offdiag * off, on, off


# --- sharded == one device, with real augmentation --------------------------------------------


@pytest.fixture(scope="module")
def runs(batch):
  """Per objective (smoke config; MoCo v3's momentum encoder moved away from the base encoder):
  its config, parameters and state, and `sharded_loss_and_grads` (the trainer's per-example keys:
  real augmentation) on 8 devices and on 1, computed once for the tests below."""
  cache = {}

  def run(name):
    if name not in cache:
      config = _config(name)
      objective = objectives.build(config)
      params, model_state = jax.jit(objective.init)(jax.random.key(0), batch)
      if name == "moco_v3":
        model_state = _moved_momentum_encoder(model_state)
      cache[name] = dict(config=config, objective=objective, params=params, model_state=model_state,
                         one=sharded_loss_and_grads(objective, params, model_state, batch, 1, seed=SEED),
                         eight=sharded_loss_and_grads(objective, params, model_state, batch, 8, seed=SEED))
    return cache[name]

  return run


@pytest.mark.parametrize("name", NAMES)
def test_eight_devices_equal_one_with_real_augmentation(name, runs):
  """Each example's views come from its own key (its global index), so 8 devices compute the
  one-device loss, gradients, model state and logged metrics (global BatchNorm, global negatives
  for MoCo v3, the global correlation matrix for Barlow Twins)."""
  assert jax.device_count() == 8
  value8, grads8, _, state8, metrics8 = runs(name)["eight"]
  value1, grads1, _, state1, metrics1 = runs(name)["one"]
  assert np.isfinite(value1) and value1 > 0
  np.testing.assert_allclose(value8, value1, rtol=1e-5)
  # Gradients sum many float32 terms in another order: compare each leaf at 1e-5 of its scale
  # (Barlow Twins' sums over D x D entries make its largest entries ~20).
  for g8, g1 in zip(jax.tree.leaves(grads8), jax.tree.leaves(grads1)):
    np.testing.assert_allclose(g8, g1, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(g1).max())))
  chex.assert_trees_all_close(state8, state1, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(metrics8, metrics1, rtol=1e-4, atol=1e-6)
  assert any(float(np.abs(g).max()) > 0 for g in jax.tree.leaves(grads1))


# --- MoCo v3 ----------------------------------------------------------------------------------


def test_moco_v3_loss_is_the_papers_loss_of_the_networks_outputs(batch, runs):
  """The objective's loss is ctr(q1, k2) + ctr(q2, k1) on the base encoder's queries and the
  momentum encoder's keys of the trainer's views, computed here in float64; a wiring with the
  views paired to themselves, or with keys from the base encoder, gives another value. No
  gradient reaches the momentum encoder."""
  run = runs("moco_v3")
  config, params, model_state = run["config"], run["params"], run["model_state"]
  value, grads, state_grads, _, metrics = run["one"]

  net = moco_v3.network(config, None)
  both = _views_by_hand(config, batch["image"])
  apply = jax.jit(lambda variables, x: net.apply(variables, x, train=True, mutable=["batch_stats"]))
  project = jax.jit(lambda variables, x: net.apply(variables, x, train=True, method=moco_v3.MocoNetwork.project,
                                                   mutable=["batch_stats"]))
  (_, q), _ = apply({"params": params, "batch_stats": model_state["batch_stats"]}, both)
  (_, k), _ = project(model_state["momentum_encoder"], both)
  n, tau = 16, config.loss.temperature
  expected = _ctr64(q[:n], k[n:], tau) + _ctr64(q[n:], k[:n], tau)
  np.testing.assert_allclose(value, expected, rtol=1e-5)
  assert not np.isclose(_ctr64(q[:n], k[:n], tau) + _ctr64(q[n:], k[n:], tau), expected, rtol=1e-3)
  (_, k_base), _ = project({"params": moco_v3.momentum_part(params),
                            "batch_stats": moco_v3.momentum_part(model_state["batch_stats"])}, both)
  assert not np.isclose(_ctr64(q[:n], k_base[n:], tau) + _ctr64(q[n:], k_base[:n], tau), expected, rtol=1e-3)

  assert set(grads) == {"encoder", "projector", "predictor"}
  for g in jax.tree.leaves(state_grads["momentum_encoder"]):
    assert float(np.abs(g).max()) == 0.0
  unit = np.asarray(q, np.float64) / np.linalg.norm(np.asarray(q, np.float64), axis=1, keepdims=True)
  np.testing.assert_allclose(metrics["query_std"], unit.std(axis=0).mean(), rtol=1e-5)  # the global batch's


def test_moco_v3_heads_have_the_papers_shape(batch, runs):
  """A 3-layer projector and a 2-layer predictor, BN in every layer (the outputs' BN without a
  scale), the momentum encoder a copy of encoder + projector without the predictor; the
  features are the encoder's output."""
  run = runs("moco_v3")
  config, objective = run["config"], run["objective"]
  params, model_state = jax.jit(objective.init)(jax.random.key(0), batch)
  assert sorted(k for k in params["projector"] if k.startswith("Dense")) == ["Dense_0", "Dense_1", "Dense_2"]
  assert sorted(k for k in params["predictor"] if k.startswith("Dense")) == ["Dense_0", "Dense_1"]
  assert "scale" not in params["projector"]["BatchNorm_2"] and "bias" in params["projector"]["BatchNorm_2"]
  assert "scale" not in params["predictor"]["BatchNorm_1"]
  assert params["projector"]["Dense_2"]["kernel"].shape[1] == config.model.projector_dim
  chex.assert_trees_all_equal(model_state["momentum_encoder"]["params"], moco_v3.momentum_part(params))
  assert set(model_state["momentum_encoder"]["params"]) == {"encoder", "projector"}
  features = jax.jit(objective.features)(params, model_state, batch)
  encoded = moco_v3.network(config, None).apply({"params": params, "batch_stats": model_state["batch_stats"]},
                                                batch["image"] / 255.0, method=moco_v3.MocoNetwork.encode)
  np.testing.assert_allclose(features, encoded, rtol=1e-5, atol=1e-7)
  assert features.shape == (16, 8)  # resnet_tiny width 4: 2 stages -> 8 channels


def test_moco_v3_after_update_is_the_momentum_formula(runs):
  """theta_k <- m theta_k + (1 - m) theta_q with m = 1 - (1 - m0)(cos(pi k / K) + 1) / 2, in float64:
  m0 at step 0, 1 at the last step K."""
  run = runs("moco_v3")
  objective, params, model_state = run["objective"], run["params"], run["model_state"]
  m0, total = run["config"].loss.momentum, run["config"].train.steps
  rng = np.random.default_rng(1)
  moved = jax.tree.map(lambda x: np.asarray(x) + rng.standard_normal(x.shape).astype(np.float32), params)
  after_update = jax.jit(objective.after_update)
  old64 = jax.tree.map(lambda x: np.asarray(x, np.float64), model_state["momentum_encoder"]["params"])
  base64 = jax.tree.map(lambda x: np.asarray(x, np.float64), moco_v3.momentum_part(moved))
  for step in (0, 1, total):
    m = 1 - (1 - m0) * (math.cos(math.pi * step / total) + 1) / 2
    new_state = after_update(moved, model_state, jnp.int32(step))
    expected = jax.tree.map(lambda k, q: m * k + (1 - m) * q, old64, base64)
    chex.assert_trees_all_close(new_state["momentum_encoder"]["params"], expected, rtol=0, atol=1e-6)
    assert _differs(new_state["momentum_encoder"]["params"], old64) == (step != total)
    chex.assert_trees_all_equal(new_state["batch_stats"], model_state["batch_stats"])
    chex.assert_trees_all_equal(new_state["momentum_encoder"]["batch_stats"],
                                model_state["momentum_encoder"]["batch_stats"])


def _differs(a, b):
  return any(not np.allclose(x, y, rtol=0, atol=1e-6) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# --- Barlow Twins -----------------------------------------------------------------------------


def test_barlow_twins_loss_is_the_papers_loss_of_the_networks_outputs(batch, runs):
  """The objective's loss and each logged term are eq. (1) on the projector's outputs of the two
  views, in float64; a correlation of each view with itself gives another value."""
  run = runs("barlow_twins")
  config, params, model_state = run["config"], run["params"], run["model_state"]
  value, _, _, _, metrics = run["one"]

  net = barlow_twins.network(config, None)
  both = _views_by_hand(config, batch["image"])
  (_, z), _ = jax.jit(lambda v, x: net.apply(v, x, train=True, mutable=["batch_stats"]))(
      {"params": params, **model_state}, both)
  expected, on, off = _barlow64(z[:16], z[16:], config.loss.lambda_offdiag)
  np.testing.assert_allclose(value, expected, rtol=1e-5)
  np.testing.assert_allclose(metrics["on_diagonal"], on, rtol=1e-5)
  np.testing.assert_allclose(metrics["off_diagonal"], off, rtol=1e-5)
  assert not np.isclose(_barlow64(z[:16], z[:16], config.loss.lambda_offdiag)[0], expected, rtol=1e-3)


# --- configs, CLI, bench ----------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_config_variants_select_the_objective(name):
  for variant in ("mnist5k", "cifar10", "imagenet", "smoke"):
    assert load_config(name, variant).objective == name
  objectives.get(name)  # registered
  assert load_config(name, "").data.name == "mnist5k"
  assert load_config(name, "cifar10").data.name == "cifar10"
  with pytest.raises(ValueError, match="variant"):
    load_config(name, "mnist5kk")


def test_imagenet_variants_have_the_papers_numbers():
  moco = load_config("moco_v3", "imagenet")
  assert (moco.model.encoder, moco.train.batch_size, moco.optim.lr, moco.optim.weight_decay) == (
      "resnet50", 4096, 0.6, 1e-6)
  assert (moco.loss.momentum, moco.model.projector_width, moco.model.projector_dim) == (0.99, 4096, 256)
  bt = load_config("barlow_twins", "imagenet")
  assert (bt.model.encoder, bt.train.batch_size, bt.optim.lr, bt.optim.weight_decay) == (
      "resnet50", 2048, 0.2, 1.5e-6)
  assert (bt.model.projector_depth, bt.model.projector_width, bt.model.projector_dim) == (3, 8192, 8192)
  assert bt.loss.lambda_offdiag == 5e-3
  for config in (moco, bt):
    assert config.augment.view1.blur_p == 1.0 and config.augment.view2.solarize_p == 0.2  # BYOL's views
    assert config.augment.view1.crop_size == 224


# Barlow Twins' CLI path is also run by its loss-falls test (slow): kept out of the default run
# for time.
@pytest.mark.slow  # a subprocess each, ~35 s; the objectives' steps run in this file and in test_bench
@pytest.mark.parametrize("name", NAMES)
def test_cli_smoke_run(name, tmp_path, data_dir):
  workdir = str(tmp_path / name)
  result = run_cli(["train", "--config", os.path.join(REPO, "configs", f"{name}.py") + ":smoke",
                    "--workdir", workdir, "--noprogress", "--config.train.evaluate=False",
                    "--config.train.steps=3", "--config.train.checkpoint_every=3"], data_dir)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  assert [r["step"] for r in records] == [1, 2, 3]
  assert all(math.isfinite(r["loss"]) for r in records)
  logged = {"moco_v3": "query_std", "barlow_twins": "off_diagonal"}[name]
  assert all(math.isfinite(r[logged]) for r in records)
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "3"))


# The smoke config with a ResNet-18 of width 8 and the stride-2 stem (the smoke variants'
# two-stage ResNet is too weak to learn digits in 40 steps), 40 steps of 64 images.
FALLING = {
    "moco_v3": ["--config.optim.lr=2.0"],
    "barlow_twins": ["--config.optim.lr=1.0", "--config.model.projector_width=512",
                     "--config.model.projector_dim=512"],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_cli_loss_falls_on_mnist5k(name, tmp_path, data_dir):
  steps = 40
  workdir = str(tmp_path / name)
  result = run_cli(["train", "--config", os.path.join(REPO, "configs", f"{name}.py") + ":smoke",
                    "--workdir", workdir, "--noprogress", "--config.train.evaluate=False",
                    f"--config.train.steps={steps}", "--config.train.batch_size=64",
                    "--config.train.log_every=1", f"--config.train.checkpoint_every={steps}",
                    "--config.optim.warmup_steps=5", f"--config.evals.knn.every={steps}",
                    "--config.model.encoder=resnet18", "--config.model.width=8", "--config.model.stem_stride=2",
                    *FALLING[name]], data_dir)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  assert [r["step"] for r in records] == list(range(1, steps + 1))
  assert 0.1 < records[-1]["val_knn_accuracy"] <= 1.0  # above chance (10 digits)
  loss = [r["loss"] for r in records]
  first, last = np.mean(loss[:5]), np.mean(loss[-5:])
  assert last < 0.9 * first, (name, first, last)


# Barlow Twins' tiny step is the same bench code path as MoCo v3's (its step runs in the tests
# above): kept out of the default run for time.
@pytest.mark.parametrize("name", ["moco_v3", pytest.param("barlow_twins", marks=pytest.mark.slow)])
def test_tiny_bench_preset_step_runs(name):
  preset = f"{name}_resnet50_tiny"
  result = throughput.measure(presets.preset_config(preset), steps=1, warmup=1, preset=preset)
  assert result["preset"] == preset and result["objective"] == name and result["device_count"] == 8
  assert result["input_shape"] == [32, 32, 3] and result["batch_size"] == 16
  assert np.isfinite(result["step_seconds"]) and result["flops_per_step"] > 0
  full = presets.preset_config(f"{name}_resnet50", device_count=1)
  assert (full.model.encoder, full.data.image_size, full.augment.view1.crop_size) == ("resnet50", 256, 224)
  assert full.train.batch_size == 256
