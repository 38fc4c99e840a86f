"""Baselines computed beside every fine-tuning result, from the same labelled examples.

* classification: TF-IDF of word uni- and bigrams + logistic regression (scikit-learn), its L2
  strength C chosen on the validation split;
* sentence pairs: TF-IDF vectors a, b of the two texts (unit length), features [a . b, a * b]
  (the cosine and the word-by-word product whose sum it is: which words the two share, and how
  rare they are) + logistic regression, C chosen on validation;
* tagging: each word's majority tag in the labelled training sentences (lower-cased), the
  overall majority tag for unseen words;
* spans: a surface heuristic (`heuristic_span`), which needs no training.

The classifiers read the text that the encoder reads after truncation (`Encoder.visible_text`),
and TF-IDF's vocabulary and document frequencies come from all training inputs (unlabelled
text, as pretraining has), the classifier only from the labelled ones.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Sequence

import numpy as np

from ssljax.downstream import metrics

C_GRID = (0.1, 1.0, 10.0, 100.0)


def _vectorizer(texts: Sequence[str]):
  from sklearn.feature_extraction.text import TfidfVectorizer

  return TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True, max_features=100_000).fit(texts)


def _fit_best(train_x, train_y, val_x, val_y, seed: int):
  """The logistic regression, over C_GRID, with the best validation accuracy: (model, C, acc)."""
  from sklearn.linear_model import LogisticRegression

  best = None
  for c in C_GRID:
    if len(set(train_y)) < 2:  # one labelled class (a tiny draw): predict it
      break
    model = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(train_x, train_y)
    acc = metrics.accuracy(model.predict(val_x), val_y)
    if best is None or acc > best[2]:
      best = (model, c, acc)
  return best


class _Constant:
  def __init__(self, label):
    self.label = label

  def predict(self, x):
    return np.full(x.shape[0], self.label)


def _classifier_result(train_x, train_y, val_x, val_y, test_x, test_y, seed: int, name: str) -> dict:
  best = _fit_best(train_x, train_y, val_x, val_y, seed)
  if best is None:
    model, c = _Constant(train_y[0]), None
  else:
    model, c = best[0], best[1]
  return {"name": name, "C": c, "validation": {"accuracy": metrics.accuracy(model.predict(val_x), val_y)},
          "test": {"accuracy": metrics.accuracy(model.predict(test_x), test_y)}}


def tfidf_logreg(unlabelled: Sequence[str], train: tuple[Sequence[str], Sequence[int]],
                 validation: tuple[Sequence[str], Sequence[int]], test: tuple[Sequence[str], Sequence[int]],
                 seed: int = 0) -> dict:
  """TF-IDF + logistic regression for single texts; each split is (texts, labels)."""
  vec = _vectorizer(unlabelled)
  xs = [vec.transform(split[0]) for split in (train, validation, test)]
  ys = [np.asarray(split[1]) for split in (train, validation, test)]
  return _classifier_result(xs[0], ys[0], xs[1], ys[1], xs[2], ys[2], seed, "tfidf_logreg")


def pair_features(vec, pairs: Sequence[tuple[str, str]]):
  """[cosine, a * b] of the (unit-length) TF-IDF vectors of each pair's texts: (N, 1 + V) sparse."""
  import scipy.sparse as sp

  a = vec.transform([p[0] for p in pairs])
  b = vec.transform([p[1] for p in pairs])
  product = a.multiply(b).tocsr()  # (N, V): the shared words' weights
  cosine = np.asarray(product.sum(axis=1))  # (N, 1): TfidfVectorizer rows have unit L2 norm
  return sp.hstack([sp.csr_matrix(cosine), product]).tocsr()


def tfidf_pair_logreg(unlabelled: Sequence[str], train, validation, test, seed: int = 0) -> dict:
  """TF-IDF pair features + logistic regression; each split is (pairs (a, b), labels)."""
  vec = _vectorizer(unlabelled)
  xs = [pair_features(vec, split[0]) for split in (train, validation, test)]
  ys = [np.asarray(split[1]) for split in (train, validation, test)]
  return _classifier_result(xs[0], ys[0], xs[1], ys[1], xs[2], ys[2], seed, "tfidf_pair_logreg")


def majority_tags(train: Sequence[tuple[Sequence[str], Sequence[int]]]) -> tuple[dict[str, int], int]:
  """Each lower-cased word's most frequent tag (ties: the smaller tag) and the overall one."""
  counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
  overall = collections.Counter()
  for words, tags in train:
    for word, tag in zip(words, tags):
      counts[word.lower()][tag] += 1
      overall[tag] += 1
  pick = lambda c: min(c, key=lambda t: (-c[t], t))  # noqa: E731
  return {w: pick(c) for w, c in counts.items()}, pick(overall)


def tag_with_majority(table: tuple[dict[str, int], int], words: Sequence[str]) -> list[int]:
  by_word, default = table
  return [by_word.get(w.lower(), default) for w in words]


_STOP = set("a an the of to in on at for by with and or is was are were be been who what which when "
            "where why how did does do said says".split())


def _sentences(context: str) -> list[tuple[int, int]]:
  """Character spans of the sentences, not split inside quotation marks."""
  spans, start, inside = [], 0, False
  for k, ch in enumerate(context):
    if ch == '"':
      inside = not inside
    if not inside and ch in ".!?" and (k + 1 == len(context) or context[k + 1].isspace()):
      spans.append((start, k + 1))
      start = k + 1
  if start < len(context):
    spans.append((start, len(context)))
  return [(s, e) for s, e in spans if context[s:e].strip()]


def _content_words(text: str) -> set[str]:
  return {w for w in re.findall(r"[a-z0-9']+", text.lower()) if w not in _STOP}


def heuristic_span(question: str, context: str) -> str:
  """A surface answer: in the sentence sharing the most content words with the question (not
  split inside quotation marks), the first run of capitalised words outside quotation marks
  that the question does not contain; else that sentence's first capitalised run; else its
  first three words.

  Who-said questions quote the start of a quotation, so the sentence is the one quoting it
  and the run is usually the speaker's name, which follows the closing mark.
  """
  sentences = _sentences(context) or [(0, len(context))]
  asked = _content_words(question)
  s, e = max(sentences, key=lambda span: len(asked & _content_words(context[span[0]:span[1]])))
  sentence = context[s:e]
  outside = []
  inside = False
  for k, ch in enumerate(sentence):
    if ch == '"':
      inside = not inside
    outside.append(not inside)
  runs = list(re.finditer(r"[A-Z][\w'\-]*(?: [A-Z][\w'\-]*)*", sentence))
  question_lower = question.lower()
  for m in runs:
    if outside[m.start()] and m.group().lower() not in question_lower:
      return m.group()
  if runs:
    return runs[0].group()
  return " ".join(sentence.split()[:3])


def span_heuristic(examples: Sequence[dict]) -> dict:
  """Exact match and F1 of `heuristic_span` on span examples."""
  predictions = [heuristic_span(e["question"], e["context"]) for e in examples]
  return metrics.span_scores(predictions, [[a["text"] for a in e["answers"]] for e in examples])
