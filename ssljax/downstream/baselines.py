"""Baselines of the tagging and span tasks, computed beside every fine-tuning result from the
same labelled examples (`ssljax.finetune.protocol.run_baseline`; classification and sentence
pairs have TF-IDF probes, `ssljax.evaluate.tfidf`):

* tagging: each word's majority tag in the labelled training sentences (lower-cased), the
  overall majority tag for unseen words;
* spans: a surface heuristic (`heuristic_span`), which needs no training.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Sequence

from ssljax.downstream import metrics


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
