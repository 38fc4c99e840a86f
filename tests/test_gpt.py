"""GPT end to end: the sharded step equals one device, loss falls on the bundled corpus, the
CLI's train / eval / generate / tokenizer commands, tokenizer checks on resume, and the GPT-2
124M preset's train step in `ssljax bench step`."""

import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from helpers import data_mesh, run_cli, run_steps
from ssljax import objectives
from ssljax.interface import DATA_AXIS
from ssljax.train import defaults

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPT_SMOKE = os.path.join(REPO, "configs", "gpt.py") + ":smoke"


_cli = run_cli


def _smoke_objective():
  return objectives.build(defaults.load_config("gpt:smoke"))


def _tokens(batch=16, length=32, seed=0):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(6, 262, (batch, length)).astype(np.int32)
  tokens[3, 20:] = 0  # padding at the end of the data: those targets must not count
  return {"tokens": tokens}


def _run(num_devices, batch, steps=2):
  # SGD: Adam's sign-like first steps would turn rounding into lr-sized changes
  state, history = run_steps(_smoke_objective(), batch, num_devices, optax.sgd(0.5), steps)
  return state, [float(metrics["loss"]) for metrics in history]


def test_sharded_gpt_step_equals_one_device():
  batch = _tokens()
  state8, losses8 = _run(8, batch)
  state1, losses1 = _run(1, batch)
  np.testing.assert_allclose(losses8, losses1, rtol=1e-5)
  assert losses8[1] < losses8[0]
  chex.assert_trees_all_close(state8.params, state1.params, rtol=1e-4, atol=1e-6)


def test_sharded_gpt_gradient_equals_the_single_device_gradient():
  """The gradient itself, not only the step: per device value_and_grad of Objective.loss then
  the trainer's pmean, against jax.grad of the same loss on the whole batch on one device, and
  against an independent float32 computation of the masked next-token cross-entropy."""
  objective = _smoke_objective()
  batch = _tokens()
  params, model_state = objective.init(jax.random.key(0), batch)
  keys = jax.random.split(jax.random.key(2), 16)
  mesh8 = data_mesh(8)

  def per_device(params, batch, keys):
    (value, _), grads = jax.value_and_grad(objective.loss, has_aux=True)(params, model_state, batch, keys)
    return value, jax.lax.pmean(grads, DATA_AXIS)

  def sharded(n_devices, mesh):
    fn = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(jax.P(), jax.P(DATA_AXIS), jax.P(DATA_AXIS)),
                               out_specs=(jax.P(), jax.P())))
    return fn(jax.device_put(params, jax.NamedSharding(mesh, jax.P())),
              jax.device_put(batch, jax.NamedSharding(mesh, jax.P(DATA_AXIS))),
              jax.device_put(keys, jax.NamedSharding(mesh, jax.P(DATA_AXIS))))

  mesh1 = data_mesh(1)
  value8, grads8 = sharded(8, mesh8)
  value1, grads1 = sharded(1, mesh1)

  model = objective.extras["model"]()

  def reference(params):  # written out: mean over real targets of -log softmax
    logits = model.apply({"params": params}, model.apply({"params": params}, batch["tokens"]), method="logits")
    log_probs = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32))
    targets = batch["tokens"][:, 1:]
    nll = -jnp.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
    real = (targets != 0).astype(jnp.float32)
    return jnp.sum(nll * real) / jnp.sum(real)

  value_ref, grads_ref = jax.value_and_grad(reference)(params)
  np.testing.assert_allclose(value8, value_ref, rtol=1e-5)
  np.testing.assert_allclose(value1, value_ref, rtol=1e-5)
  chex.assert_trees_all_close(grads8, grads_ref, rtol=1e-4, atol=1e-7)
  chex.assert_trees_all_close(grads1, grads_ref, rtol=1e-4, atol=1e-7)
  assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads_ref))


@pytest.mark.slow  # the README's GPT block runs train and generate in test_readme: ~45 s
def test_train_eval_generate_and_loss_falls_on_bbc_news(tmp_path, data_dir):
  workdir = str(tmp_path / "gpt")
  result = _cli(["train", "--config", GPT_SMOKE, "--workdir", workdir, "--noprogress", "--config.train.steps=40",
                 "--config.train.log_every=5", "--config.evals.lm.every=20", "--config.optim.lr=3e-3"], data_dir)
  assert result.returncode == 0, result.stderr[-3000:]
  metrics = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert metrics[-1]["loss"] < 0.7 * metrics[0]["loss"], [m["loss"] for m in metrics]
  assert "val_lm_loss_per_token" in metrics[3] and "tokens_per_sec" in metrics[-1]
  report = json.load(open(os.path.join(workdir, "eval.json")))
  assert set(report) == {"objective", "dataset", "split", "language_model", "samples", "few_shot", "lm"}
  lm = report["language_model"]
  for name in ("model", "bigram", "unigram"):
    assert lm[name]["bits_per_byte"] > 0 and lm[name]["perplexity"] > 1
  assert lm["unigram"]["bits_per_byte"] > lm["bigram"]["bits_per_byte"]  # a real corpus has structure
  capped = report["lm"]  # the training-time entry: the first 64 windows, no baselines, no byte count
  assert capped["scored"]["windows"] == 64 and capped["model"]["bits_per_byte"] is None and "bigram" not in capped
  assert len(report["samples"]["continuations"]) == 2 and set(report["few_shot"]) == {"word_label", "word_map", "topic"}
  assert set(report["few_shot"]["topic"]) == {"0", "2"}
  assert "bits/byte" in result.stdout and "In-context few-shot accuracy" in result.stdout

  generated = _cli(["generate", "--workdir", workdir, "--prompt", "Shares in", "--num_samples", "2",
                    "--max_new_tokens", "8", "--seed", "3"], data_dir)
  assert generated.returncode == 0, generated.stderr[-3000:]
  assert generated.stdout.count("Shares in") == 2
  again = _cli(["generate", "--workdir", workdir, "--prompt", "Shares in", "--num_samples", "2",
                "--max_new_tokens", "8", "--seed", "3"], data_dir)
  assert again.stdout == generated.stdout  # a seed fixes the samples


def test_training_time_lm_entry_logs_the_loss_per_token_of_the_first_validation_windows(tmp_path, data_dir):
  """The `lm` entry (the language_model evaluator capped at 64 windows, without baselines) logs
  the mean next-token loss over the scored positions of the validation split's first 64
  scoring windows; option values out of range are refused when the evaluators are made."""
  from ssljax import evaluators
  from ssljax.evaluate import language_model
  from ssljax.families import text
  from ssljax.text import tokenizer as tokenizer_lib

  config = defaults.load_config("gpt:smoke")
  with config.unlocked():
    config.data.data_dir = data_dir
  workdir = str(tmp_path)
  tokenizer = tokenizer_lib.ByteTokenizer()
  tokenizer.save(workdir)
  objective = objectives.build(config)
  params, model_state = objective.init(jax.random.key(0), _tokens())
  evaluation = evaluators.from_config(objective, config, workdir)
  entry = [e for e in evaluation.evaluators if e.name == "lm"]
  scalars = evaluation.scalars(evaluation.run(params, model_state, "validation", entry))

  documents = [tokenizer.encode(t) for t in text.split_texts(config, "validation")]
  windows, mask = language_model.scoring_windows(documents, config.text.seq_len, eos_id=tokenizer.special_id("eos"),
                                                 pad_id=tokenizer.special_id("pad"))
  log_probs = np.asarray(objective.extras["log_probs"](params, model_state, windows[:64]), np.float64)
  expected = -np.sum(log_probs * mask[:64]) / mask[:64].sum()
  assert scalars == {"val_lm_loss_per_token": pytest.approx(expected, rel=1e-5)}

  for entry, option, value in (("lm", "max_windows", -1), ("few_shot", "draws", 0), ("samples", "num_samples", 0)):
    wrong = defaults.load_config("gpt:smoke")
    with wrong.unlocked():
      wrong.evals[entry][option] = value
    with pytest.raises(ValueError, match=f"option {option} must be"):
      evaluators.from_config(objective, wrong, workdir)


@pytest.mark.slow  # two subprocesses: ~25 s
def test_tokenizer_train_then_a_run_with_another_tokenizer_is_refused(tmp_path, data_dir):
  workdir = str(tmp_path / "sp")
  spm = ["--config.text.tokenizer=sentencepiece", "--config.text.vocab_size=512"]
  result = _cli(["tokenizer", "train", "--config", GPT_SMOKE, "--workdir", workdir, *spm], data_dir)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "sentencepiece tokenizer: 512 tokens (512 embedding rows)" in result.stdout
  assert os.path.exists(os.path.join(workdir, "tokenizer.model"))
  from ssljax.text import tokenizer as tokenizer_lib

  saved = tokenizer_lib.load(workdir)
  text = "Shares in Time Warner rose 3% on Tuesday.\n\nAnalysts said £1bn."
  assert saved.decode(saved.encode(text)) == text
  # The same workdir with the byte tokenizer: stopped before training, naming both.
  refused = _cli(["train", "--config", GPT_SMOKE, "--workdir", workdir, "--noprogress"], data_dir)
  assert refused.returncode != 0
  assert "sentencepiece tokenizer of 512" in refused.stderr and "byte tokenizer of 384" in refused.stderr
  assert not os.path.exists(os.path.join(workdir, "checkpoints"))


@pytest.mark.slow  # the published size compiles for about a minute on CPU; the same step code runs at
# the tiny presets' sizes in the default run (tests/test_bench.py)
def test_gpt2_preset_train_step_in_bench(tmp_path):
  """The 124M-parameter GPT-2 preset's real train step (AdamW, clipping, donation) runs in
  `ssljax bench step`; on CPU at a tiny batch and a short context, in float32. The state is
  split over the 8 fake devices (FSDP): replicated, its 8 copies of parameters and AdamW moments
  alone take 12 GB of the host's memory."""
  from ssljax.bench import throughput

  config = defaults.load_config("gpt:gpt2")
  config.unlock()
  config.model.dtype, config.text.seq_len, config.train.batch_size = "float32", 32, 8
  config.train.param_sharding = "fsdp"
  result = throughput.measure(config, steps=1, warmup=1)
  # 124.4M at GPT-2's context of 1024; 992 fewer position rows here.
  assert result["unit"] == "tokens" and "123.7M parameters" in result["model"], result
  assert result["per_second"] == pytest.approx(8 * 32 / result["step_seconds"])
