"""Task examples -> fixed-length encoder inputs, on the host (Devlin et al. 2019, arXiv 1810.04805,
section 3 and figure 2 for the input layout, section 4 for each task's).

Layout: [CLS] first [SEP] for one text, [CLS] first [SEP] second [SEP] for two, right-padded
with [PAD] to `seq_len` (the tokenizer's own ids of the three); segment 0 up to and including
the first [SEP], 1 after it.

* classification: the text's first seq_len - 2 tokens ("from its opening tokens");
* sentence pairs: both texts, the longer one cut first until they fit (BERT's rule);
* tagging: words are encoded one by one (each after a space, as they appear in running text),
  so every token belongs to one word; a word's tag sits on its first sub-token that is not
  blank (with a byte tokenizer a word's first token is the space before it), the others carry
  -1 (no loss); words that do not fit are dropped from the end;
* spans: [CLS] question [SEP] passage window [SEP]. The passage is split into words and
  punctuation marks (`passage_units`), each encoded with the space before it if it had one, so
  an answer always covers whole units and a predicted span maps back to characters exactly. A
  passage longer than the window is read in windows `doc_stride` tokens apart;
  training uses the first window holding the whole answer, prediction takes the best span over
  all windows (BERT's SQuAD recipe, which also trains on answerless windows; we do not).

Every feature carries `weight` 1; `collate` fills a batch up to its fixed size with weight-0
rows, so jitted functions see one shape.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from ssljax.downstream.heads import CLASSIFY, KINDS, PAIR, SPAN, TAG
from ssljax.text.tokenizer import Tokenizer

IGNORE = -1  # tag of tokens without a label
INPUT_ROLES = ("cls", "sep", "pad")  # the special tokens of an encoder input


def truncate_pair(first: list[int], second: list[int], budget: int) -> tuple[list[int], list[int]]:
  """Both lists cut to at most `budget` tokens together, one token at a time from the longer
  one's end (the second on ties), as BERT truncates sentence pairs."""
  a, b = len(first), len(second)
  while a + b > budget:
    if a > b:
      a -= 1
    else:
      b -= 1
  return first[:a], second[:b]


def pack(first: list[int], second: list[int] | None, seq_len: int,
         special_ids: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray]:
  """tokens, segments (each (seq_len,) int32) of [CLS] first [SEP] (second [SEP]) + [PAD]s, the
  ids of `special_ids`' cls, sep and pad."""
  cls, sep = special_ids["cls"], special_ids["sep"]
  tokens = [cls, *first, sep]
  segments = [0] * len(tokens)
  if second is not None:
    tokens += [*second, sep]
    segments += [1] * (len(second) + 1)
  if len(tokens) > seq_len:
    raise ValueError(f"{len(tokens)} tokens do not fit in seq_len {seq_len}")
  out = np.full((2, seq_len), special_ids["pad"], np.int32)
  out[0, :len(tokens)] = tokens
  out[1, :len(segments)] = segments
  return out[0], out[1]


def passage_units(context: str) -> list[tuple[int, int]]:
  """Character spans of a passage's words and punctuation marks, each its own unit (BERT's basic
  tokenizer splits punctuation off words too): an answer followed by a comma ends before it."""
  return [(m.start(), m.end()) for m in re.finditer(r"\w+|[^\w\s]", context)]


def encode_words(tokenizer: Tokenizer, words: list[str]) -> list[list[int]]:
  """Each word's tokens as it reads in running text: the first bare, the others after a space."""
  return tokenizer.encode_batch([w if i == 0 else " " + w for i, w in enumerate(words)])


class _BlankIds:
  """Which ids decode to whitespace only (cached: the check decodes one id)."""

  def __init__(self, tokenizer: Tokenizer):
    self.tokenizer, self.cache = tokenizer, {}

  def first_label_position(self, ids: list[int]) -> int:
    """Index in `ids` of the first token that is not blank (0 if all are)."""
    for k, token in enumerate(ids):
      if token not in self.cache:
        self.cache[token] = not self.tokenizer.decode([token]).strip()
      if not self.cache[token]:
        return k
    return 0


@dataclasses.dataclass
class SpanWindow:
  """One window of a passage: the device feature and what maps its tokens back to characters."""

  feature: dict[str, np.ndarray]
  token_word: np.ndarray  # (T,) int: the passage word of each token, -1 outside the passage
  has_answer: bool


class Encoder:
  """Encodes one task's examples for a tokenizer and sequence length.

  Examples (see `ssljax.downstream.tasks`): {"text", "label"} (classify), {"text_a", "text_b",
  "label"} (pair), {"words", "tags"} (tag), {"question", "context", "answers": [{"text",
  "start"}]} (span).
  """

  def __init__(self, tokenizer: Tokenizer, kind: str, seq_len: int, *, max_question_len: int = 32,
               doc_stride: int = 64):
    if kind not in KINDS:
      raise ValueError(f"unknown task kind {kind!r}; choose one of {KINDS}")
    if seq_len < 8:
      raise ValueError(f"seq_len {seq_len} is too short for a [CLS] ... [SEP] input")
    self.tokenizer, self.kind, self.seq_len = tokenizer, kind, seq_len
    self.special_ids = tokenizer.special_roles(INPUT_ROLES, "a fine-tuning input ([CLS] text [SEP])")
    self.max_question_len = min(max_question_len, seq_len // 2)
    self.doc_stride = doc_stride
    self.blank = _BlankIds(tokenizer)

  # -- classification and pairs ------------------------------------------------------------

  def text_ids(self, text: str) -> list[int]:
    return self.tokenizer.encode(text)[:self.seq_len - 2]

  def pair_ids(self, text_a: str, text_b: str) -> tuple[list[int], list[int]]:
    return truncate_pair(self.tokenizer.encode(text_a), self.tokenizer.encode(text_b), self.seq_len - 3)

  def visible_text(self, example: dict) -> str | tuple[str, str]:
    """The text(s) the encoder sees after truncation, so that baselines read the same input."""
    if self.kind == CLASSIFY:
      return self.tokenizer.decode(self.text_ids(example["text"]))
    a, b = self.pair_ids(example["text_a"], example["text_b"])
    return self.tokenizer.decode(a), self.tokenizer.decode(b)

  # -- tagging ----------------------------------------------------------------------------

  def tagging(self, words: list[str], tags: list[int] | None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The feature of a sentence and the token position of each kept word's label.

    Returns:
      feature: tokens, segments, tags (T,) (-1 except at the label positions);
      positions: (W',) int, W' <= len(words): the words that fit, in order.
    """
    budget = self.seq_len - 2
    tokens, positions = [], []
    for ids in encode_words(self.tokenizer, list(words)):
      if len(tokens) + len(ids) > budget:
        break
      positions.append(1 + len(tokens) + self.blank.first_label_position(ids))  # +1: [CLS]
      tokens += ids
    tok, seg = pack(tokens, None, self.seq_len, self.special_ids)
    labels = np.full(self.seq_len, IGNORE, np.int32)
    positions = np.asarray(positions, np.int32)
    if tags is not None:
      labels[positions] = np.asarray(tags[:len(positions)], np.int32)
    return {"tokens": tok, "segments": seg, "tags": labels}, positions

  # -- spans ------------------------------------------------------------------------------

  def span_windows(self, question: str, context: str, answer: dict | None) -> list[SpanWindow]:
    """Every window of the passage, with the answer's token positions where it fits whole.

    `answer` is {"text", "start"} with `start` a character offset into `context` (SQuAD's
    `answer_start`); its span is widened to whole units (`passage_units`).
    """
    q_ids = self.tokenizer.encode(question)[:self.max_question_len]
    words = passage_units(context)
    word_ids = self.tokenizer.encode_batch([context[s:e] if s == 0 or not context[s - 1].isspace()
                                            else " " + context[s:e] for s, e in words])
    ctx, token_word, first_token, word_end = [], [], [], []
    for w, ids in enumerate(word_ids):
      first_token.append(len(ctx) + self.blank.first_label_position(ids))
      ctx += ids
      token_word += [w] * len(ids)
      word_end.append(len(ctx) - 1)  # the word's last token
    answer_tokens = None
    if answer is not None:
      a_start, a_end = answer["start"], answer["start"] + len(answer["text"])
      covered = [w for w, (s, e) in enumerate(words) if e > a_start and s < a_end]
      if covered:
        answer_tokens = (first_token[covered[0]], word_end[covered[-1]])
    budget = self.seq_len - len(q_ids) - 3
    stride = max(1, min(self.doc_stride, budget))
    windows, start = [], 0
    while True:
      end = min(start + budget, len(ctx))
      windows.append(self._window(q_ids, ctx, token_word, start, end, answer_tokens))
      if end >= len(ctx):
        return windows
      start += stride

  def _window(self, q_ids, ctx, token_word, start, end, answer_tokens) -> SpanWindow:
    tokens, segments = pack(q_ids, ctx[start:end], self.seq_len, self.special_ids)
    offset = len(q_ids) + 2  # [CLS] question [SEP]
    mask = np.zeros(self.seq_len, bool)
    mask[offset:offset + end - start] = True
    words = np.full(self.seq_len, -1, np.int32)
    words[offset:offset + end - start] = token_word[start:end]
    has_answer = answer_tokens is not None and start <= answer_tokens[0] and answer_tokens[1] < end
    first, last = (answer_tokens[0] - start + offset, answer_tokens[1] - start + offset) if has_answer else (0, 0)
    feature = {"tokens": tokens, "segments": segments, "context_mask": mask,
               "start": np.int32(first), "end": np.int32(last)}
    return SpanWindow(feature, words, has_answer)

  # -- the two entry points ---------------------------------------------------------------

  def train_feature(self, example: dict) -> dict[str, np.ndarray] | None:
    """The one feature an example trains on, or None (a span answer that fits no window)."""
    if self.kind == CLASSIFY:
      feature = dict(zip(("tokens", "segments"), pack(self.text_ids(example["text"]), None, self.seq_len,
                                                     self.special_ids)))
    elif self.kind == PAIR:
      a, b = self.pair_ids(example["text_a"], example["text_b"])
      feature = dict(zip(("tokens", "segments"), pack(a, b, self.seq_len, self.special_ids)))
    elif self.kind == TAG:
      feature, _ = self.tagging(example["words"], example["tags"])
    else:
      answer = example["answers"][0]
      windows = [w for w in self.span_windows(example["question"], example["context"], answer) if w.has_answer]
      if not windows:
        return None
      feature = windows[0].feature
    if self.kind in (CLASSIFY, PAIR):
      feature["label"] = np.int32(example["label"])
    return feature

  def eval_features(self, example: dict) -> tuple[list[dict[str, np.ndarray]], Any]:
    """The features that predict an example (several windows for a long passage) and what
    reads their outputs back: the label positions (tag) or the windows' token_word (span)."""
    if self.kind == TAG:
      feature, positions = self.tagging(example["words"], None)
      return [feature], positions
    if self.kind == SPAN:
      windows = self.span_windows(example["question"], example["context"], None)
      return [w.feature for w in windows], [w.token_word for w in windows]
    feature = self.train_feature({**example, "label": 0})
    feature.pop("label")
    return [feature], None


def encoder_for(tokenizer: Tokenizer, kind: str, max_len: int, config) -> Encoder:
  """The Encoder a fine-tuning config asks for: inputs of `config.seq_len` tokens (0: the
  encoder's `max_len` positions), at most `max_len`, and its span keys."""
  seq_len = min(config.seq_len or max_len, max_len)
  return Encoder(tokenizer, kind, seq_len, max_question_len=config.max_question_len, doc_stride=config.doc_stride)


def collate(features: list[dict[str, np.ndarray] | None], batch_size: int, template: dict[str, np.ndarray]) -> dict:
  """Stacks features into a batch of exactly `batch_size` rows; missing rows (None, or past the
  end) are copies of `template` with weight 0, so they change no loss and no metric."""
  if len(features) > batch_size:
    raise ValueError(f"{len(features)} features for a batch of {batch_size}")
  rows = list(features) + [None] * (batch_size - len(features))
  weight = np.asarray([f is not None for f in rows], np.float32)
  rows = [template if f is None else f for f in rows]
  batch = {key: np.stack([np.asarray(f[key]) for f in rows]) for key in template}
  batch["weight"] = weight
  return batch
