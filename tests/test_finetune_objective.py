"""The "finetune" objective: fine-tuning as an ordinary run of the trainer, from a tiny BERT run.

Its loss against the heads' outputs scored in float64 by hand, 8 devices against 1 step by step
(with dropout too: each example draws its own masks), `config.init_from` copying the pretrained
encoder exactly (and refusing what has none), a SIGKILLed `ssljax train` of it resuming with the
losses of an uninterrupted run, and `ssljax finetune`'s trials as trainer runs that a second
call skips (finished) or resumes (unfinished)."""

import json
import os
import shutil
import signal
import subprocess
import time

import jax
import numpy as np
import optax
import pytest

from helpers import REPO, popen_cli, run_cli, run_steps
from ssljax import data, objectives, workdir as workdir_lib
from ssljax.commands import evaluate_workdir
from ssljax.evaluators import task_metrics
from ssljax import finetune
from ssljax.downstream import heads, inputs, tasks
from ssljax.finetune import train as finetune_train
from ssljax.train import checks, defaults, loop
from ssljax.train.metrics import read_metrics

FINETUNE = os.path.join(REPO, "configs", "finetune.py")


@pytest.fixture(scope="module")
def bert_run(tmp_path_factory, data_dir):
  """A 2-step smoke BERT run (byte tokenizer, one layer of width 32), trained in this process."""
  os.environ["SSLJAX_DATA_DIR"] = data_dir
  config = defaults.load_config("bert:smoke")
  config.train.steps, config.train.checkpoint_every, config.train.evaluate = 2, 2, False
  workdir = str(tmp_path_factory.mktemp("bert") / "run")
  loop.train(config, workdir, progress=False)
  return workdir


def _config(bert_run, task="bbc_topic", **keys):
  """A small fine-tuning config on `bert_run`: 32-token inputs, 48 training examples."""
  config = defaults.load_config(f"finetune:{task}")
  config.init_from = bert_run
  config.seq_len, config.max_train_examples, config.max_eval_examples = 32, 48, 16
  config.batch_size, config.eval_batch_size, config.dropout = 8, 8, 0.0
  for key, value in keys.items():
    node = config
    *parents, leaf = key.split(".")
    for part in parents:
      node = node[part]
    node[leaf] = value
  return config


def test_the_trainer_keys_follow_the_fine_tuning_keys_they_repeat():
  config = finetune.with_overrides(finetune.default_config("bbc_topic"),
                                   {"batch_size": 8, "weight_decay": 0.1, "schedule": "cosine", "eval_batch_size": 4})
  assert (config.train.batch_size, config.optim.weight_decay, config.optim.schedule, config.eval.batch_size) == (
      8, 0.1, "cosine", 4)
  few = finetune_train.for_label_budget(finetune.with_overrides(config, {"labels_per_class": 10}))
  assert few.train.batch_size == few.batch_size == 16
  checks.check(few)  # a config the trainer takes


def _batch(objective, config, n=8):
  """The first `n` training features of the run, as the trainer's records, one a padding row."""
  inp = objective.family.train_input(config, "")
  batch = data.example_batch(inp.source, inp.record_fn, n=n)
  batch["weight"][3] = 0.0
  return batch


def _log_softmax64(x):
  x = np.asarray(x, np.float64)
  x = x - x.max(axis=-1, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _reference_loss(kind, out, batch):
  """The head's loss in float64, by hand: weighted mean of each row's (or token's) -log p."""
  w = np.asarray(batch["weight"], np.float64)
  if kind in ("classify", "pair"):
    nll = -_log_softmax64(out)[np.arange(len(w)), batch["label"]]
    return np.sum(w * nll) / np.sum(w)
  if kind == "tag":
    log_p = _log_softmax64(out)
    terms = [(w[b], -log_p[b, t, tag]) for b, row in enumerate(batch["tags"]) for t, tag in enumerate(row)
             if tag >= 0]
    return sum(a * b for a, b in terms) / sum(a for a, _ in terms)
  total = 0.0
  for b in range(len(w)):
    ctx = np.flatnonzero(batch["context_mask"][b])
    start = _log_softmax64(np.asarray(out[0])[b, ctx])[list(ctx).index(batch["start"][b])]
    end = _log_softmax64(np.asarray(out[1])[b, ctx])[list(ctx).index(batch["end"][b])]
    total += w[b] * -(start + end) / 2
  return total / np.sum(w)


@pytest.mark.parametrize("task", ["bbc_topic", "bbc_quotes", "bbc_who_said"])
def test_loss_is_the_heads_loss_in_float64(bert_run, task):
  config = _config(bert_run, task)
  objective = objectives.build(config)
  batch = _batch(objective, config)
  state, history = run_steps(objective, batch, 1, optax.sgd(0.0), steps=1)
  kind, num_labels = {"bbc_topic": ("classify", 5), "bbc_quotes": ("tag", 2), "bbc_who_said": ("span", 2)}[task]
  model = heads.FinetuneModel(objective.extras["encoder_config"], kind, num_labels, 0.0, config.pooling,
                              objective.extras["encoder"].special_ids["pad"])
  out = model.apply({"params": state.params}, batch)
  np.testing.assert_allclose(history[0]["loss"], _reference_loss(kind, out, batch), rtol=1e-5)


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_eight_devices_equal_one_step_by_step(bert_run, dropout):
  config = _config(bert_run, dropout=dropout)
  objective = objectives.build(config)
  batch = _batch(objective, config)
  tx = optax.adamw(1e-3)
  one, one_history = run_steps(objective, batch, 1, tx, steps=3)
  eight, eight_history = run_steps(objective, batch, 8, tx, steps=3)
  np.testing.assert_allclose([h["loss"] for h in eight_history], [h["loss"] for h in one_history], rtol=2e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), eight.params, one.params)
  if dropout:  # the masks are real: the same steps without dropout give other losses
    _, plain = run_steps(objectives.build(_config(bert_run)), batch, 1, tx, steps=3)
    assert abs(plain[0]["loss"] - one_history[0]["loss"]) > 1e-4


def test_init_from_copies_the_pretrained_encoder_and_pooler_exactly(bert_run, tmp_path):
  pretrained = workdir_lib.restore_params(bert_run)
  # Read without building the source run's objective, the same parameters restore_model gives.
  jax.tree.map(np.testing.assert_array_equal, pretrained, objectives.restore_model(bert_run)[1])
  # Two steps whose warm-up makes the first step's learning rate 0: the checkpoint of step 1 holds
  # the model exactly as it started.
  keys = {"train.steps": 2, "optim.warmup_fraction": 0.5, "train.checkpoint_every": 1,
          "train.keep_checkpoints": 2, "train.evaluate": False}
  for init in ("pretrained", "scratch"):
    workdir = str(tmp_path / init)
    loop.train(_config(bert_run, init=init, **keys), workdir, progress=False)
    started = workdir_lib.restore_params(workdir, step=1)
    same = [np.array_equal(a, b) for part in ("encoder", "pooler")
            for a, b in zip(jax.tree.leaves(started[part]), jax.tree.leaves(pretrained[part]))]
    assert all(same) if init == "pretrained" else not any(same), init
    assert "classifier" in started and "classifier" not in pretrained  # the new head
  assert json.load(open(os.path.join(workdir, "config.json")))["init_from"] == bert_run
  # From a fine-tuning run of the same task (LP-FT's start): every parameter, the head's too, and
  # the encoder's shape and tokenizer from the BERT run that one names.
  trained = workdir_lib.restore_params(str(tmp_path / "pretrained"))
  loop.train(_config(str(tmp_path / "pretrained"), **keys), str(tmp_path / "again"), progress=False)
  jax.tree.map(np.testing.assert_array_equal, workdir_lib.restore_params(str(tmp_path / "again"), step=1), trained)


def test_evaluation_scores_the_tasks_examples(bert_run, tmp_path):
  config = _config(bert_run, **{"train.steps": 3, "train.evaluate": False})
  workdir = str(tmp_path / "run")
  loop.train(config, workdir, progress=False)
  written = evaluate_workdir(workdir, split="validation", verbose=False)
  assert {k: written[k] for k in ("objective", "dataset", "split")} == {
      "objective": "finetune", "dataset": "bbc_topic", "split": "validation"}
  report = written["task_metrics"]
  assert (report["task"], report["split"], report["examples"]) == ("bbc_topic", "validation", 16)
  # By hand: the head's argmax on every validation example's input, against its label.
  objective = objectives.build(config)
  examples = task_metrics.split_examples(config, tasks.get("bbc_topic"), "validation", config.max_eval_examples)
  features = [objective.extras["encoder"].train_feature(e) for e in examples]
  batch = inputs.collate(features, len(features), features[0])
  model = heads.FinetuneModel(objective.extras["encoder_config"], "classify", 5, 0.0, config.pooling,
                              objective.extras["encoder"].special_ids["pad"])
  logits = model.apply({"params": workdir_lib.restore_params(workdir)}, batch)
  assert report["accuracy"] == pytest.approx(np.mean(np.argmax(logits, -1) == batch["label"]))
  assert "accuracy" in task_metrics.format_report(report)
  assert json.load(open(os.path.join(workdir, "eval_validation.json"))) == written


def test_init_from_refuses_parameters_without_an_encoder_and_runs_of_other_objectives(bert_run, tmp_path):
  params = {"encoder": {"kernel": np.zeros((2, 3))}, "classifier": {"kernel": np.zeros((3, 5))}}
  with pytest.raises(ValueError, match=r"no 'encoder' \(their top-level names: \['decoder'\]\)"):
    heads.load_pretrained(params, {"decoder": {"kernel": np.zeros((2, 3))}})
  with pytest.raises(ValueError, match=r"pretrained 'encoder' .* kernel: \(2, 4\) pretrained, \(2, 3\) here"):
    heads.load_pretrained(params, {"encoder": {"kernel": np.zeros((2, 4))}})
  gpt = tmp_path / "gpt"
  gpt.mkdir()
  (gpt / "config.json").write_text(json.dumps(defaults.load_config("gpt:smoke").to_dict()))
  with pytest.raises(ValueError, match=f"config.init_from={str(gpt)!r} is a 'gpt' run; fine-tuning needs a BERT"):
    objectives.build(_config(str(gpt)))
  with pytest.raises(ValueError, match="needs config.init_from"):
    objectives.build(_config(None))
  # An objective that takes nothing from another run refuses init_from before training.
  from ssljax.interface import Objective
  refusing = Objective(name="plain", family=None, init=None, loss=None, features=None)
  with pytest.raises(checks.ConfigError, match="the 'plain' objective cannot start from another run's parameters"):
    loop.pretrained_params(_config(bert_run), refusing, None)


# --- through the CLI: killed and resumed ------------------------------------------------------------

CLI_KEYS = ["--config.max_train_examples=48", "--config.seq_len=32", "--config.batch_size=8",
            "--config.train.steps=24", "--config.train.checkpoint_every=4", "--config.train.log_every=1",
            "--config.train.evaluate=False", "--noprogress"]


def _cli_args(bert_run, workdir):
  return ["train", "--config", f"{FINETUNE}:bbc_topic", f"--config.init_from={bert_run}", "--workdir", workdir,
          *CLI_KEYS]


def _losses(workdir):
  return {r["step"]: r["loss"] for r in read_metrics(workdir)}


@pytest.mark.slow  # the trainer's SIGKILL resume is tested in test_reliability: ~45 s
def test_sigkilled_finetuning_run_resumes_with_identical_losses(bert_run, data_dir, tmp_path):
  reference = str(tmp_path / "reference")
  result = run_cli(_cli_args(bert_run, reference), data_dir)
  assert result.returncode == 0, result.stderr[-3000:]
  assert sorted(_losses(reference)) == list(range(1, 25))

  workdir = str(tmp_path / "killed")
  process = popen_cli(_cli_args(bert_run, workdir), data_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    while len(_losses(workdir)) < 10 and process.poll() is None:
      time.sleep(0.01)
  finally:
    process.kill()
  assert process.wait() == -signal.SIGKILL, "the run ended before it could be killed"
  assert 4 <= checks.saved_steps(workdir)[-1] < 24
  resumed = run_cli(_cli_args(bert_run, workdir), data_dir)  # the same command
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert _losses(workdir) == _losses(reference)


# --- ssljax finetune: every trial a trainer run ------------------------------------------------------


def test_protocol_skips_finished_trials_resumes_unfinished_ones_and_refuses_changed_ones(bert_run, tmp_path):
  overrides = {"max_train_examples": 16, "max_eval_examples": 8, "batch_size": 8, "eval_batch_size": 8,
               "epochs": 1.0, "min_steps": 6, "lrs": (1e-4, 3e-4), "seq_len": 32, "baseline": False,
               "train.checkpoint_every": 2, "train.keep_checkpoints": 2}
  out = str(tmp_path / "out")
  first = finetune.run(bert_run, "bbc_topic", overrides, output_dir=out, progress=False)
  trials = {lr: os.path.join(out, "trials", f"draw0-lr{lr:g}") for lr in (1e-4, 3e-4)}
  assert [t["steps"] for t in first["trials"]] == [6, 6]
  for directory in trials.values():  # each an ordinary run of the trainer
    assert sorted(r["step"] for r in read_metrics(directory)) == list(range(1, 7))
    assert checks.saved_steps(directory)[-1] == 6
  # Make the 3e-4 trial unfinished: no record, its last checkpoint gone.
  unfinished = trials[3e-4]
  os.remove(os.path.join(unfinished, "trial.json"))
  shutil.rmtree(os.path.join(unfinished, "checkpoints", "6"))
  losses_before = {lr: _losses(d) for lr, d in trials.items()}
  finished_metrics = os.path.getmtime(os.path.join(trials[1e-4], "metrics.jsonl"))
  # A mark on the unfinished trial's first step: a resume from step 4 keeps the lines up to 4, a
  # fresh start would write them again.
  path = os.path.join(unfinished, "metrics.jsonl")
  records = read_metrics(unfinished)
  records[0]["mark"] = 1.0
  with open(path, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in records)
  again = finetune.run(bert_run, "bbc_topic", overrides, output_dir=out, progress=False)
  assert os.path.getmtime(os.path.join(trials[1e-4], "metrics.jsonl")) == finished_metrics  # skipped
  assert read_metrics(unfinished)[0].get("mark") == 1.0  # resumed
  assert {lr: _losses(d) for lr, d in trials.items()} == losses_before  # and trained as before
  for key in ("chosen", "validation", "test", "trials"):
    assert again[key] == first[key], key
  # Another recipe in the same directory: the finished trials are not passed off as its own.
  with pytest.raises(checks.ResumeError, match="config.train.steps: 6 in the saved run, 8 now"):
    finetune.run(bert_run, "bbc_topic", {**overrides, "min_steps": 8}, output_dir=out, progress=False)
