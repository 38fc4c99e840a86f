"""The selection protocol of `ssljax finetune` (Devlin et al. 2019, arXiv 1810.04805, section 4
and appendix A.3), each trial an ordinary run of the trainer.

Recipe (configs/finetune.py): AdamW (beta2 0.999, eps 1e-6, weight decay 0.01 on the matrices
only, not on embeddings, biases or LayerNorm), the learning rate warmed up linearly over the
first 10% of the steps and decayed linearly (or along a cosine) to zero, gradients clipped to
norm 1, dropout 0.1, a few epochs. Every parameter is trained, the pretrained encoder's included.

Protocol: for every draw of the labelled subset (all labels: one draw) and every candidate
learning rate, a fresh head on the pretrained encoder (or, `init="scratch"`, on a randomly
initialised one of the same shape) is trained and scored on the validation and test splits;
the learning rate with the best mean validation metric over the draws is chosen, and only its
test scores (mean and std over the draws) are reported. The task's baseline (`run_baseline`) is
fit on the same labelled subsets and chosen on the same validation split.

Every trial is a child run of the trainer under the output directory,
`trials/draw<d>-lr<lr>/` (config.json, checkpoints, metrics.jsonl, eval.json), the "finetune"
objective started from the pretrained run (`config.init_from`). A finished trial keeps its
scores in `trial.json`: running the command again skips it, resumes an unfinished one from its
checkpoint, and refuses a trial directory that another config trained (`checks.check_resume`).

LP-FT (`probe_steps` > 0): per draw, the head is first fitted on the frozen encoder
(`train.Runner.fit_head`) and saved as the draw's start, `starts/draw<d>/` (a config.json and a
checkpoint of the parameters); its trials start from there, copying every parameter.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable

import jax
import ml_collections
import numpy as np

from ssljax import workdir as workdir_lib
from ssljax.data import read_all
from ssljax.downstream import baselines, examples, inputs, metrics
from ssljax.downstream.heads import CLASSIFY, SPAN, TAG
from ssljax.downstream.tasks import Task
from ssljax.evaluate import tfidf
from ssljax.evaluators import task_metrics
from ssljax.finetune import with_overrides
from ssljax.finetune import train as ft
from ssljax.train import checkpoint, checks, loop
from ssljax.train.evaluation import evaluate_workdir
from ssljax.train.metrics import read_metrics

TRIAL_FILE = "trial.json"  # a finished trial's record, beside its run
TRIAL_SCORES = "task_metrics"  # the entry of config.evals whose report scores a trial
PROBE_FILE = "probe.json"  # the head fit's losses, beside a draw's start


def steps_for(config: ml_collections.ConfigDict, labelled: int) -> int:
  """`epochs` passes over the labelled examples, at least `min_steps`, at most `max_steps` (0: no cap)."""
  steps = max(math.ceil(config.epochs * labelled / config.batch_size), config.min_steps)
  return min(steps, config.max_steps) if config.max_steps else steps


def trial_config(config: ml_collections.ConfigDict, *, draw: int, lr: float, steps: int,
                 init_from: str) -> ml_collections.ConfigDict:
  """The trainer's config of one trial: the protocol's config (whose batch, weight decay, clipping
  and schedule keys the trainer's follow) at one draw and one rate, every step logged."""
  return with_overrides(config, {"draw": draw, "optim.lr": lr, "train.steps": steps, "init_from": init_from,
                                 "train.log_every": 1, "train.evaluate": False})


def task_scores(directory: str, split: str) -> dict:
  """A finished trial's task metrics on `split` (its config's task_metrics evaluator)."""
  return task_metrics.scores(evaluate_workdir(directory, split=split, verbose=False)[TRIAL_SCORES])


def run_trial(config: ml_collections.ConfigDict, directory: str, *, progress: bool,
              score: Callable[[str, str], dict] = task_scores) -> dict:
  """Trains one trial (or resumes it) and scores it on validation and test (`score(directory,
  split)` -> {metric: value}); a finished trial's record is read back instead, once its saved
  config is checked to be this one."""
  path = os.path.join(directory, TRIAL_FILE)
  if os.path.exists(path):
    checks.check_resume(config, directory)
    with open(path) as f:
      return json.load(f)
  loop.train(config, directory, progress=progress)
  scores = {split: score(directory, split) for split in ("validation", "test")}
  losses = [r["loss"] for r in read_metrics(directory)]
  record = {"steps": config.train.steps, "final_train_loss": float(np.mean(losses[-max(1, len(losses) // 10):])),
            **scores}
  if jax.process_index() == 0:
    workdir_lib.replace_file(path, json.dumps(record, indent=2))
  return record


def head_start(config: ml_collections.ConfigDict, runner: ft.Runner, pretrained_workdir: str, pretrained: dict | None,
               train, indices, template: dict, draw: int, directory: str) -> tuple[str, dict]:
  """LP-FT's start of one draw: the model on the pretrained encoder (random with None) with its
  head fitted on the frozen encoder's states, saved in `directory` as a fine-tuning run of
  `pretrained_workdir` (its config.json and a checkpoint of the parameters) that the draw's
  trials start from. Returns (that directory, the fit's losses); made once, read back after."""
  probe_path = os.path.join(directory, PROBE_FILE)
  if os.path.exists(probe_path):
    with open(probe_path) as f:
      return directory, json.load(f)
  key = jax.random.fold_in(jax.random.key(config.seed), draw)
  params, probe = runner.fit_head(runner.init(key, template, pretrained), train, indices, template)
  os.makedirs(directory, exist_ok=True)
  workdir_lib.save_config(with_overrides(config, {"draw": draw, "init_from": pretrained_workdir}), directory)
  mngr = checkpoint.manager(directory, save_every=1, keep=1, async_save=False)
  checkpoint.save(mngr, 0, {"params": params}, {}, force=True)
  mngr.close()
  if jax.process_index() == 0:
    workdir_lib.replace_file(probe_path, json.dumps(probe, indent=2))
  return directory, probe


def run_baseline(task: Task, enc: inputs.Encoder, data: dict, subsets: list[np.ndarray]) -> dict:
  """The task kind's baseline on each labelled subset, mean (and std) over the draws; `enc`
  says what the encoder sees of each example (its truncation), which the baseline reads too.

  Classification and pairs: the TF-IDF probes (`ssljax.evaluate.tfidf`), TF-IDF's vocabulary and
  document frequencies from all training inputs (unlabelled text, as pretraining has), the
  classifier from the labelled ones; tagging: each word's majority tag; spans: the surface
  heuristic (`ssljax.downstream.baselines`)."""
  if task.kind == SPAN:
    return {"name": "surface_heuristic", "validation": baselines.span_heuristic(read_all(data["validation"])),
            "test": baselines.span_heuristic(read_all(data["test"]))}
  train, val, test = (read_all(data[r]) for r in ("train", "validation", "test"))
  if task.kind == TAG:
    def visible(examples):  # the words the encoder keeps, with their tags
      return [(e["words"][:n], e["tags"][:n]) for e in examples
              for n in [len(enc.tagging(e["words"], None)[1])]]

    val_v, test_v = visible(val), visible(test)
    draws = []
    for indices in subsets:
      table = baselines.majority_tags([(train[i]["words"], train[i]["tags"]) for i in indices])
      draws.append({role: metrics.tagging_scores([baselines.tag_with_majority(table, w) for w, _ in split],
                                                 [t for _, t in split], outside=task.outside)
                    for role, split in (("validation", val_v), ("test", test_v))})
    return {"name": "majority_tag_per_word",
            **{r: examples.mean_std([d[r] for d in draws]) for r in ("validation", "test")}}
  visible = [enc.visible_text(e) for e in train]
  val_x, test_x = [enc.visible_text(e) for e in val], [enc.visible_text(e) for e in test]
  labels = lambda split: [e["label"] for e in split]  # noqa: E731
  if task.kind == CLASSIFY:
    fit, unlabelled = tfidf.tfidf_logreg, visible
  else:
    fit, unlabelled = tfidf.tfidf_pair_logreg, [t for pair in visible for t in pair]
  draws = [fit(unlabelled, ([visible[i] for i in ix], [train[i]["label"] for i in ix]), (val_x, labels(val)),
               (test_x, labels(test))) for ix in subsets]
  return {"name": draws[0]["name"], "C": [d["C"] for d in draws],
          **{r: examples.mean_std([d[r] for d in draws]) for r in ("validation", "test")}}


def finetune(task: Task, pretrained_workdir: str, config: ml_collections.ConfigDict, out_dir: str, *,
             progress: bool = True) -> dict:
  """Runs the protocol on `task` under `config`, its trials under `out_dir`, and returns the
  results (see `ssljax.finetune.run`)."""
  from ssljax.finetune import load_encoder

  if config.init not in ("pretrained", "scratch"):
    raise checks.ConfigError(f"config.init must be 'pretrained' or 'scratch', got {config.init!r}")
  if not config.lrs:
    raise checks.ConfigError("config.lrs needs at least one learning rate")
  if config.probe_steps < 0:
    raise checks.ConfigError(f"config.probe_steps must be >= 0, got {config.probe_steps}")
  if TRIAL_SCORES not in config.evals:
    raise checks.ConfigError(f"config.evals.{TRIAL_SCORES} (the task_metrics evaluator) scores every trial; keep it")
  started = time.perf_counter()
  pretrained_workdir = os.path.abspath(pretrained_workdir)  # the trials' config.json name it
  config = ft.for_label_budget(config)
  data = {role: task.read(config, role) for role in ("train", "validation", "test")}
  data["train"] = examples.capped(data["train"], config.max_train_examples, config.seed)
  for role in ("validation", "test"):
    data[role] = examples.capped(data[role], config.max_eval_examples, config.seed)
  subsets = examples.label_subsets(task, data["train"], config)
  encoder_config, pretrained, tokenizer = load_encoder(pretrained_workdir)
  pretrained = pretrained if config.init == "pretrained" else None
  runner = ft.Runner(task, encoder_config, tokenizer, config)
  template = examples.template_feature(runner.encoder, data["train"])
  trials, test_scores = [], {}
  for draw, indices in enumerate(subsets):
    start, probe = pretrained_workdir, {}
    if config.probe_steps:
      start, probe = head_start(config, runner, pretrained_workdir, pretrained, data["train"], indices, template,
                                draw, os.path.join(out_dir, "starts", f"draw{draw}"))
    for lr in config.lrs:
      child = trial_config(config, draw=draw, lr=lr, steps=steps_for(config, len(indices)), init_from=start)
      record = run_trial(child, os.path.join(out_dir, "trials", f"draw{draw}-lr{lr:g}"), progress=progress)
      test_scores[(draw, lr)] = record["test"]  # reported only for the chosen rate
      trials.append({"draw": draw, "lr": lr, "labelled": int(len(indices)), **probe,
                     "steps": record["steps"], "final_train_loss": record["final_train_loss"],
                     "validation": record["validation"]})
  chosen = max(config.lrs, key=lambda lr: np.mean([t["validation"][task.metric] for t in trials if t["lr"] == lr]))
  results = {
      "task": task.name, "kind": task.kind, "description": task.description, "init": config.init,
      "metric": task.metric, "labels": examples.budget_name(config), "draws": len(subsets),
      "examples": {role: len(data[role]) for role in data},
      "chosen": {"lr": chosen},
      "validation": examples.mean_std([t["validation"] for t in trials if t["lr"] == chosen]),
      "test": examples.mean_std([test_scores[(d, chosen)] for d in range(len(subsets))]),
      "trials": trials,
  }
  if config.baseline:
    results["baseline"] = run_baseline(task, runner.encoder, data, subsets)
  results["seconds"] = round(time.perf_counter() - started, 1)
  return results


