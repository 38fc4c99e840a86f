"""The text family: language models (GPT) on a text corpus.

- Tokenizer: trained on the training split when a run starts (SentencePiece, or bytes, or a
  user's `.model` file, or a Hugging Face tokenizer.json), saved in the workdir with the run, and
  reloaded from there on resume and for evaluation; a run restored with a different tokenizer
  stops with both fingerprints. Its special tokens are its own (`Tokenizer.special_ids`).
- Input: each document is tokenised on the host, documents are joined with [EOS] and packed
  into fixed-length windows (`ssljax.text.PackedIterDataset`), all grain stages, deterministic
  and checkpointed with the iterator. `text.icl_documents` synthetic in-context-learning
  documents (`ssljax.text.icl_tasks`) can be mixed into the training documents.

What a run reports is the evaluators' that `config.evals` names (`ssljax.evaluators`:
language_model, samples, few_shot), which read the objective's `extras["log_probs"]` and
`extras["generate"]`.
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
from ssljax.interface import Family, TrainInput
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


def _file_tokenizer(config: ml_collections.ConfigDict) -> tokenizer_lib.Tokenizer:
  """The tokenizer of `text.model_file`: a SentencePiece .model, or a Hugging Face tokenizer.json
  (or its directory)."""
  if config.text.tokenizer == "huggingface":
    return tokenizer_lib.HuggingFaceTokenizer.from_directory(config.text.model_file)
  return tokenizer_lib.SentencePieceTokenizer.from_file(config.text.model_file)


def _build_tokenizer(config: ml_collections.ConfigDict, texts) -> tokenizer_lib.Tokenizer:
  t = config.text
  if t.tokenizer == "byte":
    return tokenizer_lib.ByteTokenizer()
  if t.tokenizer == "huggingface" and not t.model_file:
    raise ValueError("config.text.model_file must name a Hugging Face tokenizer.json (or its directory) for "
                     "text.tokenizer='huggingface'")
  if t.model_file:
    return _file_tokenizer(config)
  texts = texts() if callable(texts) else (texts or [])
  return tokenizer_lib.SentencePieceTokenizer.train(texts, t.vocab_size, model_type=t.model_type, seed=config.seed)


def run_tokenizer(config: ml_collections.ConfigDict, workdir: str,
                  training_texts: list[str] | Callable[[], list[str]] | None = None) -> tokenizer_lib.Tokenizer:
  """The run's tokenizer: the one saved in `workdir`, else built from the config (trained on
  `training_texts`, a list or a function that reads it only when a tokenizer is trained) and
  saved there. A tokenizer that the config contradicts (another kind, model file, vocabulary
  size or special ids) is an error naming both."""
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
      _check_special_ids(config, tokenizer)
      os.makedirs(workdir, exist_ok=True)
      tokenizer.save(workdir)
    _barrier("ssljax: tokenizer saved")
    if jax.process_index() == 0:
      return tokenizer
  tokenizer = tokenizer_lib.load(workdir)
  if config.text.model_file and config.text.tokenizer == tokenizer.kind:
    tokenizer_lib.check_same(workdir, _file_tokenizer(config))
  if tokenizer.kind != config.text.tokenizer or tokenizer.vocab_size != vocab.model_vocab_size(config):
    raise ValueError(
        f"the run in {workdir} was trained with a {tokenizer.kind} tokenizer of "
        f"{tokenizer.vocab_size} embedding rows, but the config asks for a "
        f"{config.text.tokenizer} tokenizer of {vocab.model_vocab_size(config)}; use the run's "
        "config or a new --workdir")
  _check_special_ids(config, tokenizer)
  return tokenizer


def _check_special_ids(config: ml_collections.ConfigDict, tokenizer: tokenizer_lib.Tokenizer) -> None:
  """The model is built with the config's special ids (`vocab.special_ids`), the data made with
  the tokenizer's: they must be the same."""
  if tokenizer.special_ids != vocab.special_ids(config):
    raise ValueError(f"the {tokenizer.kind} tokenizer's special ids {tokenizer.special_ids} differ from the "
                     f"config's {vocab.special_ids(config)} (config.text.special_tokens); correct the config")


def _barrier(name: str) -> None:
  """Waits until every process of a multi-process run gets here; nothing with one process."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def train_input(config: ml_collections.ConfigDict, workdir: str) -> TrainInput:
  documents = training_documents(config)
  tokenizer = run_tokenizer(config, workdir, functools.partial(tokenizer_texts, config))
  seq_len = config.text.seq_len
  ids = tokenizer.special_roles(("eos", "pad"), "packing documents for a language model")
  return TrainInput(
      source=documents,
      record_fn=packing.TokenizeDocument(tokenizer, text_key=config.data.text_key),
      iter_stage=functools.partial(_pack, seq_len=seq_len, eos_id=ids["eos"], pad_id=ids["pad"]),
      unit="tokens",
      units_per_example=seq_len,
  )


def _pack(stream, *, seq_len: int, eos_id: int, pad_id: int):
  return packing.PackedIterDataset(stream, seq_len=seq_len, eos_id=eos_id, pad_id=pad_id)


def prompt_ids(tokenizer, prompt: str, seq_len: int) -> list[int]:
  """A generation prompt's ids, cut to its last seq_len // 2 tokens so that the context leaves
  room to continue it. ssljax's own tokenizers put [EOS] first (what precedes a document in
  their training); an imported one starts as its own tokenizer starts a text, with its [BOS]
  if it adds one and bare otherwise (GPT-2), so that a prompt continues as in `transformers`."""
  if tokenizer.kind == "huggingface":
    start = [tokenizer.special_ids["bos"]] if "bos" in tokenizer.special_ids else []
  else:
    start = [tokenizer.special_id("eos", "a generation prompt (what precedes a document)")]
  return (start + tokenizer.encode(prompt))[-(seq_len // 2):]


FAMILY = Family(name="text", train_input=train_input)
