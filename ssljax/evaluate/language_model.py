"""Language-model scoring of a corpus: loss per token, perplexity and bits per byte, for a model
and for n-gram baselines on exactly the same tokens.

The documents are tokenised, each followed by [EOS], and the stream starts with an [EOS] (what
precedes a document in the packed training windows). It is cut into windows of the training
context T that overlap by one token: window i is stream[i (T-1) : i (T-1) + T]. A model
scores positions 1..T-1 of every window, so every token after the leading [EOS] is predicted
exactly once, with up to T-1 tokens of context, and nothing is scored twice or left out.

  bits per byte = total NLL (nats) / ln 2 / UTF-8 bytes of the documents' text

(the [EOS] tokens are scored too: the byte count is the text's, so a model pays for predicting
where documents end, as it does in training). Perplexity is exp(total NLL / scored tokens).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from ssljax.evaluate import ngram

LogProbsFn = Callable[[np.ndarray], np.ndarray]  # tokens (B, T) -> (B, T) log p(token t | < t)


def token_stream(docs: Sequence[Sequence[int]], *, eos_id: int) -> np.ndarray:
  """[EOS] doc_1 [EOS] doc_2 [EOS] ... as one int32 array."""
  pieces = [[eos_id]]
  for doc in docs:
    pieces += [list(doc), [eos_id]]
  return np.concatenate([np.asarray(p, np.int32) for p in pieces])


def scoring_windows(docs: Sequence[Sequence[int]], seq_len: int, *, eos_id: int,
                    pad_id: int) -> tuple[np.ndarray, np.ndarray]:
  """windows (N, T) int32 and mask (N, T) bool of the positions to score (module docstring)."""
  if seq_len < 2:
    raise ValueError(f"seq_len must be >= 2, got {seq_len}")
  stream = token_stream(docs, eos_id=eos_id)
  stride = seq_len - 1
  starts = range(0, max(len(stream) - 1, 1), stride)
  windows = np.full((len(starts), seq_len), pad_id, np.int32)
  mask = np.zeros((len(starts), seq_len), bool)
  for row, start in enumerate(starts):
    piece = stream[start:start + seq_len]
    windows[row, :len(piece)] = piece
    mask[row, 1:len(piece)] = True
  return windows, mask


def model_log_probs(log_probs_fn: LogProbsFn, windows: np.ndarray, batch_size: int) -> np.ndarray:
  """The model's (N, T) log-probs, called on fixed (batch_size, T) batches (one compilation)."""
  out = []
  for start in range(0, len(windows), batch_size):
    chunk = windows[start:start + batch_size]
    padded = np.concatenate([chunk, np.zeros((batch_size - len(chunk), windows.shape[1]), windows.dtype)])
    out.append(np.asarray(log_probs_fn(padded), np.float64)[:len(chunk)])
  return np.concatenate(out)


def summary(total_nll: float, num_tokens: int, num_bytes: int | None) -> dict[str, float | None]:
  """Loss per token and perplexity of a total NLL; bits per byte where the bytes are known
  (None where only some windows were scored: they end inside a document)."""
  return {
      "loss_per_token": total_nll / num_tokens,
      "perplexity": math.exp(total_nll / num_tokens),
      "bits_per_byte": None if num_bytes is None else ngram.bits_per_byte(total_nll, num_bytes),
  }


def text_windows(tokenizer, texts: Sequence[str], *, seq_len: int, eos_id: int,
                 pad_id: int) -> tuple[np.ndarray, np.ndarray]:
  """`scoring_windows` of the documents' texts under `tokenizer`."""
  return scoring_windows([tokenizer.encode(t) for t in texts], seq_len, eos_id=eos_id, pad_id=pad_id)


def model_nll(log_probs_fn: LogProbsFn, windows: np.ndarray, mask: np.ndarray, batch_size: int) -> float:
  """The model's total NLL (nats) of the masked positions of the windows."""
  return ngram.nll_of_log_probs(model_log_probs(log_probs_fn, windows, batch_size), mask)


def baseline_nll(model: ngram.UnigramModel | ngram.BigramModel, windows: np.ndarray, mask: np.ndarray) -> float:
  """An n-gram model's NLL of the masked positions of `scoring_windows`' windows. Unscored
  positions (the last window's padding, which may be an id past the vocabulary, as GPT-2's pad)
  are read as id 0: they come after every scored token, so no scored token depends on them."""
  readable = np.where(mask, windows, 0)
  readable[:, 0] = windows[:, 0]  # a window's first token is context, never scored
  return ngram.total_nll(model, readable, mask)


def fit_baselines(tokenizer, train_texts: Sequence[str], validation_texts: Sequence[str], *, seq_len: int,
                  eos_id: int, pad_id: int) -> dict[str, ngram.UnigramModel | ngram.BigramModel]:
  """{"bigram", "unigram"}: add-k models fit on `train_texts` (one stream, documents joined as
  in `token_stream`), each with the add-k constant that scores the whole windows of
  `validation_texts` best (ngram.choose_k)."""
  train_stream = token_stream([tokenizer.encode(t) for t in train_texts], eos_id=eos_id)
  val_windows, val_mask = text_windows(tokenizer, validation_texts, seq_len=seq_len, eos_id=eos_id, pad_id=pad_id)
  full = val_mask[:, 1:].all(axis=1)  # choose_k scores whole windows: leave out the padded last one
  vocab = tokenizer.num_tokens  # the real tokens: a pad past them is never scored
  models = {}
  for name, order, fit in (("bigram", 2, ngram.fit_bigram), ("unigram", 1, ngram.fit_unigram)):
    k, _ = ngram.choose_k(train_stream, val_windows[full], vocab_size=vocab, order=order)
    models[name] = fit(train_stream, vocab, k)
  return models
