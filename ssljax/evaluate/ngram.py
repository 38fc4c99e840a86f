"""Unigram and bigram language models with add-k smoothing: baselines for a causal LM.

A language model's validation loss means little on its own; a bigram model fit on the same
training tokens says how much of it plain token statistics already explain. Both models use
additive (add-k) smoothing (Chen & Goodman 1998, "An Empirical Study of Smoothing Techniques
for Language Modeling", section 2.1; Jurafsky & Martin, "Speech and Language Processing",
ch. 3.5), with k chosen on validation data (`choose_k`):

    unigram  p(w)                 = (c(w) + k) / (N + k V)
    bigram   p(w_t | w_{t-1} = v) = (c(v w_t) + k) / (c(v .) + k V)

where N is the number of training tokens, c(v w) the count of the pair v w in the training
sequences and c(v .) = sum_w c(v w) the number of pairs starting with v (the count of v
except where v ends a sequence, so that every conditional sums to exactly 1). V is the
tokenizer's REAL number of tokens (`tokenizer.num_tokens`), special ids included and the padding up to a multiple of
128 excluded, so each distribution sums to 1 over the real tokens. Pairs never straddle two
training sequences. The first token of a sequence has no previous token; `token_log_probs`
gives it the unigram probability under both models.

Comparison with the LM (`total_nll`, `nll_of_log_probs`). Evaluation data are the packed
windows of T tokens the LM is evaluated on. Position 0 of a window has no context for the LM,
so NO model scores it: every model scores positions 1..T-1 where the mask says so, the LM
conditioned on the window's tokens 0..t-1, the bigram on token t-1 of the same window and the
unigram on nothing. The LM's own per-token log-probs (out[:, 0] = 0 by convention) go through
the same `nll_of_log_probs`, so all three numbers sum over exactly the same tokens.

Counts are kept sparse (unique pair codes prev * V + next from np.unique), so a 32k
vocabulary costs memory proportional to the distinct pairs seen, never V^2.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

DEFAULT_K_CANDIDATES = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)


@dataclasses.dataclass(frozen=True)
class UnigramModel:
  vocab_size: int
  k: float
  counts: np.ndarray  # int64 (V,)

  @property
  def num_tokens(self) -> int:
    return int(self.counts.sum())


@dataclasses.dataclass(frozen=True)
class BigramModel:
  vocab_size: int
  k: float
  unigram: UnigramModel  # for a sequence's first token, which has no previous token
  pair_codes: np.ndarray  # int64 (P,), sorted: previous * V + next of every distinct training pair
  pair_counts: np.ndarray  # int64 (P,)
  context_counts: np.ndarray  # int64 (V,): c(v .), pairs starting with v


# ----------------------------------------------------------------------------- fitting


def _as_sequences(tokens) -> list[np.ndarray]:
  """A 1-D array (or list of ids) is one sequence; a 2-D array holds one sequence per row and
  a list of arrays one per item."""
  if not isinstance(tokens, np.ndarray) and all(np.ndim(item) == 0 for item in tokens):
    tokens = np.asarray(tokens, np.int64).reshape(-1)
  if isinstance(tokens, np.ndarray) and tokens.ndim == 1:
    return [tokens.astype(np.int64)]
  return [np.asarray(sequence, np.int64).reshape(-1) for sequence in tokens]


def _check_ids(ids: np.ndarray, vocab_size: int):
  if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
    raise ValueError(f"token ids must be in [0, {vocab_size}); got [{ids.min()}, {ids.max()}]")


def _check_k(k: float):
  if not k > 0:
    raise ValueError(f"add-k smoothing needs k > 0 (unseen tokens would get probability 0), got {k}")


def fit_unigram(tokens, vocab_size: int, k: float) -> UnigramModel:
  """Unigram counts of `tokens` (a 1-D stream, or a list of sequences)."""
  _check_k(k)
  flat = np.concatenate(_as_sequences(tokens) + [np.zeros(0, np.int64)])
  _check_ids(flat, vocab_size)
  return UnigramModel(vocab_size, float(k), np.bincount(flat, minlength=vocab_size).astype(np.int64))


def fit_bigram(tokens, vocab_size: int, k: float) -> BigramModel:
  """Bigram counts of `tokens` (a 1-D stream, or a list of sequences: no pair across two)."""
  sequences = _as_sequences(tokens)
  codes = np.concatenate(
      [sequence[:-1] * vocab_size + sequence[1:] for sequence in sequences] + [np.zeros(0, np.int64)]
  )
  pair_codes, pair_counts = np.unique(codes, return_counts=True)  # sorted, so searchsorted works
  context_counts = np.bincount(pair_codes // vocab_size, weights=pair_counts, minlength=vocab_size)
  return BigramModel(
      vocab_size, float(k), fit_unigram(sequences, vocab_size, k), pair_codes.astype(np.int64),
      pair_counts.astype(np.int64), context_counts.astype(np.int64),
  )


def with_k(model: UnigramModel | BigramModel, k: float) -> UnigramModel | BigramModel:
  """The same counts with another smoothing constant (counting does not depend on k)."""
  _check_k(k)
  if isinstance(model, BigramModel):
    return dataclasses.replace(model, k=float(k), unigram=with_k(model.unigram, k))
  return dataclasses.replace(model, k=float(k))


# ----------------------------------------------------------------------------- scoring


def unigram_log_probs(model: UnigramModel, targets: np.ndarray) -> np.ndarray:
  """float64 log p(w) for every id in `targets` (any shape)."""
  denominator = model.num_tokens + model.k * model.vocab_size
  return np.log(model.counts[targets] + model.k) - np.log(denominator)


def _pair_counts_of(model: BigramModel, previous: np.ndarray, targets: np.ndarray) -> np.ndarray:
  """Training count of each pair (previous, target); 0 for pairs never seen."""
  codes = previous.astype(np.int64) * model.vocab_size + targets
  if not len(model.pair_codes):
    return np.zeros(codes.shape, np.int64)
  index = np.minimum(np.searchsorted(model.pair_codes, codes), len(model.pair_codes) - 1)
  return np.where(model.pair_codes[index] == codes, model.pair_counts[index], 0)


def bigram_log_probs(model: BigramModel, previous: np.ndarray, targets: np.ndarray) -> np.ndarray:
  """float64 log p(target | previous), elementwise over arrays of the same shape."""
  numerator = _pair_counts_of(model, previous, targets) + model.k
  denominator = model.context_counts[previous] + model.k * model.vocab_size
  return np.log(numerator) - np.log(denominator)


def token_log_probs(model: UnigramModel | BigramModel, windows: np.ndarray) -> np.ndarray:
  """float64 (N, T): out[:, t] = log p(windows[:, t] | windows[:, t-1]) for the bigram and
  log p(windows[:, t]) for the unigram; position 0 has no previous token and gets the unigram
  probability under both (`total_nll` does not score it)."""
  windows = np.asarray(windows, np.int64)
  if windows.ndim != 2:
    raise ValueError(f"windows must be (N, T), got shape {windows.shape}")
  _check_ids(windows, model.vocab_size)
  if isinstance(model, UnigramModel):
    return unigram_log_probs(model, windows)
  first = unigram_log_probs(model.unigram, windows[:, :1])  # (N, 1)
  rest = bigram_log_probs(model, windows[:, :-1], windows[:, 1:])  # (N, T-1)
  return np.concatenate([first, rest], axis=1)


def scored_positions(mask: np.ndarray, window_shape: tuple[int, int]) -> np.ndarray:
  """Float (N, T) weights of the scored tokens: the mask with position 0 zeroed.

  `mask` is either aligned with the windows, (N, T), mask[:, t] saying whether token t is real
  (mask[:, 0] is ignored), or aligned with the LM's targets windows[:, 1:], (N, T-1).
  """
  mask = np.asarray(mask, np.float64)
  num_windows, length = window_shape
  if mask.shape == (num_windows, length - 1):
    mask = np.concatenate([np.zeros((num_windows, 1)), mask], axis=1)
  if mask.shape != (num_windows, length):
    raise ValueError(f"mask of shape {mask.shape} fits neither {(num_windows, length)} nor {(num_windows, length - 1)}")
  mask = mask.copy()
  mask[:, 0] = 0.0  # no context at a window's start: no model is scored there
  return mask


def nll_of_log_probs(log_probs: np.ndarray, mask: np.ndarray) -> float:
  """Total negative log-likelihood in nats of per-token log-probs (N, T) over positions
  1..T-1 where the mask is set; works for the LM's log-probs and for `token_log_probs`."""
  log_probs = np.asarray(log_probs, np.float64)
  return float(-np.sum(log_probs * scored_positions(mask, log_probs.shape)))


def total_nll(model: UnigramModel | BigramModel, windows: np.ndarray, mask: np.ndarray | None = None) -> float:
  """Nats over exactly the tokens the LM scores on the same windows (positions 1..T-1, masked).

  `mask` defaults to every token being real.
  """
  windows = np.asarray(windows)
  mask = np.ones(windows.shape) if mask is None else mask
  return nll_of_log_probs(token_log_probs(model, windows), mask)


def num_scored(mask: np.ndarray, window_shape: tuple[int, int]) -> int:
  """How many tokens `total_nll` sums over (for `perplexity`)."""
  return int(scored_positions(mask, window_shape).sum())


def choose_k(
    train, validation, candidates: Sequence[float] = DEFAULT_K_CANDIDATES, *, vocab_size: int,
    order: int = 2,
) -> tuple[float, dict[float, float]]:
  """The add-k constant among `candidates` with the lowest validation NLL, and the NLL of each.

  `train` as for `fit_bigram`; `validation` is (N, T) windows or a 1-D stream (one window),
  scored at positions 1..T-1 as `total_nll` does. `order` 1 = unigram, 2 = bigram.
  """
  if order not in (1, 2):
    raise ValueError(f"order must be 1 (unigram) or 2 (bigram), got {order}")
  validation = np.asarray(validation)
  windows = validation[None, :] if validation.ndim == 1 else validation
  fit = fit_bigram if order == 2 else fit_unigram
  counts = fit(train, vocab_size, candidates[0])
  nll_by_k = {float(k): total_nll(with_k(counts, k), windows) for k in candidates}
  return min(nll_by_k, key=nll_by_k.get), nll_by_k


# ----------------------------------------------------------------------------- units


def bits_per_byte(total_nll_nats: float, num_bytes: int) -> float:
  """Nats over the scored tokens -> bits per byte of the text they encode; comparable across
  tokenizers as long as num_bytes counts the UTF-8 bytes of exactly the scored tokens."""
  return total_nll_nats / math.log(2) / num_bytes


def perplexity(total_nll_nats: float, num_tokens: int) -> float:
  """exp(mean NLL per scored token)."""
  return math.exp(total_nll_nats / num_tokens)
