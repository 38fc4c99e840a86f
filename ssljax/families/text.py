"""The text family: language models (GPT) on a text corpus.

- Tokenizer: trained on the training split when a run starts (SentencePiece, or bytes, or a
  user's `.model` file), saved in the workdir with the run, and reloaded from there on resume
  and for evaluation; a run restored with a different tokenizer stops with both fingerprints.
- Input: each document is tokenised on the host, documents are joined with [EOS] and packed
  into fixed-length windows (`ssljax.text.PackedIterDataset`), all grain stages, deterministic
  and checkpointed with the iterator. `text.icl_documents` synthetic in-context-learning
  documents (`ssljax.text.icl_tasks`) can be mixed into the training documents.
- Monitor: validation loss per token every `train.eval_every` steps.
- Evaluation (`ssljax eval`, and the end of `ssljax train`) on one split: loss per token,
  perplexity and bits per byte beside add-k unigram and bigram models fit on the training
  split (`evaluate.language_model`); sampled continuations of headlines; in-context few-shot
  accuracy for k = 0, 1, 2, 4, 8 on the synthetic tasks and on topic classification by
  prompting (`evaluate.few_shot`), averaged over draws of the in-context examples.

Objectives of this family supply `extras["log_probs"]` and `extras["generate"]`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np

from ssljax import data
from ssljax.evaluate import few_shot, language_model
from ssljax.interface import Family, Monitor, TrainInput
from ssljax.text import icl_tasks, packing, vocab
from ssljax.text import tokenizer as tokenizer_lib
from ssljax.text.records import as_str

def split_texts(config: ml_collections.ConfigDict, split: str, key: str | None = None,
                max_texts: int | None = None) -> list[str]:
  """Every document's text (or its `key` feature) of a split, in stored order; with
  `max_texts`, at most that many documents drawn by `config.seed` (kept in stored order), read
  without touching the others."""
  d = config.data
  source = data.open_split(d, split)
  key = key or d.text_key
  indices = np.arange(len(source))
  if max_texts is not None and len(source) > max_texts:
    indices = np.sort(np.random.default_rng(config.seed).choice(len(source), max_texts, replace=False))
  texts = []
  for first in range(0, len(indices), _READ_CHUNK):
    texts.extend(as_str(record[key]) for record in source.__getitems__(indices[first:first + _READ_CHUNK].tolist()))
  return texts


# Documents read per call when a split is read into memory.
_READ_CHUNK = 4096
class ConcatSource:
  """Random-access records of several sources one after another (a TFDS split, then the
  synthetic documents); records keep their own type (a feature dict or a str)."""

  def __init__(self, *parts):
    self._parts = [part for part in parts if len(part)]
    self._starts = np.cumsum([0] + [len(part) for part in self._parts])

  def __len__(self) -> int:
    return int(self._starts[-1])

  def __getitem__(self, index: int):
    if not 0 <= index < len(self):
      raise IndexError(f"index {index} out of range for {len(self)} records")
    part = int(np.searchsorted(self._starts, index, side="right")) - 1
    return self._parts[part][int(index - self._starts[part])]

  def __getitems__(self, indices):
    return [self[int(i)] for i in indices]


def training_documents(config: ml_collections.ConfigDict):
  """The training split's documents followed by the synthetic in-context documents, as a
  random-access source, held in memory when it fits (`data.in_memory`)."""
  d = config.data
  return ConcatSource(data.in_memory(data.open_split(d, d.train_split)), icl_documents(config))


def tokenizer_texts(config: ml_collections.ConfigDict) -> list[str]:
  """What a SentencePiece tokenizer is trained on: the training split (at most
  `text.max_training_texts` documents of it) and the synthetic in-context documents."""
  return (split_texts(config, config.data.train_split, max_texts=config.text.get("max_training_texts"))
          + icl_documents(config))


def icl_documents(config: ml_collections.ConfigDict) -> list[str]:
  t = config.text
  return icl_tasks.pretraining_documents(t.icl_seed, t.icl_documents) if t.icl_documents else []


def _build_tokenizer(config: ml_collections.ConfigDict, texts) -> tokenizer_lib.Tokenizer:
  t = config.text
  if t.tokenizer == "byte":
    return tokenizer_lib.ByteTokenizer()
  if t.model_file:
    return tokenizer_lib.SentencePieceTokenizer.from_file(t.model_file)
  texts = texts() if callable(texts) else (texts or [])
  return tokenizer_lib.SentencePieceTokenizer.train(texts, t.vocab_size, model_type=t.model_type, seed=config.seed)


def run_tokenizer(config: ml_collections.ConfigDict, workdir: str,
                  training_texts: list[str] | Callable[[], list[str]] | None = None) -> tokenizer_lib.Tokenizer:
  """The run's tokenizer: the one saved in `workdir`, else built from the config (trained on
  `training_texts`, a list or a function that reads it only when a tokenizer is trained) and
  saved there. A saved tokenizer that the config contradicts (another kind, model file or
  vocabulary size) is an error naming both."""
  # With several processes, process 0 alone trains and saves; the others wait, then read its
  # files (the workdir is shared, as orbax's checkpoints need). The first barrier makes every
  # process see the workdir as it was before anyone wrote to it, so all take the same branch.
  # (Each training its own could give different pieces: SentencePiece trains multithreaded.)
  _barrier("ssljax: tokenizer lookup")
  if not os.path.exists(os.path.join(workdir, tokenizer_lib.CONFIG_FILE)):
    if jax.process_index() == 0:
      tokenizer = _build_tokenizer(config, training_texts)
      if tokenizer.vocab_size != vocab.model_vocab_size(config):
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} embedding rows, the model "
                         f"{vocab.model_vocab_size(config)}")
      os.makedirs(workdir, exist_ok=True)
      tokenizer.save(workdir)
    _barrier("ssljax: tokenizer saved")
    if jax.process_index() == 0:
      return tokenizer
  tokenizer = tokenizer_lib.load(workdir)
  if config.text.model_file:
    tokenizer_lib.check_same(workdir, tokenizer_lib.SentencePieceTokenizer.from_file(config.text.model_file))
  if tokenizer.kind != config.text.tokenizer or tokenizer.vocab_size != vocab.model_vocab_size(config):
    raise ValueError(
        f"the run in {workdir} was trained with a {tokenizer.kind} tokenizer of "
        f"{tokenizer.vocab_size} embedding rows, but the config asks for a "
        f"{config.text.tokenizer} tokenizer of {vocab.model_vocab_size(config)}; use the run's "
        "config or a new --workdir")
  return tokenizer


def _barrier(name: str) -> None:
  """Waits until every process of a multi-process run gets here; nothing with one process."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def train_input(config: ml_collections.ConfigDict, workdir: str) -> TrainInput:
  documents = training_documents(config)
  tokenizer = run_tokenizer(config, workdir, functools.partial(tokenizer_texts, config))
  seq_len = config.text.seq_len
  return TrainInput(
      source=documents,
      record_fn=packing.TokenizeDocument(tokenizer, text_key=config.data.text_key),
      iter_stage=functools.partial(_pack, seq_len=seq_len),
      unit="tokens",
      units_per_example=seq_len,
  )


def _pack(stream, *, seq_len: int):
  return packing.PackedIterDataset(stream, seq_len=seq_len, eos_id=tokenizer_lib.EOS,
                                   pad_id=tokenizer_lib.PAD)


def prompt_ids(tokenizer, prompt: str, seq_len: int) -> list[int]:
  """A generation prompt's ids: [EOS] (what precedes a document in training) and the prompt,
  cut to its last seq_len // 2 tokens so that the context leaves room to continue it."""
  return ([tokenizer_lib.EOS] + tokenizer.encode(prompt))[-(seq_len // 2):]


def log_probs_fn(objective, params, model_state):
  """numpy tokens (B, T) -> numpy (B, T) log-probs under the trained model."""
  score = objective.extras["log_probs"]
  return lambda tokens: np.asarray(score(params, model_state, tokens))


def validation_loss_monitor(objective, config: ml_collections.ConfigDict, workdir: str) -> Monitor:
  """Mean loss per token on the first `eval.monitor_windows` windows of the validation split."""
  cache = {}

  def fn(params, model_state):
    if "windows" not in cache:
      tokenizer = tokenizer_lib.load(workdir)
      docs = [tokenizer.encode(t) for t in split_texts(config, config.data.eval_split)]
      windows, mask = language_model.scoring_windows(docs, config.text.seq_len, eos_id=tokenizer_lib.EOS,
                                                     pad_id=tokenizer_lib.PAD)
      count = config.eval.monitor_windows
      cache["windows"], cache["mask"] = windows[:count], mask[:count]
    log_probs = language_model.model_log_probs(log_probs_fn(objective, params, model_state),
                                               cache["windows"], config.eval.lm_batch_size)
    return {"validation_loss": float(-np.sum(log_probs * cache["mask"]) / cache["mask"].sum())}

  return Monitor(every=config.train.eval_every, fn=fn)


def monitors(objective, config: ml_collections.ConfigDict, workdir: str) -> list[Monitor]:
  if not config.train.eval_every:
    return []
  return [validation_loss_monitor(objective, config, workdir)]


def headline_samples(objective, params, model_state, tokenizer, config, split: str) -> list[dict]:
  """`eval.num_samples` continuations of the split's headlines (a fixed random choice; first
  lines where the corpus has no titles), sampled with the config's temperature and top-k from a
  fixed key."""
  e = config.eval
  features = data.dataset_info(config.data).features
  if "title" in features:
    titles = split_texts(config, split, key="title")
  else:  # a corpus without headlines: the first line of each document
    titles = [text.split("\n", 1)[0][:200] for text in split_texts(config, split)]
  picked = np.random.default_rng(e.seed).choice(len(titles), min(e.num_samples, len(titles)), replace=False)
  prompts = [titles[i] + "\n\n" for i in picked]
  outputs = objective.extras["generate"](
      params, model_state, [prompt_ids(tokenizer, p, config.text.seq_len) for p in prompts],
      max_new_tokens=e.sample_tokens, key=jax.random.key(e.seed), temperature=e.sample_temperature,
      top_k=e.sample_top_k)
  return [{"prompt": p, "continuation": tokenizer.decode(o)} for p, o in zip(prompts, outputs)]


def few_shot_tasks(config: ml_collections.ConfigDict, split: str) -> dict:
  """The synthetic in-context tasks and topic classification by prompting (examples from the
  training split, queries from `split`) where the corpus has topics (a `text_files` corpus has
  none)."""
  d = config.data
  names = data.dataset_info(d).label_names

  def pairs(s):
    source = data.open_split(d, s)
    return [(as_str(r["title"]), names[int(r[d.label_key])]) for r in source.__getitems__(range(len(source)))]

  tasks = {task.name: task for task in icl_tasks.TASKS}
  if d.get("label_key") and names is not None:
    tasks["topic"] = few_shot.TopicTask(train=pairs(d.train_split), queries=pairs(split), topics=tuple(names))
  return tasks


def evaluate(objective, params, model_state, config: ml_collections.ConfigDict, workdir: str,
             split: str) -> dict:
  tokenizer = tokenizer_lib.load(workdir)
  e, d = config.eval, config.data
  score = log_probs_fn(objective, params, model_state)
  lm = language_model.evaluate(
      score, tokenizer, split_texts(config, split),
      split_texts(config, d.train_split, max_texts=config.text.get("max_training_texts")),
      split_texts(config, d.eval_split), seq_len=config.text.seq_len, batch_size=e.lm_batch_size,
      eos_id=tokenizer_lib.EOS, pad_id=tokenizer_lib.PAD)
  shots = {}
  for name, task in few_shot_tasks(config, split).items():
    shots[name] = few_shot.evaluate(score, tokenizer, task, ks=tuple(e.few_shot_ks), num_queries=e.few_shot_queries,
                                    draws=e.few_shot_draws, seed=e.seed, batch_size=e.lm_batch_size,
                                    context_len=config.text.seq_len)
  return {
      "dataset": d.name, "split": split, "tokenizer": tokenizer.settings() | {"vocab_size": tokenizer.vocab_size},
      "language_model": lm,
      "samples": headline_samples(objective, params, model_state, tokenizer, config, split),
      "few_shot": {name: {str(k): v for k, v in result.items()} for name, result in shots.items()},
  }


def format_results(report: dict) -> str:
  lm = report["language_model"]
  scored = lm["scored"]
  lines = [f"Language model on {report['dataset']} ({report['split']} split: {scored['tokens']:,} tokens, "
           f"{scored['bytes']:,} bytes)",
           f"{'model':<10}{'loss/token':>12}{'perplexity':>12}{'bits/byte':>12}"]
  for name in ("model", "bigram", "unigram"):
    row = lm[name]
    lines.append(f"{name:<10}{row['loss_per_token']:>12.4f}{row['perplexity']:>12.2f}{row['bits_per_byte']:>12.4f}")
  lines.append("\nSamples (headline, then the model's continuation):")
  for sample in report["samples"]:
    lines.append(f"  {sample['prompt'].strip()!r}\n    -> {sample['continuation']!r}")
  for name, result in report["few_shot"].items():
    lines.append("")
    lines.append(few_shot.format_table({int(k): v for k, v in result.items()},
                                       title=f"In-context few-shot accuracy, {name}"))
  return "\n".join(lines)


FAMILY = Family(name="text", train_input=train_input, monitors=monitors, evaluate=evaluate,
                format_results=format_results)
