"""`ssljax bench step` and `ssljax bench input`: what the CLI runs, printed as a table and as
one JSON line per run (also appended to WORKDIR/bench.jsonl when a workdir is given)."""

from __future__ import annotations

import difflib
import json

import jax
import ml_collections

from ssljax.bench import input_pipeline, presets, throughput
from ssljax.errors import UserError


def bench_step(config: ml_collections.ConfigDict | None, preset_names: str | None, *, steps: int, warmup: int,
               peak_tflops: float | None = None, per_device_batch: int | None = None,
               workdir: str | None = None) -> list[dict]:
  """Measures `config`, or each of the comma-separated `preset_names` in turn (a config's
  batch is its own; a preset's is `per_device_batch` or the preset's, times the devices)."""
  # The compiler's own time, not a load from the persistent cache that the CLI keeps for
  # train and eval (a second bench of the same config would otherwise report ~0 s).
  jax.config.update("jax_enable_compilation_cache", False)
  runs = [(None, config)] if config is not None else []
  for name in filter(None, (preset_names or "").split(",")):
    check_preset(name)
    runs.append((name, presets.preset_config(name, per_device_batch)))
  results = []
  for name, run_config in runs:
    result = throughput.measure(run_config, steps=steps, warmup=warmup, peak_tflops=peak_tflops, preset=name)
    _emit(result, workdir)
    results.append(result)
  print(throughput.format_table(results))
  return results


def check_preset(name: str) -> None:
  """A UserError for a preset name (`--preset`) that is not one, with the closest suggested."""
  if name not in presets.PRESETS:
    close = difflib.get_close_matches(name, presets.PRESETS, n=1)
    guess = f"did you mean {close[0]!r}? " if close else ""
    raise UserError(f"unknown bench preset {name!r}; {guess}choose one of {', '.join(presets.PRESETS)}")


def bench_input(config: ml_collections.ConfigDict, *, batches: int, warmup: int, workdir: str | None = None) -> dict:
  result = input_pipeline.measure_input(config, workdir, batches=batches, warmup=warmup)
  _emit(result, workdir)
  print(input_pipeline.format_input_result(result))
  return result


def _emit(result: dict, workdir: str | None) -> None:
  print(json.dumps(result), flush=True)
  if workdir:
    throughput.append_result(result, workdir)
