"""The MAE objective (He et al. 2021, arXiv 2111.06377) and the image fine-tuning built beside it:
sharded == one device with real masking and augmentation, the loss against the paper's formula in
float64 on the network's own predictions and masks, masks per example key, features, configs and
presets; a pretrained encoder loaded into the supervised objective, label budgets on the probes'
draws, and `ssljax finetune` of an image run."""

import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import data_mesh, run_cli, sharded_loss_and_grads

from ssljax import augment, data, objectives
from ssljax import workdir as workdir_lib
from ssljax.bench import presets
from ssljax.errors import UserError
from ssljax.evaluators.few_label_probe import labelled_subsets
from ssljax.finetune import images, with_overrides
from ssljax.models import mae as mae_model
from ssljax.objectives import mae, supervised
from ssljax.table import load_config
from ssljax.train import checkpoint, checks, loop, optim

SEED = jax.random.key(5)


@pytest.fixture(scope="module")
def batch():
  rng = np.random.default_rng(0)
  return {"image": rng.integers(0, 256, (16, 16, 16, 1), dtype=np.uint8),
          "label": rng.integers(0, 10, 16).astype(np.int32)}


def _config(variant="smoke", **overrides):
  config = load_config("mae", variant)
  config.update_from_flattened_dict(overrides)
  return config


def _step_keys(n):
  """The trainer's keys of examples 0..n-1 at step 0: fold_in(fold_in(seed, 0), r)."""
  step_key = jax.random.fold_in(SEED, 0)
  return jax.vmap(lambda r: jax.random.fold_in(step_key, r))(jnp.arange(n))


def _mae64(predictions, targets, mask, norm_pix, eps=1e-6):
  """Section 3's loss in float64: per patch, the mean over its pixels of the squared error against
  the patch normalised by its own mean and unbiased variance (norm_pix), averaged over the
  patches where mask is 1."""
  y, x, m = (np.asarray(a, np.float64) for a in (predictions, targets, mask))
  if norm_pix:
    x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, ddof=1, keepdims=True) + eps)
  per_patch = ((y - x) ** 2).mean(-1)  # (B, L)
  return (per_patch * m).sum() / m.sum()


@pytest.fixture(scope="module")
def model(batch):
  """The smoke config, its objective and initial parameters, and the network's forward pass
  (params, images, mask keys) -> (predictions, mask), jitted once for the (16, 16, 16, 1) batch."""
  config = _config()
  objective = objectives.build(config)
  params, model_state = jax.jit(objective.init)(jax.random.key(0), batch)
  net = mae_model.MAE(mae.mae_network_config(config.model))
  return {"config": config, "objective": objective, "params": params, "model_state": model_state, "net": net,
          "forward": jax.jit(lambda p, x, k: net.apply({"params": p}, x, k))}


@pytest.fixture(scope="module")
def run(batch, model):
  """`sharded_loss_and_grads` of the smoke objective (the trainer's per-example keys: real masking
  and augmentation) on 8 devices and on 1."""
  args = (model["objective"], model["params"], model["model_state"], batch)
  return {**model, "one": sharded_loss_and_grads(*args, 1, seed=SEED),
          "eight": sharded_loss_and_grads(*args, 8, seed=SEED)}


def test_eight_devices_equal_one_with_real_masking_and_augmentation(run):
  """Each example's crop and mask come from its own key, and mae_loss sums over the global batch:
  8 devices give the one-device loss, gradients and metrics."""
  value8, grads8, _, _, metrics8 = run["eight"]
  value1, grads1, _, _, metrics1 = run["one"]
  assert np.isfinite(value1) and value1 > 0
  np.testing.assert_allclose(value8, value1, rtol=1e-5)
  for g8, g1 in zip(jax.tree.leaves(grads8), jax.tree.leaves(grads1)):
    np.testing.assert_allclose(g8, g1, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(g1).max())))
  chex.assert_trees_all_close(metrics8, metrics1, rtol=1e-5, atol=1e-6)
  # The encoder and decoder both learn; the patch embedding too (through the visible patches).
  assert float(np.abs(grads1["encoder"]["patch_embed"]["kernel"]).max()) > 0
  assert float(np.abs(grads1["decoder_pred"]["kernel"]).max()) > 0


def test_loss_is_the_papers_formula_on_the_networks_outputs(batch, run):
  """The objective's loss is Section 3's normalised-pixel error on the masked patches of the
  trainer's views (crop from fold_in(key, 0), mask from fold_in(key, 1)), computed here in
  float64 on the network's own predictions; the error on the visible patches (a mis-wiring) and
  the error on raw pixels give other values, and the former is the logged visible_loss."""
  config, params = run["config"], run["params"]
  value, metrics = run["one"].value, run["one"].metrics
  keys = _step_keys(16)
  views = augment.views(keys, batch["image"], config.augment, num_views=1)[0]  # (16, 16, 16, 1)
  mask_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
  predictions, mask = run["forward"](params, views, mask_keys)
  targets = mae_model.patchify(views, 4)
  assert mask.shape == (16, 16) and np.all(np.asarray(mask).sum(1) == 12)  # 75% of 4 x 4 patches
  np.testing.assert_allclose(value, _mae64(predictions, targets, mask, True), rtol=1e-5)
  visible = _mae64(predictions, targets, 1 - np.asarray(mask), True)
  np.testing.assert_allclose(metrics["visible_loss"], visible, rtol=1e-5)
  assert not np.isclose(visible, value, rtol=1e-3)
  assert not np.isclose(_mae64(predictions, targets, mask, False), value, rtol=1e-3)
  # Unaugmented images (a wiring that skips the crop) give another loss too.
  plain = mae_model.patchify(jnp.asarray(batch["image"], jnp.float32) / 255.0, 4)
  assert not np.isclose(_mae64(predictions, plain, mask, True), value, rtol=1e-3)


def test_masks_depend_on_the_example_key_only(batch, model):
  """An example's mask and predictions are the same at any row of the batch, beside any other
  examples: they follow its key."""
  params, forward = model["params"], model["forward"]
  images = jnp.asarray(batch["image"], jnp.float32) / 255.0
  keys = mae.mask_keys(_step_keys(16))
  predictions, mask = forward(params, images, keys)
  order = np.roll(np.arange(16), 5)[::-1]  # every example at another row, among other neighbours
  moved_p, moved_m = forward(params, images[order], keys[order])
  np.testing.assert_array_equal(moved_m, mask[order])
  np.testing.assert_allclose(moved_p, predictions[order], rtol=1e-5, atol=1e-6)
  assert not np.array_equal(mask[0], mask[1])
  # The image does not choose the mask: other pixels under the same keys, the same masks.
  np.testing.assert_array_equal(forward(params, images[::-1], keys)[1], mask)


def test_features_are_the_class_token_or_the_mean_patch_token(batch, model):
  """Eager (no compilation: a few hundred small ops)."""
  params, model_state, net = model["params"], model["model_state"], model["net"]
  cls = model["objective"].features(params, model_state, batch)
  assert cls.shape == (16, 32) and cls.dtype == jnp.float32  # vit_micro's width
  mean_objective = objectives.build(_config(**{"model.feature_pool": "mean"}))
  pooled = mean_objective.features(params, model_state, batch)
  tokens = net.apply({"params": params}, jnp.asarray(batch["image"], jnp.float32) / 255.0,
                     method=lambda m, x: m.encoder.encode_tokens(m.encoder.embed(x)))  # (16, 17, 128)
  np.testing.assert_allclose(pooled, np.asarray(tokens[:, 1:], np.float64).mean(1), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(cls, tokens[:, 0], rtol=1e-5, atol=1e-6)
  assert model["objective"].calibrate(params, model_state, batch) is model_state  # no BatchNorm
  with pytest.raises(ValueError, match="feature_pool"):
    objectives.build(_config(**{"model.feature_pool": "max"}))
  with pytest.raises(ValueError, match="ViT"):
    objectives.build(_config(**{"model.encoder": "resnet18"}))


def test_configs_and_presets_have_the_papers_numbers():
  c = load_config("mae", "imagenet")
  assert (c.model.encoder, c.model.decoder_layers, c.model.decoder_dim, c.model.decoder_heads) == (
      "vit_b16", 8, 512, 16)
  assert (c.model.mask_ratio, c.loss.norm_pix, c.train.batch_size) == (0.75, True, 4096)
  assert (c.optim.name, c.optim.lr, c.optim.lr_scaling, c.optim.b1, c.optim.b2, c.optim.weight_decay) == (
      "adamw", 1.5e-4, "linear", 0.9, 0.95, 0.05)
  epoch = 1_268_355 // 4096
  assert (c.train.steps, c.optim.warmup_steps, c.optim.schedule) == (800 * epoch, 40 * epoch, "cosine")
  assert c.augment.crop_scale == (0.2, 1.0) and c.augment.flip_p == 0.5 and c.augment.crop_size == 224
  digits = load_config("mae", "")
  assert digits.data.name == "mnist5k" and digits.model.encoder == "vit_tiny" and digits.augment.flip_p == 0.0
  cifar = load_config("mae", "cifar10")
  assert (cifar.data.name, cifar.model.encoder, cifar.train.batch_size) == ("cifar10", "vit_tiny", 256)
  with pytest.raises(ValueError, match="variant"):
    load_config("mae", "cifar100")
  full = presets.preset_config("mae_vit_b16", device_count=1)
  assert (full.objective, full.model.encoder, full.train.batch_size, full.data.image_size) == (
      "mae", "vit_b16", 128, 256)
  tiny = presets.preset_config("mae_vit_b16_tiny", device_count=8)  # its step runs in test_bench.py
  assert (tiny.model.encoder, tiny.data.image_size, tiny.augment.crop_size, tiny.train.batch_size) == (
      "vit_micro", 32, 28, 16)


# --- image fine-tuning ----------------------------------------------------------------------------


def _pretrained_run(directory, config, params):
  """A finished run's directory without training: its config.json and a step-0 checkpoint."""
  os.makedirs(directory, exist_ok=True)
  workdir_lib.save_config(config, directory)
  mngr = checkpoint.manager(directory, save_every=1, keep=1, async_save=False)
  checkpoint.save(mngr, 0, {"params": params, "model_state": {}}, {}, force=True)
  mngr.close()
  return directory


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, model, data_dir):
  """A smoke MAE run (its initial parameters moved away from any fresh init) on mnist5k at 16 px."""
  config = _config(**{"data.data_dir": data_dir})
  rng = np.random.default_rng(3)
  params = jax.tree.map(lambda x: np.asarray(x) + 0.1 * rng.standard_normal(x.shape).astype(np.float32),
                        model["params"])
  return _pretrained_run(str(tmp_path_factory.mktemp("mae_run")), config, params), config, params


def _start_params(config):
  """The parameters the trainer starts a fresh run of `config` from (loop.train's state creation,
  with config.init_from read through the objective's load_pretrained)."""
  objective = objectives.build(config)
  inp = objective.family.train_input(config, "")
  example = data.example_batch(inp.source, inp.record_fn)
  tx, _ = optim.optimizer(config.optim, config.train.steps, config.train.batch_size)
  create = loop.state_factory(objective, example, tx)
  pretrained = loop.pretrained_params(config, objective, data_mesh(1))
  state = create(loop.init_key(config), pretrained)
  return jax.device_get(state.params)


def test_finetuning_starts_from_the_pretrained_encoder(pretrained):
  """A trial's supervised run starts from the MAE run's encoder, leaf for leaf, with a fresh
  head; with init=scratch from a random encoder. Its config has exactly the supervised config's
  keys, the pretrained run's data and encoder."""
  workdir, source_config, params = pretrained
  config = with_overrides(images.default_config(), {"lrs": (1e-3,)})
  child = images.trial_config(config, source_config, workdir, draw=0, lr=1e-3, labelled=3500)
  checks.check_keys(child)
  assert (child.objective, child.model.encoder, child.data.image_size, child.model.num_classes) == (
      "supervised", "vit_micro", 16, 10)
  assert child.init_from == workdir and child.augment.flip_p == source_config.augment.flip_p
  start = _start_params(child)
  chex.assert_trees_all_equal(start["encoder"], params["encoder"])
  assert set(start) == {"encoder", "head"} and start["head"]["Dense_0"]["kernel"].shape == (32, 10)

  scratch = images.trial_config(with_overrides(config, {"init": "scratch"}), source_config, workdir,
                                draw=0, lr=1e-3, labelled=3500)
  assert scratch.init_from is None  # the trainer's fresh initialisation, nothing read
  assert loop.pretrained_params(scratch, objectives.build(scratch), data_mesh(1)) is None

  with pytest.raises(ValueError, match="position_embed"):  # another image size: another grid of positions
    supervised.load_pretrained(
        start, {"encoder": {**params["encoder"], "position_embed": np.zeros((1, 50, 128), np.float32)}})
  with pytest.raises(ValueError, match="no params\\['encoder'\\]"):
    supervised.load_pretrained(start, {"backbone": params["encoder"]})


def test_label_budget_trains_on_the_few_label_probes_draws(pretrained):
  """With labels_per_class = k the run's training source is the few_label_probe's draw `draw` of
  the training split (seed: the pretrained run's eval.seed + draw): k images of every class."""
  workdir, source_config, _ = pretrained
  config = with_overrides(images.default_config(), {"labels_per_class": 3, "draws": 2})
  children = [images.trial_config(config, source_config, workdir, draw=d, lr=1e-3, labelled=30) for d in (0, 1)]
  assert children[0].train.batch_size == 30  # few_label_batch_size 32, capped at the labelled images
  full = objectives.build(children[0]).family.train_input(
      images.trial_config(images.default_config(), source_config, workdir, draw=0, lr=1e-3, labelled=3500), "")
  labels = np.asarray(full.source.labels)
  expected = labelled_subsets(labels, 3, 2, source_config.eval.seed, "evals.few_label_probe")
  for child, subset in zip(children, expected):
    source = objectives.build(child).family.train_input(child, "").source
    assert len(source) == 30
    np.testing.assert_array_equal(source.indices, subset)
    np.testing.assert_array_equal(np.bincount([source[i]["label"] for i in range(30)]), [3] * 10)
  assert not np.array_equal(expected[0], expected[1])


def test_finetune_command_picks_the_image_path(pretrained, tmp_path):
  """`ssljax finetune --workdir IMAGE_RUN` reads configs/finetune_images.py; --task is refused for
  an image run, and a text task's config too."""
  from ssljax import cli, finetune

  workdir = pretrained[0]
  argv = cli._finetune_config_flag(["ssljax", "finetune", "--workdir", workdir, "--config.init=scratch"])
  assert argv[2].endswith("configs/finetune_images.py") and argv[3:] == ["--workdir", workdir, "--config.init=scratch"]
  assert cli._finetune_config_flag(["ssljax", "finetune", "--workdir", str(tmp_path)])[2:] == [
      "--workdir", str(tmp_path)]
  with pytest.raises(UserError, match="drop --task"):
    finetune.run(workdir, "bbc_topic")
  with pytest.raises(UserError, match="finetune_images"):
    finetune.run(workdir, config=finetune.default_config("bbc_topic"))


@pytest.mark.slow
def test_finetune_end_to_end_writes_finetune_json(pretrained, data_dir):
  """A tiny `ssljax finetune` of the smoke MAE run through the CLI: 2 label draws x 1 rate, scored
  on validation and test, finetune.json written; run again, it reads the finished trials back."""
  workdir = pretrained[0]
  args = ["finetune", "--workdir", workdir, "--noprogress", "--config.labels_per_class=2", "--config.draws=2",
          "--config.lrs=(0.001,)", "--config.min_steps=3", "--config.epochs=1.0", "--config.eval_batch_size=250"]
  result = run_cli(args, data_dir)
  assert result.returncode == 0, result.stderr[-3000:]
  out = os.path.join(workdir, "finetune", "classify-2_per_class")
  with open(os.path.join(out, "finetune.json")) as f:
    results = json.load(f)
  assert results["labels"] == "2_per_class" and results["draws"] == 2 and results["chosen"]["lr"] == 0.001
  assert [t["steps"] for t in results["trials"]] == [3, 3] and results["examples"]["labelled"] == 20
  assert 0.0 <= results["test"]["accuracy"] <= 1.0 and "accuracy_std" in results["test"]
  assert "fine-tuned (test)" in result.stdout
  again = run_cli(args, data_dir)
  assert again.returncode == 0, again.stderr[-3000:]
  with open(os.path.join(out, "finetune.json")) as f:
    assert json.load(f)["test"] == results["test"]

