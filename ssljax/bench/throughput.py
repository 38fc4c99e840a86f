"""Training-step throughput of any config, on synthetic images, on whatever devices JAX sees.

    ssljax bench step --config configs/simclr.py:cifar10
    ssljax bench step --config configs/simclr.py:imagenet --config.train.batch_size=256 --bench_steps 30

It builds exactly the state and the jit(shard_map) step that `ssljax train` builds (same
objective, optimizer, online probe, donated state), feeds it random uint8 images of the
dataset's shape, and reports the compile time and the steady-state step time. No dataset is
read, so the figure isolates device work (augmentation included, since it runs on the device)
from input-pipeline speed.
"""

from __future__ import annotations

import json
import os
import time

import jax
import ml_collections
import numpy as np
import optax

from ssljax import data, objectives
from ssljax.train import checks, loop, mesh as mesh_lib, optim, step as step_lib

# (height, width, channels, classes) of the datasets the configs name; imagenet2012's side is
# config.data.image_size, the size the host pipeline resizes to.
_DATASET_SHAPES = {
    "mnist5k": (28, 28, 1, 10),
    "digits": (8, 8, 1, 10),
    "cifar10": (32, 32, 3, 10),
    "cifar100": (32, 32, 3, 100),
    "imagenet2012": (None, None, 3, 1000),
}


def synthetic_batch(config: ml_collections.ConfigDict, batch_size: int, seed: int = 0) -> dict:
  """Random images and labels shaped like `config.data`'s dataset, or random token windows of
  `config.text.seq_len` for a language config, or BERT's sentence pairs (tokens, segments,
  nsp_label) for a masked-LM config (one with `text.max_predictions`), or image-caption pairs
  (images and [EOS]-terminated token rows) for an image-text config (one with `data.caption_key`)."""
  if "caption_key" in config.data:
    return _image_text_pairs(config, batch_size, np.random.default_rng(seed))
  if "text" in config:
    from ssljax.families import text  # only language configs need the tokenizer's sizes

    rng = np.random.default_rng(seed)
    vocab = text.model_vocab_size(config)
    tokens = rng.integers(6, vocab, (batch_size, config.text.seq_len), dtype=np.int32)
    if "max_predictions" not in config.text:
      return {"tokens": tokens}
    return _sentence_pairs(tokens, rng)
  name = config.data.name
  if name not in _DATASET_SHAPES:
    raise ValueError(f"bench step knows the image shape of {sorted(_DATASET_SHAPES)}, not {name!r}")
  height, width, channels, num_classes = _DATASET_SHAPES[name]
  if config.data.image_size is not None:
    height = width = config.data.image_size
  if height is None:
    raise ValueError(f"{name} has images of varying size: set --config.data.image_size")
  rng = np.random.default_rng(seed)
  return {
      "image": rng.integers(0, 256, (batch_size, height, width, channels), dtype=np.uint8),
      "label": rng.integers(0, num_classes, (batch_size,), dtype=np.int32),
  }


def _sentence_pairs(tokens: np.ndarray, rng: np.random.Generator) -> dict:
  """BERT's inputs from random tokens (n, T): [CLS] A [SEP] B [SEP] with A and B of half the
  length each, segment ids and random next-sentence labels."""
  from ssljax.text import pairs  # only BERT configs need the pair layout

  n, length = tokens.shape
  half = (length - pairs.NUM_PAIR_SPECIALS) // 2
  examples = [pairs.pair_example(row[:half], row[half:2 * half], int(label), length)
              for row, label in zip(tokens, rng.integers(0, 2, n))]
  return {key: np.stack([e[key] for e in examples]) for key in examples[0]}


def _image_text_pairs(config: ml_collections.ConfigDict, batch_size: int, rng: np.random.Generator) -> dict:
  """CLIP's inputs: random RGB images of `data.image_size` and random captions of half the
  context, each ended by [EOS] (where the text tower reads its feature) and padded."""
  from ssljax.families import image_text  # only image-text configs need the vocabulary size

  side, length = config.data.image_size, config.text.seq_len
  tokens = rng.integers(6, image_text.model_vocab_size(config), (batch_size, length), dtype=np.int32)
  tokens[:, length // 2] = 1  # [EOS]
  tokens[:, length // 2 + 1:] = 0  # [PAD]
  return {"image": rng.integers(0, 256, (batch_size, side, side, 3), dtype=np.uint8), "tokens": tokens}


def measure(config: ml_collections.ConfigDict, steps: int = 20, warmup: int = 3) -> dict:
  """Times `steps` training steps after `warmup` untimed ones (the first of which compiles).

  Returns:
    {"device", "device_count", "objective", "model", "dtype", "batch_size", "input_shape",
     "compile_seconds", "step_seconds", "unit", "per_second"}: images, tokens or (BERT)
    sequences per second of the global batch.
  """
  checks.check(config)
  if steps < 1 or warmup < 1:
    raise ValueError(f"steps and warmup must be >= 1, got {steps} and {warmup}")
  objective = objectives.build(config)
  mesh = mesh_lib.data_mesh()
  batch_size = config.train.batch_size
  example = synthetic_batch(config, batch_size)
  num_classes = None if "tokens" in example else _DATASET_SHAPES[config.data.name][3]
  tx, _ = optim.optimizer(config.optim, config.train.steps, batch_size)
  probe_tx = optax.adam(config.train.probe_lr)
  create = loop.state_factory(objective, {k: v[:2] for k, v in example.items()}, tx, probe_tx,
                              num_classes)
  state = jax.device_put(create(loop.init_key(config)), mesh_lib.replicated(mesh))
  train_step = step_lib.make_train_step(objective, tx, probe_tx, jax.random.key(config.seed), mesh)
  # The same host batch every step: the timing is of device work, not of the input pipeline.
  batch = data.to_global(example, mesh_lib.batch_sharded(mesh))

  start = time.perf_counter()
  state, metrics = train_step(state, batch)
  jax.block_until_ready(metrics)
  compile_seconds = time.perf_counter() - start
  for _ in range(warmup - 1):
    state, metrics = train_step(state, batch)
  jax.block_until_ready(metrics)

  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = train_step(state, batch)
  jax.block_until_ready((state, metrics))
  step_seconds = (time.perf_counter() - start) / steps
  if not np.isfinite(float(metrics["loss"])):
    raise FloatingPointError(f"the loss became {float(metrics['loss'])} during the benchmark")
  result = {
      "device": jax.devices()[0].device_kind,
      "device_count": jax.device_count(),
      "objective": config.objective,
      "dtype": config.model.dtype,
      "batch_size": batch_size,
      "compile_seconds": round(compile_seconds, 2),
      "step_seconds": step_seconds,
  }
  if "image" in example and "tokens" in example:  # image-caption pairs (CLIP)
    params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(state.params))
    tower = config.model.vit_preset if config.model.image_tower == "vit" else config.model.encoder
    return {**result, "model": f"{tower} + text transformer ({params / 1e6:.1f}M parameters)",
            "input_shape": list(example["image"].shape[1:]), "unit": "pairs",
            "per_second": batch_size / step_seconds}
  if "tokens" in example:
    params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(state.params))
    # Sentence pairs are counted as sequences (BERT's unit); packed windows as tokens.
    pairs = "nsp_label" in example
    unit, per_step = ("sequences", batch_size) if pairs else ("tokens", batch_size * config.text.seq_len)
    return {**result, "model": f"transformer {config.model.preset} ({params / 1e6:.1f}M parameters)",
            "input_shape": list(example["tokens"].shape[1:]), "unit": unit,
            "per_second": per_step / step_seconds}
  return {**result, "model": f"{config.model.encoder} width {config.model.width}",
          "input_shape": list(example["image"].shape[1:]), "unit": "images",
          "per_second": batch_size / step_seconds}


def format_result(result: dict) -> str:
  return (
      f"{result['objective']} {result['model']} {result['dtype']}, batch {result['batch_size']} of "
      f"{'x'.join(map(str, result['input_shape']))}, on {result['device_count']} x {result['device']}: "
      f"{result['step_seconds'] * 1e3:.1f} ms/step, {result['per_second']:,.0f} {result['unit']}/s "
      f"(compile {result['compile_seconds']:.1f} s)"
  )


def append_result(result: dict, workdir: str) -> str:
  """Appends `result` as one JSON line to WORKDIR/bench.jsonl; returns the path."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "bench.jsonl")
  with open(path, "a") as f:
    f.write(json.dumps(result) + "\n")
  return path
