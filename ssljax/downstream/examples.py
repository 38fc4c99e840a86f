"""A downstream task's examples outside any training loop: label budgets and their draws,
streamed predictions scored with the task's metrics, and each metric's mean and std over draws.
Fine-tuning's trials (ssljax.finetune), the fine-tuning family (families/finetune_tasks.py)
and the task_metrics evaluator share them.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import ml_collections
import numpy as np
import tqdm

from ssljax.data import read_all
from ssljax.downstream import inputs, metrics
from ssljax.downstream.heads import CLASSIFY, PAIR, TAG
from ssljax.downstream.tasks import Task
from ssljax.errors import UserError


class Subset(Sequence):
  """The examples of `source` at `indices`, read when asked for."""

  def __init__(self, source: Sequence, indices: np.ndarray):
    self.source, self.indices = source, np.asarray(indices, np.int64)

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, k: int):
    return self.source[int(self.indices[k])]

  def __getitems__(self, ks) -> list:
    picked = [int(self.indices[k]) for k in ks]
    if hasattr(self.source, "__getitems__"):
      return list(self.source.__getitems__(picked))
    return [self.source[i] for i in picked]


def capped(source: Sequence, limit: int, seed: int) -> Sequence:
  """At most `limit` examples (0: all), a fixed random choice kept in source order: bundled
  tasks are stored sorted by topic, so the first ones would all share one."""
  if not limit or len(source) <= limit:
    return source
  keep = np.sort(np.random.default_rng(seed).choice(len(source), size=limit, replace=False))
  return Subset(source, keep)


def budget_name(config: ml_collections.ConfigDict) -> str:
  if config.labels_per_class:
    return f"{config.labels_per_class}_per_class"
  if config.label_fraction < 1.0:
    return f"fraction_{config.label_fraction:g}"
  return "all"


def label_subsets(task: Task, train: Sequence[dict], config: ml_collections.ConfigDict) -> list[np.ndarray]:
  """Indices into `train` of the labelled examples, one array per draw.

  All labels: one draw of everything. `labels_per_class=k` (classification, pairs): k examples
  of every class, drawn without replacement (all of a class with fewer). `label_fraction=f`
  (any task, meant for tagging and spans): round(f * N) examples, at least one.
  """
  n = len(train)
  if config.labels_per_class and config.label_fraction < 1.0:
    raise UserError("set config.labels_per_class or config.label_fraction, not both")
  if not config.labels_per_class and config.label_fraction >= 1.0:
    return [np.arange(n)]
  if config.draws < 1:
    raise UserError(f"config.draws must be >= 1, got {config.draws}")
  subsets = []
  if config.labels_per_class:
    if task.kind not in (CLASSIFY, PAIR):
      raise UserError(f"labels_per_class needs a classification task; {task.name} is a {task.kind} task: "
                      "use --config.label_fraction")
    labels = np.asarray([e["label"] for e in read_all(train)])
    for draw in range(config.draws):
      rng = np.random.default_rng([config.seed, draw])
      picked = [rng.choice(np.flatnonzero(labels == c), size=min(config.labels_per_class, np.sum(labels == c)),
                           replace=False) for c in range(task.num_labels) if np.any(labels == c)]
      subsets.append(np.sort(np.concatenate(picked)))
    return subsets
  if not 0.0 < config.label_fraction < 1.0:
    raise UserError(f"config.label_fraction must be in (0, 1], got {config.label_fraction}")
  size = max(1, round(config.label_fraction * n))
  for draw in range(config.draws):
    subsets.append(np.sort(np.random.default_rng([config.seed, draw]).choice(n, size=size, replace=False)))
  return subsets


def predictions(kind: str, encoder: inputs.Encoder, predict, examples: Sequence[dict], batch_size: int, *,
                progress: bool = False, desc: str = "eval") -> tuple[list, list]:
  """One prediction per example (a class, a list of word tags, or the answer's text) and its
  gold answer, read chunk by chunk: only these, not the examples, are kept.

  `predict`: a batch of `batch_size` features -> the head's outputs (`heads.predict_fn`)."""
  result, gold = [], []
  chunks = range(0, len(examples), batch_size)
  for start in tqdm.tqdm(chunks, desc=desc, disable=not progress, leave=False, unit="batch"):
    chunk = read_at(examples, np.arange(start, min(start + batch_size, len(examples))))
    encoded = [encoder.eval_features(e) for e in chunk]
    flat = [f for features, _ in encoded for f in features]
    out = []
    for b in range(0, len(flat), batch_size):
      batch = inputs.collate(flat[b:b + batch_size], batch_size, flat[0])
      out.append(jax.tree.map(np.asarray, predict(batch)))
    out = jax.tree.map(lambda *xs: np.concatenate(xs), *out)
    k = 0
    for example, (features, meta) in zip(chunk, encoded):
      rows = jax.tree.map(lambda x: x[k:k + len(features)], out)
      result.append(_read_back(kind, example, rows, meta))
      gold.append(_gold(kind, example))
      k += len(features)
  return result, gold


def read_at(source: Sequence, indices) -> list:
  if hasattr(source, "__getitems__"):
    return list(source.__getitems__([int(i) for i in indices]))
  return [source[int(i)] for i in indices]


def _read_back(kind: str, example: dict, rows, meta):
  """An example's prediction from the outputs of its features."""
  if kind in (CLASSIFY, PAIR):
    return int(rows[0])
  if kind == TAG:
    return rows[0][meta].tolist()  # the tag at each kept word's label position
  best = int(np.argmax(rows["score"]))  # the window whose best span scores highest
  token_word = meta[best]
  first, last = token_word[rows["start"][best]], token_word[rows["end"][best]]
  words = inputs.passage_units(example["context"])
  if first < 0 or last < 0:  # no legal span (an empty passage)
    return ""
  return example["context"][words[first][0]:words[last][1]]


def _gold(kind: str, example: dict):
  if kind in (CLASSIFY, PAIR):
    return example["label"]
  if kind == TAG:
    return example["tags"]
  return [a["text"] for a in example["answers"]]


def score(task: Task, predictions: list, gold: list) -> dict:
  """The task's metrics of one prediction per example against its gold answer (a class, the
  word tags, or the answer texts); tagging scores the words the encoder kept."""
  if task.kind in (CLASSIFY, PAIR):
    return {"accuracy": metrics.accuracy(predictions, gold)}
  if task.kind == TAG:
    gold = [g[:len(p)] for g, p in zip(gold, predictions)]
    result = metrics.tagging_scores(predictions, gold, outside=task.outside)
    if any(name.startswith("B-") for name in task.labels):
      result["entity_f1"] = metrics.entity_f1(predictions, gold, task.labels)
    return result
  return metrics.span_scores(predictions, gold)


def mean_std(results: list[dict]) -> dict:
  """Each metric's mean over draws, and its std (`<metric>_std`) when there are several."""
  out = {}
  for key in results[0]:
    values = [r[key] for r in results]
    out[key] = float(np.mean(values))
    if len(values) > 1:
      out[f"{key}_std"] = float(np.std(values))
  return out


def template_feature(encoder: inputs.Encoder, train: Sequence[dict]) -> dict:
  """A training feature of the task: the shape of padding rows and of the model's init."""
  for start in range(0, len(train), 64):
    for example in read_at(train, np.arange(start, min(start + 64, len(train)))):
      feature = encoder.train_feature(example)
      if feature is not None:
        return feature
  raise ValueError("no training example fits the encoder's sequence length")
