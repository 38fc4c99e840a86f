"""The image objectives BYOL, VICReg, rotation, patch placement and the supervised baseline:
CLI smoke runs, falling losses on mnist5k, BYOL's EMA target, sharded == single device, and
pretext labels that match their inputs."""

import json
import math
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import data_mesh, sharded_loss_and_grads

from ssljax import augment, losses, objectives
from ssljax.table import load_config
from ssljax.interface import DATA_AXIS
from ssljax.objectives import byol, patch_placement, rotation
from ssljax.train import optim, step as step_lib
from ssljax.train.state import TrainState

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OBJECTIVES = ("byol", "vicreg", "rotation", "patch_placement", "supervised")
P = jax.P


def _ssljax(args, data_dir):
  env = dict(os.environ)
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
  env["SSLJAX_DATA_DIR"] = data_dir
  env["JAX_PLATFORMS"] = "cpu"
  return subprocess.run([sys.executable, "-m", "ssljax.cli", *args], env=env, cwd=REPO,
                        capture_output=True, text=True, timeout=600)


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _config(name, variant="smoke", **overrides):
  config = load_config(name, variant)
  config.update_from_flattened_dict(overrides)
  return config


@pytest.fixture(scope="module")
def batch():
  rng = np.random.default_rng(0)
  return {"image": rng.integers(0, 256, (16, 12, 12, 1), dtype=np.uint8),
          "label": rng.integers(0, 10, 16).astype(np.int32)}


# --- configs and registry -------------------------------------------------------------------


@pytest.mark.parametrize("name", OBJECTIVES)
def test_config_variants_select_the_objective(name):
  for variant in ("mnist5k", "cifar10", "imagenet", "smoke"):
    config = load_config(name, variant)
    assert config.objective == name
    objectives.get(name)  # registered
  assert load_config(name, "").data.name == "mnist5k"  # the default variant
  with pytest.raises(ValueError, match="variant"):
    load_config(name, "mnist5kk")


@pytest.mark.parametrize("variant, side", [("mnist5k", 28), ("cifar10", 32), ("imagenet", None), ("smoke", 28)])
def test_patch_grid_fits_every_variant(variant, side):
  config = load_config("patch_placement", variant)
  side = config.data.image_size or side
  p = config.patches
  assert augment.patch_grid_extent(p.patch_size, p.gap, p.jitter) <= side


# --- the real CLI path, on real bundled data ---------------------------------------------------

# The smoke config with a ResNet-18 of width 8 (the smoke variants' two-stage ResNet is too weak
# to learn digits in 40 steps), 40 steps of 64 images, and learning rates that move in 40 steps.
RESNET18_W8 = ["--config.model.encoder=resnet18", "--config.model.width=8"]
FALLING = {
    "byol": [*RESNET18_W8, "--config.model.stem_stride=2", "--config.optim.lr=2.0"],
    # The mnist5k expander (512-512): with the smoke config's 16 dimensions the variance hinge
    # holds the loss flat for 40 steps (38.8 -> 38.3).
    "vicreg": [*RESNET18_W8, "--config.model.stem_stride=2", "--config.optim.lr=1.0",
               "--config.model.expander_width=512", "--config.model.expander_dim=512"],
    "rotation": [*RESNET18_W8, "--config.model.stem_stride=2", "--config.optim.lr=0.1"],
    # 7 px patches: no stem stride
    "patch_placement": [*RESNET18_W8, "--config.optim.lr=0.1", "--config.optim.lr_scaling=none"],
    "supervised": [*RESNET18_W8, "--config.model.stem_stride=2", "--config.optim.lr=0.1",
                   "--config.optim.lr_scaling=none", "--config.augment.crop_scale=(0.5, 1.0)"],
}


@pytest.mark.slow  # a minute of the default suite's time each
@pytest.mark.parametrize("name", OBJECTIVES)
def test_cli_trains_and_loss_falls_on_mnist5k(name, tmp_path, data_dir):
  steps = 40
  workdir = str(tmp_path / name)
  result = _ssljax(["train", "--config", os.path.join(REPO, "configs", f"{name}.py") + ":smoke",
                    "--workdir", workdir, "--noprogress", "--config.train.evaluate=False",
                    f"--config.train.steps={steps}", "--config.train.batch_size=64",
                    "--config.train.log_every=1", "--config.train.checkpoint_every=20",
                    "--config.optim.warmup_steps=5", f"--config.evals.knn.every={steps}", *FALLING[name]],
                   data_dir)
  assert result.returncode == 0, result.stderr[-3000:]
  records = _metrics(workdir)
  assert [r["step"] for r in records] == list(range(1, steps + 1))
  assert all(math.isfinite(r["loss"]) for r in records)
  assert [r["step"] for r in records if "val_knn_accuracy" in r] == [steps]  # the evaluator, on validation
  assert 0.1 < records[-1]["val_knn_accuracy"] <= 1.0  # above chance (10 digits)
  assert json.load(open(os.path.join(workdir, "config.json")))["objective"] == name
  assert os.path.isdir(os.path.join(workdir, "checkpoints", str(steps)))
  loss = [r["loss"] for r in records]
  first, last = np.mean(loss[:5]), np.mean(loss[-5:])
  assert last < 0.9 * first, (name, first, last)


# --- BYOL's target network --------------------------------------------------------------------


def test_byol_tau_schedule():
  k = jnp.array([0, 50, 100])
  np.testing.assert_allclose(byol.target_decay(k, 100, 0.996), [0.996, 0.998, 1.0], rtol=0, atol=1e-7)
  k = 37
  expected = 1 - (1 - 0.99) * (math.cos(math.pi * k / 120) + 1) / 2
  np.testing.assert_allclose(byol.target_decay(jnp.int32(k), 120, 0.99), expected, rtol=0, atol=1e-7)


def test_byol_after_update_is_the_ema_formula(batch):
  config = _config("byol", **{"loss.tau_base": 0.9, "train.steps": 10})
  objective = objectives.build(config)
  params, model_state = jax.jit(objective.init)(jax.random.key(0), batch)
  # The target starts as a copy of the online encoder + projector, and has no predictor.
  chex.assert_trees_all_equal(model_state["target"]["params"], byol.online_part(params))
  chex.assert_trees_all_equal(model_state["target"]["batch_stats"], byol.online_part(model_state["batch_stats"]))
  assert set(params) == {"encoder", "projector", "predictor"}
  assert set(model_state["target"]["params"]) == {"encoder", "projector"}

  # An online network that has moved away from the target, as after optimizer steps.
  rng = np.random.default_rng(1)
  moved = jax.tree.map(lambda x: np.asarray(x) + 0.1 * rng.standard_normal(x.shape, np.float32), params)
  step = 3
  new_state = jax.jit(objective.after_update)(moved, model_state, jnp.int32(step))

  tau = 1 - (1 - 0.9) * (math.cos(math.pi * step / 10) + 1) / 2  # float64
  target64 = jax.tree.map(lambda x: np.asarray(x, np.float64), model_state["target"]["params"])
  online64 = jax.tree.map(lambda x: np.asarray(x, np.float64), byol.online_part(moved))
  expected = jax.tree.map(lambda t, o: tau * t + (1 - tau) * o, target64, online64)
  chex.assert_trees_all_close(new_state["target"]["params"], expected, rtol=0, atol=1e-7)
  # Everything else in the model state passes through untouched.
  chex.assert_trees_all_equal(new_state["batch_stats"], model_state["batch_stats"])
  chex.assert_trees_all_equal(new_state["target"]["batch_stats"], model_state["target"]["batch_stats"])


def test_byol_target_gets_no_gradient(batch):
  objective = objectives.build(_config("byol"))
  params, model_state = jax.jit(objective.init)(jax.random.key(0), batch)
  mesh = data_mesh(1)

  def per_device(params, model_state, batch):
    def loss(params, target):  # the target as an argument, to see whether any gradient reaches it
      return objective.loss(params, {**model_state, "target": target}, batch, jax.random.key(2))[0]
    return jax.grad(loss, argnums=(0, 1))(params, model_state["target"])

  run = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(), P(DATA_AXIS)), out_specs=(P(), P())))
  grads, target_grads = run(params, model_state, jax.device_put(batch, jax.NamedSharding(mesh, P(DATA_AXIS))))
  assert set(grads) == {"encoder", "projector", "predictor"}  # the trainable params, no target
  assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads))
  for g in jax.tree.leaves(target_grads):
    assert float(jnp.abs(g).max()) == 0.0


def test_byol_target_moves_only_by_the_ema_in_the_trainer(batch):
  """Real trainer steps on 2 devices: after every step the target equals the EMA of the old
  target and the new online parameters, so no gradient or optimizer update reached it."""
  tau_base, steps = 0.5, 3
  config = _config("byol", **{"loss.tau_base": tau_base, "train.steps": steps})
  objective = objectives.build(config)
  tx, _ = optim.optimizer(config.optim, steps, batch["image"].shape[0])
  params, model_state = jax.jit(objective.init)(jax.random.key(0), batch)
  mesh = data_mesh(2)
  state = jax.device_put(TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), model_state),
                         jax.NamedSharding(mesh, P()))
  train_step = step_lib.make_train_step(objective, tx, jax.random.key(1), mesh)
  global_batch = jax.device_put(batch, jax.NamedSharding(mesh, P(DATA_AXIS)))
  initial_target = jax.device_get(model_state["target"])
  for k in range(steps):
    before = jax.device_get(state.model_state["target"]["params"])
    state, _ = train_step(state, global_batch)
    after = jax.device_get(state)
    tau = 1 - (1 - tau_base) * (math.cos(math.pi * k / steps) + 1) / 2
    expected = jax.tree.map(lambda t, o: tau * np.float64(t) + (1 - tau) * np.float64(o),
                            before, byol.online_part(after.params))
    chex.assert_trees_all_close(after.model_state["target"]["params"], expected, rtol=0, atol=1e-6)
  final = after.model_state["target"]
  assert _differs(final["params"], byol.online_part(after.params))  # the target trails the online net
  assert _differs(final["params"], initial_target["params"])  # ... and moves
  assert _differs(final["batch_stats"], initial_target["batch_stats"])  # its own BN statistics


def _differs(a, b):
  return any(not np.allclose(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# --- sharded == single device -----------------------------------------------------------------


def _fixed_views(name):
  """The smoke config with deterministic views (the image and its mirror image), so that the
  per-device augmentation keys cannot make device counts differ."""
  config = _config(name)
  view1 = augment.default_config("none")
  view2 = augment.default_config("none")
  view2.flip_p = 1.0
  config.augment.view1, config.augment.view2 = view1, view2
  return config


@pytest.mark.parametrize("name", ["byol", "vicreg"])
def test_eight_devices_equal_one(name, batch):
  assert jax.device_count() == 8
  objective = objectives.build(_fixed_views(name))
  params, model_state = jax.jit(objective.init)(jax.random.key(0), batch)
  # One key for each device's whole batch, not the trainer's per-example keys (the fixed views make
  # the loss independent of the keys).
  one_key = {"seed": jax.random.key(0), "example_keys": False}
  value8, grads8, _, state8, _ = sharded_loss_and_grads(objective, params, model_state, batch, 8, **one_key)
  value1, grads1, _, state1, _ = sharded_loss_and_grads(objective, params, model_state, batch, 1, **one_key)
  assert value1 > 0
  np.testing.assert_allclose(value8, value1, rtol=1e-5)
  # Gradients sum thousands of float32 terms in a different order: compare at 1e-5 of their
  # scale (the largest entries are ~0.3).
  chex.assert_trees_all_close(grads8, grads1, rtol=1e-4, atol=1e-5)
  chex.assert_trees_all_close(state8, state1, rtol=1e-5, atol=1e-6)  # global BN statistics
  assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads1))
  if name == "vicreg":  # the loss from its logged terms is vicreg_loss on the embeddings
    np.testing.assert_allclose(value1, _vicreg_by_hand(_fixed_views(name), params, model_state, batch), rtol=1e-5)


def _vicreg_by_hand(config, params, model_state, batch):
  net = objectives.vicreg.network(config, None)

  @jax.jit
  def embeddings_loss(params, model_state, images):
    x = images.astype(jnp.float32) / 255.0
    both = jnp.concatenate([x, x[:, :, ::-1]])  # the fixed views: the image, its mirror image
    (_, z), _ = net.apply({"params": params, **model_state}, both, train=True, mutable=["batch_stats"])
    return losses.vicreg_loss(z[:16], z[16:])

  return embeddings_loss(params, model_state, batch["image"])


# --- pretext labels match their inputs --------------------------------------------------------


def test_rotation_batch_labels_match_rotations(batch):
  images = jnp.asarray(batch["image"])
  n = images.shape[0]
  # Without augmentation: block k is the input turned k quarter turns.
  rotated, labels = rotation.rotated_batch(jax.random.key(0), images, augment.default_config("none"))
  chex.assert_shape(rotated, (4 * n, 12, 12, 1))
  np.testing.assert_array_equal(labels, np.repeat(np.arange(4), n))
  for k in range(4):
    np.testing.assert_array_equal(rotated[k * n:(k + 1) * n], np.rot90(images / 255.0, k, axes=(1, 2)))
  # With a random crop: every block is a rotation of the same augmented images.
  rotated, _ = rotation.rotated_batch(jax.random.key(0), images, load_config("rotation", "mnist5k").augment)
  assert not np.allclose(rotated[:n], images / 255.0)
  for k in range(4):
    np.testing.assert_array_equal(rotated[k * n:(k + 1) * n], np.rot90(rotated[:n], k, axes=(1, 2)))


def test_rotation_objective_classifies_four_times_the_batch(batch):
  config = _config("rotation")
  objective = objectives.build(config)
  params, model_state = jax.jit(objective.init)(jax.random.key(0), batch)
  key = jax.random.key(3)
  mesh = data_mesh(1)

  def per_device(params, model_state, batch):
    value, _ = objective.loss(params, model_state, batch, key)
    return value

  run = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(), P(DATA_AXIS)), out_specs=P()))
  value = run(params, model_state, jax.device_put(batch, jax.NamedSharding(mesh, P(DATA_AXIS))))
  # The same loss from the rotated batch by hand: logits for 4n images against labels 0..3.
  rotated, labels = rotation.rotated_batch(key, batch["image"], config.augment)
  apply = jax.jit(lambda variables, x: rotation.network(config, None).apply(
      variables, x, train=True, mutable=["batch_stats"]))
  (h, logits), _ = apply({"params": params, **model_state}, rotated)
  chex.assert_shape(logits, (4 * 16, 4))
  np.testing.assert_allclose(value, losses.classification_loss(logits, labels), rtol=1e-5)
  # The representation is the encoder's on the upright images (the first block of the four).
  features = jax.jit(objective.features)(params, model_state, batch)
  chex.assert_shape(features, h[:16].shape)


def test_patch_batch_labels_match_positions():
  config = load_config("patch_placement", "mnist5k")
  p = config.patches
  # Pixel values encode their coordinates, so each patch tells where it was cut.
  yy, xx = np.meshgrid(np.arange(28), np.arange(28), indexing="ij")
  image = (100.0 * yy + xx)[None, :, :, None].astype(np.float32)
  images = np.repeat(image, 64, axis=0)
  centres, neighbours, labels = patch_placement.patch_batch(jax.random.key(0), images, p)
  chex.assert_shape([centres, neighbours], (64, p.patch_size, p.patch_size, 1))
  assert set(np.asarray(labels).tolist()) == set(range(8))
  stride = p.patch_size + p.gap
  for c, nb, label in zip(np.asarray(centres), np.asarray(neighbours), np.asarray(labels)):
    (yc, xc), (yn, xn) = divmod(int(c[0, 0, 0]), 100), divmod(int(nb[0, 0, 0]), 100)
    dy, dx = yn - yc, xn - xc
    want_dy, want_dx = augment.NEIGHBOUR_OFFSETS[label]
    assert abs(dy - stride * want_dy) <= 2 * p.jitter and abs(dx - stride * want_dx) <= 2 * p.jitter


def test_patch_placement_features_are_whole_images(batch):
  config = _config("patch_placement")
  objective = objectives.build(config)
  images = np.random.default_rng(1).integers(0, 256, (16, 28, 28, 1), dtype=np.uint8)
  example = {"image": images, "label": batch["label"]}
  params, model_state = jax.jit(objective.init)(jax.random.key(0), example)
  features = jax.jit(objective.features)(params, model_state, example)
  chex.assert_shape(features, (16, 8))  # resnet_tiny width 4: 2 stages -> 8 channels
  mesh = data_mesh(1)

  def per_device(params, model_state, batch):
    value, _ = objective.loss(params, model_state, batch, jax.random.key(0))
    return value

  run = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(), P(DATA_AXIS)), out_specs=P()))
  value = run(params, model_state, jax.device_put(example, jax.NamedSharding(mesh, P(DATA_AXIS))))
  assert 0 < value < 10  # the loss trains on patches of the same images


def test_patch_grid_too_large_is_named(batch):
  objective = objectives.build(_config("patch_placement", **{"patches.patch_size": 9}))
  with pytest.raises(ValueError, match="patch_size=9"):
    objective.init(jax.random.key(0), {"image": np.zeros((2, 28, 28, 1), np.uint8)})


def test_supervised_needs_labels(batch):
  objective = objectives.build(_config("supervised"))
  params, model_state = jax.jit(objective.init)(jax.random.key(0), batch)
  with pytest.raises(ValueError, match="label"):
    objective.loss(params, model_state, {"image": batch["image"]}, jax.random.key(0))


@pytest.mark.parametrize("name", ["simclr", "byol", "patch_placement"])
def test_calibrate_makes_inference_match_train_mode_on_the_batch(name):
  """The random-init baseline's BatchNorm statistics are the calibration batch's, measured in
  train mode: inference features on that batch then equal train-mode features, and differ from
  inference with the initial statistics (mean 0, variance 1)."""
  config = _config(name, **{"model.zero_init_residual": False})
  objective = objectives.build(config)
  images = np.random.default_rng(3).integers(0, 256, (32, 28, 28, 1), dtype=np.uint8)
  batch = {"image": images}
  params, model_state = objective.init(jax.random.key(0), batch)
  calibrated = objective.calibrate(params, model_state, batch)
  module = {"simclr": None, "byol": byol, "patch_placement": patch_placement}[name]
  from ssljax.objectives import common, simclr

  net = (module or simclr).network(config, None)
  method = {"simclr": "encode", "byol": byol.ByolNetwork.encode,
            "patch_placement": patch_placement.SiameseClassifier.encode}[name]
  train_mode, _ = net.apply({"params": params, "batch_stats": model_state["batch_stats"]},
                            common.to_unit_range(images), train=True, method=method, mutable=["batch_stats"])
  np.testing.assert_allclose(objective.features(params, calibrated, batch), train_mode, rtol=1e-4, atol=1e-5)
  assert not np.allclose(objective.features(params, model_state, batch), train_mode, atol=1e-3)


def test_random_init_baseline_has_unit_residual_scales():
  """zero_init_residual=False (what the baseline uses) starts every block's last BN scale at 1;
  the training default starts it at 0."""
  for zero, want in ((True, 0.0), (False, 1.0)):
    objective = objectives.build(_config("simclr", **{"model.zero_init_residual": zero}))
    params, _ = objective.init(jax.random.key(0), {"image": np.zeros((2, 28, 28, 1), np.uint8)})
    blocks = {k: v for k, v in params["encoder"].items() if "Block" in k}
    assert blocks
    for block in blocks.values():
      last_norm = sorted(k for k in block if k.startswith("BatchNorm"))[-1]
      np.testing.assert_array_equal(block[last_norm]["scale"], want)
