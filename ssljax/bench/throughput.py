"""Training-step throughput of any config, on synthetic inputs, on whatever devices JAX sees.

    ssljax bench step --config configs/simclr.py:cifar10
    ssljax bench step --preset gpt2_124m [--bench_steps 30] [--peak_tflops 989.4]
    ssljax bench step --preset gpt2_124m_tiny,bert_base_tiny,simclr_resnet50_tiny,clip_base_tiny

It builds exactly the state and the jit(shard_map) step that `ssljax train` builds (same
objective, optimizer, donated state), feeds it random inputs of the dataset's
shape, and reports: the compile time; the step time, the median over the timed steps after
warm-up, each step waited for on the device; the throughput in the objective's unit; FLOPs per
step from XLA's cost analysis of the compiled step (and, for transformers, from the 6N + 12LdT
formula, `flops.py`); MFU against the device's peak; and the peak device memory. No dataset is
read, so the figures isolate device work (augmentation and masking included, since they run on
the device) from input-pipeline speed, which `ssljax bench input` measures on its own.
"""

from __future__ import annotations

import json
import os
import time

import jax
import ml_collections
import numpy as np

from ssljax import data, objectives
from ssljax.bench import flops
from ssljax.models import from_config
from ssljax.text import vocab
from ssljax.train import checks, loop, mesh as mesh_lib, optim, sharding, step as step_lib

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
    rng = np.random.default_rng(seed)
    tokens = _ordinary_tokens(config, rng, (batch_size, config.text.seq_len))
    if "max_predictions" not in config.text:
      return {"tokens": tokens}
    return _sentence_pairs(tokens, rng, vocab.special_ids(config))
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


def _ordinary_tokens(config: ml_collections.ConfigDict, rng: np.random.Generator, shape) -> np.ndarray:
  """Random ids of the config's real vocabulary that are no special token: int32 `shape`."""
  ordinary = np.setdiff1d(np.arange(vocab.real_vocab_size(config)), list(vocab.special_ids(config).values()))
  return ordinary[rng.integers(0, len(ordinary), shape)].astype(np.int32)


def _sentence_pairs(tokens: np.ndarray, rng: np.random.Generator, special_ids: dict[str, int]) -> dict:
  """BERT's inputs from random tokens (n, T): [CLS] A [SEP] B [SEP] with A and B of half the
  length each, segment ids and random next-sentence labels."""
  from ssljax.text import pairs  # only BERT configs need the pair layout

  n, length = tokens.shape
  half = (length - pairs.NUM_PAIR_SPECIALS) // 2
  examples = [pairs.pair_example(row[:half], row[half:2 * half], int(label), length, special_ids)
              for row, label in zip(tokens, rng.integers(0, 2, n))]
  return {key: np.stack([e[key] for e in examples]) for key in examples[0]}


def _image_text_pairs(config: ml_collections.ConfigDict, batch_size: int, rng: np.random.Generator) -> dict:
  """CLIP's inputs: random RGB images of `data.image_size` and random captions of half the
  context, each ended by [EOS] (where the text tower reads its feature) and padded."""
  side, length = config.data.image_size, config.text.seq_len
  special = vocab.special_ids(config)
  tokens = _ordinary_tokens(config, rng, (batch_size, length))
  tokens[:, length // 2] = special["eos"]
  tokens[:, length // 2 + 1:] = special["pad"]
  return {"image": rng.integers(0, 256, (batch_size, side, side, 3), dtype=np.uint8), "tokens": tokens}


# Joint-embedding objectives train on two augmented views of every image, so their throughput
# counts views (images x views), the unit SimCLR and BYOL report; pretext objectives count images.
# With multi-crop (DINO, SwAV, or SimCLR and BYOL with `multi_crop.num_local` > 0) every local crop
# counts as a view too, whatever its size (`_unit`).
VIEWS_PER_IMAGE = {"simclr": 2, "byol": 2, "vicreg": 2, "moco_v3": 2, "barlow_twins": 2, "dino": 2, "swav": 2}


def measure(config: ml_collections.ConfigDict, steps: int = 20, warmup: int = 3, *,
            peak_tflops: float | None = None, preset: str | None = None) -> dict:
  """Compiles the train step, runs `warmup` untimed steps and times `steps` more, one by one.

  `steps=0` compiles only, from the state's and batch's shapes (nothing is allocated, so a
  published-size model can be costed on a CPU): FLOPs and planned memory, no timing.
  `peak_tflops` overrides the device table of `flops.PEAK_BF16_TFLOPS` (needed for MFU on
  devices it does not list, a CPU among them).

  Returns a dict (one JSON line): "device", "device_count", "objective", "preset", "model",
  "dtype" (resolved), "batch_size" (global) and "per_device_batch", "input_shape",
  "compile_seconds", "step_seconds" (median), "step_seconds_min", "step_seconds_max",
  "timed_steps", "unit" and "per_second" (views, images, tokens, sequences or pairs of the
  global batch), "flops_per_step" (XLA, the global step: per device x devices),
  "flops_per_device_step", "analytic_flops_per_step", "analytic_params" and
  "analytic_formula" (transformers; None otherwise), "tflops_per_device" (achieved, XLA's
  count), "peak_tflops", "mfu" and "mfu_analytic" (None where the peak is unknown),
  "peak_memory_bytes" (the allocator's peak where the device reports one, else XLA's plan),
  "memory_source" and "planned_memory_bytes" (XLA's plan for the step, per device).
  """
  checks.check(config)
  if steps < 0 or warmup < 0:
    raise ValueError(f"steps and warmup must be >= 0, got {steps} and {warmup}")
  objective = objectives.build(config)
  mesh = mesh_lib.data_mesh()
  batch_size = config.train.batch_size
  example = synthetic_batch(config, batch_size)
  # The state laid out as `ssljax train` lays it out: replicated, or split (train.param_sharding).
  fsdp = config.train.param_sharding == "fsdp"
  tx, _ = optim.optimizer(config.optim, config.train.steps, batch_size, sharded=fsdp)
  create = loop.state_factory(objective, {k: v[:2] for k, v in example.items()}, tx)
  specs = sharding.state_specs(jax.eval_shape(create, loop.init_key(config)), config.train, jax.device_count())
  state_shardings = sharding.named(mesh, specs)
  train_step = step_lib.make_train_step(objective, tx, jax.random.key(config.seed), mesh,
                                        state_specs=specs)
  batch_sharding = mesh_lib.batch_sharded(mesh)
  if steps:
    state = jax.jit(create, out_shardings=state_shardings)(loop.init_key(config))
    # The same host batch every step: the timing is of device work, not of the input pipeline.
    batch = data.to_global(example, batch_sharding)
  else:
    state = loop.abstract_state(create, config, state_shardings)
    batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=batch_sharding) for k, v in example.items()}

  start = time.perf_counter()
  compiled = train_step.lower(state, batch).compile()
  compile_seconds = time.perf_counter() - start
  # Shapes only, taken before the timed steps donate (and so delete) the state's buffers.
  params = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), state.params)
  times = _time_steps(compiled, state, batch, steps, warmup) if steps else []

  unit, units_per_example = _unit(config, example)
  step_seconds = float(np.median(times)) if times else None
  count = jax.device_count()
  return {
      "device": jax.devices()[0].device_kind,
      "device_count": count,
      "objective": config.objective,
      "preset": preset,
      "model": _describe_model(config, example, params),
      "dtype": from_config.resolve_dtype(config.model.dtype),
      "batch_size": batch_size,
      "per_device_batch": batch_size // count,
      "input_shape": list(example["image" if "image" in example else "tokens"].shape[1:]),
      "compile_seconds": round(compile_seconds, 2),
      "step_seconds": step_seconds,
      "step_seconds_min": min(times) if times else None,
      "step_seconds_max": max(times) if times else None,
      "timed_steps": len(times),
      "unit": unit,
      "per_second": batch_size * units_per_example / step_seconds if times else None,
      **_costs(compiled, config, params, example, step_seconds, peak_tflops),
  }


def _costs(compiled, config, params, example, step_seconds: float | None, peak_tflops: float | None) -> dict:
  """FLOPs (XLA's and the formula's), achieved rate, MFU and memory of the compiled step."""
  device, count = jax.devices()[0], jax.device_count()
  per_device = flops.xla_flops(compiled)
  analytic = flops.analytic_flops(config, params, example)
  peak = peak_tflops if peak_tflops is not None else flops.peak_tflops(device.device_kind)
  planned = flops.planned_memory(compiled)
  allocated = flops.allocator_peak(device) if step_seconds else None  # a compile-only run allocates nothing
  return {
      "flops_per_step": per_device * count if per_device is not None else None,
      "flops_per_device_step": per_device,
      "analytic_flops_per_step": analytic["flops"] if analytic else None,
      "analytic_params": analytic["params"] if analytic else None,
      "analytic_formula": analytic["formula"] if analytic else None,
      "tflops_per_device": per_device / step_seconds / 1e12 if step_seconds and per_device else None,
      "peak_tflops": peak,
      "mfu": flops.mfu(per_device, step_seconds, peak),
      "mfu_analytic": flops.mfu(analytic["flops"] / count if analytic else None, step_seconds, peak),
      "peak_memory_bytes": allocated if allocated is not None else planned,
      "memory_source": ("device.memory_stats" if allocated is not None
                        else "compiled.memory_analysis" if planned is not None else None),
      "planned_memory_bytes": planned,
  }


def _time_steps(compiled, state, batch, steps: int, warmup: int) -> list[float]:
  """Seconds of each of `steps` steps after `warmup` untimed ones. Every step is waited for
  on the device (`block_until_ready`), so a step's time is its own, not its dispatch's."""
  for _ in range(warmup):
    state, metrics = compiled(state, batch)
  jax.block_until_ready(state)
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - start)
  if not np.isfinite(float(metrics["loss"])):
    raise FloatingPointError(f"the loss became {float(metrics['loss'])} during the benchmark")
  return times


def _unit(config: ml_collections.ConfigDict, example: dict) -> tuple[str, int]:
  """What the throughput counts, and how many of it one example of the batch holds."""
  if "image" in example and "tokens" in example:
    return "pairs", 1
  if "nsp_label" in example:  # sentence pairs: BERT's unit is the sequence
    return "sequences", 1
  if "tokens" in example:  # packed windows
    return "tokens", example["tokens"].shape[1]
  views = VIEWS_PER_IMAGE.get(config.objective)
  if views and "multi_crop" in config:
    views += config.multi_crop.num_local
  return ("views", views) if views else ("images", 1)


def _describe_model(config: ml_collections.ConfigDict, example: dict, params) -> str:
  count = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
  size = f"{count / 1e6:.1f}M" if count >= 1e5 else f"{count / 1e3:.1f}K"
  if "image" in example and "tokens" in example:  # image-caption pairs (CLIP)
    tower = config.model.vit_preset if config.model.image_tower == "vit" else config.model.encoder
    return f"{tower} + text transformer ({size} parameters)"
  if "tokens" in example:
    return f"transformer {config.model.preset} ({size} parameters)"
  if config.model.encoder.startswith("vit"):  # a ViT preset: no width of its own
    return f"{config.model.encoder} ({size} parameters)"
  return f"{config.model.encoder} width {config.model.width} ({size} parameters)"


def format_result(result: dict) -> str:
  """One line: what ran, and how fast."""
  line = (f"{result['objective']} {result['model']} {result['dtype']}, batch {result['batch_size']} of "
          f"{'x'.join(map(str, result['input_shape']))}, on {result['device_count']} x {result['device']}: ")
  if result["step_seconds"] is None:
    return line + f"compiled in {result['compile_seconds']:.1f} s, {flops.format_flops(result['flops_per_step'])}/step"
  return line + (f"{result['step_seconds'] * 1e3:.1f} ms/step, {result['per_second']:,.0f} {result['unit']}/s "
                 f"(compile {result['compile_seconds']:.1f} s)")


# (header, width, cell) of each column of `format_table`.
_COLUMNS = (
    ("run", 22, lambda r: r["preset"] or r["objective"]),
    ("model", 24, lambda r: r["model"]),
    ("devices", 8, lambda r: str(r["device_count"])),
    ("batch", 6, lambda r: str(r["batch_size"])),
    ("dtype", 9, lambda r: r["dtype"]),
    ("compile s", 9, lambda r: f"{r['compile_seconds']:.1f}"),
    ("step ms", 9, lambda r: _maybe(r["step_seconds"], lambda v: f"{v * 1e3:.1f}")),
    ("throughput", 22, lambda r: _maybe(r["per_second"], lambda v: f"{v:,.0f} {r['unit']}/s")),
    ("FLOPs/step", 13, lambda r: flops.format_flops(r["flops_per_step"])),
    ("analytic", 13, lambda r: flops.format_flops(r["analytic_flops_per_step"])),
    ("TFLOP/s/dev", 11, lambda r: _maybe(r["tflops_per_device"], lambda v: f"{v:.3g}")),
    ("MFU", 6, lambda r: _maybe(r["mfu"], lambda v: f"{v:.1%}")),
    ("peak mem", 10, lambda r: _maybe(r["peak_memory_bytes"], _bytes)),
)


def _maybe(value, fmt) -> str:
  return "-" if value is None else fmt(value)


def _bytes(n: int) -> str:
  for unit in ("B", "KiB", "MiB"):
    if n < 1024:
      return f"{n:.0f} {unit}"
    n /= 1024
  return f"{n:,.1f} GiB"


def format_table(results: list[dict]) -> str:
  """A table with one row per result; "-" where a figure is unknown (MFU without a peak, step
  time of a compile-only run)."""
  rows = [[header for header, _, _ in _COLUMNS]]
  rows += [[cell(r) for _, _, cell in _COLUMNS] for r in results]
  widths = [max(width, *(len(row[i]) for row in rows)) for i, (_, width, _) in enumerate(_COLUMNS)]
  return "\n".join("  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
                   for row in rows)


def append_result(result: dict, workdir: str) -> str:
  """Appends `result` as one JSON line to WORKDIR/bench.jsonl; returns the path."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "bench.jsonl")
  with open(path, "a") as f:
    f.write(json.dumps(result) + "\n")
  return path
