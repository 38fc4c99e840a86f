"""Fine-tuning a pretrained encoder with the whole encoder trained: a BERT encoder on downstream
tasks (Devlin et al. 2019, arXiv 1810.04805, section 4): sequence and sentence-pair
classification, token tagging and span extraction; or the encoder of an image run (MAE, SimCLR,
...) with a linear head on its dataset's labels (`images`; configs/finetune_images.py).

  results = ssljax.finetune.run("runs/bert", "bbc_topic", {"labels_per_class": 10})

`run` trains a head for the task (`heads`) on the encoder of a finished BERT run, on the task's
examples (`tasks`, `inputs`), each learning rate and label draw a run of the trainer under the
output directory (`protocol`), chooses the learning rate on the validation split, scores the
test split once, fits the task's baseline (`baselines`) on the same labels, and writes
everything to `finetune.json` in the output directory (default
<pretrained workdir>/finetune/<task>[-scratch][-<label budget>]/). Run again, it skips the
finished trials and resumes the others.
`ssljax finetune --workdir RUN --task NAME [--config.KEY=VALUE]` is the same from the shell; an
image run takes no task (`run("runs/mae")`, `ssljax finetune --workdir runs/mae`): `run`
dispatches on the run's family.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import ml_collections

from ssljax.downstream import baselines, heads, inputs, metrics, tasks
from ssljax.downstream.tasks import TASKS, TaskDataMissing
from ssljax.errors import UserError

RESULTS_FILE = "finetune.json"


def default_config(task_name: str = "bbc_topic") -> ml_collections.ConfigDict:
  """configs/finetune.py's config for a task (what `ssljax finetune --task` starts from)."""
  from ssljax.train.defaults import load_config

  return load_config(f"finetune:{task_name}")


def with_overrides(config: ml_collections.ConfigDict,
                   overrides: Mapping[str, Any] | None) -> ml_collections.ConfigDict:
  """A copy of `config` with `overrides` ({"labels_per_class": 10, "splits.train": "train[:1%]"})
  applied; a key the config does not have is an error that names it."""
  # An unlocked copy; its linked keys (configs/finetune.py's trainer keys) stay linked.
  config = ml_collections.ConfigDict(config.to_dict(preserve_field_references=True))
  flat = dict(overrides or {})
  for key in flat:
    node = config
    *parents, leaf = key.split(".")
    for part in parents:
      node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
      raise KeyError(f"no fine-tuning config key {key!r}; keys: {sorted(config.keys())}")
  for key, value in flat.items():
    node = config
    *parents, leaf = key.split(".")
    for part in parents:
      node = node[part]
    node[leaf] = tuple(value) if isinstance(value, list) else value
  config.lock()
  return config


def run_name(config: ml_collections.ConfigDict) -> str:
  """<task>[-scratch][-<label budget>]: runs of one pretrained model that differ in these do not
  overwrite each other."""
  from ssljax.downstream.examples import budget_name

  name = config.task + ("-scratch" if config.init == "scratch" else "")
  budget = budget_name(config)
  return name if budget == "all" else f"{name}-{budget}"


def output_dir_for(pretrained_workdir: str, config: ml_collections.ConfigDict) -> str:
  return config.get("output_dir") or os.path.join(pretrained_workdir, "finetune", run_name(config))


def load_encoder(pretrained_workdir: str):
  """(encoder TransformerConfig, pretrained parameters, tokenizer) of a finished BERT run.

  The parameters are {"encoder": ...} and, when the run has one, {"pooler": ...}: BERT's pooler
  (dense + tanh on [CLS]) is pretrained by next-sentence prediction, and its classification
  heads start from it (Devlin et al. 2019, section 4).
  """
  from ssljax import objectives
  from ssljax.text import tokenizer as tokenizer_lib

  objective, params, _ = objectives.restore_model(pretrained_workdir)
  encoder_config = objective.extras.get("encoder_config")
  if encoder_config is None or "encoder" not in params:
    raise UserError(f"{pretrained_workdir!r} is a {objective.name!r} run; fine-tuning needs a BERT run "
                    "(an objective with extras['encoder_config'] and params['encoder'])")
  if callable(encoder_config):
    encoder_config = encoder_config()
  pretrained = {name: params[name] for name in ("encoder", "pooler") if name in params}
  return encoder_config, pretrained, tokenizer_lib.load(pretrained_workdir)


def run(pretrained_workdir: str, task_name: str | None = None, config_overrides: Mapping[str, Any] | None = None,
        *, config: ml_collections.ConfigDict | None = None, output_dir: str | None = None,
        progress: bool = True) -> dict:
  """Fine-tunes the BERT encoder of `pretrained_workdir` on a task and writes finetune.json.

  Args:
    pretrained_workdir: the workdir of an `ssljax train --config configs/bert.py` run.
    task_name: a name of `tasks.TASKS`; the default config of configs/finetune.py for it is
      used unless `config` is given.
    config_overrides: {key: value} applied to the config ("init": "scratch",
      "labels_per_class": 10, "label_fraction": 0.01, "draws": 3, "lrs": (1e-4,), ...).
    config: a full fine-tuning config instead (the CLI passes its parsed --config).
    output_dir: where finetune.json goes; default config.output_dir, else
      <pretrained_workdir>/finetune/<run name>.

  Returns:
    The results: the chosen learning rate, validation and test metrics (mean and std over
    label draws), every trial's validation score, the baseline, sizes and timing.
  """
  from ssljax.finetune import images, protocol

  if images.is_image_run(pretrained_workdir):
    return _run_images(pretrained_workdir, task_name, config_overrides, config=config, output_dir=output_dir,
                       progress=progress)
  if config is None:
    config = default_config(task_name or "bbc_topic")
  elif task_name and task_name != config.task:
    raise UserError(f"task {task_name!r} given, but the config is for {config.task!r}")
  config = with_overrides(config, config_overrides)
  task = tasks.for_config(config)
  out = output_dir or output_dir_for(pretrained_workdir, config)
  results = protocol.finetune(task, pretrained_workdir, config, out, progress=progress)
  return _write_results(results, pretrained_workdir, config, out)


def _run_images(pretrained_workdir: str, task_name: str | None, config_overrides: Mapping[str, Any] | None, *,
                config: ml_collections.ConfigDict | None, output_dir: str | None, progress: bool) -> dict:
  """`run` for an image run: its encoder fine-tuned on its dataset's labels (`images`)."""
  from ssljax.finetune import images

  if task_name:
    raise UserError(f"{pretrained_workdir!r} is an image run: it is fine-tuned on its own dataset's labels "
                    f"(configs/finetune_images.py), not on a text task; drop --task {task_name}")
  config = images.default_config() if config is None else config
  images.check_image_config(config)
  config = with_overrides(config, config_overrides)
  out = output_dir or config.get("output_dir") or os.path.join(pretrained_workdir, "finetune", images.run_name(config))
  results = images.finetune(pretrained_workdir, config, out, progress=progress)
  return _write_results(results, pretrained_workdir, config, out)


def _write_results(results: dict, pretrained_workdir: str, config: ml_collections.ConfigDict, out: str) -> dict:
  """finetune.json in `out`: the results, the pretrained workdir and the config."""
  results["pretrained_workdir"] = os.path.abspath(pretrained_workdir)
  results["config"] = config.to_dict()
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, RESULTS_FILE), "w") as f:
    json.dump(results, f, indent=2, default=_jsonable)
  results["output_dir"] = out
  return results


def _jsonable(value):
  if hasattr(value, "tolist"):
    return value.tolist()
  if isinstance(value, tuple):
    return list(value)
  raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def format_results(results: dict) -> str:
  """The printed summary: the fine-tuned model's scores beside the baseline's."""
  metric_keys = [k for k in results["test"] if not k.endswith("_std")]
  init = "pretrained encoder" if results["init"] == "pretrained" else "random-init encoder"
  draws = "" if results["draws"] == 1 else f" (mean ± std over {results['draws']} draws)"
  lines = [f"Fine-tuning {results['task']} ({results['description']}): {init}, labels: {results['labels']}{draws}",
           f"learning rate {results['chosen']['lr']:g} chosen on validation ({results['metric']}); "
           f"{results['examples']['train']} train / {results['examples']['validation']} validation / "
           f"{results['examples']['test']} test examples",
           f"{'':<24}" + "".join(f"{k:>16}" for k in metric_keys)]

  def row(name, scores):
    cells = []
    for k in metric_keys:
      if k not in scores:
        cells.append(f"{'-':>16}")
      else:
        std = scores.get(f"{k}_std")
        cells.append(f"{scores[k]:>16.4f}" if std is None else f"{f'{scores[k]:.4f} ± {std:.4f}':>16}")
    return f"{name:<24}" + "".join(cells)

  lines.append(row("fine-tuned (test)", results["test"]))
  if results.get("baseline"):
    lines.append(row(f"{results['baseline']['name']} (test)", results["baseline"]["test"]))
  if "output_dir" in results:
    lines.append(f"results in {os.path.join(results['output_dir'], RESULTS_FILE)}")
  return "\n".join(lines)


__all__ = ["RESULTS_FILE", "TASKS", "TaskDataMissing", "baselines", "default_config", "format_results", "heads",
           "inputs", "load_encoder", "metrics", "run", "run_name", "tasks", "with_overrides"]
