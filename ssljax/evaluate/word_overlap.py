"""Next-sentence prediction from word overlap alone: the surface baseline that `ssljax eval`
prints beside a BERT model's next-sentence accuracy.

A pair `[CLS] A [SEP] B [SEP]` is called IsNext when the cosine between the TF-IDF vectors of
A's and B's ordinary tokens is at least a threshold, the one with the best accuracy on the
validation pairs. Text that follows A tends to repeat its names and topic words; a segment of
a random other document mostly does not. It needs no training beyond document frequencies, so
it shows how much of the task word overlap answers.

TF-IDF as scikit-learn's `TfidfTransformer` defaults (raw counts, smooth idf
ln((1 + n) / (1 + df)) + 1, l2-normalised rows), written out here because the token-id
vectors of a batch come straight from (n, T) arrays.
"""

from __future__ import annotations

import numpy as np

from ssljax.text.pairs import NEXT, RANDOM
from ssljax.text.tokenizer import NUM_SPECIAL_TOKENS

SEGMENT_A, SEGMENT_B = 0, 1


def inverse_document_frequency(frequencies: np.ndarray, num_documents: int) -> np.ndarray:
  """Smooth idf, ln((1 + n) / (1 + df)) + 1: an id no document holds still gets a finite weight."""
  return np.log((1.0 + num_documents) / (1.0 + frequencies)) + 1.0


def _tfidf_rows(tokens: np.ndarray, keep: np.ndarray, idf: np.ndarray) -> np.ndarray:
  """(n, T) ids and a (n, T) mask of the ones to count -> (n, V) l2-normalised TF-IDF rows."""
  rows = np.zeros((tokens.shape[0], len(idf)))
  row_index = np.broadcast_to(np.arange(tokens.shape[0])[:, None], tokens.shape)
  np.add.at(rows, (row_index[keep], tokens[keep]), 1.0)
  rows *= idf
  norms = np.linalg.norm(rows, axis=1, keepdims=True)
  return rows / np.maximum(norms, 1e-12)  # an empty segment stays the zero vector


def segment_cosines(tokens: np.ndarray, segments: np.ndarray, idf: np.ndarray) -> np.ndarray:
  """(n, T) tokens and segment ids -> (n,) cosine of segment A's and segment B's TF-IDF vectors.

  Only ordinary tokens count: [CLS], [SEP], [PAD] and [MASK] say nothing of the words."""
  tokens = np.asarray(tokens)
  ordinary = tokens >= NUM_SPECIAL_TOKENS
  a = _tfidf_rows(tokens, ordinary & (segments == SEGMENT_A), idf)
  b = _tfidf_rows(tokens, ordinary & (segments == SEGMENT_B), idf)
  return np.sum(a * b, axis=1)


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
  """The threshold t of best accuracy for "IsNext when score >= t" (the lowest such t on ties;
  +inf, calling every pair random, when that is best)."""
  order = np.argsort(scores, kind="stable")
  scores, labels = np.asarray(scores)[order], np.asarray(labels)[order]
  # With t = scores[i], pairs 0..i-1 are called random and i..n-1 IsNext.
  random_below = np.concatenate([[0], np.cumsum(labels == RANDOM)])  # (n + 1,)
  next_from = np.concatenate([np.cumsum((labels == NEXT)[::-1])[::-1], [0]])  # (n + 1,)
  correct = random_below + next_from
  firsts = np.concatenate([np.unique(scores, return_index=True)[1], [len(scores)]])  # ties move together
  best = firsts[np.argmax(correct[firsts])]
  return float(scores[best]) if best < len(scores) else float("inf")


def accuracy(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
  return float(np.mean((np.asarray(scores) >= threshold) == (np.asarray(labels) == NEXT)))
