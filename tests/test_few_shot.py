"""Synthetic in-context tasks (`ssljax.text.icl_tasks`) and log-likelihood few-shot evaluation
(`ssljax.evaluate.few_shot`), checked with stand-in tokenizers and scorers whose log-probs the
tests control."""

from __future__ import annotations

import collections
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssljax.evaluate import few_shot
from ssljax.text import icl_tasks

PAD, EOS, NUM_SPECIAL = 0, 1, 6
IDS = {"start_id": EOS, "pad_id": PAD}  # a prompt starts after [EOS]; rows are padded with [PAD]


class StandInByteTokenizer:
  """Byte b -> id 6 + b, the special ids below, as the library's ByteTokenizer."""

  vocab_size = 384

  def encode(self, text: str) -> list[int]:
    return [NUM_SPECIAL + b for b in text.encode("utf-8")]

  def decode(self, ids) -> str:
    return bytes(int(i) - NUM_SPECIAL for i in ids if int(i) >= NUM_SPECIAL).decode("utf-8", errors="replace")


class StandInWordTokenizer:
  """Pieces "\\n" and " word" (leading space kept), ids assigned on first sight from 6 on."""

  def __init__(self):
    self.ids: dict[str, int] = {}
    self.pieces: dict[int, str] = {}

  def encode(self, text: str) -> list[int]:
    out = []
    for piece in re.findall(r"\n| ?[^\s]+", text):
      if piece not in self.ids:
        self.ids[piece] = NUM_SPECIAL + len(self.ids)
        self.pieces[self.ids[piece]] = piece
      out.append(self.ids[piece])
    return out

  def decode(self, ids) -> str:
    return "".join(self.pieces[int(i)] for i in ids if int(i) >= NUM_SPECIAL)


def _tokenizers():
  made = [pytest.param(StandInByteTokenizer, id="stand-in-bytes"), pytest.param(StandInWordTokenizer, id="stand-in-words")]
  try:
    from ssljax.text.tokenizer import ByteTokenizer
  except ImportError:  # not written yet: the stand-ins carry the tests
    return made
  return made + [pytest.param(ByteTokenizer, id="ssljax-ByteTokenizer")]


TOKENIZERS = _tokenizers()


# ----------------------------------------------------------------------------- stand-in scorers


def _real_length(row: np.ndarray) -> int:
  """Rows are right-padded with PAD, which no real text encodes to."""
  return int(np.flatnonzero(row != PAD).max()) + 1 if np.any(row != PAD) else 0


def _text(tokenizer, ids) -> str:
  """The text of the non-special ids (whatever a tokenizer's decode does with EOS and PAD)."""
  return tokenizer.decode([int(i) for i in ids if int(i) >= NUM_SPECIAL])


def _checked(tokens: np.ndarray) -> np.ndarray:
  assert tokens.dtype == np.int32 and tokens.ndim == 2
  return np.zeros(tokens.shape, np.float32)


def oracle_scorer(tokenizer):
  """Penalises a candidate that contradicts an example of the query word in the window, so it
  picks the shown output when the query was seen and the first candidate otherwise."""

  def log_probs_fn(tokens):
    out = _checked(tokens)
    for row in range(len(tokens)):
      length = _real_length(tokens[row])
      if not length:
        continue
      *lines, last = _text(tokenizer, tokens[row, :length]).split("\n")
      query, candidate = icl_tasks.parse_line(last)
      seen = {}
      for line in lines:
        if icl_tasks.SEPARATOR in line:  # the window's first line may be cut
          word, output = icl_tasks.parse_line(line)
          seen[word] = output
      if query in seen and seen[query] != candidate:
        out[row, length - 1] = -5.0
    return out

  return log_probs_fn


def ending_scorer(tokenizer, preferred: str):
  """Prefers the rows that end with `preferred`, whatever the prompt."""

  def log_probs_fn(tokens):
    out = _checked(tokens)
    for row in range(len(tokens)):
      length = _real_length(tokens[row])
      if length and not _text(tokenizer, tokens[row, :length]).endswith(preferred):
        out[row, length - 1] = -1.0
    return out

  return log_probs_fn


def headline_scorer(tokenizer):
  """Topic oracle for the fake corpus below, whose headlines start with their topic."""

  def log_probs_fn(tokens):
    out = _checked(tokens)
    for row in range(len(tokens)):
      length = _real_length(tokens[row])
      if length:
        headline, topic_line = _text(tokenizer, tokens[row, :length]).split("\n")[-2:]
        if headline.removeprefix("Headline: ").split()[0] != topic_line.removeprefix("Topic: "):
          out[row, length - 1] = -1.0
    return out

  return log_probs_fn


def token_id_scorer(tokens):
  """log p of a token = -id / 1000 (0 at position 0): a candidate's sum is known in advance."""
  out = -tokens.astype(np.float32) / 1000.0
  out[:, 0] = 0.0
  return out


class Recorder:
  def __init__(self, log_probs_fn):
    self.log_probs_fn, self.calls = log_probs_fn, []

  def __call__(self, tokens):
    self.calls.append(tokens.copy())
    return self.log_probs_fn(tokens)


# ----------------------------------------------------------------------------- icl_tasks


@pytest.mark.parametrize("task", icl_tasks.TASKS, ids=lambda t: t.name)
def test_prompts_are_deterministic_for_a_seed(task):
  def prompts(seed):
    rng = np.random.default_rng(seed)
    return [icl_tasks.make_prompt(rng, task, k) for k in range(10)]

  assert prompts(3) == prompts(3)
  assert prompts(3) != prompts(4)


@pytest.mark.parametrize("task", icl_tasks.TASKS, ids=lambda t: t.name)
@pytest.mark.parametrize("k", [0, 1, 5, 16])
def test_prompt_format(task, k):
  rng = np.random.default_rng(k)
  for _ in range(50):
    prompt, answer, candidates = icl_tasks.make_prompt(rng, task, k)
    *examples, query = prompt.split("\n")
    assert len(examples) == k and query.endswith(" =>") and icl_tasks.parse_line(query)[1] is None
    assert len(candidates) == task.num_candidates == len(set(candidates))
    assert answer in candidates and all(c.startswith(" ") and c[1:] in task.candidates for c in candidates)
    shown = collections.defaultdict(set)
    for line in examples:
      word, output = icl_tasks.parse_line(line)
      assert " " + output in candidates and word in task.inputs
      shown[word].add(output)
    assert all(len(outputs) == 1 for outputs in shown.values())  # one mapping per prompt
    assert len(shown) <= task.inputs_per_prompt
    query_word = icl_tasks.parse_line(query)[0]
    if query_word in shown:
      assert shown[query_word] == {answer[1:]}


@pytest.mark.parametrize("task", icl_tasks.TASKS, ids=lambda t: t.name)
def test_mapping_is_redrawn_for_every_prompt(task):
  rng = np.random.default_rng(0)
  mappings, outputs_of_word = set(), collections.defaultdict(set)
  for _ in range(300):
    prompt, _, _ = icl_tasks.make_prompt(rng, task, 16)
    pairs = {icl_tasks.parse_line(line) for line in prompt.split("\n")[:-1]}
    mappings.add(frozenset(pairs))
    for word, output in pairs:
      outputs_of_word[word].add(output)
  assert len(mappings) >= 295
  # The same word gets different outputs in different prompts: nothing to memorise.
  assert np.mean([len(outputs) >= 2 for outputs in outputs_of_word.values()]) > 0.9


@pytest.mark.parametrize("task", icl_tasks.TASKS, ids=lambda t: t.name)
def test_zero_shot_answers_are_uniform(task):
  """At k = 0 the prompt is one query line and the answer is uniform over the candidates:
  no predictor beats chance."""
  rng = np.random.default_rng(1)
  positions = []
  for _ in range(4000):
    prompt, answer, candidates = icl_tasks.make_prompt(rng, task, 0)
    assert "\n" not in prompt
    positions.append(candidates.index(answer))
  frequencies = np.bincount(positions, minlength=task.num_candidates) / len(positions)
  np.testing.assert_allclose(frequencies, task.chance, atol=0.03)


@pytest.mark.parametrize("task", icl_tasks.TASKS, ids=lambda t: t.name)
def test_oracle_accuracy_is_chance_at_zero_and_rises_above_090_at_eight(task):
  ks = (0, 1, 2, 4, 8)
  measured = [icl_tasks.oracle_accuracy(task, k, num_prompts=3000, seed=k) for k in ks]
  expected = [icl_tasks.oracle_expected_accuracy(task, k) for k in ks]
  assert expected[0] == pytest.approx(task.chance)
  np.testing.assert_allclose(measured, expected, atol=0.03)
  assert all(a < b for a, b in zip(measured, measured[1:]))
  assert measured[-1] >= 0.9 and expected[-1] >= 0.9


def test_pretraining_documents():
  documents = icl_tasks.pretraining_documents(seed=5, count=400)
  assert documents == icl_tasks.pretraining_documents(seed=5, count=400)
  assert documents != icl_tasks.pretraining_documents(seed=6, count=400)
  assert len(documents) == 400
  line_counts, task_of = [], []
  for document in documents:
    assert document.isascii()
    lines = document.split("\n")
    line_counts.append(len(lines))
    pairs = [icl_tasks.parse_line(line) for line in lines]
    assert all(output is not None for _, output in pairs)  # the query is answered
    assert len(dict(pairs)) == len(set(pairs))  # consistent mapping within the document
    task_of.append(pairs[0][1] in icl_tasks.COLOUR_LABELS)
    assert len(document.split()) <= 17 * 3  # short: a few per 128-256 token window
  assert min(line_counts) == 1 and max(line_counts) == 17  # k from 0 to 16
  assert 0.4 < np.mean(task_of) < 0.6  # both families
  narrow = icl_tasks.pretraining_documents(seed=0, count=100, k_range=(2, 3))
  assert {len(d.split("\n")) for d in narrow} == {3, 4}


def test_words_are_plain_lower_case_ascii():
  for word in icl_tasks.INPUT_WORDS + icl_tasks.COLOUR_LABELS + icl_tasks.OUTPUT_WORDS:
    assert word.isascii() and word.isalpha() and word.islower()


# ----------------------------------------------------------------------------- few-shot scoring


@pytest.mark.parametrize("make_tokenizer", TOKENIZERS)
def test_candidate_scores_are_sums_over_the_candidate_tokens(make_tokenizer):
  tokenizer = make_tokenizer()
  queries = few_shot.sample_queries(icl_tasks.WORD_MAP, 3, num_queries=6, seed=0)
  scores = few_shot.score_candidates(token_id_scorer, tokenizer, queries, batch_size=5, context_len=64, **IDS)
  for (_, _, candidates), query_scores in zip(queries, scores):
    expected = [-sum(tokenizer.encode(c)) / 1000.0 for c in candidates]
    np.testing.assert_allclose(query_scores, expected, rtol=1e-6)


@pytest.mark.parametrize("make_tokenizer", TOKENIZERS)
def test_long_prompts_are_truncated_from_the_left(make_tokenizer):
  tokenizer = make_tokenizer()
  context_len = 24
  queries = few_shot.sample_queries(icl_tasks.WORD_LABEL, 16, num_queries=4, seed=1)
  recorder = Recorder(token_id_scorer)
  scores = few_shot.score_candidates(recorder, tokenizer, queries, batch_size=3, context_len=context_len, **IDS)
  rows = np.concatenate(recorder.calls)
  index = 0
  for (prompt, _, candidates), query_scores in zip(queries, scores):
    prompt_ids = [EOS] + tokenizer.encode(prompt)
    assert len(prompt_ids) > context_len  # the case under test
    for candidate, score in zip(candidates, query_scores):
      candidate_ids = tokenizer.encode(candidate)
      full = prompt_ids + candidate_ids
      np.testing.assert_array_equal(rows[index], full[-context_len:])  # the tail, query and candidate kept
      assert _text(tokenizer, rows[index]).endswith(prompt.split("\n")[-1] + candidate)
      assert score == pytest.approx(-sum(candidate_ids) / 1000.0)
      index += 1
  assert not rows[index:].any()  # the last batch is filled up with PAD rows


def test_short_prompts_start_after_eos_and_are_right_padded():
  tokenizer = StandInByteTokenizer()
  queries = [("cat =>", " red", (" red", " blue"))]
  recorder = Recorder(token_id_scorer)
  few_shot.score_candidates(recorder, tokenizer, queries, batch_size=4, context_len=16, **IDS)
  (tokens,) = recorder.calls
  for row, candidate in zip(tokens, [" red", " blue"]):
    ids = [EOS] + tokenizer.encode("cat =>" + candidate)
    np.testing.assert_array_equal(row, ids + [PAD] * (16 - len(ids)))
  assert not tokens[2:].any()
  few_shot.score_candidates(recorder, tokenizer, queries, batch_size=4, context_len=16, start_id=None, pad_id=PAD)
  assert recorder.calls[-1][0, 0] == tokenizer.encode("c")[0]


def test_a_candidate_that_does_not_fit_the_context_is_refused():
  queries = [("cat =>", " green", (" red", " green"))]
  with pytest.raises(ValueError, match="does not fit"):
    few_shot.score_candidates(token_id_scorer, StandInByteTokenizer(), queries, batch_size=2, context_len=6, **IDS)
  assert few_shot.fit_to_context([7, 8, 9], [5, 6], 3) == ([9, 5, 6], 1)


def test_every_call_has_the_same_shape_and_a_jitted_model_compiles_once():
  traces = []

  @jax.jit
  def log_probs_fn(tokens):
    traces.append(tokens.shape)  # runs only while tracing
    return jnp.where(jnp.arange(tokens.shape[1]) == 0, 0.0, -tokens.astype(jnp.float32) / 1000.0)

  recorder = Recorder(lambda tokens: np.asarray(log_probs_fn(tokens)))
  # 2 ks x 2 draws x 3 queries x 4 candidates = 48 rows: 4 full batches of 10 and one of 8.
  results = few_shot.evaluate(
      recorder, StandInByteTokenizer(), icl_tasks.WORD_LABEL, ks=(0, 2), num_queries=3, draws=2, seed=0,
      batch_size=10, context_len=48, **IDS,
  )
  assert [c.shape for c in recorder.calls] == [(10, 48)] * 5
  assert all(c.dtype == np.int32 for c in recorder.calls)
  assert not recorder.calls[-1][8:].any()
  assert traces == [(10, 48)]
  assert set(results) == {0, 2}


@pytest.mark.parametrize("make_tokenizer", TOKENIZERS)
def test_a_scorer_preferring_one_candidate_scores_that_candidates_frequency(make_tokenizer):
  tokenizer = make_tokenizer()
  task, kwargs = icl_tasks.WORD_LABEL, dict(num_queries=40, draws=3, seed=2, batch_size=16, context_len=96, **IDS)
  results = few_shot.evaluate(ending_scorer(tokenizer, " blue"), tokenizer, task, ks=(0, 4), **kwargs)
  for k, row in results.items():
    expected = [
        np.mean([answer == " blue" for _, answer, _ in few_shot.sample_queries(task, k, 40, seed=2, draw=draw)])
        for draw in range(3)
    ]
    np.testing.assert_allclose(row["draws"], expected)
    assert row["mean"] == pytest.approx(np.mean(expected))
    assert row["std"] == pytest.approx(np.std(expected, ddof=1))
    assert row["chance"] == 0.25


@pytest.mark.parametrize("make_tokenizer", TOKENIZERS)
@pytest.mark.parametrize("task", icl_tasks.TASKS, ids=lambda t: t.name)
def test_an_oracle_scorer_reads_the_prompt(make_tokenizer, task):
  tokenizer = make_tokenizer()
  results = few_shot.evaluate(
      oracle_scorer(tokenizer), tokenizer, task, ks=(0, 1, 8), num_queries=100, draws=3, seed=0,
      batch_size=64, context_len=160, **IDS,
  )
  assert abs(results[0]["mean"] - task.chance) < 0.08
  assert results[0]["mean"] < results[1]["mean"] < results[8]["mean"]
  assert results[8]["mean"] >= 0.9
  assert results == few_shot.evaluate(
      oracle_scorer(tokenizer), tokenizer, task, ks=(0, 1, 8), num_queries=100, draws=3, seed=0,
      batch_size=64, context_len=160, **IDS,
  )
  # A constant answer is a strategy only where every prompt offers the same candidates.
  assert (results[8]["majority"] is None) == (task is icl_tasks.WORD_MAP)
  table = few_shot.format_table(results, title=task.name)
  assert table.splitlines()[0] == task.name and len(table.splitlines()) == 5


# ----------------------------------------------------------------------------- BBC topic prompts

TOPICS = few_shot.BBC_TOPICS


def _fake_topic_task(balanced=False):
  """Headlines start with their topic, e.g. "sport story 3"."""
  train = [(f"{topic} story {i}", topic) for topic in TOPICS for i in range(12)]
  queries = [(f"{topic} report {i}", topic) for topic in TOPICS for i in range(2 + TOPICS.index(topic))]
  return few_shot.TopicTask(train, queries, balanced=balanced)


def _blocks(prompt):
  lines = prompt.split("\n")
  assert len(lines) % 2 == 0
  return [(h.removeprefix("Headline: "), t.removeprefix("Topic:").strip()) for h, t in zip(lines[::2], lines[1::2])]


@pytest.mark.parametrize("balanced", [False, True])
def test_topic_prompts(balanced):
  task = _fake_topic_task(balanced)
  assert few_shot.topic_block("A  title\nsplit") == "Headline: A title split\nTopic:"
  for k in (0, 1, 5, 8, 10):
    queries = few_shot.sample_queries(task, k, num_queries=None, seed=0, draw=1)
    assert [q[1] for q in queries] == [" " + topic for _, topic in task.queries]
    for (prompt, answer, candidates), (title, topic) in zip(queries, task.queries):
      *examples, query = _blocks(prompt)
      assert query == (title, "") and answer == " " + topic
      assert candidates == tuple(" " + t for t in TOPICS)
      assert len(examples) == k == len(set(examples)) and set(examples) <= set(task.train)
      if balanced:
        counts = collections.Counter(t for _, t in examples)
        assert max(counts.values(), default=0) - min([counts[t] for t in TOPICS]) <= 1


def test_topic_examples_never_show_the_query_and_vary_with_the_draw():
  train = [(f"{topic} story {i}", topic) for topic in TOPICS for i in range(3)]
  task = few_shot.TopicTask(train, train)  # evaluated on its own train split: the query must not leak
  for draw in range(5):
    for prompt, _, _ in few_shot.sample_queries(task, 14, None, seed=0, draw=draw):
      *examples, (query, _) = _blocks(prompt)
      assert query not in {title for title, _ in examples}
  first = few_shot.sample_queries(task, 4, None, seed=0, draw=0)
  assert first == few_shot.sample_queries(task, 4, None, seed=0, draw=0)
  assert first != few_shot.sample_queries(task, 4, None, seed=0, draw=1)


def test_topic_query_subset_is_the_same_for_every_k_and_draw():
  task = _fake_topic_task()
  chosen = {
      tuple(prompt.split("\n")[-2] for prompt, _, _ in few_shot.sample_queries(task, k, 7, seed=3, draw=draw))
      for k in (0, 2, 4) for draw in range(3)
  }
  assert len(chosen) == 1 and len(next(iter(chosen))) == 7


def test_topic_evaluation_with_stand_in_scorers():
  tokenizer = StandInByteTokenizer()
  task = _fake_topic_task()
  kwargs = dict(ks=(0, 2, 8), num_queries=None, draws=2, seed=0, batch_size=32, context_len=256, **IDS)
  perfect = few_shot.evaluate(headline_scorer(tokenizer), tokenizer, task, **kwargs)
  assert all(row["mean"] == 1.0 and row["std"] == 0.0 for row in perfect.values())
  sport = few_shot.evaluate(ending_scorer(tokenizer, " sport"), tokenizer, task, **kwargs)
  frequency = np.mean([topic == "sport" for _, topic in task.queries])
  assert all(row["mean"] == pytest.approx(frequency) for row in sport.values())
  assert all(row["chance"] == 0.2 and row["majority"] == pytest.approx(6 / 20) for row in sport.values())


def test_unknown_topics_are_refused():
  with pytest.raises(ValueError, match="not among the candidates"):
    few_shot.TopicTask([("a", "weather")], [("b", "sport")])
