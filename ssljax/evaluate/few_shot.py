"""In-context few-shot evaluation of a causal language model, scored by log-likelihood.

As in GPT-3 (Brown et al. 2020, "Language Models are Few-Shot Learners", arXiv 2005.14165,
section 2.4), a query is a prompt of k solved examples followed by the unsolved one; every
candidate continuation is appended to the prompt and scored by the SUM of its tokens'
log-probabilities given everything before it, and the highest-scoring candidate is the
prediction (ties go to the earlier candidate). No length normalisation is applied.

Two task families:
  * the synthetic tasks of `ssljax.text.icl_tasks` (a `TaskSpec`), whose mapping is redrawn
    for every prompt, so that only reading the prompt helps;
  * BBC topic classification by prompting (a `TopicTask`): blocks

        Headline: <title>
        Topic: <topic>

    joined by newlines, k of them drawn from the TRAIN split and the query's block ending in
    "Topic:"; the candidates are " business", " entertainment", ... The k examples are drawn
    uniformly at random without replacement for every query, as in GPT-3, so their topics
    follow the train split's topic frequencies (`balanced=True` instead cycles through the
    topics in a random order, so that topic counts differ by at most one). Articles are given
    as (title, topic_name) pairs, so this module does not depend on the dataset code.

The model is seen through `log_probs_fn(tokens)`: int32 (B, T) -> float32 (B, T) with
out[:, t] = log p(tokens[:, t] | tokens[:, :t]) and out[:, 0] = 0. It is always called with the
same shape, B = `batch_size` and T = `context_len`, rows right-padded with `pad_id` (the
tokenizer's [PAD]) and the last batch filled up with all-[PAD] rows, so a jitted model compiles
once.

Tokenisation: the prompt and each candidate are encoded separately and concatenated, so the
candidate's tokens are known exactly. The prompt is preceded by `start_id` (the tokenizer's EOS
where the caller passes it): in a packed pretraining stream a document's first token follows the
previous document's EOS,
so a prompt starting after EOS reads like the start of a document. A sequence longer than the
context is truncated from the LEFT, keeping the query and the candidate (and dropping the
oldest examples first); the candidate always starts at position >= 1, where the model has
context to predict it.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import numpy as np

from ssljax.text import icl_tasks

BBC_TOPICS = ("business", "entertainment", "politics", "sport", "tech")

Query = tuple[str, str, tuple[str, ...]]  # (prompt, answer, candidates); answer is one of the candidates
LogProbsFn = Callable[[np.ndarray], np.ndarray]


class Tokenizer(Protocol):
  def encode(self, text: str) -> list[int]: ...


@dataclasses.dataclass(frozen=True)
class TopicTask:
  """Topic classification by prompting: in-context examples from `train`, queries from `queries`.

  Both are sequences of (title, topic_name) pairs; `topics` are the candidate labels.
  """

  train: tuple[tuple[str, str], ...]
  queries: tuple[tuple[str, str], ...]
  topics: tuple[str, ...] = BBC_TOPICS
  balanced: bool = False
  name: str = "bbc_topic"

  def __post_init__(self):
    # Accept lists; keep the dataclass hashable and immutable.
    object.__setattr__(self, "train", tuple((str(t), str(c)) for t, c in self.train))
    object.__setattr__(self, "queries", tuple((str(t), str(c)) for t, c in self.queries))
    unknown = {c for _, c in self.train + self.queries} - set(self.topics)
    if unknown:
      raise ValueError(f"topics {sorted(unknown)} are not among the candidates {self.topics}")

  @property
  def chance(self) -> float:
    """Accuracy of a uniform guess among the topics."""
    return 1.0 / len(self.topics)

  @functools.cached_property
  def train_titles(self) -> np.ndarray:
    return np.array([title for title, _ in self.train], dtype=object)

  @functools.cached_property
  def train_topics(self) -> np.ndarray:
    return np.array([topic for _, topic in self.train], dtype=object)


Task = icl_tasks.TaskSpec | TopicTask


# ----------------------------------------------------------------------------- prompts


def topic_block(title: str, topic: str | None = None) -> str:
  """`Headline: <title>\\nTopic: <topic>`, or the query block ending in `Topic:`."""
  title = " ".join(title.split())  # one line, whatever whitespace the title had
  return f"Headline: {title}\nTopic:" + ("" if topic is None else f" {topic}")


def _example_indices(rng: np.random.Generator, task: TopicTask, k: int, query_title: str) -> np.ndarray:
  """Indices into task.train of k in-context examples for one query, in prompt order."""
  allowed = np.flatnonzero(task.train_titles != query_title)  # never show the query itself as an example
  if k > len(allowed):
    raise ValueError(f"k={k} examples requested from {len(allowed)} training articles")
  if not task.balanced:
    return rng.choice(allowed, size=k, replace=False)
  topics = task.train_topics[allowed]
  order = rng.permutation(len(task.topics))
  per_topic = np.bincount(order[np.arange(k) % len(order)], minlength=len(task.topics))
  chosen = []
  for topic_index, count in enumerate(per_topic):
    pool = allowed[topics == task.topics[topic_index]]
    if count > len(pool):
      raise ValueError(f"{count} examples of topic {task.topics[topic_index]!r} requested from {len(pool)}")
    chosen.append(rng.choice(pool, size=count, replace=False))
  return rng.permutation(np.concatenate(chosen).astype(np.int64))


def topic_prompt(rng: np.random.Generator, task: TopicTask, query: tuple[str, str], k: int) -> Query:
  """One k-shot topic query: (prompt, " <topic>", (" business", ...))."""
  title, topic = query
  examples = [topic_block(*task.train[i]) for i in _example_indices(rng, task, k, title)]
  prompt = "\n".join(examples + [topic_block(title)])
  return prompt, " " + topic, tuple(" " + t for t in task.topics)


def sample_queries(task: Task, k: int, num_queries: int | None, seed: int, draw: int = 0) -> list[Query]:
  """The queries of one draw of k-shot examples, deterministic in (seed, k, draw).

  Synthetic tasks: `num_queries` fresh prompts. Topic task: the same `num_queries` queries
  (a subset chosen by `seed` alone; None = all) for every k and draw, each with its own k
  examples, so that k and draws differ only in the in-context examples.
  """
  rng = np.random.default_rng([seed, k, draw])
  if isinstance(task, icl_tasks.TaskSpec):
    if num_queries is None:
      raise ValueError("synthetic tasks need num_queries")
    return [icl_tasks.make_prompt(rng, task, k) for _ in range(num_queries)]
  if isinstance(task, TopicTask):
    indices = np.arange(len(task.queries))
    if num_queries is not None and num_queries < len(indices):
      indices = np.sort(np.random.default_rng([seed]).choice(indices, size=num_queries, replace=False))
    return [topic_prompt(rng, task, task.queries[i], k) for i in indices]
  raise TypeError(f"unknown task type {type(task).__name__}")


# ----------------------------------------------------------------------------- scoring


def fit_to_context(prompt_ids: Sequence[int], candidate_ids: Sequence[int], context_len: int) -> tuple[list[int], int]:
  """(prompt + candidate cut from the left to at most context_len ids, the candidate's start).

  The candidate must start at position >= 1: out[:, 0] of the model carries no prediction.
  """
  if not prompt_ids:
    raise ValueError("the prompt encodes to no tokens: nothing to condition the candidate on")
  if not 1 <= len(candidate_ids) <= context_len - 1:
    raise ValueError(f"a candidate of {len(candidate_ids)} tokens does not fit a context of {context_len}")
  ids = (list(prompt_ids) + list(candidate_ids))[-context_len:]
  return ids, len(ids) - len(candidate_ids)


def _scoring_rows(
    tokenizer: Tokenizer, queries: Sequence[Query], context_len: int, start_id: int | None,
) -> list[tuple[list[int], int]]:
  """One (window ids, candidate start) per (query, candidate), queries in order."""
  encoded: dict[str, list[int]] = {}  # candidates repeat across queries

  def encode(text: str) -> list[int]:
    if text not in encoded:
      encoded[text] = list(tokenizer.encode(text))
    return encoded[text]

  rows = []
  for prompt, _, candidates in queries:
    prompt_ids = ([] if start_id is None else [start_id]) + list(tokenizer.encode(prompt))
    rows.extend(fit_to_context(prompt_ids, encode(candidate), context_len) for candidate in candidates)
  return rows


def score_candidates(
    log_probs_fn: LogProbsFn, tokenizer: Tokenizer, queries: Sequence[Query], *,
    batch_size: int, context_len: int, start_id: int | None, pad_id: int,
) -> list[np.ndarray]:
  """Per query, float64 (num_candidates,): sum of the candidate tokens' log-probs given the prompt
  (`start_id`, None for none, then the prompt; rows padded with `pad_id`)."""
  rows = _scoring_rows(tokenizer, queries, context_len, start_id)
  scores = np.zeros(len(rows), np.float64)
  for first in range(0, len(rows), batch_size):
    batch = rows[first : first + batch_size]
    tokens = np.full((batch_size, context_len), pad_id, np.int32)  # fixed shape: one compilation
    for row, (ids, _) in enumerate(batch):
      tokens[row, : len(ids)] = ids
    log_probs = np.asarray(log_probs_fn(tokens))  # (B, T)
    if log_probs.shape != tokens.shape:
      raise ValueError(f"log_probs_fn returned shape {log_probs.shape} for tokens of shape {tokens.shape}")
    for row, (ids, start) in enumerate(batch):
      scores[first + row] = np.sum(log_probs[row, start : len(ids)], dtype=np.float64)
  bounds = np.cumsum([0] + [len(candidates) for _, _, candidates in queries])
  return [scores[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])]


def predictions(queries: Sequence[Query], scores: Sequence[np.ndarray]) -> list[str]:
  """The highest-scoring candidate of each query (the first one on ties)."""
  return [candidates[int(np.argmax(s))] for (_, _, candidates), s in zip(queries, scores)]


def accuracy_of(queries: Sequence[Query], scores: Sequence[np.ndarray]) -> float:
  predicted = predictions(queries, scores)
  return float(np.mean([p == answer for p, (_, answer, _) in zip(predicted, queries)]))


def majority_rate(queries: Sequence[Query]) -> float | None:
  """Accuracy of always answering the most frequent answer among these queries; None when the
  candidates change from query to query (WORD_MAP), where a constant answer is no strategy."""
  if len({candidates for _, _, candidates in queries}) > 1:
    return None
  _, counts = np.unique([answer for _, answer, _ in queries], return_counts=True)
  return float(counts.max() / len(queries))


# ----------------------------------------------------------------------------- evaluation


def evaluate(
    log_probs_fn: LogProbsFn, tokenizer: Tokenizer, task: Task, *, ks: Sequence[int] = (0, 1, 2, 4, 8),
    num_queries: int | None, draws: int = 5, seed: int, batch_size: int, context_len: int,
    start_id: int | None, pad_id: int,
) -> dict[int, dict]:
  """k-shot accuracy of the model on `task` for every k in `ks`.

  For each k, `draws` independent draws of in-context examples (`sample_queries` with
  draw = 0, 1, ...) are scored; accuracy is computed per draw. Returns

    {k: {"mean": ..., "std": ..., "draws": [accuracy per draw], "chance": ..., "majority": ...}}

  with std the sample standard deviation over draws (ddof = 1; 0 for one draw), chance the
  accuracy of a uniform guess and majority the mean over draws of the accuracy of always
  answering the most frequent answer (None where candidates vary between queries). All draws of all k are scored in one pass, so batches
  are full except the very last.
  """
  if draws < 1:
    raise ValueError(f"draws must be >= 1, got {draws}")
  groups = [(k, draw) for k in ks for draw in range(draws)]
  queries = {group: sample_queries(task, group[0], num_queries, seed, group[1]) for group in groups}
  flat = [query for group in groups for query in queries[group]]
  flat_scores = score_candidates(
      log_probs_fn, tokenizer, flat, batch_size=batch_size, context_len=context_len, start_id=start_id,
      pad_id=pad_id,
  )
  results, offset = {}, 0
  for k in ks:
    accuracies, majorities = [], []
    for draw in range(draws):
      group_queries = queries[(k, draw)]
      accuracies.append(accuracy_of(group_queries, flat_scores[offset : offset + len(group_queries)]))
      majorities.append(majority_rate(group_queries))
      offset += len(group_queries)
    results[k] = {
        "mean": float(np.mean(accuracies)),
        "std": float(np.std(accuracies, ddof=1)) if draws > 1 else 0.0,
        "draws": accuracies,
        "chance": task.chance,
        "majority": None if None in majorities else float(np.mean(majorities)),
    }
  return results


def format_table(results: Mapping[int, Mapping], title: str | None = None) -> str:
  """Plain-text table of `evaluate`'s results, one row per k."""
  lines = [title] if title else []
  lines.append(f"{'k':>3}  {'accuracy':>15}  {'chance':>6}  {'majority':>8}  draws")
  for k, row in results.items():
    draws = " ".join(f"{a:.3f}" for a in row["draws"])
    accuracy = f"{row['mean']:.3f} +- {row['std']:.3f}"
    majority = "-" if row.get("majority") is None else f"{row['majority']:.3f}"
    lines.append(f"{k:>3}  {accuracy:>15}  {row['chance']:>6.3f}  {majority:>8}  {draws}")
  return "\n".join(lines)
