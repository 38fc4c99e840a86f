"""The evaluation table: every image objective pretrained with its default config and probed
side by side, next to a calibrated random-init encoder and raw pixels.

  ssljax table --dataset mnist5k --workdir runs/table                     # test split, once
  ssljax table --dataset mnist5k --workdir runs/trials --split validation # recipe trials

It sits above both the trainer and the evaluators (it trains, then evaluates). For each
objective, `configs/<objective>.py:get_config(variant)` (variant defaults to the dataset's name)
is trained with `ssljax.train.loop.train` in `<workdir>/<objective>` and its encoder is probed
exactly as `ssljax eval` probes it (the evaluators linear_probe, few_label_probe, knn): a linear probe with all
labels, one with 10 labels per class (mean and std over draws of the labelled subset), and
weighted kNN, fit on the training split and scored on `split`. The wall time of the pretraining
is recorded too. The table goes to stdout and to `<workdir>/table.json` (`table_<split>.json`
for a split other than test):

  {"dataset", "split", "results": {method: {"linear_probe", "linear_probe_10_per_class",
                                            "linear_probe_10_per_class_std", "knn",
                                            "pretrain_seconds"}}}

Accuracies are fractions in [0, 1]; the baselines have pretrain_seconds 0. Rerunning with the
same workdir reuses finished runs of the same config (and their recorded times), so an
interrupted table picks up where it stopped.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import ml_collections

from ssljax import objectives as objectives_lib
from ssljax import workdir as workdir_lib
from ssljax import evaluators
from ssljax.errors import UserError
from ssljax.train import defaults, loop

OBJECTIVES = ("simclr", "byol", "vicreg", "moco_v3", "barlow_twins", "dino", "swav", "mae", "rotation",
              "patch_placement", "supervised")
TABLE_FILE = "table.json"
TIMING_FILE = "pretrain_timing.json"


def default_configs_dir() -> str:
  """`<repo>/configs`, next to the `ssljax` package of a source checkout."""
  return defaults.CONFIGS_DIR


def load_config(objective: str, variant: str, configs_dir: str | None = None) -> ml_collections.ConfigDict:
  """`get_config(variant)` of `<configs_dir>/<objective>.py` (default: the repository's)."""
  return defaults.load_config(f"{objective}:{variant}", configs_dir or default_configs_dir())


def _apply_overrides(config: ml_collections.ConfigDict, overrides: Mapping[str, Any] | None):
  """Dotted keys, e.g. {"train.steps": 50}; unknown keys and wrong types raise."""
  if overrides:
    config.update_from_flattened_dict(dict(overrides))
  return config


def _timing_path(workdir: str) -> str:
  return os.path.join(workdir, TIMING_FILE)


def _finished_run(workdir: str, config: ml_collections.ConfigDict) -> float | None:
  """The recorded pretraining time of a finished run of this very config, else None."""
  try:
    with open(_timing_path(workdir)) as f:
      timing = json.load(f)
  except (OSError, ValueError):
    return None
  same = timing.get("config") == json.loads(config.to_json_best_effort())
  return float(timing["pretrain_seconds"]) if same else None


def pretrain(config: ml_collections.ConfigDict, workdir: str, *, progress: bool = True):
  """Trains (or reuses a finished run of) `config` in `workdir`.

  Returns (objective, params, model_state, pretrain_seconds). The time is the wall time of
  `loop.train` in the call that finished the run (compilation included); a run resumed
  from an interrupted one counts only the resumed part.
  """
  _check_same_config(workdir, config)
  seconds = _finished_run(workdir, config)
  if seconds is not None:
    objective, params, model_state = objectives_lib.restore_model(workdir, config)
    return objective, params, model_state, seconds
  start = time.perf_counter()
  state = loop.train(config, workdir, progress=progress)
  seconds = time.perf_counter() - start
  params, model_state = jax.device_get((state.params, state.model_state))
  if jax.process_index() == 0:
    with open(_timing_path(workdir), "w") as f:
      json.dump({"pretrain_seconds": seconds, "config": json.loads(config.to_json_best_effort())}, f, indent=2)
  return objectives_lib.build(config), params, model_state, seconds


def _check_same_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Stops before `loop.train` would resume another config's checkpoints in `workdir`. Stricter
  than the trainer's own check (`checks.check_resume`): a table row is the result of exactly
  its config, so no key may differ."""
  saved = workdir_lib.saved_config(workdir)
  if saved is None:
    return
  differing = list(workdir_lib.config_differences(saved, config))
  if differing:
    raise UserError(f"{workdir} holds a run of another config (it differs in {', '.join(differing)}); "
                    "remove that directory or choose another --workdir")


def _encoder_spec(config: ml_collections.ConfigDict) -> tuple:
  m = config.model
  return (m.encoder, m.width, m.stem, m.stem_stride)


def _baselines_of(configs: dict[str, ml_collections.ConfigDict]) -> dict[str, dict[str, str]]:
  """{objective: {baseline: its row's name}}: which objective's evaluation also probes which
  baseline. Raw pixels once, with the first objective; a calibrated random-init encoder once per
  distinct encoder architecture, with the first objective that uses it (built exactly as
  `ssljax eval` builds its random_init row): the first is "random_init", one with a different
  encoder (patch placement's stride-1 stem, say) "random_init_<objective>"."""
  out, seen = {}, set()
  for name, config in configs.items():
    out[name] = {}
    if _encoder_spec(config) not in seen:
      out[name]["random_init"] = "random_init" if not seen else f"random_init_{name}"
      seen.add(_encoder_spec(config))
  out[next(iter(configs))]["raw_pixels"] = "raw_pixels"
  return out


PROBES = ("linear_probe", "few_label_probe", "knn")


def probe_rows(objective, params, model_state, config: ml_collections.ConfigDict, workdir: str, split: str,
               baselines: Mapping[str, str]) -> dict[str, dict[str, float]]:
  """{encoder: {"linear_probe", "linear_probe_<k>_per_class", "..._std", "knn"}} of the run's
  encoder and `baselines` ({baseline: row name}), from the image evaluators of its config."""
  config = _apply_overrides(copy.deepcopy(config), {"eval.baselines": tuple(baselines)})
  with config.unlocked():
    config.evals = ml_collections.ConfigDict({name: config.evals[name] for name in PROBES})
  reports = evaluators.from_config(objective, config, workdir).run(params, model_state, split)
  few = reports["few_label_probe"]
  column = f"linear_probe_{few['labels_per_class']}_per_class"
  rows = {}
  for encoder, accuracy in reports["linear_probe"]["accuracy"].items():
    rows[baselines.get(encoder, encoder)] = {
        "linear_probe": accuracy, column: few["accuracy"][encoder]["mean"],
        column + "_std": few["accuracy"][encoder]["std"], "knn": reports["knn"]["accuracy"][encoder]}
  return rows


def table_file(split: str) -> str:
  return TABLE_FILE if split == "test" else f"table_{split}.json"


def _write(report: dict, workdir_root: str) -> None:
  with open(os.path.join(workdir_root, table_file(report["split"])), "w") as f:
    json.dump(report, f, indent=2)


def run_table(
    dataset: str = "mnist5k",
    objectives: Sequence[str] = OBJECTIVES,
    workdir_root: str = "runs/table",
    overrides: Mapping[str, Any] | None = None,
    progress: bool = True,
    *,
    variant: str | None = None,
    configs_dir: str | None = None,
    split: str = "test",
) -> dict:
  """Pretrains and probes every objective on `dataset`; returns and writes the table.

  Args:
    dataset: the dataset every config must train and evaluate on (its `config.data.name`).
    objectives: config names under `configs_dir`, each `<name>.py` with `get_config(variant)`.
    workdir_root: one workdir per objective below it, and `table.json`.
    overrides: dotted config keys set in every config, e.g. {"train.steps": 50}.
    progress: progress bars and a line per stage on stdout.
    variant: the config variant; default `dataset` (e.g. "smoke" for a quick check).
    configs_dir: where the config files are; default the repository's `configs/`.
    split: where the probes are scored: "validation" for recipe trials, "test" (default) for
      the figures a finished recipe reports.

  Returns:
    {"dataset", "split", "results": {method: {"linear_probe", "linear_probe_10_per_class",
    "linear_probe_10_per_class_std", "knn", "pretrain_seconds"}}}, the objectives in the order
    given, then the baselines: "random_init" (plus "random_init_<objective>" for an objective
    whose encoder differs from the first one's) and "raw_pixels".
  """
  variant = variant or dataset
  if not objectives:
    raise ValueError("run_table needs at least one objective")
  configs = {}
  for name in objectives:  # all configs first, so a typo fails before hours of training
    config = _apply_overrides(load_config(name, variant, configs_dir), overrides)
    if config.data.name != dataset:
      raise UserError(f"configs/{name}.py:{variant} trains on {config.data.name!r}, not {dataset!r}")
    configs[name] = config
  os.makedirs(workdir_root, exist_ok=True)
  results: dict[str, dict[str, float]] = {}
  report = {"dataset": dataset, "split": split, "results": results}
  baselines, baseline_rows = _baselines_of(configs), {}
  for name, config in configs.items():
    if progress:
      print(f"[table] {name}: pretraining {config.objective} ({variant}, {config.train.steps} steps)", flush=True)
    objective, params, model_state, seconds = pretrain(config, os.path.join(workdir_root, name), progress=progress)
    if progress:
      print(f"[table] {name}: pretrained in {seconds:.0f} s; probing", flush=True)

    rows = probe_rows(objective, params, model_state, config, os.path.join(workdir_root, name), split,
                      baselines[name])
    results[name] = {**rows.pop(objective.name), "pretrain_seconds": seconds}
    baseline_rows.update({row: {**values, "pretrain_seconds": 0.0} for row, values in rows.items()})
    _write(report, workdir_root)
  results.update(baseline_rows)  # after the objectives
  _write(report, workdir_root)
  print()
  print(format_table(report))
  print(f"written to {os.path.join(workdir_root, table_file(split))}", flush=True)
  return report


def format_table(report: Mapping[str, Any]) -> str:
  """The printed table of top-1 accuracies; the few-label probe as mean ± std over draws."""
  results = report["results"]
  columns = [c for c in next(iter(results.values())) if not c.endswith("_std")]
  width = max(len(name) for name in results) + 2
  lines = [f"Evaluation on {report['dataset']} ({report['split']} split), top-1 accuracy:",
           "method".ljust(width) + "".join(c.rjust(30) for c in columns)]
  for name, row in results.items():
    cells = []
    for c in columns:
      cell = f"{row[c]:.4f}" if isinstance(row.get(c), float) else str(row.get(c, "-"))
      if c + "_std" in row:
        cell += f" ± {row[c + '_std']:.4f}"
      cells.append(cell.rjust(30))
    lines.append(name.ljust(width) + "".join(cells))
  return "\n".join(lines)


def markdown_table(report: Mapping[str, Any]) -> str:
  """The table as Markdown, for a report: accuracies in %, the few-label probe as mean ± std
  over draws, pretraining time in seconds."""
  results = report["results"]
  few = next(c for c in next(iter(results.values())) if c.endswith("_per_class"))
  lines = [
      f"| method | linear probe, all labels | linear probe, {few.split('_')[2]} per class | kNN | pretraining (s) |",
      "|---|---:|---:|---:|---:|",
  ]
  for name, row in results.items():
    seconds = row.get("pretrain_seconds", 0.0)
    cells = [f"{100 * row['linear_probe']:.1f}", f"{100 * row[few]:.1f} ± {100 * row[few + '_std']:.1f}",
             f"{100 * row['knn']:.1f}", f"{seconds:.0f}" if seconds > 0 else "–"]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def parse_override(text: str) -> tuple[str, Any]:
  """"train.steps=50" -> ("train.steps", 50): a value Python can read as a literal, else the string."""
  key, sep, value = text.partition("=")
  if not sep or not key:
    raise UserError(f"--override expects KEY=VALUE, e.g. train.steps=50; got {text!r}")
  try:
    return key, ast.literal_eval(value)
  except (ValueError, SyntaxError):
    return key, value  # a bare string


class _ArgumentParser(argparse.ArgumentParser):
  """argparse, with a mistake in the arguments raised as a UserError: the command line reports
  it in one line with status 2, as it reports every command's."""

  def error(self, message: str):
    raise UserError(f"ssljax table: {message} ('ssljax table --help' lists its flags)")


def argument_parser() -> argparse.ArgumentParser:
  """The flags of `ssljax table`."""
  parser = _ArgumentParser(prog="ssljax table", description=__doc__.splitlines()[0])
  parser.add_argument("--dataset", default="mnist5k")
  parser.add_argument("--workdir", required=True, help="root directory: one run per objective, and table.json")
  parser.add_argument("--objectives", default=",".join(OBJECTIVES), help="comma-separated config names")
  parser.add_argument("--variant", default=None, help="config variant; default the dataset's name")
  parser.add_argument("--configs_dir", default=None, help="default: the repository's configs/")
  parser.add_argument("--override", action="append", default=[], type=parse_override, metavar="KEY=VALUE",
                      help="set a dotted config key in every config, e.g. train.steps=50 (repeatable)")
  parser.add_argument("--split", default="test",
                      help="where probes are scored: validation (recipe trials) or test (default)")
  parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
  parser.add_argument("--noprogress", dest="progress", action="store_false", help="no progress bar")
  return parser


def main(argv: Sequence[str] | None = None) -> dict:
  """`ssljax table` arguments (after the command name): see --help."""
  args = argument_parser().parse_args(argv)
  results = run_table(
      args.dataset, tuple(o for o in args.objectives.split(",") if o), args.workdir, dict(args.override),
      args.progress, variant=args.variant, configs_dir=args.configs_dir, split=args.split,
  )
  if args.markdown:
    print(markdown_table(results))
  return results


if __name__ == "__main__":
  main()
