"""Synthetic in-context-learning tasks that can only be solved from the prompt's examples.

Few-shot prompting (Brown et al. 2020, "Language Models are Few-Shot Learners", arXiv
2005.14165) measures whether a language model uses the examples in its context. On a real
task a model can also answer from what it memorised in pretraining, so the k-shot curve mixes
the two. Here the input -> output mapping is drawn afresh for every prompt, so nothing learned
outside the prompt helps: at k = 0 every predictor is at chance, and any gain with k comes from
reading the examples.

Prompt format (k example lines, then the query line; the answer is the continuation):

    house => green
    river => red
    house => green
    paper =>                  <- query; answer " red", candidates " red", " blue", ...

Each prompt draws `inputs_per_prompt` distinct words from the task's input vocabulary and gives
each an output drawn independently and uniformly from the prompt's candidates. The k examples
and the query are drawn WITH replacement from those few words, so with 3 words the query has
already appeared among k = 8 examples with probability 1 - (2/3)^8 = 0.96. Because the outputs
are independent, an unseen query's output is uniform over the candidates whatever the other
examples say: the best possible ("oracle") accuracy is

    P(correct | k) = 1 - (1 - chance) * (1 - 1/inputs_per_prompt)^k

(`oracle_expected_accuracy`), chance at k = 0 and 0.97 at k = 8 for the default tasks.

Two task families:
  * `WORD_LABEL`: common words -> one of four fixed colour labels (a random classification
    task whose labels are the same in every prompt).
  * `WORD_MAP`: common words -> words from a larger pool; each prompt draws its own four
    candidate outputs, so the model cannot fall back on a familiar label set and has to copy
    from the context.

Words are lower-case ASCII words that are frequent in English news, so a tokenizer trained on
news splits each into one or two pieces. `pretraining_documents` renders many prompts with
their answers as short documents to mix into language-model pretraining data. Only numpy and
the standard library are used, so the data pipeline can import this module cheaply.
"""

from __future__ import annotations

import dataclasses

import numpy as np

SEPARATOR = " =>"  # between an input and its output; the answer follows with a leading space

# Frequent short nouns of English news text (inputs of both families).
INPUT_WORDS = (
    "house", "car", "dog", "game", "book", "tree", "road", "ship", "bank", "film", "music", "phone",
    "town", "ball", "door", "water", "money", "land", "food", "child", "plan", "team", "star", "song",
    "show", "club", "park", "shop", "school", "court", "field", "paper", "price", "word", "world", "night",
    "week", "job", "fire", "power", "oil", "gold", "bird", "fish", "horse", "river", "letter", "table",
)
COLOUR_LABELS = ("red", "blue", "green", "black")
# Outputs of WORD_MAP; disjoint from INPUT_WORDS so an output never looks like an input.
OUTPUT_WORDS = (
    "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "new", "old", "big", "small", "high", "low", "good", "bad", "first", "last",
)


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """A family of prompts whose mapping is redrawn for every prompt.

  `candidates` are the label strings (without the leading space a continuation carries);
  each prompt uses `candidates_per_prompt` of them (all of them when it is None).
  """

  name: str
  inputs: tuple[str, ...]
  candidates: tuple[str, ...]
  inputs_per_prompt: int = 3
  candidates_per_prompt: int | None = None

  def __post_init__(self):
    if not 1 <= self.inputs_per_prompt <= len(self.inputs):
      raise ValueError(f"inputs_per_prompt must be in [1, {len(self.inputs)}], got {self.inputs_per_prompt}")
    if not 2 <= self.num_candidates <= len(self.candidates):
      raise ValueError(f"candidates_per_prompt must be in [2, {len(self.candidates)}]")
    if set(self.inputs) & set(self.candidates):
      raise ValueError("inputs and candidates must be disjoint")

  @property
  def num_candidates(self) -> int:
    """How many candidates each prompt offers."""
    return self.candidates_per_prompt or len(self.candidates)

  @property
  def chance(self) -> float:
    """Accuracy of a uniform guess, and of every predictor at k = 0."""
    return 1.0 / self.num_candidates


WORD_LABEL = TaskSpec("word_label", INPUT_WORDS, COLOUR_LABELS)
WORD_MAP = TaskSpec("word_map", INPUT_WORDS, OUTPUT_WORDS, candidates_per_prompt=4)
TASKS = (WORD_LABEL, WORD_MAP)


def example_line(word: str, output: str | None = None) -> str:
  """`word => output`, or the query line `word =>` when output is None."""
  return f"{word}{SEPARATOR}" if output is None else f"{word}{SEPARATOR} {output}"


def _draw_mapping(rng: np.random.Generator, task: TaskSpec) -> tuple[list[str], dict[str, str], list[str]]:
  """(prompt candidates in the task's order, word -> output, the prompt's input words)."""
  chosen = np.sort(rng.choice(len(task.candidates), size=task.num_candidates, replace=False))
  candidates = [task.candidates[i] for i in chosen]
  words = [task.inputs[i] for i in rng.choice(len(task.inputs), size=task.inputs_per_prompt, replace=False)]
  # Independent uniform outputs (not a permutation): an unseen word's output is then uniform
  # whatever the other examples show, so without seeing the query nothing beats chance.
  mapping = {word: candidates[i] for word, i in zip(words, rng.integers(task.num_candidates, size=len(words)))}
  return candidates, mapping, words


def make_prompt(rng: np.random.Generator, task: TaskSpec, k: int) -> tuple[str, str, tuple[str, ...]]:
  """One k-shot prompt with a freshly drawn mapping.

  Returns (prompt_text, answer, candidates): the prompt is k lines `input => output` and a
  final query line `input =>` joined by newlines; the answer and the candidates are
  continuations with a leading space (" red"), the answer among the candidates.
  """
  if k < 0:
    raise ValueError(f"k must be >= 0, got {k}")
  candidates, mapping, words = _draw_mapping(rng, task)
  drawn = [words[i] for i in rng.integers(len(words), size=k + 1)]  # with replacement; last = query
  lines = [example_line(word, mapping[word]) for word in drawn[:-1]] + [example_line(drawn[-1])]
  return "\n".join(lines), " " + mapping[drawn[-1]], tuple(" " + c for c in candidates)


def pretraining_documents(
    seed: int, count: int, k_range: tuple[int, int] = (0, 16), tasks: tuple[TaskSpec, ...] = TASKS,
) -> list[str]:
  """`count` short documents, each one prompt of k ~ U{k_range} (inclusive) examples plus its
  answered query, i.e. k + 1 lines `input => output`, with the task drawn uniformly from `tasks`.

  Within a document the mapping is consistent and from one document to the next it is not,
  which is what teaches a language model to look up earlier lines of its context. With the
  default range a document is at most 17 short lines (about 70 tokens of a news
  SentencePiece vocabulary), so several fit into one 128-256 token pretraining window.
  Deterministic for a seed.
  """
  low, high = k_range
  if not 0 <= low <= high:
    raise ValueError(f"k_range must be (low, high) with 0 <= low <= high, got {k_range}")
  rng = np.random.default_rng(seed)
  documents = []
  for _ in range(count):
    task = tasks[rng.integers(len(tasks))]
    prompt, answer, _ = make_prompt(rng, task, int(rng.integers(low, high + 1)))
    documents.append(prompt + answer)
  return documents


def parse_line(line: str) -> tuple[str, str | None]:
  """(input, output) of `input => output`; output is None for a query line `input =>`."""
  word, separator, output = line.partition(SEPARATOR)
  if not separator:
    raise ValueError(f"not a task line: {line!r}")
  return word.strip(), (output.strip() or None)


def oracle_predict(prompt: str, candidates: tuple[str, ...], rng: np.random.Generator | None = None) -> str:
  """The best prediction from the prompt alone: the output shown for the query word if it
  appears among the examples, otherwise a uniform guess among the candidates (the first
  candidate when no rng is given)."""
  *example_lines, query_line = prompt.split("\n")
  query, _ = parse_line(query_line)
  seen = dict(parse_line(line) for line in example_lines)
  if query in seen:
    return " " + seen[query]
  return candidates[0] if rng is None else candidates[rng.integers(len(candidates))]


def oracle_expected_accuracy(task: TaskSpec, k: int) -> float:
  """Closed form of the oracle's accuracy: seen with probability 1 - (1 - 1/n)^k, else chance."""
  unseen = (1.0 - 1.0 / task.inputs_per_prompt) ** k
  return 1.0 - unseen * (1.0 - task.chance)


def oracle_accuracy(task: TaskSpec, k: int, num_prompts: int, seed: int) -> float:
  """Empirical accuracy of `oracle_predict` over `num_prompts` fresh prompts."""
  rng = np.random.default_rng(seed)
  correct = 0
  for _ in range(num_prompts):
    prompt, answer, candidates = make_prompt(rng, task, k)
    correct += oracle_predict(prompt, candidates, rng) == answer
  return correct / num_prompts
