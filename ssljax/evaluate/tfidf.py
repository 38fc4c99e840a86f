"""TF-IDF vectors, and the linear probe on them: the fine-tuning tasks' TF-IDF baselines.

TF-IDF is scikit-learn's, in one place (`Tfidf`): term counts (`CountVectorizer`) weighted by
`TfidfTransformer` (smooth idf ln((1 + n) / (1 + df)) + 1; raw counts, or 1 + ln(count) with
`sublinear_tf`), each row l2-normalised: what `TfidfVectorizer` computes. BERT's next-sentence
baseline (`word_overlap`) weighs token ids with it, the fine-tuning baselines words.

Baselines of fine-tuning, fit on the labelled examples of a draw:

* classification (`tfidf_logreg`): the TF-IDF vectors of word uni- and bigrams;
* sentence pairs (`tfidf_pair_logreg`): with a, b the TF-IDF vectors of the two texts, the
  features [a . b, a * b] (the cosine and the word-by-word product whose sum it is: which words
  the two share, and how rare they are);

each classified by the linear probe (`linear_probe.fit`: multinomial logistic regression by
L-BFGS) on the sparse features as they are (not standardised: a TF-IDF row is already
l2-normalised, and centring would make it dense), with the L2 penalty of the C in C_GRID that
scores best on the validation split, as the fine-tuned model's learning rate is chosen.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
import scipy.sparse
from jax.experimental import sparse as jax_sparse
from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer

from ssljax.evaluate import linear_probe

# Inverse penalty strengths in scikit-learn's convention (`penalty`).
C_GRID = (0.1, 1.0, 10.0, 100.0)
MAX_STEPS = 1000  # L-BFGS iterations of one fit at most; the weakest penalty needs the most
VOCABULARY = 100_000  # word uni- and bigrams kept at most, the most frequent


class Tfidf:
  """TF-IDF vectors with the vocabulary and document frequencies of the documents `counts` holds
  (the (n, V) term counts of `counter`, fitted on them)."""

  def __init__(self, counter: CountVectorizer, counts: scipy.sparse.spmatrix, *, sublinear_tf: bool = False):
    self.counter, self.weighting = counter, TfidfTransformer(sublinear_tf=sublinear_tf).fit(counts)

  def vectors(self, documents: Iterable) -> scipy.sparse.csr_matrix:
    """(n, V) l2-normalised rows; a term no fitted document holds is left out, and a document
    without known terms stays the zero vector."""
    return self.weighting.transform(self.counter.transform(documents))


def fit(documents: Iterable, *, sublinear_tf: bool = False, **counting) -> Tfidf:
  """TF-IDF fitted on `documents` (read once), counted by `CountVectorizer(**counting)`."""
  counter = CountVectorizer(**counting)
  return Tfidf(counter, counter.fit_transform(documents), sublinear_tf=sublinear_tf)


def text_tfidf(texts: Sequence[str]) -> Tfidf:
  """The baselines' TF-IDF of texts: word uni- and bigrams, sublinear term counts."""
  return fit(texts, ngram_range=(1, 2), sublinear_tf=True, max_features=VOCABULARY)


def pair_features(tfidf: Tfidf, pairs: Sequence[tuple[str, str]]) -> scipy.sparse.csr_matrix:
  """[cosine, a * b] of the (unit-length) TF-IDF vectors of each pair's texts: (N, 1 + V) sparse."""
  a = tfidf.vectors([p[0] for p in pairs])
  b = tfidf.vectors([p[1] for p in pairs])
  product = a.multiply(b).tocsr()  # (N, V): the shared words' weights
  cosine = np.asarray(product.sum(axis=1))  # (N, 1): the rows have unit l2 norm
  return scipy.sparse.hstack([scipy.sparse.csr_matrix(cosine), product]).tocsr()


def penalty(c: float, examples: int, classes: int) -> float:
  """The probe's l2 whose fit is scikit-learn's LogisticRegression(C=c) on `examples` rows.

  scikit-learn minimises C * sum of the cross-entropies + |W|^2 / 2, the probe the mean
  cross-entropy + l2/2 |W|^2: the same minimiser at l2 = 1 / (C N). With two classes
  scikit-learn fits one weight vector w, the probe two columns w0, w1 whose difference is w; at
  the optimum w0 = -w1, so |W|^2 = |w|^2 / 2 and the same fit needs twice the penalty."""
  return (2.0 if classes == 2 else 1.0) / (c * examples)


class Probe(NamedTuple):
  """A fitted linear probe: the labels its outputs stand for, weights (D, K) and bias (K,)."""

  classes: np.ndarray
  w: np.ndarray
  b: np.ndarray

  def logits(self, features) -> np.ndarray:
    """(N, D) features, sparse or dense -> (N, K) logits."""
    return np.asarray(features @ self.w) + self.b

  def predict(self, features) -> np.ndarray:
    return self.classes[np.argmax(self.logits(features), axis=1)]


def fit_probe(x: scipy.sparse.spmatrix, y: np.ndarray, c: float) -> Probe:
  """The linear probe (`linear_probe.fit`) on sparse features (N, D) and their labels (of two
  classes or more) at scikit-learn's C."""
  classes, index = np.unique(y, return_inverse=True)
  params = linear_probe.fit(jax_sparse.BCOO.from_scipy_sparse(x.astype(np.float32)), jnp.asarray(index, jnp.int32),
                            jnp.ones(len(index), jnp.float32), penalty(c, len(index), len(classes)),
                            num_classes=len(classes), max_steps=MAX_STEPS)
  return Probe(classes, np.asarray(params["w"]), np.asarray(params["b"]))


def _accuracy(predict, x, y) -> float:
  return float(np.mean(predict(x) == y))


def probe_on_validation(train, validation, test, name: str) -> dict:
  """The linear probe at the C of C_GRID with the best validation accuracy (the first on ties),
  or with a single labelled class that class (C None); each split is (sparse features, labels).
  Returns the C and the accuracies on validation and test."""
  (train_x, train_y), (val_x, val_y), (test_x, test_y) = ((x, np.asarray(y)) for x, y in (train, validation, test))
  if len(np.unique(train_y)) < 2:  # one labelled class (a tiny draw): predict it
    chosen, predict = None, lambda x: np.full(x.shape[0], train_y[0])
  else:
    predictors = {c: fit_probe(train_x, train_y, c).predict for c in C_GRID}
    chosen = max(C_GRID, key=lambda c: _accuracy(predictors[c], val_x, val_y))
    predict = predictors[chosen]
  return {"name": name, "C": chosen, "validation": {"accuracy": _accuracy(predict, val_x, val_y)},
          "test": {"accuracy": _accuracy(predict, test_x, test_y)}}


def tfidf_logreg(unlabelled: Sequence[str], train: tuple[Sequence[str], Sequence[int]],
                 validation: tuple[Sequence[str], Sequence[int]], test: tuple[Sequence[str], Sequence[int]]) -> dict:
  """The TF-IDF baseline of single texts, its vocabulary fitted on `unlabelled`; each split is
  (texts, labels)."""
  tfidf = text_tfidf(unlabelled)
  train, validation, test = ((tfidf.vectors(texts), labels) for texts, labels in (train, validation, test))
  return probe_on_validation(train, validation, test, "tfidf_logreg")


def tfidf_pair_logreg(unlabelled: Sequence[str], train, validation, test) -> dict:
  """The TF-IDF baseline of sentence pairs, its vocabulary fitted on `unlabelled` texts; each split
  is (pairs (a, b), labels)."""
  tfidf = text_tfidf(unlabelled)
  train, validation, test = ((pair_features(tfidf, pairs), labels) for pairs, labels in (train, validation, test))
  return probe_on_validation(train, validation, test, "tfidf_pair_logreg")
