"""Metrics of the fine-tuning tasks, in numpy on the host.

* classification and sentence pairs: accuracy;
* tagging: token accuracy and micro-F1 over the tags that are not `outside` (for the binary
  quotation task, the F1 of "inside"), scored on each word's first sub-token as in BERT's
  CoNLL-2003 experiment (Devlin et al. 2019, arXiv 1810.04805, section 5.3); for BIO tag sets
  also the entity-level F1 of CoNLL-2003 (an entity counts only if its type and both ends are
  right);
* spans: SQuAD's exact match and token F1 (Rajpurkar et al. 2016, arXiv 1606.05250): answers are
  lower-cased and stripped of punctuation, of the articles a/an/the and of extra whitespace
  before comparing, and a prediction scores its best match over the gold answers.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Sequence

import numpy as np


def accuracy(predictions, labels) -> float:
  predictions, labels = np.asarray(predictions), np.asarray(labels)
  if predictions.shape != labels.shape or not labels.size:
    raise ValueError(f"need predictions and labels of one non-empty shape, got {predictions.shape}, {labels.shape}")
  return float(np.mean(predictions == labels))


def tagging_scores(predicted: Sequence[Sequence[int]], gold: Sequence[Sequence[int]], outside: int = 0) -> dict:
  """Token accuracy and micro precision / recall / F1 over the tags other than `outside`.

  Args:
    predicted, gold: one list of tags per sentence, equal lengths sentence by sentence.
    outside: the tag that marks "nothing" (O in CoNLL, "outside a quotation" here).
  """
  p = np.concatenate([np.asarray(s, np.int64) for s in predicted]) if predicted else np.zeros(0, np.int64)
  g = np.concatenate([np.asarray(s, np.int64) for s in gold]) if gold else np.zeros(0, np.int64)
  if p.shape != g.shape or not g.size:
    raise ValueError(f"need as many predicted as gold tags, got {p.shape} and {g.shape}")
  hits = np.sum((p == g) & (g != outside))
  precision = hits / max(np.sum(p != outside), 1)
  recall = hits / max(np.sum(g != outside), 1)
  f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  return {"token_accuracy": float(np.mean(p == g)), "precision": float(precision), "recall": float(recall),
          "f1": float(f1)}


def bio_entities(tags: Sequence[str]) -> set[tuple[int, int, str]]:
  """(first, last, type) of every entity in one sentence's IOB2 tags ("B-PER", "I-PER", "O").

  An I- tag that does not continue an entity of its type starts one, as conlleval reads them.
  """
  entities, start, kind = set(), None, None
  for i, tag in enumerate(list(tags) + ["O"]):
    prefix, _, name = tag.partition("-")
    continues = prefix == "I" and start is not None and name == kind
    if start is not None and not continues:
      entities.add((start, i - 1, kind))
      start, kind = None, None
    if prefix in ("B", "I") and not continues:
      start, kind = i, name
  return entities


def entity_f1(predicted: Sequence[Sequence[int]], gold: Sequence[Sequence[int]], names: Sequence[str]) -> float:
  """CoNLL-2003's entity-level F1: an entity is right when its type and both ends are."""
  hits = n_pred = n_gold = 0
  for p, g in zip(predicted, gold, strict=True):
    p_set = bio_entities([names[t] for t in p])
    g_set = bio_entities([names[t] for t in g])
    hits, n_pred, n_gold = hits + len(p_set & g_set), n_pred + len(p_set), n_gold + len(g_set)
  precision, recall = hits / max(n_pred, 1), hits / max(n_gold, 1)
  return float(2 * precision * recall / (precision + recall)) if precision + recall else 0.0


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
  """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
  text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
  return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, answers: Sequence[str]) -> float:
  return float(any(normalize_answer(prediction) == normalize_answer(a) for a in answers))


def token_f1(prediction: str, answers: Sequence[str]) -> float:
  """The best F1 over `answers` of the bag-of-words overlap with `prediction`."""

  def f1(answer: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(answer).split()
    if not pred or not gold:
      return float(pred == gold)  # both empty counts as right, one empty as wrong
    common = sum((collections.Counter(pred) & collections.Counter(gold)).values())
    if not common:
      return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)

  return max(f1(a) for a in answers)


def span_scores(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> dict:
  """Mean exact match and token F1 over questions (each with one or more gold answers)."""
  if len(predictions) != len(answers) or not answers:
    raise ValueError(f"need one prediction per question, got {len(predictions)} for {len(answers)}")
  return {"exact_match": float(np.mean([exact_match(p, a) for p, a in zip(predictions, answers)])),
          "f1": float(np.mean([token_f1(p, a) for p, a in zip(predictions, answers)]))}
