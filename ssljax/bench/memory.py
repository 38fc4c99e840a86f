"""Per-device memory of a config's train step, replicated against sharded parameters (FSDP),
from XLA's compiled memory analysis: nothing is allocated or run, so a 1.3B-parameter model is
costed on a laptop's CPU (with fake devices: XLA_FLAGS=--xla_force_host_platform_device_count=8).

    ssljax bench memory --config configs/gpt.py:gpt2 --config.train.batch_size=8
    ssljax bench memory --config configs/gpt.py:gpt2 --config.model.preset=gpt_1b3 --param_sharding fsdp

The step is the one `ssljax train` compiles (same objective, optimizer, shardings, donated
state), lowered from abstract shapes (`jax.eval_shape`). The figures are XLA's plan for one device: the arguments (its
part of the state and of the batch), the outputs (the new state, written over the donated old
one: `alias`), and the temporaries (activations kept for the backward pass, gradients, the
gathered parameters under FSDP). A CPU compiler plans differently from a GPU's (other fusions,
no cuDNN attention), so treat the temporaries as an estimate; the state's share is exact.
"""

from __future__ import annotations

import jax
import ml_collections
import numpy as np

from ssljax import objectives
from ssljax.bench.throughput import synthetic_batch
from ssljax.train import checks, loop, mesh as mesh_lib, optim, sharding, step as step_lib

_MIB = 2**20


def step_memory(config: ml_collections.ConfigDict, param_sharding: str = "replicated") -> dict:
  """XLA's per-device memory plan of `config`'s train step with `param_sharding`.

  Returns {"objective", "model", "param_sharding", "device_count", "batch_size",
  "input_shape", "params", "state_bytes" (this device's part of the train state, from its
  shardings), "argument_bytes", "output_bytes", "alias_bytes", "temp_bytes", "total_bytes"
  (arguments + outputs - aliased + temporaries: the most the step holds at once)}.
  """
  if param_sharding not in sharding.MODES:
    raise ValueError(f"param_sharding must be one of {sharding.MODES}, got {param_sharding!r}")
  config = ml_collections.ConfigDict(config.to_dict())  # unlocked copy
  config.train.param_sharding = param_sharding
  checks.check(config)
  objective = objectives.build(config)
  mesh = mesh_lib.data_mesh()
  count = jax.device_count()
  example = synthetic_batch(config, config.train.batch_size)
  tx, _ = optim.optimizer(config.optim, config.train.steps, config.train.batch_size,
                          sharded=param_sharding == "fsdp")
  create = loop.state_factory(objective, {k: v[:2] for k, v in example.items()}, tx)
  specs = sharding.state_specs(jax.eval_shape(create, loop.init_key(config)), config.train, count)
  state = loop.abstract_state(create, config, sharding.named(mesh, specs))
  batch_sharding = mesh_lib.batch_sharded(mesh)
  batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=batch_sharding) for k, v in example.items()}
  per_layer = param_sharding == "fsdp" and config.train.fsdp_gather == "layer"
  train_step = step_lib.make_train_step(objective, tx, jax.random.key(config.seed), mesh, state_specs=specs,
                                        gather_per_layer=per_layer)
  analysis = train_step.lower(state, batch).compile().memory_analysis()
  if analysis is None:
    raise RuntimeError(f"backend {jax.default_backend()!r} gives no compiled memory analysis")
  argument, output = int(analysis.argument_size_in_bytes), int(analysis.output_size_in_bytes)
  alias, temp = int(analysis.alias_size_in_bytes), int(analysis.temp_size_in_bytes)
  params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(state.params))
  key = "tokens" if "tokens" in example else "image"
  return {
      "objective": config.objective,
      "model": _model_name(config),
      "param_sharding": param_sharding + ("/layer" if per_layer else "") + (" remat" if config.model.get("remat") else ""),
      "device_count": count,
      "batch_size": config.train.batch_size,
      "input_shape": list(example[key].shape[1:]),
      "params": params,
      "state_bytes": state_bytes_per_device(state, specs, count),
      "argument_bytes": argument,
      "output_bytes": output,
      "alias_bytes": alias,
      "temp_bytes": temp,
      "total_bytes": argument + output - alias + temp,
  }


def state_bytes_per_device(state, specs, count: int) -> int:
  """Bytes of one device's part of the state: a split leaf's 1/count, a replicated one whole."""
  sizes = jax.tree.map(lambda x, spec: x.size * np.dtype(x.dtype).itemsize // (count if sharding.is_sharded(spec) else 1),
                       state, specs)
  return int(sum(jax.tree.leaves(sizes)))


def _model_name(config: ml_collections.ConfigDict) -> str:
  if "text" in config:
    return f"transformer {config.model.preset}"
  return f"{config.model.encoder} width {config.model.width}"


def format_rows(rows: list[dict]) -> str:
  """A table, one line per measured step, sizes in MiB per device."""
  if not rows:
    return ""
  first = rows[0]
  columns = ("state", "argument", "output", "alias", "temp", "total")
  lines = [f"{first['objective']} train step, per-device memory planned by XLA on {first['device_count']} x "
           f"{jax.devices()[0].platform}, global batch {first['batch_size']} x "
           f"{'x'.join(map(str, first['input_shape']))} (MiB per device)",
           f"{'model':<24} {'params':>9} {'sharding':<11}" + "".join(f" {c:>9}" for c in columns)]
  for r in rows:
    sizes = "".join(f" {r[c + '_bytes'] / _MIB:>9,.1f}" for c in columns)
    lines.append(f"{r['model']:<24} {r['params'] / 1e6:>8.1f}M {r['param_sharding']:<11}{sizes}")
  return "\n".join(lines)
