"""Fine-tuning tasks: four built by code from the bundled BBC news corpus, four public ones read
from TFDS once a user has prepared them.

A task is a name, a head kind (`heads.KINDS`), its label names and a reader
`read(config, role) -> examples` for the roles "train" (fine-tuning), "validation" (choosing
settings) and "test" (reported once). Examples are plain dicts (see `inputs.Encoder`).

Bundled tasks (offline; `ssljax.data.bbc_news.read_articles()`): each role reads only the
articles of the corpus split of the same name, inputs and labels alike, so no test article is
ever seen in training or selection. Labels are computed by code, deterministically (the pair
task's draws use a fixed seed, so every run scores the same pairs).

* `bbc_topic` (classify, 5 classes): an article's topic from its opening tokens (title first).
* `bbc_same_article` (pair, 2 classes): do two paragraphs come from the same article? For each
  article, paragraph A is paired once with another paragraph of its article (yes) and once with
  a paragraph of another article OF THE SAME TOPIC and split (no), so topic words cannot answer
  it and A alone says nothing.
* `bbc_quotes` (tag, 2 tags): is each word inside a quotation ("...") or not? See `quote_tags`.
* `bbc_who_said` (span): `Who said "<the quote's first words>"?` over a paragraph that quotes
  someone; the answer is the speaker's name as the paragraph writes it (see `who_said`).

Public tasks (TFDS, never downloaded here; a missing one stops with how to prepare it):
GLUE SST-2 (`glue/sst2`, classify), MNLI (`glue/mnli`, pair), CoNLL-2003 NER (`conll2003`,
tag) and SQuAD v1.1 (`squad/v1.1`, span). GLUE and SQuAD keep their test labels private, so
their validation set is the reported test split and settings are chosen on a slice held out
of train.

Your own task (`file`, built from the config by `for_config`; `file_task`): labelled texts, or
pairs of texts, in CSV, TSV or JSONL files.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ssljax.downstream.heads import CLASSIFY, PAIR, SPAN, TAG
from ssljax.errors import UserError

ROLES = ("train", "validation", "test")
FILE = "file"  # the task of a user's own files; its labels come from the files, so it is built per config
TOPICS = ("business", "entertainment", "politics", "sport", "tech")
TASK_SEED = 0  # the pair task's draws: fixed, so that every run scores the same examples


@dataclasses.dataclass(frozen=True)
class Task:
  """What the fine-tuning loop needs to know about a task.

  Attributes:
    name: the task's name (`--task`).
    kind: the head (`heads.CLASSIFY`, `PAIR`, `TAG`, `SPAN`).
    labels: class or tag names, in label order (() for spans).
    read: (config, role) -> a sequence of examples of that role.
    metric: the headline metric, the one settings are chosen on.
    tfds_name: the TFDS dataset a public task reads (None: bundled).
    splits: role -> TFDS split, for public tasks (config.splits.<role> overrides).
    outside: the tag that means "nothing" (tagging F1 leaves it out).
  """

  name: str
  kind: str
  labels: tuple[str, ...]
  read: Callable[[Any, str], Sequence[dict]]
  metric: str
  description: str
  tfds_name: str | None = None
  splits: dict[str, str] = dataclasses.field(default_factory=dict)
  outside: int = 0

  @property
  def num_labels(self) -> int:
    return max(len(self.labels), 2)


# -- the BBC corpus -----------------------------------------------------------------------------


@functools.cache
def _all_articles() -> tuple[dict, ...]:
  from ssljax.data import bbc_news  # imported on use: it imports TFDS

  return tuple(bbc_news.read_articles())


def articles_of(split: str) -> list[dict]:
  """The corpus articles of one split (train / validation / test), in corpus order."""
  if split not in ROLES:
    raise ValueError(f"split must be one of {ROLES}, got {split!r}")
  return [a for a in _all_articles() if a["split"] == split]


def topic_examples(articles: Sequence[dict]) -> list[dict]:
  """bbc_topic: the whole article (title, blank line, body); the encoder keeps its opening
  tokens."""
  return [{"text": a["text"], "label": TOPICS.index(a["topic"]), "article_id": a["article_id"]}
          for a in articles]


def same_article_examples(articles: Sequence[dict], seed: int = TASK_SEED) -> list[dict]:
  """bbc_same_article: two pairs per article with at least two paragraphs, (A, B, 1) with B
  another paragraph of A's article and (A, C, 0) with C from another article of A's topic.

  C is never a paragraph whose text also appears in A's article (the corpus holds a few
  duplicated articles, whose paragraphs would otherwise be false negatives). Articles come
  from one split only, so both paragraphs of every pair do too.
  """
  rng = np.random.default_rng(seed)
  by_topic: dict[str, list[dict]] = {}
  for a in articles:
    by_topic.setdefault(a["topic"], []).append(a)
  examples = []
  for a in articles:
    if len(a["paragraphs"]) < 2:
      continue
    i, j = rng.choice(len(a["paragraphs"]), size=2, replace=False)
    own = set(a["paragraphs"])
    others = [o for o in by_topic[a["topic"]] if o["article_id"] != a["article_id"]]
    negative = None
    for _ in range(20):  # a handful of draws always finds one outside a duplicate
      if not others:
        break
      other = others[rng.integers(len(others))]
      paragraph = other["paragraphs"][rng.integers(len(other["paragraphs"]))]
      if paragraph not in own:
        negative = (other, paragraph)
        break
    if negative is None:
      continue
    anchor = a["paragraphs"][i]
    examples.append({"text_a": anchor, "text_b": a["paragraphs"][j], "label": 1,
                     "article_ids": (a["article_id"], a["article_id"])})
    examples.append({"text_a": anchor, "text_b": negative[1], "label": 0,
                     "article_ids": (a["article_id"], negative[0]["article_id"])})
  return examples


QUOTE = '"'


def quote_tags(paragraph: str) -> tuple[list[str], list[int]]:
  """The paragraph's words and, for each, 1 if it is inside a quotation, else 0.

  Reading left to right, every `"` opens a quotation or closes the open one; a quotation left
  open runs to the paragraph's end (BBC style, where a quote that continues into the next
  paragraph reopens there with a new `"`). A word's tag is the state at its first character
  that is not a quotation mark (`"Yes,` is inside, `said` after `no,"` is outside); a word that
  is only quotation marks takes the state after them.

  Why a word's identity does not decide its tag: any word ("the", "said", "government") occurs
  both inside and outside quotations, and which it is depends on how many quotation marks came
  before it in the paragraph, possibly many words back. The tagger has to count, in context.
  """
  words, tags, inside = paragraph.split(), [], False
  for word in words:
    tag = None
    for ch in word:
      if ch == QUOTE:
        inside = not inside
      elif tag is None:
        tag = inside
    tags.append(int(inside if tag is None else tag))
  return words, tags


def quote_examples(articles: Sequence[dict]) -> list[dict]:
  """bbc_quotes: every paragraph that contains a quotation mark, tagged by `quote_tags`
  (paragraphs without one would only add all-outside sentences)."""
  examples = []
  for a in articles:
    for paragraph in a["paragraphs"]:
      if QUOTE in paragraph:
        words, tags = quote_tags(paragraph)
        examples.append({"words": words, "tags": tags, "article_id": a["article_id"]})
  return examples


_NAME = r"[A-Z][\w'\-]*(?: [A-Z][\w'\-]*)*"
# "<quote>," said [up to four lower-case words, e.g. "economy minister"] <Name>[,.;:]
_SAID_NAME = re.compile(r'"(?P<quote>[^"]+)" said (?:[a-z][\w\'\-]* ){0,4}?(?P<name>' + _NAME + r')(?=[,.;:]|$)')
# "<quote>," <Name> said / says / told / added
_NAME_SAID = re.compile(r'"(?P<quote>[^"]+)" (?P<name>' + _NAME + r') (?:said|says|told|added)\b')
_NOT_NAMES = {"He", "She", "They", "It", "We", "I", "You", "The", "This", "That", "But", "And"}
QUESTION_WORDS = 8


def _opening_quotes(paragraph: str) -> set[int]:
  """Character offsets of the quotation marks that open a quotation."""
  opening, inside = set(), False
  for k, ch in enumerate(paragraph):
    if ch == QUOTE:
      if not inside:
        opening.add(k)
      inside = not inside
  return opening


def who_said(paragraph: str) -> list[dict]:
  """bbc_who_said questions of one paragraph: for each quotation attributed right after it
  (`"...," said Robert Sinche` or `"...," Mr Smith said`), the question
  `Who said "<its first eight words>..."?` and the speaker's name with its character offset.

  Only quotations whose opening mark really opens one count (a closing mark followed by text
  and another quotation is not a quotation), and pronouns are not names.
  """
  opening = _opening_quotes(paragraph)
  found = []
  for pattern in (_SAID_NAME, _NAME_SAID):
    for m in pattern.finditer(paragraph):
      name = m.group("name")
      if m.start() not in opening or name in _NOT_NAMES:
        continue
      words = m.group("quote").rstrip(",.?!").split()
      if not words:
        continue
      shown = " ".join(words[:QUESTION_WORDS]) + ("..." if len(words) > QUESTION_WORDS else "")
      found.append({"question": f'Who said "{shown}"?', "answer": name, "start": m.start("name")})
  return sorted(found, key=lambda q: q["start"])


def who_said_examples(articles: Sequence[dict]) -> list[dict]:
  """bbc_who_said: one SQuAD-style example per attributed quotation, the paragraph as passage."""
  examples = []
  for a in articles:
    for paragraph in a["paragraphs"]:
      for q in who_said(paragraph):
        examples.append({"question": q["question"], "context": paragraph,
                         "answers": [{"text": q["answer"], "start": q["start"]}], "article_id": a["article_id"]})
  return examples


def _bundled(build: Callable[[Sequence[dict]], list[dict]]):
  @functools.cache
  def read_split(split: str) -> tuple[dict, ...]:
    return tuple(build(articles_of(split)))

  return lambda config, role: read_split(role)


# -- public tasks, read from TFDS ---------------------------------------------------------------


def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def sst2_example(record: dict) -> dict:
  return {"text": _text(record["sentence"]), "label": int(record["label"])}


def mnli_example(record: dict) -> dict:
  return {"text_a": _text(record["premise"]), "text_b": _text(record["hypothesis"]), "label": int(record["label"])}


def conll_example(record: dict) -> dict:
  return {"words": [_text(w) for w in record["tokens"]], "tags": [int(t) for t in record["ner"]]}


def squad_example(record: dict) -> dict:
  answers = record["answers"]
  return {"question": _text(record["question"]), "context": _text(record["context"]),
          "answers": [{"text": _text(t), "start": int(s)} for t, s in zip(answers["text"], answers["answer_start"])]}


class MappedSource(Sequence):
  """A random-access source whose records are turned into examples when read."""

  def __init__(self, source, fn: Callable[[dict], dict]):
    self.source, self.fn = source, fn

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> dict:
    if isinstance(index, slice):
      return [self[i] for i in range(*index.indices(len(self)))]
    return self.fn(self.source[index])

  def __getitems__(self, indices) -> list[dict]:
    if hasattr(self.source, "__getitems__"):
      return [self.fn(r) for r in self.source.__getitems__(list(indices))]
    return [self[i] for i in indices]


class TaskDataMissing(UserError, RuntimeError):
  """A public task's TFDS dataset is not prepared on this machine."""


def _public(tfds_name: str, to_example: Callable[[dict], dict], task_name: str):
  def read(config, role: str) -> MappedSource:
    from ssljax import data  # imported on use: it imports TFDS

    split = split_for(TASKS[task_name], config, role)
    try:
      source = data.load(tfds_name, split, data_dir=config.get("data_dir"))
    except data.DatasetNotAvailableError as error:
      raise TaskDataMissing(f"fine-tuning task {task_name!r} reads the TFDS dataset {tfds_name!r} "
                            f"(split {split!r}), which is not prepared here. {error}") from None
    return MappedSource(source, to_example)

  return read


def split_for(task: Task, config, role: str) -> str:
  """The TFDS split a public task reads for `role`: config.splits.<role> if set, else the task's."""
  splits = config.get("splits") if config is not None else None
  chosen = splits.get(role) if splits is not None else None
  return chosen or task.splits[role]


NER_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")

TASKS: dict[str, Task] = {
    "bbc_topic": Task("bbc_topic", CLASSIFY, TOPICS, _bundled(topic_examples), "accuracy",
                      "topic of a BBC article from its opening tokens"),
    "bbc_same_article": Task("bbc_same_article", PAIR, ("different", "same"), _bundled(same_article_examples),
                             "accuracy", "do two paragraphs come from one article (negatives: same topic)"),
    "bbc_quotes": Task("bbc_quotes", TAG, ("outside", "inside"), _bundled(quote_examples), "f1",
                       "is each word inside a quotation"),
    "bbc_who_said": Task("bbc_who_said", SPAN, (), _bundled(who_said_examples), "f1",
                         "the speaker of a quotation, as a span of the paragraph"),
    "sst2": Task("sst2", CLASSIFY, ("negative", "positive"), _public("glue/sst2", sst2_example, "sst2"), "accuracy",
                 "GLUE SST-2 sentiment", tfds_name="glue/sst2",
                 splits={"train": "train[:97%]", "validation": "train[97%:]", "test": "validation"}),
    "mnli": Task("mnli", PAIR, ("entailment", "neutral", "contradiction"), _public("glue/mnli", mnli_example, "mnli"),
                 "accuracy", "GLUE MNLI (matched)", tfds_name="glue/mnli",
                 splits={"train": "train[:98%]", "validation": "train[98%:]", "test": "validation_matched"}),
    "conll2003": Task("conll2003", TAG, NER_TAGS, _public("conll2003", conll_example, "conll2003"), "entity_f1",
                      "CoNLL-2003 named entities", tfds_name="conll2003",
                      splits={"train": "train", "validation": "dev", "test": "test"}),
    "squad": Task("squad", SPAN, (), _public("squad/v1.1", squad_example, "squad"), "f1", "SQuAD v1.1",
                  tfds_name="squad/v1.1",
                  splits={"train": "train[:95%]", "validation": "train[95%:]", "test": "validation"}),
}


NAMES = (*TASKS, FILE)  # what `ssljax finetune --task` accepts


def get(name: str) -> Task:
  if name not in TASKS:
    hint = f"; the {FILE!r} task is built from a config (for_config)" if name == FILE else ""
    raise UserError(f"unknown fine-tuning task {name!r}; choose one of {sorted(TASKS)}{hint}")
  return TASKS[name]


def for_config(config) -> Task:
  """The task a fine-tuning config names: one of TASKS, or the `file` task its keys describe."""
  if config.task == FILE:
    from ssljax.downstream.file_task import file_task  # imported on use: it imports ssljax.data

    return file_task(config)
  return get(config.task)
