"""Next-sentence prediction from word overlap alone: the surface baseline that `ssljax eval`
prints beside a BERT model's next-sentence accuracy.

A pair `[CLS] A [SEP] B [SEP]` is called IsNext when the cosine between the TF-IDF vectors of
A's and B's ordinary tokens is at least a threshold, the one with the best accuracy on the
validation pairs. Text that follows A tends to repeat its names and topic words; a segment of
a random other document mostly does not. It needs no training beyond document frequencies, so
it shows how much of the task word overlap answers.

TF-IDF is the package's (`ssljax.evaluate.tfidf`: scikit-learn's, raw counts, smooth idf
ln((1 + n) / (1 + df)) + 1, l2-normalised rows), over token ids instead of words: the pairs come
as (n, T) arrays of the ids the model reads.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable

import numpy as np
import scipy.sparse
from sklearn.feature_extraction.text import CountVectorizer

from ssljax.evaluate import tfidf
from ssljax.text.pairs import NEXT, RANDOM

SEGMENT_A, SEGMENT_B = 0, 1


def ordinary_ids(tokens, special_ids: Collection[int]) -> list[int]:
  """A document's or segment's ids that name words: the special ids ([CLS], [SEP], [PAD],
  [MASK], ...) say nothing of them."""
  return [int(t) for t in tokens if int(t) not in special_ids]


def count_documents(documents: Iterable[np.ndarray],
                    special_ids: Collection[int]) -> tuple[CountVectorizer, scipy.sparse.csr_matrix]:
  """The id vocabulary of the documents (token id arrays, read once), special ids left out, and
  their (D, V) counts."""
  specials = frozenset(int(i) for i in special_ids)
  counter = CountVectorizer(analyzer=functools.partial(ordinary_ids, special_ids=specials))
  return counter, counter.fit_transform(documents)


class SegmentTfidf(tfidf.Tfidf):
  """TF-IDF of token-id segments (`vectors`) with the document frequencies of the training
  documents (`count_documents`)."""

  def cosines(self, tokens: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """(n, T) tokens and segment ids -> (n,) cosine of segment A's and segment B's vectors."""
    tokens, segments = np.asarray(tokens), np.asarray(segments)
    a = self.vectors([row[side == SEGMENT_A] for row, side in zip(tokens, segments)])
    b = self.vectors([row[side == SEGMENT_B] for row, side in zip(tokens, segments)])
    return np.asarray(a.multiply(b).sum(axis=1)).ravel()


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
