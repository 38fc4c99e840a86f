"""BERT's sentence pairs: `[CLS] A [SEP] B [SEP]` with a next-sentence label, as a grain stage.

Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional Transformers for Language
Understanding", arXiv 1810.04805, Section 3.1 (Task #2, next sentence prediction) and
Appendix A.2: "we sample two spans of text from the corpus ... 50% of the time B is the actual
next sentence that follows A, and 50% of the time it is a random sentence"; the combined length
is at most the sequence length, and with a small probability a shorter length is targeted, so
that pretraining also sees the short inputs that fine-tuning has.

How a document becomes examples, one at a time and in document order:

1. Its text is split into sentences (`split_sentences`: after ., ! or ? followed by space, and at
   line breaks), each tokenised on its own (`TokenizeSentences`); a sentence longer than
   `max_segment_tokens` is cut into consecutive pieces. "Segment" below means one of these.
2. From the next unused segment on, segments are taken until they hold at least the target
   length (the budget `seq_len - 3`, or with probability `short_seq_prob` a uniform length in
   [2, budget]) and number at least two, or the document ends. A is the first k of them, k
   uniform in [1, taken - 1]. (BERT stops at the target even with one segment, which then can
   only make a negative; taking two keeps the labels balanced.)
3. Positive (label 1, probability 1/2): B is the rest of the taken segments, the true
   continuation of A. Negative (label 0): B is a run of segments from a random *other*
   document, long enough to fill the target, and the taken segments after A are put back, to
   start the next example. A document of a single segment can only make negatives; the lone
   last segment of a longer one is skipped rather than made a forced negative, so the labels
   are a fair coin.
4. While A + B exceeds the budget, a token is removed from the longer of the two, from its front
   or its back at random (so the model cannot learn that a truncated end means anything).

Everything random comes from `np.random.default_rng((seed, n))` for the n-th example of the
stream, so the examples depend only on the seed and the position in the stream. Negatives are
read from `negatives`, a random-access view of all documents (grain's `MapDataset` of the same
tokenised records), by index: no buffer of recent documents has to be kept in the state.

`PairIterDataset`'s iterator state is a small JSON-serialisable dict, {"parent": the parent's
state before the current document, "segment": its next unused segment, "count": examples
emitted}; a fresh iterator given it continues with exactly the same examples (as
`ssljax.text.packing.PackedIterDataset`, and saved in the same checkpoint).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import grain
import numpy as np

from ssljax.text.records import as_str
from ssljax.text import tokenizer as tokenizer_lib
from ssljax.text.tokenizer import Tokenizer

# Special tokens around a pair: [CLS] A [SEP] B [SEP].
NUM_PAIR_SPECIALS = 3
# The roles a pair needs: their ids come from the tokenizer (`Tokenizer.special_roles`).
PAIR_ROLES = ("cls", "sep", "pad")
NEXT, RANDOM = 1, 0  # nsp_label: B follows A in its document / B comes from another document

# A sentence ends at ., ! or ? (closing quotes and brackets kept with it) before whitespace; a
# line break always ends one. The whitespace stays at the end of the piece it follows, so the
# pieces concatenate back to the text.
_SENTENCE_END = re.compile(r"[.!?][\"'”’)\]]*\s+|\n\s*")


def split_sentences(text: str) -> list[str]:
  """Sentences (and lines) of `text`, whose concatenation is `text`.

  A heuristic for English prose ("Dr. Who" is cut after "Dr."), which is all next-sentence
  prediction needs: B must be what follows A, not a linguist's sentence.
  """
  pieces, start = [], 0
  for match in _SENTENCE_END.finditer(text):
    if match.end() > start:
      pieces.append(text[start:match.end()])
      start = match.end()
  if start < len(text):
    pieces.append(text[start:])
  if len(pieces) > 1 and not pieces[0].strip():  # leading blank lines join the first sentence
    pieces[1] = pieces[0] + pieces[1]
    del pieces[0]
  return pieces


class Documents(Sequence):
  """Random-access records {"text": str, "doc_id": int} over a list of texts: the id tells the
  pair builder that a negative's document is another one, whatever the shuffling."""

  def __init__(self, texts: Sequence[str]):
    self._texts = texts

  def __len__(self) -> int:
    return len(self._texts)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return {"text": self._texts[index], "doc_id": int(index)}

  def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
    return [self[i] for i in indices]


class TokenizeSentences(grain.transforms.Map):
  """grain map: {"text", "doc_id"} -> {"tokens": int32 (n,), "lengths": int32 (k,), "doc_id"}:
  the document's sentences tokenised one by one and concatenated; `lengths` are their token
  counts (sentences that tokenise to nothing are left out)."""

  def __init__(self, tokenizer: Tokenizer, text_key: str = "text"):
    self._tokenizer = tokenizer
    self._text_key = text_key

  def map(self, record: dict[str, Any]) -> dict[str, np.ndarray]:
    text = as_str(record[self._text_key])
    sentences = [s for s in self._tokenizer.encode_batch(split_sentences(text)) if s]
    tokens = np.concatenate([np.asarray(s, np.int32) for s in sentences]) if sentences else np.zeros(0, np.int32)
    return {"tokens": tokens, "lengths": np.asarray([len(s) for s in sentences], np.int32),
            "doc_id": np.asarray(record["doc_id"], np.int64)}


def segments_of(record: dict[str, Any], max_segment_tokens: int) -> list[np.ndarray]:
  """A tokenised document's segments: its sentences, each cut into consecutive pieces of at
  most `max_segment_tokens` tokens. (k,) lengths -> list of int32 arrays."""
  tokens = np.asarray(record["tokens"], np.int32)
  ends = np.cumsum(np.asarray(record["lengths"], np.int64))
  if len(ends) and ends[-1] != len(tokens):
    raise ValueError(f"sentence lengths add up to {ends[-1]}, the document has {len(tokens)} tokens")
  segments = []
  for sentence in np.split(tokens, ends[:-1]):
    segments += [sentence[i:i + max_segment_tokens] for i in range(0, len(sentence), max_segment_tokens)]
  return [s for s in segments if len(s)]


def truncated_lengths(len_a: int, len_b: int, budget: int) -> tuple[int, int]:
  """Lengths after removing one token at a time from the longer of A and B (B on ties) until
  they fit `budget`; both stay >= 1 when budget >= 2."""
  while len_a + len_b > budget:
    if len_a > len_b:
      len_a -= 1
    else:
      len_b -= 1
  return len_a, len_b


def _truncate(tokens: np.ndarray, keep: int, rng: np.random.Generator) -> np.ndarray:
  """`keep` tokens of `tokens`: each removed token comes off the front or the back with
  probability 1/2, so the number from the front is Binomial(removed, 1/2)."""
  removed = len(tokens) - keep
  front = int(rng.binomial(removed, 0.5)) if removed else 0
  return tokens[front:front + keep]


def pair_example(a: np.ndarray, b: np.ndarray, label: int, seq_len: int,
                 special_ids: Mapping[str, int]) -> dict[str, np.ndarray]:
  """[CLS] a [SEP] b [SEP] padded to seq_len with [PAD] (ids: `special_ids`' cls, sep and pad),
  segment ids 0 for [CLS] a [SEP], 1 for b [SEP] and 0 on padding, and the next-sentence label."""
  used = len(a) + len(b) + NUM_PAIR_SPECIALS
  if used > seq_len:
    raise ValueError(f"a pair of {len(a)} + {len(b)} tokens does not fit {seq_len} positions")
  cls, sep = special_ids["cls"], special_ids["sep"]
  tokens = np.full((seq_len,), special_ids["pad"], np.int32)
  tokens[:used] = np.concatenate([[cls], a, [sep], b, [sep]])
  segments = np.zeros((seq_len,), np.int32)
  segments[len(a) + 2:used] = 1
  return {"tokens": tokens, "segments": segments, "nsp_label": np.asarray(label, np.int32)}


class _PairIterator(grain.DatasetIterator):
  """Iterator of PairIterDataset; see the module docstring."""

  def __init__(self, parent: grain.DatasetIterator, *, negatives: Sequence[dict], seq_len: int,
               seed: int, short_seq_prob: float, max_segment_tokens: int, special_ids: Mapping[str, int],
               max_draws: int = 100):
    super().__init__(parent)
    self._negatives = negatives
    self._special_ids = special_ids
    self._seq_len = seq_len
    self._seed = seed
    self._short_seq_prob = short_seq_prob
    self._max_segment_tokens = max_segment_tokens
    self._max_draws = max_draws
    # As in packing: the current document is read from the parent lazily, so the parent sits
    # at `_doc_state` while `_segments` is None.
    self._doc_state = self._parent.get_state()
    self._segments: list[np.ndarray] | None = None
    self._doc_id = -1
    self._next_segment = 0
    self._count = 0

  def _current_document(self) -> list[np.ndarray]:
    """The segments of the document the next example starts in; StopIteration at the end."""
    while self._segments is None or self._next_segment >= len(self._segments):
      if self._segments is not None:  # finished: the next document starts from here
        self._doc_state = self._parent.get_state()
        self._segments, self._next_segment = None, 0
      record = next(self._parent)
      segments = segments_of(record, self._max_segment_tokens)
      if self._next_segment > len(segments):
        raise ValueError(f"restored segment {self._next_segment} is past the end of a document of "
                         f"{len(segments)} segments: the state belongs to another pipeline")
      self._segments, self._doc_id = segments, int(record["doc_id"])
    return self._segments

  def _random_run(self, min_tokens: int, rng: np.random.Generator) -> np.ndarray:
    """Consecutive segments of a random other document, from a random one on, until they hold
    `min_tokens` tokens or the document ends."""
    for _ in range(self._max_draws):
      record = self._negatives[int(rng.integers(len(self._negatives)))]
      if int(record["doc_id"]) == self._doc_id:
        continue
      segments = segments_of(record, self._max_segment_tokens)
      if not segments:
        continue
      start = int(rng.integers(len(segments)))
      run, length = [], 0
      for segment in segments[start:]:
        run.append(segment)
        length += len(segment)
        if length >= min_tokens:
          break
      return np.concatenate(run)
    raise ValueError(f"no other non-empty document in {self._max_draws} draws: next-sentence "
                     "prediction needs a corpus of at least two documents")

  def __next__(self) -> dict[str, np.ndarray]:
    segments = self._current_document()
    while len(segments) - self._next_segment == 1 and self._next_segment > 0:
      # A lone last segment could only make a forced negative, which would skew the labels
      # towards "random"; it is skipped (it still serves as other documents' negatives).
      self._next_segment = len(segments)
      segments = self._current_document()
    rng = np.random.default_rng((self._seed, self._count))
    budget = self._seq_len - NUM_PAIR_SPECIALS
    target = budget
    if rng.random() < self._short_seq_prob:
      target = int(rng.integers(2, budget + 1))
    start, end, length = self._next_segment, self._next_segment, 0
    # At least two segments where the document has them: one alone can only make a negative
    # (BERT's recipe would then skew the labels towards "random" at every short target).
    while end < len(segments) and (length < target or end - start < 2):
      length += len(segments[end])
      end += 1
    a_end = start + (1 if end - start == 1 else int(rng.integers(1, end - start)))
    a = np.concatenate(segments[start:a_end])
    if end - start == 1 or rng.random() < 0.5:
      label, b = RANDOM, self._random_run(max(target - len(a), 1), rng)
      end = a_end  # the segments after A were not used: the next example starts with them
    else:
      label, b = NEXT, np.concatenate(segments[a_end:end])
    keep_a, keep_b = truncated_lengths(len(a), len(b), budget)
    a, b = _truncate(a, keep_a, rng), _truncate(b, keep_b, rng)
    self._next_segment = end
    self._count += 1
    return pair_example(a, b, label, self._seq_len, self._special_ids)

  def get_state(self) -> dict[str, Any]:
    return {"parent": self._doc_state, "segment": self._next_segment, "count": self._count}

  def set_state(self, state: dict[str, Any]) -> None:
    self._parent.set_state(state["parent"])
    self._doc_state = state["parent"]
    self._segments = None  # re-read from the parent, then continue at `segment`
    self._next_segment = int(state["segment"])
    self._count = int(state["count"])


class PairIterDataset(grain.IterDataset):
  """BERT sentence pairs from a stream of `TokenizeSentences` records (see the module docstring).

  Yields {"tokens": int32 (seq_len,), "segments": int32 (seq_len,), "nsp_label": int32 ()}:
  `[CLS] A [SEP] B [SEP]` then [PAD]; segments 0 on `[CLS] A [SEP]` and padding, 1 on `B [SEP]`;
  nsp_label 1 when B follows A in A's document, 0 when B comes from another document.

  Args:
    parent: IterDataset of {"tokens", "lengths", "doc_id"} records (shuffled, repeated, ...).
    negatives: random-access records of the same kind, every document negatives may come from.
    seq_len: positions per example, >= 5 (three specials and a token each for A and B).
    special_ids: the tokenizer's roles (`Tokenizer.special_ids`); a pair needs cls, sep and pad.
    seed: seeds every random choice, with the example's position in the stream.
    short_seq_prob: probability of targeting a shorter pair (BERT: 0.1).
    max_segment_tokens: longer sentences are cut into pieces of this many tokens; default half
      the budget, so that a pair holds at least two segments.
  """

  def __init__(self, parent: grain.IterDataset, *, negatives: Sequence[dict], seq_len: int,
               special_ids: Mapping[str, int], seed: int, short_seq_prob: float = 0.1,
               max_segment_tokens: int | None = None):
    super().__init__(parent)
    self._special_ids = tokenizer_lib.pick_roles(special_ids, PAIR_ROLES, owner="the tokenizer",
                                                 purpose="BERT's sentence pairs")
    if seq_len < NUM_PAIR_SPECIALS + 2:
      raise ValueError(f"seq_len must be >= {NUM_PAIR_SPECIALS + 2} for [CLS] A [SEP] B [SEP], got {seq_len}")
    if not 0.0 <= short_seq_prob <= 1.0:
      raise ValueError(f"short_seq_prob must be in [0, 1], got {short_seq_prob}")
    self._negatives = negatives
    self._seq_len = int(seq_len)
    self._seed = int(seed)
    self._short_seq_prob = float(short_seq_prob)
    self._max_segment_tokens = int(max_segment_tokens or max((seq_len - NUM_PAIR_SPECIALS) // 2, 1))

  def __iter__(self) -> _PairIterator:
    return _PairIterator(self._parent.__iter__(), negatives=self._negatives, seq_len=self._seq_len,
                         seed=self._seed, short_seq_prob=self._short_seq_prob,
                         max_segment_tokens=self._max_segment_tokens, special_ids=self._special_ids)

  def __str__(self) -> str:
    return f"PairIterDataset(seq_len={self._seq_len})"
