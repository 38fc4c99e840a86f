"""The host input pipeline alone: how many examples per second the grain iterator of
`ssljax train` delivers, with no device work behind it.

    ssljax bench input --config configs/gpt.py [--bench_steps 50] [--workdir DIR]

It builds the iterator exactly as the trainer does (the objective's family `train_input`:
source, record transform -- decode, resize, tokenise, build sentence pairs -- and packing; then
`data.train_iterator` at the config's batch and seed) and times `batches` batches after
`warmup` untimed ones. Set beside `ssljax bench step` on the same config, it says which of
the two limits a run: if the pipeline delivers fewer examples per second than the step
consumes, the accelerator waits on the host.

The rate is examples over the wall time of the timed batches. grain reads ahead (threads and a
prefetch buffer), so single batches are not timed: what matters is the sustained rate. The
warm-up also absorbs building the source (loading the dataset, training a tokenizer in the
workdir for a text config the first time), which is not pipeline throughput.
"""

from __future__ import annotations

import tempfile
import time

import jax
import ml_collections

from ssljax import data, objectives
from ssljax.train import checks


def measure_input(config: ml_collections.ConfigDict, workdir: str | None = None, batches: int = 20,
                  warmup: int = 2) -> dict:
  """Times the trainer's input iterator for `config`; `workdir` holds what the family builds
  there (a text config's tokenizer; a run's workdir reuses the run's), default a temporary
  directory.

  Returns a dict (one JSON line): "objective", "dataset", "batch_size" (per process),
  "batches", "seconds", "examples_per_second", "unit" and "per_second" (the family's unit:
  images, tokens, sequences, pairs), "setup_seconds" (source and tokenizer, before the first
  batch) and "first_batch_seconds".
  """
  checks.check(config)
  if batches < 1 or warmup < 0:
    raise ValueError(f"batches must be >= 1 and warmup >= 0, got {batches} and {warmup}")
  if workdir is None:
    with tempfile.TemporaryDirectory(prefix="ssljax-bench-input-") as tmp:
      return measure_input(config, tmp, batches, warmup)
  objective = objectives.build(config)
  start = time.perf_counter()
  inp = objective.family.train_input(config, workdir)
  batch_size = config.train.batch_size // jax.process_count()
  iterator = data.train_iterator(inp.source, batch_size=batch_size, seed=config.seed,
                                 record_fn=inp.record_fn, iter_stage=inp.iter_stage)
  setup_seconds = time.perf_counter() - start

  start = time.perf_counter()
  next(iterator)  # starts the reader threads
  first_batch_seconds = time.perf_counter() - start
  for _ in range(warmup):
    next(iterator)
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  seconds = time.perf_counter() - start
  examples_per_second = batches * batch_size / seconds
  return {
      "objective": config.objective,
      "dataset": config.data.name,
      "batch_size": batch_size,
      "batches": batches,
      "seconds": seconds,
      "examples_per_second": examples_per_second,
      "unit": inp.unit,
      "per_second": examples_per_second * inp.units_per_example,
      "setup_seconds": round(setup_seconds, 2),
      "first_batch_seconds": round(first_batch_seconds, 3),
  }


def format_input_result(result: dict) -> str:
  return (f"{result['objective']} input pipeline on {result['dataset']}, batch {result['batch_size']}: "
          f"{result['examples_per_second']:,.0f} examples/s = {result['per_second']:,.0f} {result['unit']}/s "
          f"over {result['batches']} batches (setup {result['setup_seconds']:.1f} s, first batch "
          f"{result['first_batch_seconds']:.2f} s)")
