"""CLIP end to end: the sharded CLIP and SigLIP steps equal one device, the logit scale's
ceiling, the prompt-ensemble classifier, the `shapes` dataset (deterministic, captions true to
the pixels, held-out combinations never trained on), and the CLI: train, eval, zero-shot and
`ssljax bench step` on the ViT-B/16 preset."""

import json
import math
import os
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from helpers import data_mesh, run_cli, run_steps
from ssljax import augment, data
from ssljax.data import shapes
from ssljax.evaluate import retrieval as retrieval_lib
from ssljax.evaluate import zero_shot as zero_shot_lib
from ssljax.families import image_text
from ssljax.models import clip as clip_model
from ssljax.interface import DATA_AXIS, build
from ssljax.objectives import clip as clip_objective
from ssljax.text import tokenizer as tokenizer_lib
from ssljax.train import defaults, step as step_lib
from ssljax.train.state import TrainState

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIP_SMOKE = os.path.join(REPO, "configs", "clip.py") + ":smoke"
LOSS_VARIANTS = {"clip": {}, "clip_blockwise": {"block_size": 8}, "siglip": {"name": "siglip"}}


_cli = run_cli


def _config(**loss):
  config = defaults.load_config("clip:smoke")
  config.unlock()
  for key, value in loss.items():
    config.loss[key] = value
  return config


@pytest.fixture(scope="module")
def records(data_dir):
  """The first 16 training records of `shapes` (built once per session)."""
  return data.load("shapes", "train", data_dir=data_dir).__getitems__(range(16))


def _batch(records):
  tokenizer = tokenizer_lib.ByteTokenizer()  # ids < 262 fit the smoke model's 384 rows
  return {"image": np.stack([r["image"] for r in records]),
          "tokens": image_text.tokenize(tokenizer, [r["caption"].decode() for r in records], 32)}


_mesh = data_mesh


# --- the sharded step ---------------------------------------------------------------------------


def _run(objective, batch, num_devices, steps=2):
  return run_steps(objective, batch, num_devices, optax.sgd(0.1), steps)


@pytest.mark.parametrize("variant", ["clip", "siglip"])
def test_sharded_step_equals_one_device(variant, records):
  """The trainer's step on 8 devices (2 pairs each, negatives gathered from all, global
  BatchNorm, per-example augmentation keys) gives the losses and parameters of 1 device."""
  objective = build(_config(**LOSS_VARIANTS[variant]))
  batch = _batch(records)
  state8, history8 = _run(objective, batch, 8)
  state1, history1 = _run(objective, batch, 1)
  for m8, m1 in zip(history8, history1):
    np.testing.assert_allclose(m8["loss"], m1["loss"], rtol=1e-5)
    np.testing.assert_allclose(m8["image_to_text_accuracy"], m1["image_to_text_accuracy"])
  assert history8[1]["loss"] != history8[0]["loss"]  # the first step changed the model
  chex.assert_trees_all_close(state8.params, state1.params, rtol=1e-4, atol=1e-5)
  chex.assert_trees_all_close(state8.model_state, state1.model_state, rtol=1e-4, atol=1e-5)


def _reference_loss(config, params, model_state, batch, keys):
  """The loss written out from the papers' formulas on one device: the same augmented views and
  towers, then the dense (N, N) logits."""
  net = clip_objective.network(config, None)
  images = augment.views(keys, batch["image"], augment.make_config(config.augment), num_views=1)[0]
  (image_emb, text_emb, _), _ = net.apply({"params": params, **model_state}, images, batch["tokens"], train=True,
                                          mutable=["batch_stats"])
  scale = jnp.exp(params["log_scale"])  # below the ceiling here
  logits = scale * image_emb @ text_emb.T  # (N, E) . (E, N) -> (N, N)
  n = logits.shape[0]
  if config.loss.name == "siglip":  # Zhai et al. 2023, eq. (1)
    signs = 2.0 * jnp.eye(n) - 1.0
    return -jnp.sum(jax.nn.log_sigmoid(signs * (logits + params["logit_bias"]))) / n
  diagonal = jnp.arange(n)
  image_to_text = -jax.nn.log_softmax(logits, axis=1)[diagonal, diagonal]
  text_to_image = -jax.nn.log_softmax(logits.T, axis=1)[diagonal, diagonal]
  return (jnp.mean(image_to_text) + jnp.mean(text_to_image)) / 2


@pytest.mark.parametrize("variant", sorted(LOSS_VARIANTS))
def test_sharded_gradient_equals_the_dense_single_device_gradient(variant, records):
  """Each loss on its own: per-device value_and_grad of Objective.loss then the trainer's pmean,
  on 8 devices, against jax.grad of the formula written out on the whole batch."""
  config = _config(**LOSS_VARIANTS[variant])
  objective = build(config)
  batch = _batch(records)
  params, model_state = objective.init(jax.random.key(0), batch)
  keys = jax.random.split(jax.random.key(2), 16)

  def per_device(params, batch, keys):
    (value, _), grads = jax.value_and_grad(objective.loss, has_aux=True)(params, model_state, batch, keys)
    return value, jax.lax.pmean(grads, DATA_AXIS)

  mesh = _mesh(8)
  fn = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(jax.P(), jax.P(DATA_AXIS), jax.P(DATA_AXIS)),
                             out_specs=(jax.P(), jax.P())))
  value8, grads8 = fn(jax.device_put(params, jax.NamedSharding(mesh, jax.P())),
                      jax.device_put(batch, jax.NamedSharding(mesh, jax.P(DATA_AXIS))),
                      jax.device_put(keys, jax.NamedSharding(mesh, jax.P(DATA_AXIS))))
  value_ref, grads_ref = jax.value_and_grad(_reference_loss, argnums=1)(config, params, model_state, batch, keys)
  np.testing.assert_allclose(value8, value_ref, rtol=1e-5)
  chex.assert_trees_all_close(grads8, grads_ref, rtol=1e-4, atol=1e-5)
  assert float(jnp.abs(grads_ref["log_scale"])) > 0
  if variant == "siglip":
    assert float(jnp.abs(grads_ref["logit_bias"])) > 0


# --- the logit scale ----------------------------------------------------------------------------


def test_logit_scale_is_clipped_at_100_and_can_come_back_down():
  assert float(clip_model.logit_scale(jnp.log(1 / 0.07))) == pytest.approx(1 / 0.07, rel=1e-6)
  assert float(clip_model.logit_scale(jnp.float32(10.0))) == pytest.approx(100.0, rel=1e-6)
  above = jnp.float32(math.log(100.0) + 0.5)
  # Above the ceiling, a gradient that would raise t further is stopped; one that lowers it passes.
  assert float(jax.grad(lambda t: -clip_model.logit_scale(t))(above)) == 0.0
  assert float(jax.grad(lambda t: clip_model.logit_scale(t))(above)) > 0.0
  below = jnp.float32(math.log(50.0))
  assert float(jax.grad(lambda t: -clip_model.logit_scale(t))(below)) == pytest.approx(-50.0, rel=1e-5)


def test_logit_scale_never_exceeds_100_when_pushed(records):
  """An optimizer that raises t by 1 every step (and trains the rest with SGD): the scale the
  loss uses stops at 100, and so does the one evaluation reads."""
  objective = build(_config())
  batch = _batch(records)
  params, model_state = objective.init(jax.random.key(0), batch)
  push = optax.GradientTransformation(lambda p: optax.EmptyState(),
                                      lambda g, s, p=None: (jax.tree.map(jnp.ones_like, g), s))
  labels = jax.tree_util.tree_map_with_path(lambda path, _: "push" if path[-1].key == "log_scale" else "sgd", params)
  tx = optax.multi_transform({"push": push, "sgd": optax.sgd(0.1)}, labels)
  state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), model_state)
  mesh = _mesh(8)
  train_step = step_lib.make_train_step(objective, tx, jax.random.key(1), mesh)
  state = jax.device_put(state, jax.NamedSharding(mesh, jax.P()))
  batch = jax.device_put(batch, jax.NamedSharding(mesh, jax.P(DATA_AXIS)))
  scales = []
  for _ in range(5):
    state, metrics = train_step(state, batch)
    scales.append(float(metrics["logit_scale"]))
    assert np.isfinite(float(metrics["loss"]))
  assert float(state.params["log_scale"]) > math.log(100.0) + 1  # pushed far past the ceiling
  assert max(scales) <= 100.0 and scales[-1] == pytest.approx(100.0, rel=1e-6)
  assert float(objective.extras["logit_scale"](jax.device_get(state.params))) <= 100.0


# --- zero-shot classifier and retrieval ---------------------------------------------------------


def test_prompt_ensemble_classifier_on_a_hand_made_case():
  """Two classes, two prompts each, in 2-D. The first template alone sends the image to class
  B; the ensemble (normalised mean of normalised prompt embeddings) sends it to class A."""
  prompts = np.array([[[1.0, 0.0], [0.0, 1.0]],  # class A
                      [[0.8, 0.6], [0.6, -0.8]]])  # class B
  image = np.array([[0.6, 0.8]])
  weights = zero_shot_lib.ensemble_classifier(prompts)
  s = 1 / math.sqrt(2)
  np.testing.assert_allclose(weights[0], [s, s], rtol=1e-6)
  np.testing.assert_allclose(weights[1], np.array([0.7, -0.1]) / math.hypot(0.7, 0.1), rtol=1e-6)
  assert zero_shot_lib.predictions(image, prompts[:, 0])[0] == 1
  assert zero_shot_lib.predictions(image, weights)[0] == 0
  assert zero_shot_lib.expand_templates(["a {size} {}", "the {}"], {"size": ["small", "large"]}) == [
      "a small {}", "a large {}", "the {}"]


def test_retrieval_recall_and_its_chance():
  # Image i's caption is i; image 0 prefers caption 1 (same scene), image 2 prefers caption 0.
  texts = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
  images = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.9, 0.0, 0.1]])
  result = retrieval_lib.retrieval(images, texts, ["a", "a", "b"], ks=(1, 2))
  # image->text top-1: image 0 -> caption 1 (miss, same scene), 1 -> 0 (miss, same scene), 2 -> 1.
  assert result["strict"]["image_to_text"]["R@1"] == 0.0
  assert result["scene"]["image_to_text"]["R@1"] == pytest.approx(2 / 3)
  assert result["strict"]["chance"]["R@1"] == pytest.approx(1 / 3)
  assert result["scene"]["chance"]["R@1"] == pytest.approx((2 / 3 + 2 / 3 + 1 / 3) / 3)
  assert result["strict"]["chance"]["R@2"] == pytest.approx(2 / 3)


def test_the_variants_evaluations():
  """shapes: zero-shot, retrieval and the attribute probe, at the end only; base (captions without
  attribute labels): retrieval only."""
  shapes_config = defaults.load_config("clip")
  assert set(shapes_config.evals) == {"zero_shot", "retrieval", "attribute_probe"}
  assert all(options.every == 0 for options in shapes_config.evals.values())
  assert set(defaults.load_config("clip:base").evals) == {"retrieval"}


# --- the shapes dataset -------------------------------------------------------------------------

SHAPE_WORDS = ("circle", "square", "triangle", "cross", "diamond")
COLOUR_WORDS = ("red", "green", "blue", "yellow", "purple")


def _parse(caption: str) -> list[dict]:
  """The objects a caption names, in order: each part's first shape, colour, size and position."""
  objects = []
  for part in re.split(r" and a |, with a ", caption):
    position = re.search(r"(top left|top right|bottom left|bottom right|centre)", part).group(1)
    objects.append({"shape": re.search("|".join(SHAPE_WORDS), part).group(0),
                    "colour": re.search("|".join(COLOUR_WORDS), part).group(0),
                    "size": re.search("small|large", part).group(0), "position": position})
  return objects


def _colour_name(rgb) -> str:
  """A colour name from which channels are bright (independent of the generator's palette)."""
  bright = tuple(int(v) > 128 for v in rgb)
  return {(True, False, False): "red", (False, True, False): "green", (False, False, True): "blue",
          (True, True, False): "yellow", (True, False, True): "purple"}[bright]


def _position_name(rows, cols) -> str:
  cy, cx = rows.mean(), cols.mean()
  if abs(cy - 15.5) < 4 and abs(cx - 15.5) < 4:
    return "centre"
  return ("top" if cy < 15.5 else "bottom") + " " + ("left" if cx < 15.5 else "right")


def _shape_name(mask) -> str:
  """A square fills the corners of its bounding box, no other shape does; otherwise the shape
  whose outline, drawn by PIL into the object's bounding box, overlaps its pixels best."""
  from PIL import Image, ImageDraw

  rows, cols = np.nonzero(mask)
  top, left, bottom, right = rows.min(), cols.min(), rows.max(), cols.max()
  h, w = bottom - top + 1, right - left + 1
  crop = mask[top:bottom + 1, left:right + 1]
  if crop[0, 0] and crop[0, -1] and crop[-1, 0] and crop[-1, -1]:
    return "square"
  scores = {}
  for name in SHAPE_WORDS[:1] + SHAPE_WORDS[2:]:
    canvas = Image.new("1", (w, h))
    pen = ImageDraw.Draw(canvas)
    if name == "circle":
      pen.ellipse([0, 0, w - 1, h - 1], fill=1)
    elif name == "triangle":
      pen.polygon([((w - 1) / 2, 0), (0, h - 1), (w - 1, h - 1)], fill=1)
    elif name == "diamond":
      pen.polygon([((w - 1) / 2, 0), (w - 1, (h - 1) / 2), ((w - 1) / 2, h - 1), (0, (h - 1) / 2)], fill=1)
    else:  # cross: a bar a third as thick along each axis
      pen.rectangle([0, (h - 1) / 3, w - 1, 2 * (h - 1) / 3], fill=1)
      pen.rectangle([(w - 1) / 3, 0, 2 * (w - 1) / 3, h - 1], fill=1)
    drawn = np.asarray(canvas, bool)
    scores[name] = np.sum(drawn & crop) / np.sum(drawn | crop)
  return max(scores, key=scores.get)


def _objects_in_pixels(image) -> list[dict]:
  """Each object of an image: the pixels of one exact colour that is not the background (the
  most common colour)."""
  flat = image.reshape(-1, 3)
  colours, counts = np.unique(flat, axis=0, return_counts=True)
  background = colours[np.argmax(counts)]
  objects = []
  for colour, count in sorted(zip(colours, counts), key=lambda cc: -cc[1]):
    if np.array_equal(colour, background):
      continue
    mask = np.all(image == colour, axis=-1)
    rows, cols = np.nonzero(mask)
    extent = max(rows.max() - rows.min(), cols.max() - cols.min()) + 1
    objects.append({"shape": _shape_name(mask), "colour": _colour_name(colour),
                    "size": "large" if extent > 11 else "small", "position": _position_name(rows, cols)})
  return objects


def _split_records(data_dir, split, count=None):
  source = data.load("shapes", split, data_dir=data_dir)
  return source.__getitems__(range(len(source) if count is None else count))


@pytest.mark.parametrize("split", ["train", "test_heldout"])
def test_captions_and_labels_match_the_pixels(split, data_dir):
  info = data.load("shapes", "train", data_dir=data_dir).dataset_info.features
  records = _split_records(data_dir, split, 400)
  assert sum(r["has_second"] for r in records) > 20
  for r in records:
    caption = r["caption"].decode()
    named, drawn = _parse(caption), _objects_in_pixels(r["image"])
    by_colour = lambda objects: sorted(objects, key=lambda o: o["colour"])  # two objects never share one
    assert by_colour(named) == by_colour(drawn), (caption, drawn)
    labels = {k: info[k].names[int(r[k])] for k in ("shape", "colour", "size", "position")}
    assert labels == named[0] and bool(r["has_second"]) == (len(named) == 2)
    if len(named) == 2:  # the caption's first object is the large one
      assert named[0]["size"] == "large" and named[1]["size"] == "small"
    assert r["scene"].decode() == shapes.caption(named, 0, 0)  # the scene in the first template


def test_shapes_is_deterministic_per_seed(data_dir, monkeypatch):
  stored = _split_records(data_dir, "validation", 20)
  again = [shapes.example("validation", i) for i in range(20)]
  for r, e in zip(stored, again):
    np.testing.assert_array_equal(r["image"], e["image"])
    assert r["caption"].decode() == e["caption"]
  assert shapes.example("train", 7)["caption"] == shapes.example("train", 7)["caption"]
  monkeypatch.setattr(shapes, "SEED", shapes.SEED + 1)
  other = [shapes.example("validation", i) for i in range(20)]
  assert sum(np.array_equal(r["image"], o["image"]) for r, o in zip(stored, other)) < 3


def test_heldout_combinations_never_appear_in_training(data_dir):
  info = data.load("shapes", "train", data_dir=data_dir).dataset_info.features
  shape_names, colour_names = info["shape"].names, info["colour"].names
  held_out = {("circle", "blue"), ("square", "yellow"), ("triangle", "purple"), ("cross", "red"),
              ("diamond", "green")}
  assert set(shapes.HELD_OUT) == held_out
  for split in ("train", "validation", "test"):
    records = _split_records(data_dir, split)
    assert len(records) == {"train": 10_000}.get(split, 1000)
    for r in records:
      caption = r["caption"].decode()
      assert (shape_names[r["shape"]], colour_names[r["colour"]]) not in held_out
      # Neither object of the caption (the primary or a second one) is a held-out pair.
      assert not any((o["shape"], o["colour"]) in held_out for o in _parse(caption)), caption
  heldout = _split_records(data_dir, "test_heldout")
  pairs = {(shape_names[r["shape"]], colour_names[r["colour"]]) for r in heldout}
  assert pairs == held_out


# --- the CLI ------------------------------------------------------------------------------------


@pytest.mark.slow  # the README's CLIP block runs train and zero-shot in test_readme: ~80 s
def test_train_eval_and_zero_shot_through_the_cli(tmp_path, data_dir):
  workdir = str(tmp_path / "clip")
  result = _cli(["train", "--config", CLIP_SMOKE, "--workdir", workdir, "--noprogress", "--config.train.steps=80",
                 "--config.train.log_every=5", "--config.evals.zero_shot.every=40", "--config.optim.lr=3e-3"], data_dir)
  assert result.returncode == 0, result.stderr[-3000:]
  metrics = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  # ln(16) is the loss of embeddings that tell the batch's 16 pairs apart no better than chance.
  assert np.mean([m["loss"] for m in metrics[-4:]]) < math.log(16) - 0.3, [m["loss"] for m in metrics]
  assert "val_zero_shot_shape" in metrics[7] and "pairs_per_sec" in metrics[-1]
  assert all(m["logit_scale"] <= 100 for m in metrics)
  assert os.path.exists(os.path.join(workdir, "tokenizer.model"))
  report = json.load(open(os.path.join(workdir, "eval.json")))
  evaluations = ("zero_shot", "retrieval", "attribute_probe")
  assert report["split"] == "test" and all(list(report[e]["splits"]) == ["test", "test_heldout"] for e in evaluations)
  for split in ("test", "test_heldout"):
    assert set(report["zero_shot"]["splits"][split]) == {"shape", "colour", "combination"}
    assert report["zero_shot"]["splits"][split]["combination"]["chance"] == pytest.approx(1 / 25)
    assert set(report["retrieval"]["splits"][split]["strict"]) == {"image_to_text", "text_to_image", "chance"}
    assert report["retrieval"]["splits"][split]["pairs"] == 64
    assert set(report["attribute_probe"]["splits"][split]["shape"]) == {"clip", "random_init", "chance"}
  assert 0 < report["zero_shot"]["logit_scale"] <= 100
  assert "Zero-shot accuracy, test_heldout" in result.stdout and "Retrieval among 64 pairs" in result.stdout

  evaluated = _cli(["eval", "--workdir", workdir, "--split", "validation"], data_dir)
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  validation = json.load(open(os.path.join(workdir, "eval_validation.json")))
  assert all(list(validation[e]["splits"]) == ["validation"] for e in evaluations)

  from ssljax.commands import zero_shot

  images = [r["image"] for r in _split_records(data_dir, "test", 3)]
  labels = ["red circle", "blue square", "green triangle"]
  probs = zero_shot.classify(workdir, images, labels, template="a {}")
  assert probs.shape == (3, 3) and np.allclose(probs.sum(axis=1), 1.0)
  ensemble = zero_shot.classify(workdir, images, labels, templates=["a small {}", "a large {}"])
  assert not np.allclose(probs, ensemble)

  from PIL import Image

  path = str(tmp_path / "shape.png")
  Image.fromarray(images[0]).resize((64, 64)).save(path)  # another size: resized like the data
  shown = _cli(["zero-shot", "--workdir", workdir, "--image", path, "--labels", "red circle,blue square"], data_dir)
  assert shown.returncode == 0, shown.stderr[-3000:]
  out = shown.stdout
  assert out.startswith(path) and "red circle" in out and "blue square" in out and "%" in out


@pytest.mark.slow  # the published size compiles for about a minute on CPU; the same step code runs at
# the tiny presets' sizes in the default run (tests/test_bench.py)
def test_bench_step_runs_the_vit_b16_preset_on_cpu(data_dir):
  """`ssljax bench step` on configs/clip.py:base (ViT-B/16 at 224 px, a 12-layer 512-wide text
  Transformer, 49,152-piece vocabulary): the real train step at a batch of 2 pairs."""
  result = _cli(["bench", "step", "--config", os.path.join(REPO, "configs", "clip.py") + ":base",
                 "--config.train.batch_size=2", "--bench_steps", "1"], data_dir, devices=1)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "vit_b16 + text transformer" in result.stdout and "pairs/s" in result.stdout, result.stdout
