"""Packing tokenized documents into fixed-length windows for causal LM training.

Each document's token ids are followed by [EOS]; the documents are
concatenated into one stream, and the stream is cut into non-overlapping
windows of `seq_len` tokens. Only the last window can be partial, and it is
filled with [PAD]. Every token of every document therefore appears exactly
once per epoch, in order, and [PAD] appears nowhere but at the very end, so
`tokens != pad_id` is the loss mask. The ids are the tokenizer's (its "eos"
and "pad" roles), passed in. This is the concatenate-and-chunk scheme of
GPT-2/3 pretraining (Radford et al. 2019; Brown et al. 2020), which wastes no
compute on padding; a window may start or end inside a document.

`pack` does this for a list of documents in numpy. `packed_dataset` is the
grain stage: it shuffles documents per epoch with a seed, then packs the
stream lazily with `PackedIterDataset`, whose iterator state is a small
JSON-serialisable dict {"parent": <state before the current document>,
"offset": <tokens of it already emitted>}; a fresh iterator given that state
continues with exactly the same windows.

Why not grain's own packers (grain 0.2.18): `FirstFitPackIterDataset` packs
whole documents into bins and needs documents already truncated to `seq_len`,
so long documents would lose tokens. `ConcatThenSplitIterDataset` produces the
same windows as `pack` (given documents ending in [EOS]), but its state holds
tuples that do not survive JSON (ssljax checkpoints iterator states as JSON)
and restoring may replay a buffer of windows. The tests compare the two.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import grain
import numpy as np

from ssljax.text.records import as_str
from ssljax.text.tokenizer import Tokenizer


def _check_seq_len(seq_len: int) -> int:
  if int(seq_len) < 1:
    raise ValueError(f"seq_len must be positive, got {seq_len}")
  return int(seq_len)


def pack(docs: Iterable[Sequence[int]], seq_len: int, *, eos_id: int, pad_id: int) -> np.ndarray:
  """Concatenates documents, each followed by `eos_id`, into windows.

  Args:
    docs: token id sequences (no [EOS] at their end; it is added here).
    seq_len: tokens per window.
    eos_id: id appended after every document.
    pad_id: id that fills the rest of the last window; must not occur in docs.

  Returns:
    int32 (num_windows, seq_len) with num_windows = ceil(total / seq_len),
    total = sum(len(doc) + 1).
  """
  seq_len = _check_seq_len(seq_len)
  pieces = []
  for doc in docs:
    pieces.append(np.asarray(doc, dtype=np.int32).reshape(-1))
    pieces.append(np.array([eos_id], dtype=np.int32))
  stream = np.concatenate(pieces) if pieces else np.zeros((0,), np.int32)  # (total,)
  if np.any(stream == pad_id):
    raise ValueError(f"documents contain the padding id {pad_id}")
  num_windows = -(-len(stream) // seq_len)
  windows = np.full((num_windows * seq_len,), pad_id, dtype=np.int32)
  windows[:len(stream)] = stream
  return windows.reshape(num_windows, seq_len)  # (total padded,) -> (num_windows, seq_len)


class _PackedIterator(grain.DatasetIterator):
  """Iterator of PackedIterDataset; see its docstring."""

  def __init__(self, parent: grain.DatasetIterator, *, seq_len: int, eos_id: int,
               pad_id: int, with_segment_ids: bool):
    super().__init__(parent)
    self._seq_len = seq_len
    self._eos_id = eos_id
    self._pad_id = pad_id
    self._with_segment_ids = with_segment_ids
    # The current document is the one the next window starts in. It is read
    # from the parent lazily, so the parent sits at `_doc_state` while `_doc`
    # is None; `_offset` counts its tokens already emitted.
    self._doc_state = self._parent.get_state()
    self._doc: np.ndarray | None = None
    self._offset = 0

  def _read_doc(self) -> np.ndarray:
    """The next parent document with [EOS] appended; StopIteration at the end."""
    record = next(self._parent)
    tokens = np.asarray(record["tokens"], dtype=np.int32).reshape(-1)
    if np.any(tokens == self._pad_id):
      raise ValueError(f"a document contains the padding id {self._pad_id}")
    doc = np.append(tokens, np.int32(self._eos_id))  # (n,) -> (n + 1,)
    if self._offset > len(doc):
      raise ValueError(
          f"restored offset {self._offset} is past the end of a document of "
          f"{len(doc)} tokens: the state belongs to another pipeline")
    return doc

  def __next__(self) -> dict[str, np.ndarray]:
    tokens = np.full((self._seq_len,), self._pad_id, dtype=np.int32)
    segment_ids = np.zeros((self._seq_len,), dtype=np.int32)
    filled, segment = 0, 0
    while filled < self._seq_len:
      if self._doc is None:
        try:
          self._doc = self._read_doc()
        except StopIteration:
          break
      take = min(self._seq_len - filled, len(self._doc) - self._offset)
      tokens[filled:filled + take] = self._doc[self._offset:self._offset + take]
      segment += 1
      segment_ids[filled:filled + take] = segment
      filled += take
      self._offset += take
      if self._offset == len(self._doc):
        # Document done: the next window resumes from the parent's position.
        self._doc_state = self._parent.get_state()
        self._doc, self._offset = None, 0
    if filled == 0:
      raise StopIteration
    window = {"tokens": tokens}
    if self._with_segment_ids:
      window["segment_ids"] = segment_ids
    return window

  def get_state(self) -> dict[str, Any]:
    return {"parent": self._doc_state, "offset": self._offset}

  def set_state(self, state: dict[str, Any]) -> None:
    self._parent.set_state(state["parent"])
    self._doc_state = state["parent"]
    self._doc = None  # re-read from the parent, then skip `offset` tokens
    self._offset = int(state["offset"])


class PackedIterDataset(grain.IterDataset):
  """Concatenate-then-split packing of {"tokens": int array} records.

  Yields {"tokens": int32 (seq_len,)}: the parent's documents, each followed
  by `eos_id`, concatenated and cut into windows; the last window is padded
  with `pad_id`. With `with_segment_ids`, also "segment_ids": int32 (seq_len,)
  numbering the document pieces of each window 1, 2, ... (a document's [EOS]
  belongs to it) and 0 on padding, for models that mask attention between
  documents. Other keys of the parent's records are dropped.
  """

  def __init__(self, parent: grain.IterDataset, *, seq_len: int, eos_id: int, pad_id: int,
               with_segment_ids: bool = False):
    super().__init__(parent)
    self._seq_len = _check_seq_len(seq_len)
    self._eos_id = int(eos_id)
    self._pad_id = int(pad_id)
    self._with_segment_ids = bool(with_segment_ids)

  def __iter__(self) -> _PackedIterator:
    return _PackedIterator(
        self._parent.__iter__(), seq_len=self._seq_len, eos_id=self._eos_id,
        pad_id=self._pad_id, with_segment_ids=self._with_segment_ids)

  def __str__(self) -> str:
    return f"PackedIterDataset(seq_len={self._seq_len})"


def packed_dataset(
    docs: grain.MapDataset,
    seq_len: int,
    seed: int,
    *,
    shuffle: bool = True,
    num_epochs: int | None = 1,
    eos_id: int,
    pad_id: int,
    with_segment_ids: bool = False,
    read_options: grain.ReadOptions | None = None,
) -> grain.IterDataset:
  """Training stream of packed windows from a MapDataset of {"tokens"} records.

  Documents are shuffled with a new permutation each epoch (grain derives the
  epoch's permutation from `seed` and the epoch number), the epochs are
  chained, and the chain is packed. Windows can straddle an epoch boundary; the
  stream is padded only at its very end (never, if num_epochs is None). With
  num_epochs=1 the result equals `pack` of the documents in shuffled order.

  Args:
    docs: MapDataset of {"tokens": int array}, e.g. from `tokenize_documents`.
    seq_len: tokens per window.
    seed: shuffle seed (0 <= seed < 2**32).
    shuffle: False keeps the documents' order.
    num_epochs: passes over the documents; None repeats forever.
    eos_id, pad_id: as in `pack`.
    with_segment_ids: also yield "segment_ids" (see PackedIterDataset).
    read_options: grain ReadOptions for reading (and tokenizing) documents.

  Returns:
    IterDataset of {"tokens": int32 (seq_len,)}; its iterator's get_state() is
    a JSON-serialisable dict that set_state() on a fresh iterator resumes.
  """
  if shuffle:
    docs = docs.shuffle(seed=seed)
  if num_epochs != 1:
    docs = docs.repeat(num_epochs)
  stream = docs.to_iter_dataset(read_options)
  return PackedIterDataset(stream, seq_len=seq_len, eos_id=eos_id, pad_id=pad_id,
                           with_segment_ids=with_segment_ids)


class TokenizeDocument(grain.transforms.Map):
  """grain map: a text record -> {"tokens": int32 (n,)}.

  A record is a str, UTF-8 bytes, or a mapping whose `text_key` holds one
  (TFDS text features, e.g. bbc_news records, come back as bytes).
  """

  def __init__(self, tokenizer: Tokenizer, text_key: str = "text"):
    self._tokenizer = tokenizer
    self._text_key = text_key

  def map(self, record: Any) -> dict[str, np.ndarray]:
    text = as_str(record if isinstance(record, (str, bytes)) else record[self._text_key])
    return {"tokens": np.asarray(self._tokenizer.encode(text), dtype=np.int32)}


def tokenize_documents(texts: Sequence[Any], tokenizer: Tokenizer, *,
                       text_key: str = "text") -> grain.MapDataset:
  """MapDataset of {"tokens": int32 (n,)} over a random-access sequence of texts.

  `texts` is e.g. a list of str or `ssljax.data.load("bbc_news", "train")`;
  tokenization runs lazily, when grain reads a record.
  """
  return grain.MapDataset.source(texts).map(TokenizeDocument(tokenizer, text_key))
